"""Where each record lives in the DB tree, and the fast directory walks that list them.

::

    nodes/<target>/<addr>,<port>,<tpgt>/<iface>        node record (new style)
    nodes/<target>/<addr>,<port>                       node record (old style, tpgt unknown)
    send_targets/<addr>,<port>/st_config               SendTargets discovery record
    send_targets/<addr>,<port>/<t>,<a>,<p>,<tpgt>,<if> link to a node's portal directory
    isns/<addr>,<port>/isns_config                     iSNS server record (+ links likewise)
    static/<t>,<a>,<p>,<tpgt>,<if>, fw/..., isns/...   links (static, iBFT, pre-872 iSNS)
    ifaces/<name>                                      iface record

Listing needs directory names only (``os.scandir``: no stat, no parse), sorted the way
iscsiadm's ``scandir(..., alphasort)`` sorts them. Anything that does not fit the layout is
reported as a :class:`LayoutProblem` instead of stopping the walk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from iscsikit.db.schema import DEFAULT_ISNS_PORT, DEFAULT_ST_PORT, RecordKind
from iscsikit.names import Portal

NODES: Final = "nodes"
SEND_TARGETS: Final = "send_targets"
ISNS_DIR: Final = "isns"
STATIC: Final = "static"
FW: Final = "fw"
IFACES: Final = "ifaces"
ST_CONFIG: Final = "st_config"
ISNS_CONFIG: Final = "isns_config"
#: The two ifaces iscsiadm builds in and never stores.
VIRTUAL_IFACES: Final = ("default", "iser")
#: A file older packages shipped in ifaces/; iscsiadm skips it.
IFACE_EXAMPLE: Final = "iface.example"
#: iscsikit's scratch directory for atomic writes; iscsiadm never looks inside the DB root.
TMP_DIR: Final = ".iscsikit-tmp"


@dataclass(frozen=True, slots=True)
class NodeRef:
    """Where one node record is: target, portal and iface, as the directory names say.

    ``tpgt`` is None for an old-style record (a file ``nodes/<target>/<addr>,<port>``,
    whose iface is always ``default``).
    """

    target: str
    address: str
    port: int
    tpgt: int | None
    iface: str = "default"

    @property
    def old_style(self) -> bool:
        return self.tpgt is None

    @property
    def portal_entry(self) -> str:
        base = f"{self.address},{self.port}"
        return base if self.tpgt is None else f"{base},{self.tpgt}"

    @property
    def target_relpath(self) -> str:
        return f"{NODES}/{self.target}"

    @property
    def portal_relpath(self) -> str:
        """The old-style file, or the new-style portal directory (what links point to)."""
        return f"{NODES}/{self.target}/{self.portal_entry}"

    @property
    def relpath(self) -> str:
        """The record file, relative to the DB root."""
        if self.tpgt is None:
            return self.portal_relpath
        return f"{self.portal_relpath}/{self.iface}"

    @property
    def link_name(self) -> str:
        """The name of a static/discovery link to this record (new style only)."""
        return f"{self.target},{self.address},{self.port},{self.tpgt},{self.iface}"

    @property
    def portal(self) -> Portal:
        return Portal(self.address, self.port, self.tpgt)

    @property
    def host_port(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def sort_key(self) -> tuple[str, str, str]:
        """iscsiadm's listing order: target, portal entry, iface, each byte-sorted."""
        return (self.target, self.portal_entry, "" if self.tpgt is None else self.iface)

    def to_json(self) -> dict[str, Any]:
        """The ``node list`` JSON shape."""
        return {
            "target": self.target,
            "address": self.address,
            "port": self.port,
            "tpgt": self.tpgt,
            "iface": self.iface,
        }

    def __str__(self) -> str:
        tpgt = "" if self.tpgt is None else f",{self.tpgt}"
        return f"{self.target} {self.host_port}{tpgt} iface {self.iface}"


