"""Who uses a block device: mounts (in every mount namespace), swap, and open file descriptors.

``clean`` must never pull a disk from under a user, and must say who the user is. The
kernel shows three kinds, all read here under a configurable proc root (the host's /proc
when iscsikit runs in a container):

* **mounts**: ``<proc>/<pid>/mountinfo`` once per mount namespace (containers mount volumes
  in their own namespaces); matched by ``major:minor``, or by the mount source for
  filesystems that report an anonymous device number (btrfs);
* **swap**: ``<proc>/swaps``;
* **open**: ``<proc>/<pid>/fd/*`` of every process, matched by the device number the link
  resolves to (``stat``), or by its ``/dev/<name>`` path where it cannot be resolved
  (a container's /dev). No ``lsof`` needed.

Holders (dm, md stacked on the disk) come from sysfs and are the caller's business.

>>> UsageScanner("/nonexistent").scan({"8:16": "sdb"})
{}
"""

from __future__ import annotations

import os
import re
import stat
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from iscsikit.clean.model import Usage

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class UsageScanner:
    """Scans ``proc_root`` (default ``/proc``) for users of given devices."""

    def __init__(self, proc_root: str | os.PathLike[str] = "/proc") -> None:
        self.proc = Path(proc_root)

    def _pids(self) -> list[str]:
        try:
            return sorted((n for n in os.listdir(self.proc) if n.isdigit()), key=int)
        except OSError:
            return []

    def _self_pid(self) -> str | None:
        try:
            return os.readlink(self.proc / "self")
        except OSError:
            return None

    def scan(self, wanted: Mapping[str, str], aliases: Mapping[str, str] | None = None) -> dict[str, list[Usage]]:
        """Users of each device in ``wanted`` (``"major:minor"`` -> kernel name, e.g. ``"8:16": "sdb"``).

        ``aliases`` maps other names of a device (``mpatha`` for ``/dev/mapper/mpatha``) to its
        ``major:minor``. Returns ``{devnum: [Usage, ...]}`` for the devices that have users.
        """
        if not wanted:
            return {}
        out: dict[str, list[Usage]] = defaultdict(list)
        pids = self._pids()
        by_name = {name: devnum for devnum, name in wanted.items()}
        by_name.update(aliases or {})
        self._mounts(pids, wanted, by_name, out)
        self._swaps(by_name, out)
        self._open_files(pids, wanted, by_name, out)
        return {k: v for k, v in out.items() if v}

    # ---- mounts -------------------------------------------------------------------------

    def _mounts(
        self, pids: list[str], wanted: Mapping[str, str], by_name: Mapping[str, str], out: dict[str, list[Usage]]
    ) -> None:
        namespaces: dict[str, str] = {}
        init_ns = _readlink(self.proc / "1" / "ns" / "mnt")
        for pid in pids:
            ns = _readlink(self.proc / pid / "ns" / "mnt") or f"pid:{pid}"
            namespaces.setdefault(ns, pid)
        if not namespaces and (self.proc / "self" / "mountinfo").exists():
            namespaces["self"] = "self"
        seen: set[tuple[str, str]] = set()
        for ns, pid in namespaces.items():
            try:
                text = (self.proc / pid / "mountinfo").read_text(errors="replace")
            except OSError:
                continue
            where = "" if ns == init_ns or pid in ("1", "self") else f" (mount namespace of pid {pid})"
            for line in text.splitlines():
                fields = line.split()
                if len(fields) < 5:
                    continue
                devnum = fields[2]
                source = ""
                if " - " in line:
                    after = line.split(" - ", 1)[1].split()
                    source = after[1] if len(after) > 1 else ""
                key = devnum if devnum in wanted else by_name.get(os.path.basename(source), "")
                if not key:
                    continue
                point = _unescape(fields[4]) + where
                if (key, point) in seen:
                    continue
                seen.add((key, point))
                out[key].append(Usage("mount", point))

    # ---- swap ---------------------------------------------------------------------------

    def _swaps(self, by_name: Mapping[str, str], out: dict[str, list[Usage]]) -> None:
        try:
            lines = (self.proc / "swaps").read_text().splitlines()[1:]
        except OSError:
            return
        for line in lines:
            fields = line.split()
            if fields and (key := by_name.get(os.path.basename(_unescape(fields[0])))):
                out[key].append(Usage("swap", _unescape(fields[0])))

    # ---- open file descriptors --------------------------------------------------------------

    def _open_files(
        self, pids: list[str], wanted: Mapping[str, str], by_name: Mapping[str, str], out: dict[str, list[Usage]]
    ) -> None:
        me = self._self_pid()
        rdevs = {}
        for devnum in wanted:
            major, _, minor = devnum.partition(":")
            if major.isdigit() and minor.isdigit():
                rdevs[os.makedev(int(major), int(minor))] = devnum
        for pid in pids:
            if pid == me:
                continue
            fd_dir = self.proc / pid / "fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            found: set[str] = set()
            for fd in fds:
                path = fd_dir / fd
                try:
                    target = os.readlink(path)
                except OSError:
                    continue
                if not target.startswith("/dev/"):
                    continue
                key = ""
                try:
                    st = os.stat(path)
                    if stat.S_ISBLK(st.st_mode):
                        key = rdevs.get(st.st_rdev, "")
                except OSError:
                    pass
                if not key:
                    key = by_name.get(os.path.basename(target), "")
                if key:
                    found.add(key)
            if found:
                comm = _read(self.proc / pid / "comm") or "?"
                for key in sorted(found):
                    out[key].append(Usage("open", f"pid {pid} ({comm})"))


def _unescape(text: str) -> str:
    """mountinfo and swaps write space, tab, newline and backslash as ``\\ooo``."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


__all__ = ["UsageScanner"]
