"""open-iscsi's database as a Python object: list, read, create, update and delete records.

Every write takes iscsiadm's own lock (:class:`~iscsikit.db.lock.DbLock`), is atomic per
file (:mod:`~iscsikit.db.fsutil`), and produces the same files, bytes, modes and links that
iscsiadm 2.1.8 produces for the same operation, side effects included (deleting a discovery
record deletes its nodes; deleting an iface deletes the nodes bound to it). ::

    db = Database("/etc/iscsi")
    for ref in db.nodes():                              # directory names only: fast
        print(ref.target, ref.host_port, ref.iface)
    node = db.node("iqn.2026-11.example:disk1", "10.0.0.5:3260,1")
    print(node.startup, node.chap.username)
    db.update(node.ref, {"node.startup": "automatic"})
    db.new_node("iqn.2026-11.example:disk2", "10.0.0.5:3260,1", iface="eth1-iface")
    db.delete_nodes(target="iqn.2026-11.example:*")      # glob

Where iscsikit is stricter than iscsiadm (on purpose): names and values are validated
before anything is written; ``new_*`` refuses to reset an existing record unless
``overwrite=True``; a lock timeout is an error; a portal given with a tpgt only matches
that tpgt; a record is always written back to the path it was read from.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from iscsikit.db import layout, schema
from iscsikit.db.fsutil import DIR_MODE, FILE_MODE, fsync_dir, write_atomic
from iscsikit.db.layout import (
    DiscoveryRef,
    IfaceRef,
    LinkRef,
    NodeRef,
    NodeScan,
    scan_discovery,
    scan_ifaces,
    scan_links,
    scan_nodes,
)
from iscsikit.db.locate import DbRootLocation, locate_db_root
from iscsikit.db.lock import DEFAULT_LOCK_DIR, DEFAULT_TIMEOUT, DbLock
from iscsikit.db.models import DiscoveryRecord, IfaceRecord, Inventory, NodeRecord, WriteResult
from iscsikit.db.record import Issue, Record, format_record, parse_record, validate_setting
from iscsikit.db.schema import RecordKind
from iscsikit.errors import (
    DatabaseError,
    InvalidNameError,
    InvalidSettingError,
    RecordExistsError,
    RecordNotFoundError,
    RecordRejectedError,
)
from iscsikit.names import Portal, check_path_component, validate_iface_name, validate_iscsi_name

if TYPE_CHECKING:
    from iscsikit.db.defaults import DefaultsMode, NewRecordDefaults
    from iscsikit.db.snapshot import Snapshot, SnapshotEntry
    from iscsikit.runner import Runner

Settings = Mapping[str, str] | Iterable[tuple[str, str]]
PortalArg = str | Portal | None

# Records read per lock hold. libopeniscsiusr holds the lock for a whole listing; taking it
# costs a link() and an unlink(), which a busy journal makes slow, so take it rarely.
_READ_BATCH = 16384
# what setup_disc_to_node_link needs to find a node's link
_LINK_KEYS = (
    "node.name",
    "node.conn[0].address",
    "node.conn[0].port",
    "node.tpgt",
    "iface.iscsi_ifacename",
    "node.discovery_type",
    "node.discovery_address",
    "node.discovery_port",
)


def _pairs(settings: Settings | None) -> list[tuple[str, str]]:
    if settings is None:
        return []
    if isinstance(settings, Mapping):
        return [(str(k), str(v)) for k, v in settings.items()]
    return [(str(k), str(v)) for k, v in settings]


# --------------------------------------------------------------------------------------
# One locked write session


class _Tx:
    """Filesystem changes made under the lock; dry-run records them instead."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.root = db.root
        self._root_text = str(db.root)
        self.dry_run = db.dry_run
        self.result = WriteResult()
        self._tmp: Path | None = None
        self._dirty: set[str] = set()  # directories whose entries changed: fsynced at the end
        self._gone: set[str] = set()  # dry-run: what would have been removed
        self._made: set[str] = set()  # dry-run: what would have been created

    def p(self, rel: str) -> str:
        # plain strings, not Path: bulk deletes make tens of thousands of these
        return f"{self._root_text}/{rel}"

    def _parent(self, rel: str) -> str:
        return self.p(rel.rpartition("/")[0]) if "/" in rel else self._root_text

    def exists(self, rel: str) -> bool:
        if rel in self._gone:
            return False
        return rel in self._made or os.path.lexists(self.p(rel))

    def is_dir(self, rel: str) -> bool:
        if rel in self._gone:
            return False
        return rel in self._made or os.path.isdir(self.p(rel))

    def ensure_dir(self, rel: str) -> None:
        if self.is_dir(rel):
            return
        if self.dry_run:
            self._made.add(rel)
            self._gone.discard(rel)
            self.result.written.append(rel + "/")
            return
        path = self.p(rel)
        try:
            os.mkdir(path, DIR_MODE)
            os.chmod(path, DIR_MODE)
        except FileExistsError:
            return
        self._dirty.add(self._parent(rel))
        self.result.written.append(rel + "/")

    def write(self, rel: str, text: str) -> None:
        self.result.written.append(rel)
        if self.dry_run:
            self._made.add(rel)
            self._gone.discard(rel)
            return
        write_atomic(Path(self.p(rel)), text.encode("utf-8", "surrogateescape"), self._tmp_dir(), mode=FILE_MODE)

    def write_bytes(self, rel: str, data: bytes, mode: int) -> None:
        self.result.written.append(rel)
        if self.dry_run:
            self._made.add(rel)
            return
        write_atomic(Path(self.p(rel)), data, self._tmp_dir(), mode=mode)

    def unlink(self, rel: str) -> bool:
        if not self.exists(rel):
            return False
        self.result.removed.append(rel)
        if self.dry_run:
            self._gone.add(rel)
            return True
        try:
            os.unlink(self.p(rel))
        except FileNotFoundError:
            return False
        self._dirty.add(self._parent(rel))
        return True

    def listdir(self, rel: str) -> list[str]:
        try:
            names = os.listdir(self.p(rel))
        except OSError:
            names = []
        if self.dry_run:
            names = [n for n in names if f"{rel}/{n}" not in self._gone]
            names += [m.rsplit("/", 1)[1] for m in self._made if m.rsplit("/", 1)[0] == rel]
        return names

    def rmdir(self, rel: str) -> bool:
        if not self.is_dir(rel):
            return False
        if self.dry_run:
            if self.listdir(rel):
                return False
            self._gone.add(rel)
            self.result.removed.append(rel + "/")
            return True
        try:
            os.rmdir(self.p(rel))
        except OSError:
            return False
        self._dirty.add(self._parent(rel))
        self.result.removed.append(rel + "/")
        return True

    def symlink(self, rel: str, target: str) -> bool:
        if self.exists(rel):
            return False  # iscsiadm: "link ... exists", not an error
        self.result.written.append(rel)
        if self.dry_run:
            self._made.add(rel)
            return True
        os.symlink(target, self.p(rel))
        self._dirty.add(self._parent(rel))
        return True

    def _tmp_dir(self) -> Path:
        if self._tmp is None:
            tmp = self.root / layout.TMP_DIR
            if tmp.is_dir():
                for leftover in tmp.iterdir():  # a killed writer's; we hold the lock
                    try:
                        leftover.unlink()
                    except OSError:
                        pass
            else:
                os.mkdir(tmp, DIR_MODE)
            self._tmp = tmp
        return self._tmp

    def close(self) -> None:
        for path in self._dirty:
            fsync_dir(Path(path))
        if self._tmp is not None:
            try:
                os.rmdir(self._tmp)
            except OSError:
                pass


