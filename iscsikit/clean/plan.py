"""The planner: a :class:`~iscsikit.clean.model.Survey` and a :class:`Selection` in, ordered
:class:`Action` s out. Pure: no file, process or clock is touched here.

What is chosen
--------------
* **Decommission** (no selector): everything except ``--keep`` targets.
* **Filters** (``--target GLOB``, ``--portal P``; all given filters must match): sessions and
  node records of matching targets/portals, their devices and maps, discovery records whose
  every linked node goes (or at a ``--portal``), dangling links and junk under those targets.
* ``--stale-only``: only sessions failing for at least ``--older-than`` seconds, with their
  devices, maps, node records and the discovery records left without nodes; dead LUNs
  (``offline``/``transport-offline``) of other sessions, orphan SCSI devices, pathless maps,
  dangling links and attachment records whose sessions are all gone. Records without a
  session are *not* stale: they are how ``node.startup = manual`` volumes wait for a login.
* ``--unreachable``: sessions, records and discovery records whose portal did not answer.
* ``--desired``: everything not in the desired list (see :mod:`iscsikit.clean.desired`).
* ``--reset``: additionally every record and the record directories themselves
  (``rm -rf nodes send_targets ...`` done safely), and with ``keep_config=False`` also
  ``initiatorname.iscsi`` and ``iscsid.conf``.

What is never touched: ``--keep`` targets (and whatever they need: their sessions, records,
discovery records, ifaces); firmware ("flash") sessions; records of sessions that stay.

Order and safety
----------------
Actions come in phases (:data:`PHASES`): flush multipath maps, remove SCSI devices, log
out sessions, then delete records (nodes, links, discovery, ifaces, junk, config), then the
connector's attachment records. Unmounting is never done: a map or device that is
mounted, open, swap or held by another device is *blocked* (``blocked_by`` says by what),
and so is everything that depends on it (its session's logout, that session's records, a
discovery record linking them, ...). ``force=True`` blocks nothing but still names the
users in ``detail``.

>>> from iscsikit.clean.model import Survey
>>> plan(Survey(db_root="/etc/iscsi"), Selection()).actions
[]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from iscsikit.clean.desired import DesiredEntry
from iscsikit.clean.model import (
    RECORD_DIRS,
    AttachmentView,
    DeviceView,
    MapView,
    SessionView,
    Survey,
    portal_key,
)
from iscsikit.db.layout import DiscoveryRef, LinkRef, NodeRef
from iscsikit.names import Portal


class Kind(StrEnum):
    FLUSH_MAP = "flush-map"
    REMOVE_DEVICE = "remove-device"
    LOGOUT = "logout"
    DELETE_NODE = "delete-node"
    DELETE_LINK = "delete-link"
    DELETE_DISCOVERY = "delete-discovery"
    DELETE_IFACE = "delete-iface"
    DELETE_ENTRY = "delete-entry"
    DELETE_CONFIG = "delete-config"
    DELETE_ATTACHMENT = "delete-attachment"


#: The phase of each kind: a plan runs phase by phase (see the module docstring).
PHASES: dict[Kind, int] = {kind: i for i, kind in enumerate(Kind, 1)}
#: Kinds whose actions remove DB entries (and are backed up first).
DB_KINDS = frozenset(
    {
        Kind.DELETE_NODE,
        Kind.DELETE_LINK,
        Kind.DELETE_DISCOVERY,
        Kind.DELETE_IFACE,
        Kind.DELETE_ENTRY,
        Kind.DELETE_CONFIG,
    }
)


@dataclass(frozen=True, slots=True)
class Selection:
    """What the user asked to clean (the CLI flags). See the module docstring."""

    targets: tuple[str, ...] = ()
    portals: tuple[Portal, ...] = ()
    stale_only: bool = False
    older_than: float = 0.0
    unreachable: bool = False
    desired: tuple[DesiredEntry, ...] | None = None
    keep: tuple[str, ...] = ()
    reset: bool = False
    keep_config: bool = True
    force: bool = False

    @property
    def decommission(self) -> bool:
        """No selector at all: everything goes (except ``keep``)."""
        return not (self.targets or self.portals or self.stale_only or self.unreachable or self.desired is not None)

    @property
    def host_wide(self) -> bool:
        """Leftovers that belong to no target (orphan devices, pathless maps, junk) are in scope."""
        return not (self.targets or self.portals or self.unreachable)

    def describe(self) -> str:
        parts: list[str] = []
        if self.decommission:
            parts.append("everything (decommission)")
        if self.desired is not None:
            parts.append(f"everything not in the desired list ({len(self.desired)} entries)")
        parts += [f"target {t}" for t in self.targets]
        parts += [f"portal {p}" for p in self.portals]
        if self.stale_only:
            parts.append("stale only" + (f" (failing >= {_duration(self.older_than)})" if self.older_than else ""))
        if self.unreachable:
            parts.append("unreachable portals")
        if self.reset:
            parts.append("full reset" + ("" if self.keep_config else " including initiatorname.iscsi and iscsid.conf"))
        if self.keep:
            parts.append("keeping " + ", ".join(self.keep))
        if self.force:
            parts.append("forced")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets),
            "portals": [str(p) for p in self.portals],
            "stale_only": self.stale_only,
            "older_than": self.older_than,
            "unreachable": self.unreachable,
            "desired": None if self.desired is None else [e.to_json() for e in self.desired],
            "keep": list(self.keep),
            "reset": self.reset,
            "keep_config": self.keep_config,
            "force": self.force,
        }


@dataclass(frozen=True, slots=True)
class Action:
    """One step of a plan.

    ``paths`` are the DB-root-relative entries it removes (a node record and every link
    naming it); ``subject`` is the typed thing it acts on (NodeRef, DiscoveryRef, IfaceRef,
    LinkRef, SessionView, DeviceView, MapView, AttachmentView or a relpath) for the executor.
    """

    kind: Kind
    detail: str
    target: str | None = None
    portal: str | None = None
    sid: int | None = None
    device: str | None = None
    path: str | None = None
    paths: tuple[str, ...] = ()
    blocked_by: tuple[str, ...] = ()
    order: int = 0
    subject: Any = field(default=None, compare=False, repr=False)

    @property
    def blocked(self) -> bool:
        return bool(self.blocked_by)

    @property
    def phase(self) -> int:
        return PHASES[self.kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "kind": str(self.kind),
            "target": self.target,
            "portal": self.portal,
            "detail": self.detail,
            "sid": self.sid,
            "device": self.device,
            "path": self.path,
            "blocked_by": list(self.blocked_by),
        }


@dataclass(slots=True)
class Plan:
    """Ordered actions plus notes about what was deliberately left alone."""

    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    selection: Selection = field(default_factory=Selection)
    db_root: str = ""

    @property
    def runnable(self) -> list[Action]:
        return [a for a in self.actions if not a.blocked]

    @property
    def blocked(self) -> list[Action]:
        return [a for a in self.actions if a.blocked]

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self.actions:
            counts[str(a.kind)] = counts.get(str(a.kind), 0) + 1
        return counts

    def summary(self) -> dict[str, Any]:
        return {"total": len(self.actions), "blocked": len(self.blocked), "by_kind": self.by_kind()}

    def to_json(self) -> dict[str, Any]:
        return {
            "actions": [a.to_json() for a in self.actions],
            "summary": self.summary(),
            "selection": self.selection.to_json(),
            "db_root": self.db_root,
            "notes": list(self.notes),
        }


def plan(survey: Survey, selection: Selection) -> Plan:
    """Decide what to remove and in which order (see the module docstring)."""
    return _Planner(survey, selection).run()


# --------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def _session_portal_text(s: SessionView) -> str | None:
    p = s.portal
    return None if p is None else str(p)


class _Planner:
    def __init__(self, survey: Survey, sel: Selection) -> None:
        self.s = survey
        self.sel = sel
        self.notes: list[str] = []
        self.sessions = {x.sid: x for x in survey.sessions}
        self.sessions_by_target: dict[str, list[SessionView]] = defaultdict(list)
        for x in survey.sessions:
            self.sessions_by_target[x.target].append(x)
        self.pending = {(p.kind, p.key) for p in survey.pending}
        self.chosen_sids: set[int] = set()

    # ---- predicates ---------------------------------------------------------------------

    def keep(self, target: str | None) -> bool:
        return target is not None and any(fnmatchcase(target, g) for g in self.sel.keep)

    def filtered(self, target: str | None, portals: Sequence[Portal | None]) -> bool:
        """Passes ``--target`` and ``--portal`` (any of ``portals`` may match)."""
        sel = self.sel
        if sel.targets and (target is None or not any(fnmatchcase(target, g) for g in sel.targets)):
            return False
        if sel.portals:
            return any(p is not None and any(f.matches(p) for f in sel.portals) for p in portals)
        return True

    def desired(self, target: str, portal: Portal | None, iface: str | None) -> bool:
        assert self.sel.desired is not None
        return any(e.matches(target, portal, iface) for e in self.sel.desired)

    def unreachable(self, portal: Portal | None) -> bool:
        if portal is None or self.s.unreachable is None:
            return False
        return portal_key(portal.address, portal.port) in self.s.unreachable

    def stale(self, x: SessionView) -> bool:
        return x.failing and (x.failed_for or 0.0) >= self.sel.older_than

    def sessions_of(self, ref: NodeRef) -> list[SessionView]:
        """Sessions running on a node record: same target, portal and iface."""
        out = []
        for x in self.sessions_by_target.get(ref.target, ()):
            p = x.portal
            if p is None or x.iface != ref.iface:
                continue
            if p.port == ref.port and Portal(ref.address, ref.port, ref.tpgt).matches(p):
                out.append(x)
        return out

    # ---- the plan -------------------------------------------------------------------------

    def run(self) -> Plan:
        sessions = self.choose_sessions()
        self.chosen_sids = set(sessions)
        devices, partial = self.choose_devices(sessions)
        maps = self.choose_maps(devices)
        map_blocks = {m.name: [f"{m.label} is {u}" for u in m.users] for m in maps.values()}
        device_blocks = {d.hctl: self.device_reasons(d, maps, map_blocks) for d in devices.values()}
        logout_blocks = self.logout_reasons(sessions, devices, device_blocks)
        nodes = self.choose_nodes(sessions)
        node_blocks = self.node_reasons(nodes, sessions, logout_blocks)
        actions: list[Action] = []
        for m in maps.values():
            actions.append(self.map_action(m, map_blocks[m.name]))
        for d in devices.values():
            actions.append(self.device_action(d, device_blocks[d.hctl], partial.get(d.hctl)))
        for x in sessions.values():
            actions.append(self.logout_action(x, logout_blocks[x.sid]))
        links_of = self.links_by_node()
        for ref in nodes:
            actions.append(self.node_action(ref, links_of.get(ref, []), node_blocks[ref]))
        actions += self.link_actions()
        actions += self.discovery_actions(nodes, node_blocks)
        actions += self.iface_actions(nodes, node_blocks, sessions, logout_blocks)
        actions += self.entry_actions()
        actions += self.reset_actions(actions)
        actions += self.config_actions()
        actions += self.attachment_actions(sessions, logout_blocks)
        actions.sort(key=lambda a: (a.phase, *self.sort_key(a)))
        ordered = [replace(a, order=i) for i, a in enumerate(actions, 1)]
        return Plan(ordered, self.notes, self.sel, self.s.db_root)

    @staticmethod
    def sort_key(a: Action) -> tuple[Any, ...]:
        # Reset's directory removals come after every entry inside them.
        last = a.kind is Kind.DELETE_ENTRY and bool(a.path) and a.path in RECORD_DIRS
        rank = RECORD_DIRS.index(a.path) if last and a.path else 0
        return (last, rank, a.target or "", a.portal or "", a.sid or 0, a.device or "", a.path or "")

    # ---- sessions, devices, maps -----------------------------------------------------------

    def choose_sessions(self) -> dict[int, SessionView]:
        sel = self.sel
        chosen: dict[int, SessionView] = {}
        for x in self.s.sessions:
            if self.keep(x.target) or not self.filtered(x.target, [x.portal]):
                continue
            if x.flash:
                self.notes.append(f"session {x.sid} ({x.target}) was created by firmware (flash); left alone")
                continue
            if sel.desired is not None and self.desired(x.target, x.portal, x.iface):
                continue
            if sel.stale_only and not self.stale(x):
                if x.failing:
                    self.notes.append(
                        f"session {x.sid} ({x.target}) is failing, but not for {_duration(sel.older_than)} yet; "
                        "left alone"
                    )
                continue
            if sel.unreachable and not self.unreachable(x.portal):
                continue
            chosen[x.sid] = x
        return chosen

    def choose_devices(self, sessions: dict[int, SessionView]) -> tuple[dict[str, DeviceView], dict[str, str]]:
        sel = self.sel
        chosen: dict[str, DeviceView] = {}
        for d in self.s.devices:
            if d.sid is None:
                if sel.host_wide:
                    chosen[d.hctl] = d
                continue
            if d.sid in sessions:
                if d.name is not None:  # controller LUNs go with the logout
                    chosen[d.hctl] = d
                continue
            x = self.sessions.get(d.sid)
            if x is None or x.flash or self.keep(x.target) or not self.filtered(x.target, [x.portal]):
                continue
            dead = d.dead and (sel.stale_only or sel.desired is not None)
            if dead or (sel.desired is not None and d.name is not None and self.lun_undesired(x, d.lun)):
                chosen[d.hctl] = d
        # Paths of a multipath map that keeps other paths: removed from the map, map stays.
        names = {d.name for d in chosen.values() if d.name}
        paths_of = {m.name: m for m in self.s.maps}
        partial: dict[str, str] = {}
        for d in chosen.values():
            if d.multipath and d.multipath in paths_of:
                m = paths_of[d.multipath]
                if not all(p in names for p in m.paths):
                    partial[d.hctl] = m.label
        return chosen, partial

    def lun_undesired(self, x: SessionView, lun: int) -> bool:
        assert self.sel.desired is not None
        entries = [e for e in self.sel.desired if e.matches(x.target, x.portal, x.iface)]
        if not entries or any(e.luns is None for e in entries):
            return False
        return not any(lun in e.luns for e in entries if e.luns is not None)

    def choose_maps(self, devices: dict[str, DeviceView]) -> dict[str, MapView]:
        names = {d.name for d in devices.values() if d.name}
        chosen: dict[str, MapView] = {}
        for m in self.s.maps:
            if m.paths:
                if all(p in names for p in m.paths):
                    chosen[m.name] = m
            elif self.sel.host_wide:
                chosen[m.name] = m
        return chosen

    def device_reasons(self, d: DeviceView, maps: dict[str, MapView], map_blocks: dict[str, list[str]]) -> list[str]:
        reasons = [f"{d.label} is {u}" for u in d.users]
        m = d.multipath
        if m is not None and m in maps and map_blocks.get(m):
            reasons.append(f"{d.label} is a path of {maps[m].label}, which stays: {map_blocks[m][0]}")
        return reasons

    def logout_reasons(
        self, sessions: dict[int, SessionView], devices: dict[str, DeviceView], device_blocks: dict[str, list[str]]
    ) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {sid: [] for sid in sessions}
        for d in devices.values():
            if d.sid in out and device_blocks[d.hctl]:
                out[d.sid].extend(device_blocks[d.hctl])
        return out

    def _blocked(self, reasons: Sequence[str], detail: str) -> tuple[tuple[str, ...], str]:
        """(blocked_by, detail): with ``force`` nothing blocks, but the users are named."""
        if not reasons:
            return (), detail
        if self.sel.force:
            return (), f"{detail}; forced although {'; '.join(reasons)}"
        return tuple(reasons), detail

    def map_action(self, m: MapView, reasons: list[str]) -> Action:
        over = ", ".join(m.paths) if m.paths else "no paths left"
        detail = f"flush multipath map {m.label}" + (f", wwid {m.wwid}" if m.wwid else "") + f" ({over})"
        blocked, detail = self._blocked(reasons, detail)
        return Action(Kind.FLUSH_MAP, detail, device=m.name, blocked_by=blocked, subject=m)

    def device_action(self, d: DeviceView, reasons: list[str], partial_of: str | None) -> Action:
        x = self.sessions.get(d.sid) if d.sid is not None else None
        state = f", {d.state}" if d.state and d.state != "running" else ""
        if x is None:
            detail = f"remove orphan {d.label} (LUN {d.lun}, {d.hctl}{state}): its session is gone"
        else:
            detail = f"flush and remove {d.label} (LUN {d.lun}, {d.hctl}{state}) of session {x.sid}"
            if d.dead and x.sid not in self.chosen_sids:
                detail += "; the kernel gave up on this LUN"
        if partial_of:
            detail += f"; dropped from multipath map {partial_of}, which keeps its other paths"
        blocked, detail = self._blocked(reasons, detail)
        return Action(
            Kind.REMOVE_DEVICE,
            detail,
            target=x.target if x else None,
            portal=_session_portal_text(x) if x else None,
            sid=d.sid,
            device=d.name or d.hctl,
            blocked_by=blocked,
            subject=d,
        )

    def logout_action(self, x: SessionView, reasons: list[str]) -> Action:
        state = x.state or "unknown state"
        if x.failing and x.failed_for:
            state += f" for at least {_duration(x.failed_for)}"
        detail = f"log out session {x.sid} ({state}, iface {x.iface})"
        blocked, detail = self._blocked(reasons, detail)
        return Action(
            Kind.LOGOUT,
            detail,
            target=x.target,
            portal=_session_portal_text(x),
            sid=x.sid,
            blocked_by=blocked,
            subject=x,
        )

    # ---- records ----------------------------------------------------------------------------

    def choose_nodes(self, sessions: dict[int, SessionView]) -> list[NodeRef]:
        sel = self.sel
        chosen: list[NodeRef] = []
        kept_busy = 0
        for ref in self.s.nodes:
            if self.keep(ref.target) or not self.filtered(ref.target, [ref.portal]):
                continue
            users = self.sessions_of(ref)
            if any(u.sid not in sessions for u in users):
                kept_busy += 1
                continue
            if ("node", ref.relpath) in self.pending or sel.reset:
                take = True
            elif sel.desired is not None:
                take = not self.desired(ref.target, ref.portal, ref.iface)
            elif sel.stale_only:
                take = bool(users)
            elif sel.unreachable:
                take = self.unreachable(ref.portal)
            else:
                take = True
            if take:
                chosen.append(ref)
        if kept_busy and (sel.reset or sel.decommission):
            self.notes.append(f"{kept_busy} node record(s) kept: their sessions stay logged in")
        return chosen

    def node_reasons(
        self, nodes: list[NodeRef], sessions: dict[int, SessionView], logout_blocks: dict[int, list[str]]
    ) -> dict[NodeRef, list[str]]:
        out: dict[NodeRef, list[str]] = {}
        for ref in nodes:
            reasons = []
            for u in self.sessions_of(ref):
                if u.sid in sessions and logout_blocks.get(u.sid) and not self.sel.force:
                    reasons.append(f"session {u.sid} stays logged in ({logout_blocks[u.sid][0]})")
            out[ref] = reasons
        return out

    def links_by_node(self) -> dict[NodeRef, list[LinkRef]]:
        dangling = {link.relpath for link in self.s.dangling}
        out: dict[NodeRef, list[LinkRef]] = defaultdict(list)
        for link in self.s.links:
            if link.node is not None and link.relpath not in dangling:
                out[link.node].append(link)
        return out

    def node_action(self, ref: NodeRef, links: list[LinkRef], reasons: list[str]) -> Action:
        extra = f" and {len(links)} link(s) to it" if links else ""
        detail = f"delete node record {ref.relpath}{extra}"
        if ("node", ref.relpath) in self.pending:
            detail += " (left by an interrupted clean)"
        return Action(
            Kind.DELETE_NODE,
            detail,
            target=ref.target,
            portal=str(ref.portal),
            path=ref.relpath,
            paths=(ref.relpath, *(link.relpath for link in links)),
            blocked_by=tuple(reasons),
            subject=ref,
        )

    def link_actions(self) -> list[Action]:
        sel = self.sel
        out = []
        for link in self.s.dangling:
            node = link.node
            target = node.target if node else None
            if self.keep(target):
                continue
            if ("link", link.relpath) in self.pending or sel.reset:
                take = True
            elif sel.unreachable:
                take = node is not None and self.filtered(target, [node.portal]) and self.unreachable(node.portal)
            elif sel.host_wide:
                take = True
            else:
                take = node is not None and self.filtered(target, [node.portal])
            if take:
                out.append(
                    Action(
                        Kind.DELETE_LINK,
                        f"delete dangling link {link.relpath} (its node record is gone)",
                        target=target,
                        portal=str(node.portal) if node else None,
                        path=link.relpath,
                        paths=(link.relpath,),
                        subject=link,
                    )
                )
        return out

    def discovery_actions(self, nodes: list[NodeRef], node_blocks: dict[NodeRef, list[str]]) -> list[Action]:
        sel = self.sel
        chosen = set(nodes)
        existing = set(self.s.nodes)
        linked: dict[DiscoveryRef, list[NodeRef]] = defaultdict(list)
        for link in self.s.links:
            if link.discovery is not None and link.node is not None and link.node in existing:
                linked[link.discovery].append(link.node)
        out = []
        for d in self.s.discoveries:
            mine = linked.get(d, [])
            if any(n not in chosen for n in mine):
                continue
            here = Portal(d.address, d.port)
            at_portal = any(f.matches(here) for f in sel.portals)
            if ("discovery", d.relpath) in self.pending or sel.reset or sel.decommission:
                take = True
            elif sel.desired is not None:
                take = not any(e.portal is not None and e.portal.matches(here) for e in sel.desired)
            else:
                take = (not sel.targets or bool(mine)) and (not sel.portals or at_portal)
                if sel.stale_only:
                    take = take and bool(mine)
                if sel.unreachable:
                    take = take and self.unreachable(here)
                if not sel.targets and not sel.portals and not sel.unreachable and not mine:
                    take = False
            if not take:
                continue
            reasons = [f"node record {n} stays ({node_blocks[n][0]})" for n in mine if node_blocks.get(n)]
            nodes_text = f" (it discovered {len(mine)} of the node records above)" if mine else ""
            out.append(
                Action(
                    Kind.DELETE_DISCOVERY,
                    f"delete {d.type_name} discovery record {d.host_port}{nodes_text}",
                    portal=d.host_port,
                    path=d.relpath,
                    paths=(d.relpath,),
                    blocked_by=tuple(reasons),
                    subject=d,
                )
            )
        return out

    def iface_actions(
        self,
        nodes: list[NodeRef],
        node_blocks: dict[NodeRef, list[str]],
        sessions: dict[int, SessionView],
        logout_blocks: dict[int, list[str]],
    ) -> list[Action]:
        sel = self.sel
        if not (sel.decommission or sel.reset or sel.desired is not None or self.pending):
            return []
        chosen = set(nodes)
        used: set[str] = set()
        waiting: dict[str, list[str]] = defaultdict(list)
        for ref in self.s.nodes:
            if ref not in chosen:
                used.add(ref.iface)
            elif node_blocks.get(ref):
                waiting[ref.iface].append(f"node record {ref} stays")
        for x in self.s.sessions:
            if x.sid not in sessions:
                used.add(x.iface)
            elif logout_blocks.get(x.sid) and not sel.force:
                waiting[x.iface].append(f"session {x.sid} stays logged in")
        out = []
        for i in self.s.ifaces:
            if i.name in used:
                continue
            if ("iface", i.name) in self.pending or sel.reset or sel.decommission:
                take = True
            elif sel.desired is not None:
                take = not any(e.iface == i.name for e in sel.desired)
            else:
                take = False
            if take:
                out.append(
                    Action(
                        Kind.DELETE_IFACE,
                        f"delete iface record {i.name} (no node record or session uses it any more)",
                        path=i.relpath,
                        paths=(i.relpath,),
                        blocked_by=tuple(waiting.get(i.name, ())[:1]),
                        subject=i,
                    )
                )
        return out

    def entry_actions(self) -> list[Action]:
        """Junk that does not fit the DB layout, empty target directories, and reset's directories."""
        sel = self.sel
        out = []
        plain_filters = not (sel.stale_only or sel.unreachable or sel.desired is not None or sel.portals)
        for p in self.s.problems:
            if p.message.startswith("cannot read"):
                self.notes.append(f"{p.relpath}: {p.message}; not touched")
                continue
            parts = p.relpath.split("/")
            target = parts[1] if parts[0] == "nodes" and len(parts) > 1 else None
            if self.keep(target):
                continue
            if sel.reset or sel.decommission or sel.desired is not None:
                take = True
            else:
                take = plain_filters and target is not None and self.filtered(target, [])
            if take:
                out.append(
                    Action(
                        Kind.DELETE_ENTRY,
                        f"delete {p.relpath}: not an open-iscsi record ({p.message})",
                        target=target,
                        path=p.relpath,
                        paths=(p.relpath,),
                        subject=p.relpath,
                    )
                )
        for target in self.s.empty_targets:
            if self.keep(target):
                continue
            if sel.reset or sel.host_wide or (plain_filters and self.filtered(target, [])):
                rel = f"nodes/{target}"
                out.append(
                    Action(
                        Kind.DELETE_ENTRY,
                        f"delete {rel}: an empty target directory (left by an interrupted delete)",
                        target=target,
                        path=rel,
                        paths=(rel,),
                        subject=rel,
                    )
                )
        return out

    def reset_actions(self, planned: list[Action]) -> list[Action]:
        """``--reset``: each record directory goes once empty, unless something in it stays."""
        if not self.sel.reset:
            return []
        gone = {p for a in planned for p in a.paths}
        gone |= {a.subject.dir_relpath for a in planned if a.kind is Kind.DELETE_DISCOVERY}
        staying: dict[str, str] = {}
        for ref in self.s.nodes:
            if ref.relpath not in gone:
                staying.setdefault("nodes", f"node record {ref}")
        for link in self.s.links:
            if link.relpath not in gone:
                top = link.relpath.split("/", 1)[0]
                staying.setdefault(top, f"link {link.relpath}")
        for d in self.s.discoveries:
            if d.relpath not in gone and d.dir_relpath not in gone:
                staying.setdefault(d.top, f"discovery record {d}")
        for i in self.s.ifaces:
            if i.relpath not in gone:
                staying.setdefault("ifaces", f"iface record {i.name}")
        out = []
        for top in RECORD_DIRS:
            if top not in self.s.top_dirs:
                continue
            if top in staying:
                self.notes.append(f"reset: {top}/ stays, it holds what stays ({staying[top]}, ...)")
                continue
            out.append(
                Action(
                    Kind.DELETE_ENTRY,
                    f"reset: remove the {top}/ directory once everything in it is gone",
                    path=top,
                    paths=(top,),
                    subject=top,
                )
            )
        return out

    def config_actions(self) -> list[Action]:
        if not self.sel.reset or self.sel.keep_config:
            return []
        return [
            Action(Kind.DELETE_CONFIG, f"reset: delete {name}", path=name, paths=(name,), subject=name)
            for name in self.s.config_files
        ]

    def attachment_actions(self, sessions: dict[int, SessionView], logout_blocks: dict[int, list[str]]) -> list[Action]:
        sel = self.sel
        out = []
        for a in self.s.attachments:
            if a.error is not None:
                if sel.host_wide or sel.reset:
                    out.append(self._attachment(a, f"delete unreadable attachment record {a.path} ({a.error})", ()))
                continue
            if self.keep(a.target) or not self.filtered(a.target, list(a.portals)):
                continue
            related = self.attachment_sessions(a)
            if any(x.sid not in sessions for x in related):
                continue
            if ("attachment", a.volume_id) in self.pending:
                take = True
            elif sel.desired is not None:
                take = not self.attachment_desired(a)
            elif sel.stale_only:
                take = True  # every session it had is going (or already gone)
            elif sel.unreachable:
                take = bool(a.portals) and all(self.unreachable(p) for p in a.portals)
            else:
                take = True
            if not take:
                continue
            why = (
                f"its session(s) {', '.join(str(x.sid) for x in related)} are logged out"
                if related
                else "no session of it is left"
            )
            reasons = tuple(
                f"session {x.sid} stays logged in" for x in related if logout_blocks.get(x.sid) and not sel.force
            )
            out.append(self._attachment(a, f"delete attachment record {a.volume_id} ({a.state}): {why}", reasons))
        return out

    def _attachment(self, a: AttachmentView, detail: str, reasons: tuple[str, ...]) -> Action:
        return Action(
            Kind.DELETE_ATTACHMENT,
            detail,
            target=a.target,
            portal=", ".join(str(p) for p in a.portals) or None,
            path=a.path,
            blocked_by=reasons,
            subject=a,
        )

    def attachment_sessions(self, a: AttachmentView) -> list[SessionView]:
        out = []
        for x in self.sessions_by_target.get(a.target or "", ()):
            if a.iface is not None and x.iface != a.iface:
                continue
            p = x.portal
            if p is not None and any(q.matches(p) for q in a.portals):
                out.append(x)
        return out

    def attachment_desired(self, a: AttachmentView) -> bool:
        assert self.sel.desired is not None
        for e in self.sel.desired:
            if e.volume_id is not None:
                if e.volume_id == a.volume_id:
                    return True
                continue
            if a.target is None or not any(e.matches(a.target, p, a.iface) for p in (a.portals or (None,))):
                continue
            if e.luns is None or (a.lun is not None and a.lun in e.luns):
                return True
        return False


__all__ = ["DB_KINDS", "PHASES", "Action", "Kind", "Plan", "Selection", "plan"]
