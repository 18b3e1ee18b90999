"""Stable identity of a logical unit: the NAA designator (VPD 0x83) and unit serial (VPD 0x80).

Multipath, ``/dev/disk/by-id`` and every cluster filesystem recognise a disk by these, so they
must not change when the target restarts, and must be the same on every portal of the target.
The identity is a UUID kept in a small JSON file (by default next to the backing file:
``disk.img`` -> ``disk.img.id``), or given in configuration, or derived from a name with
UUIDv5 (for memory LUNs, which have no file to sit next to).

Example::

    >>> ident = LuIdentity.from_name("iqn.2026-11.org.example:disk/1")
    >>> ident.naa.hex()[:7], len(ident.naa)
    ('6000000', 16)
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from iscsikit.errors import ConfigError

__all__ = ["LuIdentity", "identity_path_for"]

#: Namespace of name-derived identities (uuid5 of the DNS name iscsikit.lu.invalid).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "iscsikit.lu.invalid")


def identity_path_for(backing: Path) -> Path:
    """Where the identity of a file-backed LU lives: beside the file, ``<name>.id``."""
    return backing.with_name(backing.name + ".id")


@dataclass(frozen=True, slots=True)
class LuIdentity:
    """A persistent LU identity; everything reported to initiators derives from ``uuid``."""

    uuid: uuid.UUID

    @property
    def naa(self) -> bytes:
        """16-byte NAA 6h (IEEE Registered Extended) designator: company ID 0, 100 bits from the UUID.

        Not NAA 3h (locally assigned): Linux ranks that no higher than the T10 vendor id
        (``designator_prio`` in drivers/scsi/scsi_lib.c) and picks the T10 one for
        ``device/wwid``, so the disk would have no WWN there. NAA 6h outranks it, as with tgt.
        """
        value = (0x6 << 124) | (self.uuid.int & ((1 << 100) - 1))
        return value.to_bytes(16, "big")

    @property
    def serial(self) -> str:
        """Unit serial number (VPD 0x80): the UUID's 32 hex digits."""
        return self.uuid.hex

    @property
    def wwn(self) -> str:
        """How Linux names the disk: ``naa.6...`` (udev builds ``wwn-0x6...`` from it)."""
        return "naa." + self.naa.hex()

    @classmethod
    def from_name(cls, name: str) -> LuIdentity:
        """A deterministic identity derived from a name (e.g. ``<target iqn>/<lun>``)."""
        return cls(uuid.uuid5(_NAMESPACE, name))

    @classmethod
    def parse(cls, text: str, where: str = "identity") -> LuIdentity:
        """Parse a UUID given in configuration (any form ``uuid.UUID`` accepts)."""
        try:
            return cls(uuid.UUID(text.strip()))
        except ValueError:
            raise ConfigError(f"{where}: {text!r} is not a UUID") from None

    @classmethod
    def load(cls, path: Path) -> LuIdentity:
        try:
            doc = json.loads(path.read_text())
            return cls(uuid.UUID(doc["uuid"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: cannot read the LU identity file: {exc}") from None

    @classmethod
    def load_or_create(cls, path: Path) -> LuIdentity:
        """Read the identity at ``path``, creating it (atomically) with a new random UUID."""
        if path.exists():
            return cls.load(path)
        ident = cls(uuid.uuid4())
        try:
            ident.save(path, replace=False)
        except FileExistsError:  # another process created it first: theirs wins
            return cls.load(path)
        return ident

    def save(self, path: Path, *, replace: bool = True) -> None:
        """Write atomically (temp file, fsync, rename or link); never half-written.

        With ``replace=False`` an existing file is kept and :class:`FileExistsError` raised.
        """
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = json.dumps({"uuid": str(self.uuid), "naa": self.naa.hex(), "serial": self.serial}) + "\n"
        try:
            with open(tmp, "x") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as exc:
            raise ConfigError(f"{path}: cannot write the LU identity file: {exc}") from None
        finally:
            try:
                tmp.unlink()
            except OSError:
                pass