# --------------------------------------------------------------------------------------


class Database:
    """open-iscsi's DB rooted at ``root`` (detected when None: see :mod:`iscsikit.db.locate`).

    ``lock_dir``/``lock_timeout``: iscsiadm's lock (``/run/lock/iscsi``, 30 s).
    ``link_root``: the absolute path iscsiadm knows the DB by, used in the links it reads
    (default: taken from existing links, else ``root``; set it when the DB is mounted
    elsewhere, e.g. ``Database("/host/etc/iscsi", link_root="/etc/iscsi")``).
    ``defaults``/``iscsid_conf``: where new records take their settings from
    (:mod:`iscsikit.db.defaults`). ``dry_run``: writes are recorded in the results, not made.
    ``read_lock``: take the lock to read records too (as iscsiadm does; turn it off to look
    at a DB whose lock a crashed process left behind).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        lock_dir: str | os.PathLike[str] = DEFAULT_LOCK_DIR,
        lock_timeout: float = DEFAULT_TIMEOUT,
        link_root: str | os.PathLike[str] | None = None,
        defaults: DefaultsMode = "auto",
        iscsid_conf: str | os.PathLike[str] | None = None,
        dry_run: bool = False,
        read_lock: bool = True,
        runner: Runner | None = None,
    ) -> None:
        self.location: DbRootLocation = locate_db_root(root, runner=runner)
        self.root = self.location.path
        self._root_text = str(self.root).rstrip("/") or ""
        self.lock = DbLock(lock_dir, timeout=lock_timeout)
        self._link_root = Path(link_root) if link_root is not None else None
        self.defaults_mode: DefaultsMode = defaults
        self._iscsid_conf = Path(iscsid_conf) if iscsid_conf is not None else None
        self.dry_run = dry_run
        self.read_lock = read_lock
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Database({str(self.root)!r})"

    # ---- paths and settings ----------------------------------------------------------

    def path(self, relpath: str) -> Path:
        return self.root / relpath

    @property
    def iscsid_conf(self) -> Path:
        """The iscsid.conf new records may take defaults from."""
        if self._iscsid_conf is not None:
            return self._iscsid_conf
        beside = self.root / "iscsid.conf"
        from iscsikit.db.defaults import DEFAULT_CONF

        return beside if beside.is_file() else DEFAULT_CONF

    def new_defaults(self) -> NewRecordDefaults:
        """What a new record starts from right now (compiled or iscsid.conf, see defaults)."""
        from iscsikit.db.defaults import new_record_defaults

        return new_record_defaults(self.defaults_mode, self.iscsid_conf)

    @property
    def link_root(self) -> Path:
        """The DB root as iscsiadm names it in the links it writes."""
        if self._link_root is None:
            self._link_root = self._infer_link_root() or self.root
        return self._link_root

    def _infer_link_root(self) -> Path | None:
        candidates = [self.root / layout.STATIC]
        try:
            with os.scandir(self.root / layout.SEND_TARGETS) as it:
                candidates.extend(Path(e.path) for e in it if e.is_dir())
        except OSError:
            pass
        for directory in candidates:
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        if entry.is_symlink():
                            target = os.readlink(entry.path)
                            if target.startswith("/") and "/nodes/" in target:
                                return Path(target.rsplit("/nodes/", 1)[0])
            except OSError:
                continue
        return None

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """Hold iscsiadm's lock for several operations; nested calls share one transaction,
        so ``tx.result`` collects every change made inside (re-entrant; used by every write)."""
        current: _Tx | None = getattr(self._local, "tx", None)
        if current is not None:
            yield current
            return
        with self.lock:
            tx = _Tx(self)
            self._local.tx = tx
            try:
                yield tx
            finally:
                self._local.tx = None
                tx.close()

    def _read_locked(self, relpaths: Sequence[str]) -> list[bytes | None]:
        """Read files under the lock (unless ``read_lock`` is off), as iscsiadm's readers do."""
        if not self.read_lock:
            return [self._read(rel) for rel in relpaths]
        with self.lock:
            return [self._read(rel) for rel in relpaths]

    def _read(self, relpath: str) -> bytes | None:
        # os.open/os.read: no file object per record (10,000 of them for a `node show`)
        try:
            fd = os.open(f"{self._root_text}/{relpath}", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        except IsADirectoryError:
            return None
        finally:
            os.close(fd)

    def _check_acceptable(self, kind: RecordKind, text: str, relpath: str, iface_hint: str) -> None:
        """Refuse to write what iscsiadm 2.1.8 could not read back."""
        rec = parse_record(text, relpath, kind, iface_hint=iface_hint)
        errors = rec.errors
        if not errors:
            return
        first = errors[0]
        advice = ""
        if first.key and first.key.startswith("iface.") and kind in (RecordKind.NODE, RecordKind.IFACE):
            advice = (
                " An iface with an IPv6 address must have 'ipv6' in its name: iscsiadm 2.1.8 writes IPv6 keys "
                "for it, then reads it by its name and fails."
            )
        raise RecordRejectedError(
            f"refusing to write {relpath}: iscsiadm 2.1.8 could not read the result ({first.message}).{advice} "
            "Nothing was written."
        )

    # ==================================================================================
    # Nodes

    def node_scan(self, target: str | None = None) -> NodeScan:
        """All node records (and layout problems) from directory names; ``target`` may be a glob."""
        return layout.select_nodes(self.root, target)

    def nodes(self, target: str | None = None, portal: PortalArg = None, iface: str | None = None) -> list[NodeRef]:
        """Node records matching the filters, in iscsiadm's order; reads no record file.

        ``target`` may be a glob (``iqn.2026-11.example:*``); ``portal`` is ``ADDR[:PORT][,TPGT]``
        (port 3260 when omitted, any tpgt when omitted).
        """
        return self.filter_nodes(self.node_scan(target).nodes, portal, iface)

    @staticmethod
    def filter_nodes(refs: list[NodeRef], portal: PortalArg = None, iface: str | None = None) -> list[NodeRef]:
        """Keep the refs on ``portal`` (see :meth:`nodes`) and ``iface``."""
        return layout.filter_nodes(refs, portal, iface)

    def read_node(self, ref: NodeRef) -> NodeRecord:
        """Parse one node record (problems are reported on it, never raised)."""
        data = self._read_locked([ref.relpath])[0]
        if data is None:
            raise RecordNotFoundError(f"no node record {ref} ({self.path(ref.relpath)})")
        return self._node_record(ref, data)

    def read_node_files(self, refs: Sequence[NodeRef]) -> list[tuple[NodeRef, bytes]]:
        """The raw bytes of these records, read under the lock in batches (gone ones skipped).

        With :meth:`node_record` this splits ``show_nodes`` in two: read everything first
        (a lock problem fails before any output), then parse and print one at a time.
        """
        out: list[tuple[NodeRef, bytes]] = []
        for start in range(0, len(refs), _READ_BATCH):
            chunk = refs[start : start + _READ_BATCH]
            for ref, data in zip(chunk, self._read_locked([r.relpath for r in chunk]), strict=True):
                if data is not None:
                    out.append((ref, data))
        return out

    def node_record(self, ref: NodeRef, data: bytes) -> NodeRecord:
        """Parse bytes read by :meth:`read_node_files` (problems reported on the record)."""
        return self._node_record(ref, data)

    def _node_record(self, ref: NodeRef, data: bytes) -> NodeRecord:
        path = f"{self._root_text}/{ref.relpath}"  # not Path(): this runs 10,000 times for a `node show`
        rec = parse_record(data, path, RecordKind.NODE, iface_hint=None if ref.old_style else ref.iface)
        _check_node_identity(rec, ref)
        return NodeRecord(ref, rec)

    def show_nodes(
        self, target: str | None = None, portal: PortalArg = None, iface: str | None = None
    ) -> Iterator[NodeRecord]:
        """Matching node records, parsed one at a time (a bad one is reported, not fatal).

        Files are read under iscsiadm's lock in batches (iscsiadm rewrites records in place,
        so an unlocked read could catch one half-written); parsing happens outside it.
        """
        refs = self.nodes(target, portal, iface)
        for start in range(0, len(refs), _READ_BATCH):
            chunk = refs[start : start + _READ_BATCH]
            for ref, data in zip(chunk, self._read_locked([r.relpath for r in chunk]), strict=True):
                if data is not None:  # removed since the scan
                    yield self._node_record(ref, data)

    def node(self, target: str, portal: PortalArg = None, iface: str | None = None) -> NodeRecord:
        """Exactly one node record; raises if none or several match."""
        refs = self.nodes(target, portal, iface)
        if not refs:
            raise RecordNotFoundError(f"no node record for {_describe(target, portal, iface)}")
        if len(refs) > 1:
            listed = "; ".join(str(r) for r in refs[:5])
            raise DatabaseError(
                f"{len(refs)} node records match {_describe(target, portal, iface)} ({listed}); give the portal "
                "and iface"
            )
        return self.read_node(refs[0])

    # ---- create -------------------------------------------------------------------

    def new_node(
        self,
        target: str,
        portal: str | Portal,
        iface: str | None = None,
        *,
        settings: Settings | None = None,
        overwrite: bool = False,
        discovery: DiscoveryRef | None = None,
        strict_names: bool = True,
    ) -> NodeRecord:
        """``iscsiadm -m node -o new -T target -p portal [-I iface]`` (then ``-o update`` of settings).

        Without a tpgt the record is old style (``nodes/<target>/<addr>,<port>``, no link),
        as 2.1.8 writes it. ``iface=None`` is iscsiadm without ``-I`` (iface ``default``; it
        also creates ``ifaces/``). ``discovery`` links the node to a SendTargets/iSNS record
        instead of ``static/`` (as discovery does). An existing record is an error unless
        ``overwrite``, which resets it to defaults as ``-o new`` does.
        """
        validate_iscsi_name(target, "target name", strict=strict_names)
        if "," in target:
            raise InvalidNameError("target name", target, "it contains ',', which open-iscsi uses as a separator")
        p = layout.as_portal(portal)
        assert p is not None
        iface_name = "default" if iface is None else validate_iface_name(iface)
        pairs = self._validate_node_settings(settings)
        defaults = self.new_defaults()
        with self.transaction() as tx:
            ref = NodeRef(target, p.address, p.port, p.tpgt, iface_name if p.tpgt is not None else "default")
            copied = self._iface_values_for_node(iface_name)
            existing = self._existing_for_new(tx, ref)
            if existing is not None and not overwrite:
                raise RecordExistsError(
                    f"node record {existing} already exists ({self.path(existing.relpath)}); pass overwrite "
                    "(--overwrite) to reset it to defaults as iscsiadm -o new does"
                )
            if not ref.old_style and tx.exists(ref.portal_relpath) and not tx.is_dir(ref.portal_relpath):
                raise DatabaseError(f"{self.path(ref.portal_relpath)} is in the way: a file where a directory belongs")
            if ref.old_style and tx.is_dir(ref.portal_relpath):
                raise DatabaseError(
                    f"{self.path(ref.portal_relpath)} is a directory; iscsiadm cannot keep an old-style record there"
                )
            if discovery is not None and not tx.is_dir(discovery.dir_relpath):
                raise RecordNotFoundError(f"no {discovery} discovery record to link the node to")
            if existing is not None:
                self._delete_node_locked(tx, existing, tx.result)
            values = defaults.node
            values.update(
                {
                    "node.name": target,
                    "node.tpgt": str(p.db_tpgt),
                    "node.conn[0].address": p.address,
                    "node.conn[0].port": str(p.port),
                }
            )
            values.update(copied)
            if discovery is not None:
                values["node.discovery_type"] = "send_targets" if discovery.kind is RecordKind.SENDTARGETS else "isns"
                values["node.discovery_address"] = discovery.address
                values["node.discovery_port"] = str(discovery.port)
            else:
                values["node.discovery_type"] = "static"
                values["node.discovery_address"] = ""
                values["node.discovery_port"] = "0"
            for key, value in pairs:
                values[key] = value
            text = format_record(RecordKind.NODE, values)
            self._check_acceptable(RecordKind.NODE, text, ref.relpath, "default" if ref.old_style else ref.iface)
            tx.ensure_dir(layout.NODES)
            tx.ensure_dir(ref.target_relpath)
            if not ref.old_style:
                tx.ensure_dir(ref.portal_relpath)
            tx.write(ref.relpath, text)
            if not ref.old_style:
                self._link_node(tx, ref, values)
            if iface is None:
                tx.ensure_dir(layout.IFACES)
            tx.result.nodes.append(ref)
            if self.dry_run:
                return NodeRecord(ref, parse_record(text, str(self.path(ref.relpath)), RecordKind.NODE))
        return self.read_node(ref)

    def _existing_for_new(self, tx: _Tx, ref: NodeRef) -> NodeRef | None:
        """What ``idbm_rec_read`` finds for a new record: the old-style file first."""
        old = NodeRef(ref.target, ref.address, ref.port, None)
        if tx.exists(old.portal_relpath) and not tx.is_dir(old.portal_relpath):
            return old
        if not ref.old_style and tx.exists(ref.relpath):
            return ref
        return None

    def _iface_values_for_node(self, name: str) -> dict[str, str]:
        """The iface fields ``iface_copy`` puts into a new node record."""
        if name == "default":
            return {"iface.iscsi_ifacename": "default", "iface.transport_name": "tcp"}
        if name == "iser":
            return {"iface.iscsi_ifacename": "iser", "iface.transport_name": "iser"}
        data = self._read(IfaceRef(name).relpath)
        if data is None:
            raise RecordNotFoundError(f"no iface record {name!r} ({self.path(IfaceRef(name).relpath)})")
        rec = parse_record(data, str(self.path(IfaceRef(name).relpath)), RecordKind.IFACE, iface_hint=name)
        values = rec.values()
        copied: dict[str, str] = {}
        for spec in schema.IFACE_ALL.keys:
            if spec.name == "iface.prefix_len":
                continue  # iface_copy() does not copy it
            value = values[spec.name]
            if value and value != "0":
                copied[spec.name] = value
        return copied

    def _link_node(self, tx: _Tx, ref: NodeRef, values: Mapping[str, str]) -> None:
        link = self._link_relpath(tx, values, creating=True)
        if link is None:
            return
        target = f"{self.link_root}/{ref.portal_relpath}"
        tx.symlink(link, target)

    def _link_relpath(self, tx: _Tx, values: Mapping[str, str], *, creating: bool) -> str | None:
        """``setup_disc_to_node_link``: where the link to a node lives, from its record."""
        name = (
            f"{values['node.name']},{values['node.conn[0].address']},{values['node.conn[0].port']},"
            f"{values['node.tpgt']},{values['iface.iscsi_ifacename']}"
        )
        dtype = values["node.discovery_type"]
        disc = f"{values['node.discovery_address']},{values['node.discovery_port']}"
        if dtype == "send_targets":
            return f"{layout.SEND_TARGETS}/{disc}/{name}"
        if dtype in ("static", "fw"):
            top = layout.STATIC if dtype == "static" else layout.FW
            if creating:
                tx.ensure_dir(top)
            return f"{top}/{name}"
        if dtype == "isns":
            if creating:
                tx.ensure_dir(layout.ISNS_DIR)
            old = f"{layout.ISNS_DIR}/{name}"
            if tx.exists(old):
                return old
            if tx.is_dir(f"{layout.ISNS_DIR}/{disc}"):
                return f"{layout.ISNS_DIR}/{disc}/{name}"
            return old
        return None  # slp, offload_send_targets: iscsiadm keeps no link

    # ---- update -------------------------------------------------------------------

    def _validate_node_settings(self, settings: Settings | None) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for key, value in _pairs(settings):
            if key.startswith("iface.") and key != "iface.transport_name":
                raise InvalidSettingError(
                    key, value, "iface settings are changed on the iface record (iface set), which updates its nodes"
                )
            out.append(validate_setting(RecordKind.NODE, key, value))
        return out

    def update_nodes(
        self,
        settings: Settings,
        target: str | None = None,
        portal: PortalArg = None,
        iface: str | None = None,
    ) -> WriteResult:
        """``iscsiadm -m node [-T] [-p] [-I] -o update -n KEY -v VALUE`` for every matching record."""
        pairs = self._validate_node_settings(settings)
        if not pairs:
            raise InvalidSettingError("", "", "nothing to set; give KEY=VALUE")
        with self.transaction() as tx:
            refs = self.nodes(target, portal, iface)
            if not refs:
                raise RecordNotFoundError(f"no node record for {_describe(target, portal, iface)}")
            for ref in refs:
                self._update_node_locked(tx, ref, pairs)
            return tx.result

    def _update_node_locked(self, tx: _Tx, ref: NodeRef, pairs: Sequence[tuple[str, str]]) -> None:
        data = self._read(ref.relpath)
        if data is None:
            tx.result.warnings.append(f"{ref}: removed while updating; skipped")
            return
        rec = parse_record(data, ref.relpath, RecordKind.NODE, iface_hint=None if ref.old_style else ref.iface)
        values = rec.values()
        _check_write_target(self.path(ref.relpath), ref.relpath, _node_write_relpath(values))
        tx.result.warnings.extend(f"{self.path(ref.relpath)}: {w}" for w in rec.rewrite_warnings())
        ipv6 = schema.iface_is_ipv6(
            values["iface.ipaddress"], values["iface.bootproto"], values["iface.iscsi_ifacename"]
        )
        keys = schema.file_keys(RecordKind.NODE, ipv6)
        for key, value in pairs:
            if key not in keys:
                tx.result.warnings.append(f"{ref}: {key} does not apply to this record's iface key set; skipped")
                continue
            values[key] = value
        text = format_record(RecordKind.NODE, values)
        self._check_acceptable(RecordKind.NODE, text, ref.relpath, "default" if ref.old_style else ref.iface)
        tx.write(ref.relpath, text)
        tx.result.nodes.append(ref)

    def update(self, ref: NodeRef | DiscoveryRef | IfaceRef, settings: Settings) -> WriteResult:
        """Set ``settings`` on one record, whatever its kind (see the ``update_*`` methods)."""
        if isinstance(ref, NodeRef):
            pairs = self._validate_node_settings(settings)
            with self.transaction() as tx:
                if not tx.exists(ref.relpath):
                    raise RecordNotFoundError(f"no node record {ref}")
                self._update_node_locked(tx, ref, pairs)
                return tx.result
        if isinstance(ref, DiscoveryRef):
            return self.update_discovery(ref, settings)
        return self.update_iface(ref.name, settings)

    # ---- delete -------------------------------------------------------------------

    def delete_nodes(
        self, target: str | None = None, portal: PortalArg = None, iface: str | None = None
    ) -> WriteResult:
        """``iscsiadm -m node [-T] [-p] [-I] -o delete``: matching records and their links.

        ``target`` may be a glob. With no filter at all every node record is deleted.
        """
        with self.transaction() as tx:
            refs = self.nodes(target, portal, iface)
            if not refs:
                raise RecordNotFoundError(f"no node record for {_describe(target, portal, iface)}")
            for ref in refs:
                self._delete_node_locked(tx, ref, tx.result)
            return tx.result

    def delete(self, ref: NodeRef | DiscoveryRef | IfaceRef) -> WriteResult:
        """Delete one record with iscsiadm's side effects, whatever its kind."""
        if isinstance(ref, NodeRef):
            with self.transaction() as tx:
                if not tx.exists(ref.relpath):
                    raise RecordNotFoundError(f"no node record {ref}")
                self._delete_node_locked(tx, ref, tx.result)
                return tx.result
        if isinstance(ref, DiscoveryRef):
            return self.delete_discovery(ref)
        return self.delete_iface(ref.name)

    def _delete_node_locked(self, tx: _Tx, ref: NodeRef, result: WriteResult) -> bool:
        """``idbm_delete_node``: the discovery link (from the record), the file, empty dirs."""
        if not ref.old_style:
            data = self._read(ref.relpath)
            if data is not None:
                rec = parse_record(data, ref.relpath, RecordKind.NODE, iface_hint=ref.iface)
                values = rec.some_values(_LINK_KEYS)
                link = self._link_relpath(tx, values, creating=False)
                if link is None:
                    result.warnings.append(
                        f"{ref}: discovery type {values['node.discovery_type']} keeps no link; "
                        "deleted the record anyway (iscsiadm 2.1.8 would refuse)"
                    )
                elif tx.exists(link):
                    tx.unlink(link)
        if not tx.unlink(ref.relpath):
            result.warnings.append(f"{ref}: no record file {self.path(ref.relpath)}")
            return False
        result.nodes.append(ref)
        portal_gone_or_kept = True
        if not ref.old_style and tx.is_dir(ref.portal_relpath):
            rest = [n for n in tx.listdir(ref.portal_relpath) if n != layout.ST_CONFIG]
            if not rest:
                portal_gone_or_kept = tx.rmdir(ref.portal_relpath)
        if portal_gone_or_kept:
            tx.rmdir(ref.target_relpath)
        return True

    # ==================================================================================
    # Discovery records

    def discoveries(self, kind: RecordKind | None = None) -> list[DiscoveryRef]:
        """SendTargets then iSNS discovery records, each byte-sorted."""
        kinds = (kind,) if kind is not None else (RecordKind.SENDTARGETS, RecordKind.ISNS)
        return scan_discovery(self.root, kinds).records

    def _find_discovery(self, portal: str | DiscoveryRef, kind: RecordKind | None) -> DiscoveryRef:
        if isinstance(portal, DiscoveryRef):
            return portal
        kinds = (kind,) if kind is not None else (RecordKind.SENDTARGETS, RecordKind.ISNS)
        found: list[DiscoveryRef] = []
        for k in kinds:
            wanted = DiscoveryRef.parse(portal, k)
            found += [
                r
                for r in self.discoveries(k)
                if r.port == wanted.port and layout.same_address(r.address, wanted.address)
            ]
        if not found:
            raise RecordNotFoundError(f"no discovery record for {portal}")
        if len(found) > 1:
            raise DatabaseError(f"both a SendTargets and an iSNS record match {portal}; give the type")
        return found[0]

    def discovery(self, portal: str | DiscoveryRef, kind: RecordKind | None = None) -> DiscoveryRecord:
        """One discovery record (``ADDR[:PORT]``), with the nodes linked from its directory."""
        ref = self._find_discovery(portal, kind)
        data = self._read_locked([ref.relpath])[0]
        if data is None:
            raise RecordNotFoundError(f"no discovery record {ref} ({self.path(ref.relpath)})")
        rec = parse_record(data, str(self.path(ref.relpath)), ref.kind)
        links = [
            link.node for link in scan_discovery(self.root, (ref.kind,)).links if link.discovery == ref and link.node
        ]
        return DiscoveryRecord(ref, rec, links)

    def new_discovery(
        self,
        portal: str | DiscoveryRef,
        kind: RecordKind = RecordKind.SENDTARGETS,
        *,
        settings: Settings | None = None,
        overwrite: bool = False,
    ) -> DiscoveryRecord:
        """``iscsiadm -m discoverydb -t st|isns -p portal -o new`` (then ``-o update`` of settings)."""
        ref = portal if isinstance(portal, DiscoveryRef) else DiscoveryRef.parse(portal, kind)
        check_path_component(ref.entry, "discovery portal")
        pairs = [validate_setting(ref.kind, k, v) for k, v in _pairs(settings)]
        defaults = self.new_defaults()
        with self.transaction() as tx:
            existing = [r for r in self.discoveries(ref.kind) if r.entry == ref.entry]
            if existing and not overwrite:
                raise RecordExistsError(
                    f"discovery record {ref} already exists; pass overwrite to reset it as iscsiadm -o new does"
                )
            values = defaults.for_kind(ref.kind)
            values.update(
                {
                    "discovery.startup": "manual",
                    "discovery.type": ref.type_name,
                    "discovery.sendtargets.address": ref.address,
                    "discovery.sendtargets.port": str(ref.port),
                }
            )
            for key, value in pairs:
                values[key] = value
            self._write_discovery_locked(tx, ref, values)
            if self.dry_run:  # nothing was written to read back
                new_ref = DiscoveryRef(ref.kind, ref.address, ref.port)
                text = format_record(ref.kind, values)
                return DiscoveryRecord(new_ref, parse_record(text, ref.relpath, ref.kind), [])
        return self.discovery(DiscoveryRef(ref.kind, ref.address, ref.port))

    def _write_discovery_locked(self, tx: _Tx, ref: DiscoveryRef, values: Mapping[str, str]) -> None:
        text = format_record(ref.kind, values)
        self._check_acceptable(ref.kind, text, ref.relpath, "default")
        tx.ensure_dir(ref.top)
        if tx.exists(ref.dir_relpath) and not tx.is_dir(ref.dir_relpath):
            tx.unlink(ref.dir_relpath)  # an old-style record file: converted, as iscsiadm does
        tx.ensure_dir(ref.dir_relpath)
        new_ref = DiscoveryRef(ref.kind, ref.address, ref.port)
        tx.write(new_ref.relpath, text)

    def update_discovery(
        self, portal: str | DiscoveryRef, settings: Settings, kind: RecordKind | None = None
    ) -> WriteResult:
        """``iscsiadm -m discoverydb -t TYPE -p portal -o update -n KEY -v VALUE``."""
        ref = self._find_discovery(portal, kind)
        pairs = [validate_setting(ref.kind, k, v) for k, v in _pairs(settings)]
        if not pairs:
            raise InvalidSettingError("", "", "nothing to set; give KEY=VALUE")
        with self.transaction() as tx:
            data = self._read(ref.relpath)
            if data is None:
                raise RecordNotFoundError(f"no discovery record {ref}")
            rec = parse_record(data, ref.relpath, ref.kind)
            values = rec.values()
            written = DiscoveryRef(
                ref.kind, values["discovery.sendtargets.address"], _int_or(values["discovery.sendtargets.port"])
            )
            _check_write_target(self.path(ref.relpath), ref.dir_relpath, written.dir_relpath)
            tx.result.warnings.extend(f"{self.path(ref.relpath)}: {w}" for w in rec.rewrite_warnings())
            for key, value in pairs:
                values[key] = value
            self._write_discovery_locked(tx, ref, values)
            return tx.result

    def delete_discovery(
        self, portal: str | DiscoveryRef, kind: RecordKind | None = None, *, prune_dangling: bool = False
    ) -> WriteResult:
        """``iscsiadm -m discoverydb -t TYPE -p portal -o delete``: the record and its nodes.

        Every node linked from the record's directory is deleted (with its own link), then
        the directory. A link whose node is gone stays (and so does the directory), as with
        iscsiadm, unless ``prune_dangling``.
        """
        ref = self._find_discovery(portal, kind)
        with self.transaction() as tx:
            tx.unlink(ref.relpath)
            if ref.old_style:
                return tx.result
            for name in sorted(tx.listdir(ref.dir_relpath)):
                if name == (layout.ST_CONFIG if ref.kind is RecordKind.SENDTARGETS else layout.ISNS_CONFIG):
                    continue
                node = layout.parse_link_name(name)
                if node is None:
                    tx.result.warnings.append(f"{ref.dir_relpath}/{name}: improperly formed link; left alone")
                    continue
                if not self._delete_node_locked(tx, node, tx.result) and prune_dangling:
                    tx.unlink(f"{ref.dir_relpath}/{name}")
            tx.rmdir(ref.dir_relpath)
            return tx.result

    # ==================================================================================
    # Ifaces

    def ifaces(self, builtin: bool = True) -> list[IfaceRef]:
        """Stored ifaces byte-sorted, then ``default`` and ``iser`` (as ``iscsiadm -m iface``)."""
        refs, _ = scan_ifaces(self.root)
        if builtin:
            refs = refs + [IfaceRef(n) for n in layout.VIRTUAL_IFACES]
        return refs

    def iface(self, name: str) -> IfaceRecord:
        """One iface record (the built-ins are synthesised)."""
        ref = IfaceRef(name)
        if ref.virtual:
            transport = "tcp" if name == "default" else "iser"
            entries = f"iface.iscsi_ifacename = {name}\niface.transport_name = {transport}\n"
            return IfaceRecord(ref, parse_record(entries, f"(built-in {name})", RecordKind.IFACE, iface_hint=name))
        check_path_component(name, "iface name")
        data = self._read_locked([ref.relpath])[0]
        if data is None:
            raise RecordNotFoundError(f"no iface record {name!r} ({self.path(ref.relpath)})")
        return IfaceRecord(ref, parse_record(data, str(self.path(ref.relpath)), RecordKind.IFACE, iface_hint=name))

    def new_iface(self, name: str, *, settings: Settings | None = None, overwrite: bool = False) -> IfaceRecord:
        """``iscsiadm -m iface -I name -o new [-n KEY -v VALUE]...``."""
        validate_iface_name(name)
        ref = IfaceRef(name)
        if ref.virtual:
            raise DatabaseError(f"iface {name} is a special interface and is not stored in {self.path(layout.IFACES)}")
        values = _fresh_iface_values(name)
        pairs = _validate_iface_settings(values, _pairs(settings))
        with self.transaction() as tx:
            if tx.exists(ref.relpath) and not overwrite:
                raise RecordExistsError(
                    f"iface {name} already exists; use iface set, or overwrite to reset it as iscsiadm -o new does"
                )
            for key, value in pairs:
                values[key] = value
            text = format_record(RecordKind.IFACE, values)
            self._check_acceptable(RecordKind.IFACE, text, ref.relpath, name)
            tx.ensure_dir(layout.IFACES)
            tx.write(ref.relpath, text)
            if pairs:
                self._update_bound_nodes(tx, name, pairs)
            if self.dry_run:
                return IfaceRecord(ref, parse_record(text, ref.relpath, RecordKind.IFACE, iface_hint=name))
        return self.iface(name)

    def update_iface(self, name: str, settings: Settings) -> WriteResult:
        """``iscsiadm -m iface -I name -o update -n KEY -v VALUE``: the iface and its nodes."""
        ref = IfaceRef(name)
        if ref.virtual:
            raise DatabaseError(f"iface {name} is a special interface and cannot be modified")
        check_path_component(name, "iface name")
        with self.transaction() as tx:
            data = self._read(ref.relpath)
            if data is None:
                raise RecordNotFoundError(f"no iface record {name!r}")
            rec = parse_record(data, ref.relpath, RecordKind.IFACE, iface_hint=name)
            values = rec.values()
            _check_write_target(self.path(ref.relpath), ref.relpath, IfaceRef(values["iface.iscsi_ifacename"]).relpath)
            pairs = _validate_iface_settings(values, _pairs(settings))
            if not pairs:
                raise InvalidSettingError("", "", "nothing to set; give KEY=VALUE")
            tx.result.warnings.extend(f"{self.path(ref.relpath)}: {w}" for w in rec.rewrite_warnings())
            for key, value in pairs:
                values[key] = value
            text = format_record(RecordKind.IFACE, values)
            self._check_acceptable(RecordKind.IFACE, text, ref.relpath, name)
            tx.write(ref.relpath, text)
            self._update_bound_nodes(tx, name, pairs)
            return tx.result

    def _update_bound_nodes(self, tx: _Tx, name: str, pairs: Sequence[tuple[str, str]]) -> None:
        for node in self.bound_nodes(name):
            self._update_node_locked(tx, node, pairs)

    def bound_nodes(self, iface: str) -> list[NodeRef]:
        """Node records bound to an iface, matched as iscsiadm does: by the ``iface.iscsi_ifacename``
        (and transport) *inside* each record, so old-style records bound to it count too."""
        transport = ""
        if not IfaceRef(iface).virtual:
            data = self._read(IfaceRef(iface).relpath)
            if data is not None:
                transport = parse_record(data, "", RecordKind.IFACE, iface_hint=iface).value("iface.transport_name")
        found: list[NodeRef] = []
        for ref in self.nodes():
            data = self._read(ref.relpath)
            if data is None:
                continue
            values = parse_record(data, "", RecordKind.NODE).values()
            if values["iface.iscsi_ifacename"] != iface:
                continue
            if transport and iface != "default" and values["iface.transport_name"] != transport:
                continue
            found.append(ref)
        return found

    def delete_iface(self, name: str) -> WriteResult:
        """``iscsiadm -m iface -I name -o delete``: every node bound to it, then the iface."""
        ref = IfaceRef(name)
        if ref.virtual:
            raise DatabaseError(f"iface {name} is a special interface and cannot be deleted")
        check_path_component(name, "iface name")
        with self.transaction() as tx:
            if not tx.exists(ref.relpath):
                raise RecordNotFoundError(f"no iface record {name!r}")
            for node in self.bound_nodes(name):
                self._delete_node_locked(tx, node, tx.result)
            tx.unlink(ref.relpath)
            return tx.result

    # ==================================================================================
    # Everything (for clean, backups, doctor)

    def inventory(self) -> Inventory:
        """Every record and link with its path, dangling links and layout problems."""
        inv = Inventory()
        scan = scan_nodes(self.root)
        inv.nodes = scan.nodes
        inv.problems.extend(scan.problems)
        disc = scan_discovery(self.root)
        inv.discoveries = disc.records
        inv.problems.extend(disc.problems)
        links: list[LinkRef] = list(disc.links)
        for source in (layout.STATIC, layout.FW):
            found, problems = scan_links(self.root, source)
            links.extend(found)
            inv.problems.extend(problems)
        inv.links = links
        existing = {n.relpath for n in scan.nodes}
        inv.dangling = [link for link in links if link.node is None or link.node.relpath not in existing]
        inv.ifaces, problems = scan_ifaces(self.root)
        inv.problems.extend(problems)
        return inv

    def links_to(self, ref: NodeRef) -> list[str]:
        """The relpaths of links whose name designates this node record."""
        if ref.old_style:
            return []
        name = ref.link_name
        found: list[str] = []
        for rel in (f"{layout.STATIC}/{name}", f"{layout.FW}/{name}", f"{layout.ISNS_DIR}/{name}"):
            if os.path.lexists(self.root / rel):
                found.append(rel)
        for top in (layout.SEND_TARGETS, layout.ISNS_DIR):
            try:
                with os.scandir(self.root / top) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=False) and os.path.lexists(os.path.join(entry.path, name)):
                            found.append(f"{top}/{entry.name}/{name}")
            except OSError:
                continue
        return found

    # ---- snapshots ----------------------------------------------------------------

    def _entry(self, rel: str) -> SnapshotEntry | None:
        from iscsikit.db.snapshot import SnapshotEntry

        path = self.root / rel
        try:
            st = path.lstat()
        except OSError:
            return None
        mode = st.st_mode & 0o7777
        if path.is_symlink():
            return SnapshotEntry(rel, "link", mode, target=os.readlink(path))
        if path.is_dir():
            return SnapshotEntry(rel, "dir", mode)
        return SnapshotEntry(rel, "file", mode, path.read_bytes())

    def _add_with_parents(self, snap: Snapshot, rel: str) -> None:
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            entry = self._entry("/".join(parts[:i]))
            if entry is not None:
                snap.add(entry)

    def snapshot(self, *refs: NodeRef | DiscoveryRef | IfaceRef) -> Snapshot:
        """The exact files, directories and links of these records, and of what deleting them
        would also delete (a discovery record's nodes, an iface's nodes)."""
        from iscsikit.db.snapshot import Snapshot

        snap = Snapshot()
        for ref in refs:
            if isinstance(ref, NodeRef):
                self._add_with_parents(snap, ref.relpath)
                for link_rel in self.links_to(ref):
                    self._add_with_parents(snap, link_rel)
            elif isinstance(ref, DiscoveryRef):
                self._add_with_parents(snap, ref.relpath)
                for link in scan_discovery(self.root, (ref.kind,)).links:
                    if link.discovery == ref:
                        self._add_with_parents(snap, link.relpath)
                        if link.node is not None and os.path.lexists(self.root / link.node.relpath):
                            snap.extend(self.snapshot(link.node))
            else:
                if not ref.virtual:
                    self._add_with_parents(snap, ref.relpath)
                for node in self.bound_nodes(ref.name):
                    snap.extend(self.snapshot(node))
        return snap

    def restore(self, snapshot: Snapshot, *, overwrite: bool = False) -> WriteResult:
        """Put a snapshot's entries back (under the lock); existing ones are kept unless ``overwrite``.

        For snapshots this process took with :meth:`snapshot`: entries are written as they are
        (links, modes). A snapshot read from a file someone else could have written goes through
        :func:`iscsikit.clean.backup.restore_backup` instead, which checks every member first
        (:mod:`iscsikit.clean.member`) and follows no link.
        """
        with self.transaction() as tx:
            for entry in snapshot.ordered():
                rel = _safe_relpath(entry.relpath)
                if entry.type == "dir":
                    tx.ensure_dir(rel)
                    if not self.dry_run:
                        os.chmod(self.root / rel, entry.mode & 0o7777 or DIR_MODE)
                    continue
                if tx.exists(rel):
                    if not overwrite:
                        tx.result.warnings.append(f"{rel}: exists; kept")
                        continue
                    if entry.type == "link" or os.path.islink(self.root / rel):
                        tx.unlink(rel)
                if entry.type == "link":
                    tx.symlink(rel, entry.target)
                else:
                    tx.write_bytes(rel, entry.data, entry.mode & 0o7777 or FILE_MODE)
            return tx.result