@dataclass(frozen=True, slots=True)
class DiscoveryRef:
    """A SendTargets or iSNS discovery record (``kind`` is SENDTARGETS or ISNS)."""

    kind: RecordKind
    address: str
    port: int
    #: Very old tools wrote ``send_targets/<addr>,<port>`` as a file, not a directory.
    old_style: bool = False

    @property
    def type_name(self) -> str:
        return "sendtargets" if self.kind is RecordKind.SENDTARGETS else "isns"

    @property
    def top(self) -> str:
        return SEND_TARGETS if self.kind is RecordKind.SENDTARGETS else ISNS_DIR

    @property
    def entry(self) -> str:
        return f"{self.address},{self.port}"

    @property
    def dir_relpath(self) -> str:
        return f"{self.top}/{self.entry}"

    @property
    def relpath(self) -> str:
        if self.old_style:
            return self.dir_relpath
        name = ST_CONFIG if self.kind is RecordKind.SENDTARGETS else ISNS_CONFIG
        return f"{self.dir_relpath}/{name}"

    @property
    def host_port(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type_name, "address": self.address, "port": self.port}

    def __str__(self) -> str:
        return f"{self.type_name} {self.host_port}"

    @classmethod
    def parse(cls, portal: str, kind: RecordKind = RecordKind.SENDTARGETS) -> DiscoveryRef:
        """From a user's ``ADDR[:PORT]`` (port defaults to 3260, or 3205 for iSNS)."""
        default = DEFAULT_ST_PORT if kind is RecordKind.SENDTARGETS else DEFAULT_ISNS_PORT
        p = Portal.parse(portal, default_port=default)
        return cls(kind, p.address, p.port)


@dataclass(frozen=True, slots=True)
class IfaceRef:
    """An iface record: ``ifaces/<name>``, or one of the built-in ``default`` and ``iser``."""

    name: str

    @property
    def virtual(self) -> bool:
        return self.name in VIRTUAL_IFACES

    @property
    def relpath(self) -> str:
        return f"{IFACES}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "builtin": self.virtual}

    def __str__(self) -> str:
        return f"iface {self.name}"


@dataclass(frozen=True, slots=True)
class LinkRef:
    """A symlink from a discovery source (static, fw, a SendTargets or iSNS server) to a node.

    ``node`` is parsed from the link name (None if malformed); ``points_to`` is the raw
    link target (an absolute path in iscsiadm's own view of the DB root).
    """

    relpath: str
    source: str  # "static" | "fw" | "sendtargets" | "isns"
    node: NodeRef | None
    points_to: str
    discovery: DiscoveryRef | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.relpath,
            "source": self.source,
            "node": None if self.node is None else self.node.to_json(),
            "points_to": self.points_to,
        }


@dataclass(frozen=True, slots=True)
class LayoutProblem:
    """A DB entry that does not fit the layout (it is skipped, and reported)."""

    relpath: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.relpath, "message": self.message}

    def __str__(self) -> str:
        return f"{self.relpath}: {self.message}"


# --------------------------------------------------------------------------------------
# Name parsing (light: listings of 10,000 records must stay fast)


