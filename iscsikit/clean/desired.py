"""The ``--desired FILE`` list: what must stay on this host; ``clean`` removes the rest.

This is what a CSI node plugin knows after a restart (the volumes it still publishes), and
what no peer library reconciles against (initiator-peers.md section 4, item 2). Two forms:

Text, one entry per line, ``#`` starts a comment::

    iqn.2026-11.org.example:vol1
    iqn.2026-11.org.example:vol2  10.0.0.5:3260
    iqn.2026-11.org.example:shared  10.0.0.5:3260,1  lun=3  iface=eth1
    iqn.2026-11.org.example:db-*                      # a glob keeps every match

JSON: a list of target names, or of objects ``{"target", "portal" | "portals", "lun" |
"luns", "iface", "volume_id"}``, optionally under a top-level ``"desired"`` key.

An entry with a portal keeps that target only on that portal; with LUNs, a session of the
target stays but its other LUNs' devices go (shared targets are never logged out while a
desired LUN uses them). ``volume_id`` keeps the connector attachment of that name.

>>> [str(e) for e in parse_desired("iqn.2026-11.x:a 10.0.0.1 lun=2\\n", "f")]
['iqn.2026-11.x:a 10.0.0.1:3260 lun=2']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from iscsikit.errors import InvalidNameError, UsageError
from iscsikit.names import Portal, validate_iface_name


@dataclass(frozen=True, slots=True)
class DesiredEntry:
    """One thing that must stay; ``target`` may be a glob. None fields match anything."""

    target: str
    portal: Portal | None = None
    luns: frozenset[int] | None = None
    iface: str | None = None
    volume_id: str | None = None

    def matches(self, target: str, portal: Portal | None = None, iface: str | None = None) -> bool:
        """Whether a session/record of ``target`` on ``portal`` via ``iface`` is desired."""
        if target != self.target and not fnmatchcase(target, self.target):
            return False
        if self.portal is not None and portal is not None and not self.portal.matches(portal):
            return False
        return self.iface is None or iface is None or iface == self.iface

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "portal": None if self.portal is None else str(self.portal),
            "luns": None if self.luns is None else sorted(self.luns),
            "iface": self.iface,
            "volume_id": self.volume_id,
        }

    def __str__(self) -> str:
        parts = [self.target]
        if self.portal is not None:
            parts.append(str(self.portal))
        if self.luns is not None:
            parts.append("lun=" + ",".join(str(n) for n in sorted(self.luns)))
        if self.iface is not None:
            parts.append(f"iface={self.iface}")
        if self.volume_id is not None:
            parts.append(f"volume={self.volume_id}")
        return " ".join(parts)


def load_desired(path: str | Path) -> tuple[DesiredEntry, ...]:
    """Read a desired list from a file (``-`` is stdin); errors name the file and line."""
    import sys

    where = "<stdin>" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"--desired {where}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--desired {where}: not a text file ({exc.reason})") from None
    return parse_desired(text, where)


def parse_desired(text: str, where: str = "<desired>") -> tuple[DesiredEntry, ...]:
    """Parse either form (JSON when the first non-blank character is ``[`` or ``{``)."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        return _parse_json(text, where)
    return _parse_text(text, where)


def _parse_text(text: str, where: str) -> tuple[DesiredEntry, ...]:
    out: list[DesiredEntry] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        fields: dict[str, Any] = {"target": words[0]}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep:
                if "portal" in fields:
                    raise UsageError(f"{where}:{lineno}: a second portal {word!r}; write one entry per portal")
                fields["portal"] = word
            elif key in ("lun", "luns"):
                fields["luns"] = value.split(",")
            elif key in ("iface", "volume", "volume_id", "portal"):
                fields["volume_id" if key == "volume" else key] = value
            else:
                raise UsageError(f"{where}:{lineno}: unknown field {key!r} (use lun=, iface=, volume=)")
        out.append(_entry(fields, f"{where}:{lineno}"))
    return tuple(out)


def _parse_json(text: str, where: str) -> tuple[DesiredEntry, ...]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict):
        if set(data) - {"desired", "targets"} or len(data) != 1:
            raise UsageError(f"{where}: a JSON object must have exactly one key, 'desired' (a list)")
        data = next(iter(data.values()))
    if not isinstance(data, list):
        raise UsageError(f"{where}: expected a JSON list of targets or entries")
    out: list[DesiredEntry] = []
    for i, item in enumerate(data):
        here = f"{where}: entry {i}"
        if isinstance(item, str):
            out.append(_entry({"target": item}, here))
            continue
        if not isinstance(item, dict):
            raise UsageError(f"{here}: expected a target name or an object, got {type(item).__name__}")
        unknown = set(item) - {"target", "portal", "portals", "lun", "luns", "iface", "volume_id"}
        if unknown:
            raise UsageError(f"{here}: unknown keys {sorted(unknown)}")
        portals = item.get("portals", [item["portal"]] if "portal" in item else [None])
        if not isinstance(portals, list) or not portals:
            raise UsageError(f"{here}: 'portals' must be a non-empty list")
        luns = item.get("luns", [item["lun"]] if "lun" in item else None)
        for portal in portals:
            fields = {k: item[k] for k in ("target", "iface", "volume_id") if k in item}
            fields["portal"] = portal
            fields["luns"] = luns
            out.append(_entry(fields, here))
    return tuple(out)


def _entry(fields: dict[str, Any], here: str) -> DesiredEntry:
    target = fields.get("target")
    if not isinstance(target, str) or not target.strip():
        raise UsageError(f"{here}: an entry needs a target name")
    portal = None
    if fields.get("portal") is not None:
        try:
            portal = Portal.parse(str(fields["portal"]))
        except InvalidNameError as exc:
            raise UsageError(f"{here}: {exc}") from None
    luns = None
    if fields.get("luns") is not None:
        raw = fields["luns"]
        values = raw if isinstance(raw, list) else [raw]
        try:
            parsed = [int(v) for v in values]
        except (TypeError, ValueError):
            raise UsageError(f"{here}: LUNs must be whole numbers, got {raw!r}") from None
        if any(n < 0 or n > 0xFFFF for n in parsed):
            raise UsageError(f"{here}: LUNs are 0-65535, got {raw!r}")
        luns = frozenset(parsed)
    iface = fields.get("iface")
    if iface is not None:
        try:
            iface = validate_iface_name(str(iface))
        except InvalidNameError as exc:
            raise UsageError(f"{here}: {exc}") from None
    volume = fields.get("volume_id")
    return DesiredEntry(target.strip(), portal, luns, iface, None if volume is None else str(volume))


__all__ = ["DesiredEntry", "load_desired", "parse_desired"]