# --------------------------------------------------------------------------------------
# helpers


def _describe(target: str | None, portal: PortalArg, iface: str | None) -> str:
    parts = [f"target {target}" if target else "any target"]
    if portal is not None:
        parts.append(f"portal {portal}")
    if iface is not None:
        parts.append(f"iface {iface}")
    return ", ".join(parts)


def _safe_relpath(rel: str) -> str:
    parts = rel.split("/")
    if rel.startswith("/") or not parts:
        raise InvalidNameError("snapshot path", rel, "it must be relative to the DB root")
    for part in parts:
        check_path_component(part, "snapshot path component")
    return rel


def _fresh_iface_values(name: str) -> dict[str, str]:
    """``iface_setup_defaults``: a new iface has its name and transport tcp, nothing else."""
    from iscsikit.db.record import read_defaults

    values = read_defaults(RecordKind.IFACE, name)
    values["iface.transport_name"] = "tcp"
    return values


def _bound_by(values: Mapping[str, str], key: str) -> bool:
    value = values.get(key, "")
    return bool(value) and value != "default"


def _validate_iface_settings(values: Mapping[str, str], pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``verify_iface_params`` + ``iface_conf_update``: the key set is the iface's current one."""
    ipv6 = schema.iface_is_ipv6(values["iface.ipaddress"], values["iface.bootproto"], values["iface.iscsi_ifacename"])
    out: list[tuple[str, str]] = []
    for key, value in pairs:
        if key == "iface.iscsi_ifacename":
            raise InvalidSettingError(key, value, "an iface cannot be renamed; delete it and create a new one")
        if key == "iface.net_ifacename" and _bound_by(values, "iface.hwaddress"):
            raise InvalidSettingError(
                key, value, "the iface is bound by hwaddress; delete it and create a new one bound by net_ifacename"
            )
        if key == "iface.hwaddress" and _bound_by(values, "iface.net_ifacename"):
            raise InvalidSettingError(
                key, value, "the iface is bound by net_ifacename; delete it and create a new one bound by hwaddress"
            )
        out.append(validate_setting(RecordKind.IFACE, key, value, ipv6=ipv6))
    return out


def _int_or(text: str, default: int = 0) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _node_write_relpath(values: Mapping[str, str]) -> str:
    """Where iscsiadm's ``idbm_rec_write`` puts a node record: chosen by its *contents*."""
    tpgt = _int_or(values["node.tpgt"], -1)
    return NodeRef(
        values["node.name"],
        values["node.conn[0].address"],
        _int_or(values["node.conn[0].port"]),
        None if tpgt == -1 else tpgt,
        values["iface.iscsi_ifacename"],
    ).relpath


def _check_write_target(path: Path, here: str, there: str) -> None:
    """Refuse to rewrite a record whose contents say it belongs elsewhere: iscsiadm would write
    the update to that other file (creating a second record) and leave this one as it is."""
    if here != there:
        raise DatabaseError(
            f"{path}: its contents identify another record ({there}); iscsiadm -o update would write "
            "the change there and leave this file unchanged. Fix or delete this record first; nothing was written."
        )


def _check_node_identity(rec: Record, ref: NodeRef) -> None:
    """Report a record whose contents disagree with the path iscsiadm finds it by."""
    entries = rec.entries
    if (
        entries.get("node.name") == ref.target
        and entries.get("node.conn[0].address") == ref.address
        and entries.get("node.conn[0].port") == str(ref.port)
        and entries.get("node.tpgt") == str(-1 if ref.tpgt is None else ref.tpgt)
        and (ref.old_style or entries.get("iface.iscsi_ifacename") == ref.iface)
    ):
        return  # the common case, decided without building anything
    expected = {
        "node.name": ref.target,
        "node.conn[0].address": ref.address,
        "node.conn[0].port": str(ref.port),
        "node.tpgt": str(-1 if ref.tpgt is None else ref.tpgt),
    }
    if not ref.old_style:
        expected["iface.iscsi_ifacename"] = ref.iface
    for key, want in expected.items():
        got = rec.raw(key)
        if got is None:
            if key in ("node.name", "node.conn[0].address"):
                rec.issues.append(
                    Issue(rec.path, 1, f"the record has no {key}; iscsiadm shows it empty", "warning", key)
                )
            continue
        if got != want:
            rec.issues.append(
                Issue(
                    rec.path,
                    rec.line_of(key) or 1,
                    f"{key} = {got!r} disagrees with the record's path ({want!r})",
                    "warning",
                    key,
                )
            )


__all__ = ["Database"]
