"""Typed views of node, discovery and iface records, and the results of write operations.

Each view wraps a parsed :class:`~iscsikit.db.record.Record` (every raw key, in order) and
adds properties for the settings people change most. Typed values are what iscsiadm and
iscsid actually use (:meth:`Record.value`), not the raw text::

    >>> from iscsikit.db.record import parse_record
    >>> from iscsikit.db.layout import NodeRef
    >>> ref = NodeRef("iqn.2026-11.test:a", "10.0.0.1", 3260, 1)
    >>> node = NodeRecord(ref, parse_record("node.conn[0].timeo.login_timeout = 15\\n", "f", RecordKind.NODE))
    >>> node.login_timeout, node.startup, node.chap_algs
    (15, 'manual', ['MD5'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from iscsikit.db.layout import DiscoveryRef, IfaceRef, LayoutProblem, NodeRef
from iscsikit.db.record import Issue, Record
from iscsikit.db.schema import RecordKind

_json_str = json.encoder.encode_basestring_ascii


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class Chap:
    """CHAP settings of a node or SendTargets record (secrets in clear: do not log)."""

    method: str
    username: str
    password: str
    username_in: str
    password_in: str
    algorithms: list[str]

    @property
    def enabled(self) -> bool:
        return self.method == "CHAP"

    @property
    def mutual(self) -> bool:
        return bool(self.username_in)


class _View:
    """Shared by the three views: raw access, problems, settings."""

    record: Record

    @property
    def path(self) -> str:
        return self.record.path

    @property
    def problems(self) -> list[Issue]:
        return self.record.issues

    @property
    def ok(self) -> bool:
        """True when iscsiadm 2.1.8 would read this record (no ``error`` problems)."""
        return self.record.ok

    def get(self, key: str, default: str | None = None) -> str | None:
        """The raw value written in the file (None if absent)."""
        value = self.record.raw(key)
        return default if value is None else value

    def value(self, key: str) -> str:
        """The value iscsiadm uses (defaults filled in)."""
        return self.record.value(key)

    def settings(self, show_secrets: bool = False) -> dict[str, str]:
        """Every key as ``iscsiadm -o show`` prints it."""
        return self.record.settings(show_secrets)

    def _problems_json(self) -> list[dict[str, object]]:
        return [i.to_json() for i in self.record.issues]


@dataclass(slots=True)
class NodeRecord(_View):
    """A node record: where it is (``ref``) and what it says (``record``)."""

    ref: NodeRef
    record: Record

    # identity (from the path, which is how iscsiadm finds it)
    @property
    def target(self) -> str:
        return self.ref.target

    @property
    def address(self) -> str:
        return self.ref.address

    @property
    def port(self) -> int:
        return self.ref.port

    @property
    def tpgt(self) -> int | None:
        return self.ref.tpgt

    @property
    def iface(self) -> str:
        return self.ref.iface

    # common settings
    @property
    def startup(self) -> str:
        return self.value("node.startup")

    @property
    def conn_startup(self) -> str:
        return self.value("node.conn[0].startup")

    @property
    def transport(self) -> str:
        return self.value("iface.transport_name")

    @property
    def initiator_name(self) -> str:
        return self.value("iface.initiatorname")

    @property
    def discovery_type(self) -> str:
        return self.value("node.discovery_type")

    @property
    def discovery_address(self) -> str:
        return self.value("node.discovery_address")

    @property
    def discovery_port(self) -> int:
        return _int(self.value("node.discovery_port"))

    @property
    def chap(self) -> Chap:
        v = self.value
        return Chap(
            v("node.session.auth.authmethod"),
            v("node.session.auth.username"),
            v("node.session.auth.password"),
            v("node.session.auth.username_in"),
            v("node.session.auth.password_in"),
            [a for a in v("node.session.auth.chap_algs").split(",") if a],
        )

    @property
    def chap_algs(self) -> list[str]:
        return self.chap.algorithms

    @property
    def login_timeout(self) -> int:
        return _int(self.value("node.conn[0].timeo.login_timeout"))

    @property
    def replacement_timeout(self) -> int:
        return _int(self.value("node.session.timeo.replacement_timeout"))

    @property
    def noop_out_interval(self) -> int:
        return _int(self.value("node.conn[0].timeo.noop_out_interval"))

    @property
    def noop_out_timeout(self) -> int:
        return _int(self.value("node.conn[0].timeo.noop_out_timeout"))

    @property
    def header_digest(self) -> str:
        return self.value("node.conn[0].iscsi.HeaderDigest")

    @property
    def data_digest(self) -> str:
        return self.value("node.conn[0].iscsi.DataDigest")

    @property
    def nr_sessions(self) -> int:
        return _int(self.value("node.session.nr_sessions"))

    def to_json_text(self, show_secrets: bool = False) -> str:
        """``json.dumps(self.to_json(show_secrets))``, faster (see Record.settings_json)."""
        ref = self.ref
        tpgt = "null" if ref.tpgt is None else str(ref.tpgt)
        head = (
            f'{{"target": {_json_str(ref.target)}, "address": {_json_str(ref.address)}, "port": {ref.port}, '
            f'"tpgt": {tpgt}, "iface": {_json_str(ref.iface)}'
        )
        tail = f', "problems": {json.dumps(self._problems_json())}' if self.record.issues else ""
        return f'{head}, "settings": {self.record.settings_json(show_secrets)}{tail}}}'

    def to_json(self, show_secrets: bool = False) -> dict[str, Any]:
        """The ``node show`` JSON shape (``problems`` only when there are any)."""
        out: dict[str, Any] = self.ref.to_json()
        out["settings"] = self.settings(show_secrets)
        if self.record.issues:
            out["problems"] = self._problems_json()
        return out


@dataclass(slots=True)
class DiscoveryRecord(_View):
    """A SendTargets (``st_config``) or iSNS (``isns_config``) discovery record."""

    ref: DiscoveryRef
    record: Record
    links: list[NodeRef] = field(default_factory=list)

    @property
    def kind(self) -> RecordKind:
        return self.ref.kind

    @property
    def address(self) -> str:
        return self.ref.address

    @property
    def port(self) -> int:
        return self.ref.port

    @property
    def startup(self) -> str:
        return self.value("discovery.startup")

    @property
    def chap(self) -> Chap | None:
        if self.ref.kind is not RecordKind.SENDTARGETS:
            return None
        v = self.value
        return Chap(
            v("discovery.sendtargets.auth.authmethod"),
            v("discovery.sendtargets.auth.username"),
            v("discovery.sendtargets.auth.password"),
            v("discovery.sendtargets.auth.username_in"),
            v("discovery.sendtargets.auth.password_in"),
            [a for a in v("node.session.auth.chap_algs").split(",") if a],
        )

    def to_json(self, show_secrets: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = self.ref.to_json()
        out["settings"] = self.settings(show_secrets)
        out["nodes"] = [n.to_json() for n in self.links]
        if self.record.issues:
            out["problems"] = self._problems_json()
        return out


@dataclass(slots=True)
class IfaceRecord(_View):
    """An iface record (``ifaces/<name>``, or the built-in ``default``/``iser``)."""

    ref: IfaceRef
    record: Record

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def builtin(self) -> bool:
        return self.ref.virtual

    @property
    def transport(self) -> str:
        return self.value("iface.transport_name")

    @property
    def hwaddress(self) -> str:
        return self.value("iface.hwaddress")

    @property
    def ipaddress(self) -> str:
        return self.value("iface.ipaddress")

    @property
    def netdev(self) -> str:
        return self.value("iface.net_ifacename")

    @property
    def initiator_name(self) -> str:
        return self.value("iface.initiatorname")

    def summary(self) -> dict[str, Any]:
        """The ``iface list`` JSON shape (the fields ``iscsiadm -m iface`` prints)."""
        return {
            "name": self.name,
            "transport": self.transport,
            "hwaddress": self.hwaddress or None,
            "ipaddress": self.ipaddress or None,
            "netdev": self.netdev or None,
            "initiatorname": self.initiator_name or None,
            "builtin": self.builtin,
        }

    def to_json(self, show_secrets: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "builtin": self.builtin, "settings": self.settings(show_secrets)}
        if self.record.issues:
            out["problems"] = self._problems_json()
        return out


@dataclass(slots=True)
class WriteResult:
    """What a write changed, and what it had to drop or could not do (``warnings``)."""

    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    nodes: list[NodeRef] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "removed": self.removed,
            "nodes": [n.to_json() for n in self.nodes],
            "warnings": self.warnings,
        }


@dataclass(slots=True)
class Inventory:
    """Everything in the DB with its path (for ``clean``, backups and ``doctor``).

    ``dangling`` are links whose node record does not exist; ``problems`` are entries that
    do not fit the layout.
    """

    nodes: list[NodeRef] = field(default_factory=list)
    discoveries: list[DiscoveryRef] = field(default_factory=list)
    ifaces: list[IfaceRef] = field(default_factory=list)
    links: list[Any] = field(default_factory=list)
    dangling: list[Any] = field(default_factory=list)
    problems: list[LayoutProblem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [n.to_json() for n in self.nodes],
            "discoveries": [d.to_json() for d in self.discoveries],
            "ifaces": [i.to_json() for i in self.ifaces],
            "links": [link.to_json() for link in self.links],
            "dangling": [link.to_json() for link in self.dangling],
            "problems": [p.to_json() for p in self.problems],
        }
