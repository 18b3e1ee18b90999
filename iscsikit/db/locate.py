"""Find open-iscsi's DB root: ``/etc/iscsi`` (Debian, Ubuntu) or ``/var/lib/iscsi`` (RHEL, SUSE, Arch,
upstream >= 2.1.9).

iscsiadm has the path compiled in and no way to ask it, so, in order:

1. the explicit choice (``--db-root`` / config), then ``$ISCSIKIT_DB_ROOT``;
2. the path compiled into the ``iscsiadm`` binary (its ``.../nodes`` string);
3. the candidate directory that already holds records;
4. the distribution (``/etc/os-release``).

Example::

    >>> locate_db_root("/srv/iscsi-db").reason
    'given'
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from iscsikit.errors import DatabaseError

if TYPE_CHECKING:
    from iscsikit.runner import Runner

ENV_VAR: Final = "ISCSIKIT_DB_ROOT"
DEBIAN_ROOT: Final = Path("/etc/iscsi")
UPSTREAM_ROOT: Final = Path("/var/lib/iscsi")
CANDIDATES: Final = (DEBIAN_ROOT, UPSTREAM_ROOT)
_RECORD_DIRS: Final = ("nodes", "send_targets", "static", "isns", "fw", "ifaces")
_BINARIES: Final = ("/usr/sbin/iscsiadm", "/sbin/iscsiadm", "/usr/bin/iscsiadm")
_NODES_RE: Final = re.compile(rb"(/[\x21-\x7e]*?)/nodes\x00")
_DEBIAN_LIKE: Final = ("debian", "ubuntu")
_UPSTREAM_LIKE: Final = ("rhel", "fedora", "centos", "rocky", "almalinux", "suse", "opensuse", "sles", "arch")


@dataclass(frozen=True, slots=True)
class DbRootLocation:
    """Where the DB is, and how that was decided (``source`` and a sentence for ``doctor``)."""

    path: Path
    source: str  # "given" | "environment" | "iscsiadm" | "records" | "distribution"
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"path": str(self.path), "source": self.source, "reason": self.reason}


def locate_db_root(
    explicit: str | os.PathLike[str] | None = None,
    *,
    runner: Runner | None = None,
    candidates: tuple[Path, ...] = CANDIDATES,
    os_release: Path = Path("/etc/os-release"),
) -> DbRootLocation:
    """Decide the DB root; raise :class:`~iscsikit.errors.DatabaseError` if nothing tells."""
    if explicit is not None and str(explicit):
        return DbRootLocation(Path(explicit), "given", "given")
    env = os.environ.get(ENV_VAR)
    if env:
        return DbRootLocation(Path(env), "environment", f"from ${ENV_VAR}")
    compiled = compiled_db_root(runner)
    if compiled is not None:
        path, binary = compiled
        return DbRootLocation(path, "iscsiadm", f"compiled into {binary}")
    with_records = [c for c in candidates if _has_records(c)]
    if len(with_records) == 1:
        return DbRootLocation(with_records[0], "records", f"the only one of {_names(candidates)} with records")
    distro = _distribution_root(os_release)
    if distro is not None:
        path, name = distro
        return DbRootLocation(path, "distribution", f"the {name} default")
    if with_records:
        raise DatabaseError(
            f"both {_names(with_records)} hold open-iscsi records and iscsiadm cannot be asked which it uses; "
            "pass --db-root"
        )
    raise DatabaseError("cannot tell where open-iscsi keeps its database (no iscsiadm found); pass --db-root")


def _names(paths: tuple[Path, ...] | list[Path]) -> str:
    return " and ".join(str(p) for p in paths)


def _has_records(root: Path) -> bool:
    for sub in _RECORD_DIRS:
        try:
            with os.scandir(root / sub) as it:
                if any(True for _ in it):
                    return True
        except OSError:
            continue
    return False


def compiled_db_root(runner: Runner | None = None) -> tuple[Path, str] | None:
    """The DB root compiled into iscsiadm (its ``ISCSI_DB_ROOT"/nodes"`` string), if found.

    With a runner, the binary is looked up where that runner runs commands (``chroot:DIR``,
    or iscsid's mount namespace for ``ns``), through :meth:`Runner.host_path`.
    """
    for binary, visible in _candidate_binaries(runner):
        try:
            data = visible.read_bytes()
        except OSError:
            continue
        found = _root_from_binary(data)
        if found is not None:
            return found, binary
    return None


def _candidate_binaries(runner: Runner | None) -> list[tuple[str, Path]]:
    names: list[str] = []
    if runner is None or runner.host.kind == "local":
        which = shutil.which("iscsiadm", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if which:
            names.append(os.path.realpath(which))
    names.extend(_BINARIES)
    out: list[tuple[str, Path]] = []
    for name in names:
        visible = Path(name) if runner is None else runner.host_path(name)
        if name not in [n for n, _ in out] and visible.is_file():
            out.append((name, visible))
    return out


def _root_from_binary(data: bytes) -> Path | None:
    for m in _NODES_RE.finditer(data):
        root = m.group(1)
        # The DB root is the one whose "nodes" sits next to "send_targets" in the binary.
        if root + b"/send_targets\x00" in data:
            return Path(root.decode("ascii"))
    return None


def _distribution_root(os_release: Path) -> tuple[Path, str] | None:
    try:
        text = os_release.read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    ids = [fields.get("ID", "").lower(), *fields.get("ID_LIKE", "").lower().split()]
    name = fields.get("PRETTY_NAME", fields.get("ID", "this distribution")) or "this distribution"
    for ident in ids:
        if ident in _DEBIAN_LIKE:
            return DEBIAN_ROOT, name
        if ident in _UPSTREAM_LIKE:
            return UPSTREAM_ROOT, name
    return None
