"""Exact copies of DB entries (files, directories, links) for backups and restores.

A :class:`Snapshot` is a list of entries relative to the DB root, with modes, bytes and
link targets, in an order that can be replayed (directories before what they contain).
``clean --backup`` writes them into a tarball with :func:`add_to_tar`; ``restore`` reads
them back with :func:`from_tar` and hands them to ``Database.restore``.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from typing import Any, Literal

EntryType = Literal["dir", "file", "link"]


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """One DB entry: ``relpath`` under the root, its type, mode, content or link target."""

    relpath: str
    type: EntryType
    mode: int
    data: bytes = b""
    target: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.relpath, "type": self.type, "mode": oct(self.mode)}
        if self.type == "link":
            out["target"] = self.target
        elif self.type == "file":
            out["size"] = len(self.data)
        return out


@dataclass(slots=True)
class Snapshot:
    """The entries that make up one or more records, deduplicated, replay order kept."""

    entries: list[SnapshotEntry] = field(default_factory=list)

    def add(self, entry: SnapshotEntry) -> None:
        if all(e.relpath != entry.relpath for e in self.entries):
            self.entries.append(entry)

    def extend(self, other: Snapshot) -> None:
        for entry in other.entries:
            self.add(entry)

    def paths(self) -> list[str]:
        return [e.relpath for e in self.entries]

    def ordered(self) -> list[SnapshotEntry]:
        """Directories first (shallow to deep), then files, then links."""
        rank = {"dir": 0, "file": 1, "link": 2}
        return sorted(self.entries, key=lambda e: (rank[e.type], e.relpath.count("/"), e.relpath))

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.ordered()]


def add_to_tar(tar: tarfile.TarFile, snapshot: Snapshot, prefix: str = "") -> None:
    """Write the snapshot's entries into an open tarball (root-relative names under ``prefix``)."""
    for entry in snapshot.ordered():
        info = tarfile.TarInfo(prefix + entry.relpath)
        info.mode = entry.mode
        if entry.type == "dir":
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif entry.type == "link":
            info.type = tarfile.SYMTYPE
            info.linkname = entry.target
            tar.addfile(info)
        else:
            info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data))


def from_tar(tar: tarfile.TarFile, prefix: str = "") -> Snapshot:
    """Read back what :func:`add_to_tar` wrote (entries outside ``prefix`` are ignored)."""
    snap = Snapshot()
    for info in tar.getmembers():
        if not info.name.startswith(prefix):
            continue
        rel = info.name[len(prefix) :]
        if info.isdir():
            snap.add(SnapshotEntry(rel, "dir", info.mode))
        elif info.issym():
            snap.add(SnapshotEntry(rel, "link", 0o777, target=info.linkname))
        elif info.isfile():
            f = tar.extractfile(info)
            snap.add(SnapshotEntry(rel, "file", info.mode, f.read() if f else b""))
    return snap
