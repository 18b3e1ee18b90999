"""open-iscsi's persistent database, read and written exactly as iscsiadm 2.1.8 does.

See docs/database.md. The entry point is :class:`~iscsikit.db.database.Database`::

    from iscsikit.db import Database
    db = Database()                       # detected root (/etc/iscsi or /var/lib/iscsi)
    refs = db.nodes("iqn.2026-11.example:*")

Submodules import lazily, so ``import iscsikit.db.layout`` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iscsikit.db.database import Database
    from iscsikit.db.layout import DiscoveryRef, IfaceRef, NodeRef
    from iscsikit.db.lock import DbLock
    from iscsikit.db.record import Issue, Record, format_record, parse_record
    from iscsikit.db.schema import RecordKind

_EXPORTS = {
    "Database": "iscsikit.db.database",
    "NodeRef": "iscsikit.db.layout",
    "DiscoveryRef": "iscsikit.db.layout",
    "IfaceRef": "iscsikit.db.layout",
    "DbLock": "iscsikit.db.lock",
    "Issue": "iscsikit.db.record",
    "Record": "iscsikit.db.record",
    "parse_record": "iscsikit.db.record",
    "format_record": "iscsikit.db.record",
    "RecordKind": "iscsikit.db.schema",
}

__all__ = [
    "Database",
    "DbLock",
    "DiscoveryRef",
    "IfaceRef",
    "Issue",
    "NodeRef",
    "Record",
    "RecordKind",
    "format_record",
    "parse_record",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'iscsikit.db' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