def _int(text: str) -> int | None:
    if text.isascii() and (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
        return int(text)
    return None


def parse_portal_entry(name: str) -> tuple[str, int, int | None] | None:
    """``addr,port`` or ``addr,port,tpgt`` -> (address, port, tpgt or None); None if malformed."""
    parts = name.split(",")
    if len(parts) not in (2, 3) or not parts[0]:
        return None
    port = _int(parts[1])
    if port is None:
        return None
    if len(parts) == 2:
        return parts[0], port, None
    tpgt = _int(parts[2])
    if tpgt is None:
        return None
    return parts[0], port, tpgt


def parse_link_name(name: str) -> NodeRef | None:
    """``target,addr,port,tpgt,iface`` (iscsiadm's ``get_params_from_disc_link``)."""
    parts = name.split(",", 4)
    if len(parts) != 5 or not all(parts[:2]) or not parts[4]:
        return None
    port, tpgt = _int(parts[2]), _int(parts[3])
    if port is None or tpgt is None:
        return None
    return NodeRef(parts[0], parts[1], port, tpgt, parts[4])


def parse_discovery_entry(name: str) -> tuple[str, int] | None:
    """A discovery directory name ``addr,port``; None for anything else (e.g. pre-872 links)."""
    address, sep, port_text = name.partition(",")
    if not sep or not address:
        return None
    port = _int(port_text)
    if port is None:
        return None
    return address, port


# --------------------------------------------------------------------------------------
# Selection (shared by Database and the fast `node list`, which needs nothing else)


def is_glob(text: str) -> bool:
    return any(c in "*?[" for c in text)


def same_address(a: str, b: str) -> bool:
    """Equal addresses: as strings, as IP addresses (``2001:db8::1`` = ``2001:0db8::1``), or as host names."""
    if a == b:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(a.split("%", 1)[0]) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return a.lower().rstrip(".") == b.lower().rstrip(".")


def as_portal(portal: str | Portal | None, default_port: int = DEFAULT_ST_PORT) -> Portal | None:
    if portal is None or isinstance(portal, Portal):
        return portal
    return Portal.parse(portal, default_port=default_port)


def filter_nodes(refs: list[NodeRef], portal: str | Portal | None = None, iface: str | None = None) -> list[NodeRef]:
    """Keep refs on ``portal`` (``ADDR[:PORT][,TPGT]``: port 3260 if omitted, any tpgt if
    omitted, a given tpgt must match) and on ``iface``."""
    p = as_portal(portal)
    if p is not None:
        refs = [
            r
            for r in refs
            if r.port == p.port and (p.tpgt is None or r.tpgt == p.tpgt) and same_address(r.address, p.address)
        ]
    if iface is not None:
        refs = [r for r in refs if r.iface == iface]
    return refs


def select_nodes(root: Path, target: str | None = None) -> NodeScan:
    """:func:`scan_nodes` limited to ``target`` (a name, or a glob such as ``iqn.2026-11.x:*``)."""
    if target is not None and not is_glob(target):
        return scan_nodes(root, [target])
    scan = scan_nodes(root)
    if target is not None:
        from fnmatch import fnmatchcase

        scan.nodes = [r for r in scan.nodes if fnmatchcase(r.target, target)]
    return scan


# --------------------------------------------------------------------------------------
# Walks


def _sorted_entries(path: Path | str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        entries = list(it)
    entries.sort(key=lambda e: e.name)
    return entries


@dataclass(slots=True)
class NodeScan:
    """Result of :func:`scan_nodes`: the records found and what did not fit."""

    nodes: list[NodeRef] = field(default_factory=list)
    problems: list[LayoutProblem] = field(default_factory=list)


def scan_nodes(root: Path, targets: Iterable[str] | None = None) -> NodeScan:
    """Every node record under ``root/nodes`` from directory names alone, in iscsiadm's order.

    ``targets`` limits the walk to those target directories (missing ones are skipped).
    """
    out = NodeScan()
    nodes_dir = root / NODES
    if targets is None:
        try:
            target_entries = [e for e in _sorted_entries(nodes_dir)]
        except FileNotFoundError:
            return out
        except OSError as exc:
            out.problems.append(LayoutProblem(NODES, f"cannot read: {exc.strerror}"))
            return out
        names = [(e.name, e.is_dir()) for e in target_entries]
    else:
        names = [(t, os.path.isdir(nodes_dir / t)) for t in sorted(set(targets)) if os.path.lexists(nodes_dir / t)]
    append = out.nodes.append
    nodes_text = str(nodes_dir)
    # Plain listdir and names, not DirEntry objects: this walks 10,000 records. A portal entry
    # with a tpgt must be a directory (listing it proves it); one without must be a file.
    for target, is_dir in names:
        if not is_dir:
            out.problems.append(LayoutProblem(f"{NODES}/{target}", "not a directory; a target must be one"))
            continue
        tdir = f"{nodes_text}/{target}"
        try:
            portals = sorted(os.listdir(tdir))
        except OSError as exc:
            out.problems.append(LayoutProblem(f"{NODES}/{target}", f"cannot read: {exc.strerror}"))
            continue
        for name in portals:
            parsed = parse_portal_entry(name)
            if parsed is None:
                out.problems.append(LayoutProblem(f"{NODES}/{target}/{name}", "not a portal entry ADDR,PORT[,TPGT]"))
                continue
            address, port, tpgt = parsed
            if tpgt is None:
                if os.path.isdir(f"{tdir}/{name}"):
                    out.problems.append(
                        LayoutProblem(f"{NODES}/{target}/{name}", "a directory without a tpgt in its name")
                    )
                else:
                    append(NodeRef(target, address, port, None, "default"))
                continue
            try:
                ifaces = sorted(os.listdir(f"{tdir}/{name}"))
            except NotADirectoryError:
                out.problems.append(
                    LayoutProblem(f"{NODES}/{target}/{name}", "a file with a tpgt in its name (expected a directory)")
                )
                continue
            except OSError as exc:
                out.problems.append(LayoutProblem(f"{NODES}/{target}/{name}", f"cannot read: {exc.strerror}"))
                continue
            for iname in ifaces:
                append(NodeRef(target, address, port, tpgt, iname))
    return out


@dataclass(slots=True)
class DiscoveryScan:
    records: list[DiscoveryRef] = field(default_factory=list)
    links: list[LinkRef] = field(default_factory=list)
    problems: list[LayoutProblem] = field(default_factory=list)


def _read_link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def scan_discovery(
    root: Path, kinds: tuple[RecordKind, ...] = (RecordKind.SENDTARGETS, RecordKind.ISNS)
) -> DiscoveryScan:
    """Discovery records (and the node links inside their directories), byte-sorted."""
    out = DiscoveryScan()
    for kind in kinds:
        top = SEND_TARGETS if kind is RecordKind.SENDTARGETS else ISNS_DIR
        config = ST_CONFIG if kind is RecordKind.SENDTARGETS else ISNS_CONFIG
        try:
            entries = _sorted_entries(root / top)
        except FileNotFoundError:
            continue
        except OSError as exc:
            out.problems.append(LayoutProblem(top, f"cannot read: {exc.strerror}"))
            continue
        for ent in entries:
            rel = f"{top}/{ent.name}"
            if ent.is_symlink():
                node = parse_link_name(ent.name)
                if kind is RecordKind.ISNS and node is not None:
                    out.links.append(LinkRef(rel, "isns", node, _read_link(ent.path)))
                else:
                    out.problems.append(LayoutProblem(rel, "an unexpected symlink"))
                continue
            parsed = parse_discovery_entry(ent.name)
            if parsed is None or ":" in ent.name.partition(",")[2] or "." in ent.name.partition(",")[2]:
                out.problems.append(LayoutProblem(rel, "not a discovery entry ADDR,PORT"))
                continue
            address, port = parsed
            if ent.is_file():
                out.records.append(DiscoveryRef(kind, address, port, old_style=True))
                continue
            if not ent.is_dir():
                out.problems.append(LayoutProblem(rel, "neither a file nor a directory"))
                continue
            ref = DiscoveryRef(kind, address, port)
            has_config = False
            try:
                inner = _sorted_entries(Path(ent.path))
            except OSError as exc:
                out.problems.append(LayoutProblem(rel, f"cannot read: {exc.strerror}"))
                continue
            for ient in inner:
                irel = f"{rel}/{ient.name}"
                if ient.name == config and not ient.is_symlink():
                    has_config = True
                    continue
                if ient.is_symlink():
                    node = parse_link_name(ient.name)
                    if node is None:
                        out.problems.append(LayoutProblem(irel, "a link whose name is not TARGET,ADDR,PORT,TPGT,IFACE"))
                    else:
                        out.links.append(LinkRef(irel, ref.type_name, node, _read_link(ient.path), ref))
                else:
                    out.problems.append(LayoutProblem(irel, "an unexpected entry"))
            if has_config:
                out.records.append(ref)
            else:
                out.problems.append(LayoutProblem(rel, f"a discovery directory without {config}"))
    return out


def scan_links(root: Path, source: str) -> tuple[list[LinkRef], list[LayoutProblem]]:
    """The links in ``static/`` or ``fw/``."""
    links: list[LinkRef] = []
    problems: list[LayoutProblem] = []
    try:
        entries = _sorted_entries(root / source)
    except FileNotFoundError:
        return links, problems
    except OSError as exc:
        return links, [LayoutProblem(source, f"cannot read: {exc.strerror}")]
    for ent in entries:
        rel = f"{source}/{ent.name}"
        node = parse_link_name(ent.name)
        if not ent.is_symlink() or node is None:
            problems.append(LayoutProblem(rel, "not a link named TARGET,ADDR,PORT,TPGT,IFACE"))
            continue
        links.append(LinkRef(rel, source, node, _read_link(ent.path)))
    return links, problems


def scan_ifaces(root: Path) -> tuple[list[IfaceRef], list[LayoutProblem]]:
    """Stored ifaces (byte-sorted, ``iface.example`` skipped); the built-ins are not included."""
    refs: list[IfaceRef] = []
    problems: list[LayoutProblem] = []
    try:
        entries = _sorted_entries(root / IFACES)
    except FileNotFoundError:
        return refs, problems
    except OSError as exc:
        return refs, [LayoutProblem(IFACES, f"cannot read: {exc.strerror}")]
    for ent in entries:
        if ent.name == IFACE_EXAMPLE:
            continue
        if not ent.is_file():
            problems.append(LayoutProblem(f"{IFACES}/{ent.name}", "not a regular file"))
            continue
        if len(ent.name) > 64:
            problems.append(LayoutProblem(f"{IFACES}/{ent.name}", "iface names are at most 64 characters"))
            continue
        refs.append(IfaceRef(ent.name))
    return refs, problems
