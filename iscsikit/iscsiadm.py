"""A typed wrapper around ``iscsiadm``: argv builders, one exit-code policy, safe retries.

Every call goes through :class:`~iscsikit.runner.Runner` (so ``--host ns|chroot``, dry-run,
timeouts that kill the process group and secret masking apply) and every failure becomes
the :class:`~iscsikit.errors.IscsiadmError` subclass for its ``ISCSI_ERR_*`` code, with argv,
stdout and stderr attached. Nothing branches on whether stderr is empty.

Idempotence is part of the contract: "session exists" (15) on login and "no objects found"
(21) on logout or delete are success, so a CSI plugin can repeat any call after a crash.

Retries happen only where repeating is harmless: DB lock contention (``ISCSI_ERR_IDBM``,
``ISCSI_ERR_AGAIN``) on any call, and iscsid being briefly unreachable on read-only calls.
Login is not retried here; iscsid already retries logins (``initial_login_retry_max``).

>>> from iscsikit.runner import Runner
>>> adm = Iscsiadm(Runner(dry_run=True))
>>> " ".join(adm.argv_login("iqn.2026-11.org.example:t1", Portal.parse("10.0.0.1"), iface="default"))
'iscsiadm -m node -T iqn.2026-11.org.example:t1 -p 10.0.0.1:3260 -I default --login'
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iscsikit.errors import (
    IdbmError,
    IscsiadmError,
    NoObjectsFoundError,
    SessionExistsError,
    SessionNotFoundError,
    SysfsLookupError,
    UsageError,
)
from iscsikit.names import Portal, validate_iface_name, validate_iscsi_name
from iscsikit.runner import CommandResult, Runner, mask, mask_argv
from iscsikit.session.parse import (
    DiscoveredTarget,
    PortalOutcome,
    SessionInfo,
    parse_discovery,
    parse_portal_outcomes,
    parse_record,
    parse_session_flat,
    parse_session_tree,
)

if TYPE_CHECKING:
    from iscsikit.db.database import Database

log = logging.getLogger("iscsikit.iscsiadm")

# Codes worth repeating the same call for (see module docstring).
_RETRY_ANY = frozenset({IdbmError.code, 29})  # IDBM (lock contention), AGAIN
_RETRY_READ = _RETRY_ANY | {18, 33}  # + ISCSID_COMM_ERR, REQ_TIMEDOUT
# iscsiadm sometimes exits 0 after a failed DB write under concurrency (longhorn-engine#226).
_SILENT_DB_FAILURE = re.compile(
    r"Could not (?:add/update|stat .* to delete node|execute operation on all records)|"
    r"Could not (?:update|add) (?:node|discovery)"
)
_KEY_RE = re.compile(r"^(?:node|iface|discovery)\.[A-Za-z0-9_.\[\]]+$")

#: Node settings users ask for, by short name (initiator-peers.md section 4 item 4).
NODE_TIMEOUT_KEYS: Mapping[str, str] = {
    "replacement_timeout": "node.session.timeo.replacement_timeout",
    "abort_timeout": "node.session.err_timeo.abort_timeout",
    "lu_reset_timeout": "node.session.err_timeo.lu_reset_timeout",
    "tgt_reset_timeout": "node.session.err_timeo.tgt_reset_timeout",
    "host_reset_timeout": "node.session.err_timeo.host_reset_timeout",
    "login_timeout": "node.conn[0].timeo.login_timeout",
    "logout_timeout": "node.conn[0].timeo.logout_timeout",
    "noop_out_interval": "node.conn[0].timeo.noop_out_interval",
    "noop_out_timeout": "node.conn[0].timeo.noop_out_timeout",
    "initial_login_retry_max": "node.session.initial_login_retry_max",
}
DISCOVERY_CHAP_KEYS = {
    "username": "discovery.sendtargets.auth.username",
    "password": "discovery.sendtargets.auth.password",
    "username_in": "discovery.sendtargets.auth.username_in",
    "password_in": "discovery.sendtargets.auth.password_in",
}
SESSION_CHAP_KEYS = {
    "username": "node.session.auth.username",
    "password": "node.session.auth.password",
    "username_in": "node.session.auth.username_in",
    "password_in": "node.session.auth.password_in",
}


@dataclass(frozen=True, slots=True)
class Chap:
    """CHAP credentials; ``*_in`` set for mutual CHAP. ``repr`` never shows the secrets."""

    username: str
    password: str
    username_in: str | None = None
    password_in: str | None = None

    def __post_init__(self) -> None:
        if not self.username:
            raise UsageError("CHAP needs a user name")
        if not self.password:
            raise UsageError(f"CHAP user {self.username!r} has an empty secret")
        if (self.username_in is None) != (self.password_in is None):
            raise UsageError("mutual CHAP needs both username_in and password_in")

    def __repr__(self) -> str:
        mutual = f", username_in={self.username_in!r}" if self.username_in else ""
        return f"Chap(username={self.username!r}{mutual}, password=********)"

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.password_in) if s]

    def settings(self, keys: Mapping[str, str]) -> dict[str, str]:
        """The record keys to set (authmethod first, as iscsiadm wants it)."""
        out = {keys["username"].rsplit(".", 1)[0] + ".authmethod": "CHAP"}
        out[keys["username"]] = self.username
        out[keys["password"]] = self.password
        if self.username_in and self.password_in:
            out[keys["username_in"]] = self.username_in
            out[keys["password_in"]] = self.password_in
        return out


def _p(portal: Portal) -> str:
    """``-p`` argument: ``ADDR:PORT`` (IPv6 bracketed); iscsiadm ignores a tpgt there."""
    return portal.host_port


class Iscsiadm:
    """Runs iscsiadm through a Runner; see the module docstring.

    CHAP secrets never go on iscsiadm's command line (``/proc/*/cmdline`` is world-readable):
    they are written into the discovery and node records by iscsikit's DB writer
    (:class:`~iscsikit.db.database.Database`, under iscsiadm's lock, byte for byte what
    ``iscsiadm -o update`` writes), and iscsiadm then runs without them. ``db`` is that DB;
    by default the one iscsiadm uses where the runner runs commands (:meth:`records`).

    ``timeout`` bounds ordinary calls; ``login_timeout`` bounds ``--login`` (which waits for
    iscsid's own retries: login_timeout x initial_login_retry_max, 15 s x 8 on Debian).
    Killing iscsiadm does not cancel a login inside iscsid; a later login then reports
    "session exists", which is success.
    """

    def __init__(
        self,
        runner: Runner | None = None,
        *,
        program: str = "iscsiadm",
        timeout: float = 60.0,
        login_timeout: float = 180.0,
        attempts: int = 4,
        backoff: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
        db: Database | None = None,
    ) -> None:
        self.runner = runner if runner is not None else Runner()
        self._db = db
        self.program = program
        self.timeout = timeout
        self.login_timeout = login_timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._sleep = sleep

    # ---- the one place iscsiadm runs ------------------------------------------------

    def call(
        self,
        args: Sequence[str],
        *,
        ok: Iterable[int] = (),
        timeout: float | None = None,
        mutating: bool = False,
        redact: Iterable[str] = (),
        retry_on: Iterable[int] = _RETRY_ANY,
        db_write: bool = False,
    ) -> CommandResult:
        """Run ``iscsiadm *args``; return the result when the exit code is 0 or in ``ok``.

        Raises the IscsiadmError subclass for the code otherwise (after retrying codes in
        ``retry_on``). ``db_write`` also turns iscsiadm's silent DB failures (exit 0 but
        "Could not add/update" on stderr) into IdbmError.
        """
        argv = [self.program, *args]
        ok_codes = {0, *ok}
        retry = set(retry_on)
        secrets = [s for s in redact if s]
        for attempt in range(1, self.attempts + 1):
            res = self.runner.run(
                argv,
                timeout=self.timeout if timeout is None else timeout,
                check=False,
                mutating=mutating,
                redact=secrets,
            )
            rc = res.returncode
            if rc == 0 and db_write and _SILENT_DB_FAILURE.search(res.stderr):
                rc = IdbmError.code
            if rc in ok_codes:
                return res
            err = IscsiadmError.from_result(
                mask_argv(argv, secrets), rc, mask(res.stdout, secrets), mask(res.stderr, secrets)
            )
            if rc in retry and attempt < self.attempts:
                delay = self.backoff * (2 ** (attempt - 1))
                log.debug("%s (attempt %d/%d); retrying in %.2fs", err, attempt, self.attempts, delay)
                self._sleep(delay)
                continue
            raise err
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- records written directly (secrets) ------------------------------------------

    def records(self) -> Database:
        """The DB iscsiadm uses, seen from here (``--host ns|chroot`` through ``host_path``)."""
        if self._db is None:
            from iscsikit.db.database import Database
            from iscsikit.db.locate import locate_db_root
            from iscsikit.db.lock import DEFAULT_LOCK_DIR

            root = locate_db_root(runner=self.runner).path
            self._db = Database(
                self.runner.host_path(str(root)),
                link_root=root,
                lock_dir=self.runner.host_path(str(DEFAULT_LOCK_DIR)),
                dry_run=self.runner.dry_run,
            )
        return self._db

    def write_node_settings(
        self, target: str, portal: Portal | None, settings: Mapping[str, str], *, iface: str | None = None
    ) -> None:
        """Set keys of the matching node records with the DB writer (nothing on a command line)."""
        from iscsikit.db.layout import is_glob

        if is_glob(target):
            raise UsageError(f"target name {target!r}: a single target is needed here, not a glob")
        self.records().update_nodes(settings, target, portal, iface)

    def write_discovery_settings(self, portal: Portal, settings: Mapping[str, str]) -> dict[str, str] | None:
        """Create or update the SendTargets record of ``portal`` with ``settings`` (the DB writer).

        Returns the previous values of those keys, or None when the record was created.
        """
        from iscsikit.db.layout import DiscoveryRef
        from iscsikit.db.schema import RecordKind

        db = self.records()
        ref = DiscoveryRef(RecordKind.SENDTARGETS, portal.address, portal.port)
        if any(r.entry == ref.entry for r in db.discoveries(RecordKind.SENDTARGETS)):
            values = db.discovery(ref).record.values()
            db.update_discovery(ref, settings)
            return {k: values[k] for k in settings}
        db.new_discovery(ref, settings=settings)
        return None

    def version(self) -> str:
        res = self.call(["--version"], retry_on=())
        m = re.search(r"version\s+(\S+)", res.stdout)
        return m.group(1) if m else res.stdout.strip()

    # ---- argv builders (pure; tested without running anything) ------------------------

    def _node_args(self, target: str | None, portal: Portal | None, iface: str | None) -> list[str]:
        args = ["-m", "node"]
        if target is not None:
            args += ["-T", validate_iscsi_name(target, "target name", strict=False)]
        if portal is not None:
            args += ["-p", _p(portal)]
        if iface is not None:
            args += ["-I", validate_iface_name(iface)]
        return args

    def argv_login(self, target: str, portal: Portal | None = None, *, iface: str | None = None) -> list[str]:
        return [self.program, *self._node_args(target, portal, iface), "--login"]

    def argv_logout(self, target: str, portal: Portal | None = None, *, iface: str | None = None) -> list[str]:
        return [self.program, *self._node_args(target, portal, iface), "--logout"]

    # ---- discovery --------------------------------------------------------------------

    def discover_sendtargets(
        self,
        portal: Portal,
        *,
        iface: str | None = None,
        chap: Chap | None = None,
        persist: bool = True,
        timeout: float | None = None,
    ) -> list[DiscoveredTarget]:
        """SendTargets discovery. ``persist=False`` leaves the node DB untouched.

        A portal that offers no targets (21) gives an empty list.

        With discovery CHAP a discoverydb record is needed to carry the credentials; it is
        created, used, and (when not persisting) deleted again.
        """
        where = ["-t", "st", "-p", _p(portal)] + (["-I", validate_iface_name(iface)] if iface else [])
        nonpersist = [] if persist else ["-o", "nonpersistent"]
        if chap is None:
            res = self.call(
                ["-m", "discovery", *where, *nonpersist],
                ok=(NoObjectsFoundError.code,),
                timeout=timeout,
                mutating=persist,
                db_write=persist,
            )
            return parse_discovery(res.stdout)
        # The credentials go into the discovery record (never into argv); ``--discover`` then
        # reads them from it, as a later ``iscsiadm -m discoverydb --discover`` would.
        previous = self.write_discovery_settings(portal, chap.settings(DISCOVERY_CHAP_KEYS))
        try:
            res = self.call(
                ["-m", "discoverydb", *where, "--discover", *nonpersist],
                ok=(NoObjectsFoundError.code,),
                timeout=timeout,
                mutating=True,
                db_write=persist,
            )
        finally:
            if not persist:
                if previous is None:
                    self.call(["-m", "discoverydb", *where, "-o", "delete"], ok=(21,), mutating=True)
                else:  # it was there before: only the credentials we put in are taken back
                    self.write_discovery_settings(portal, previous)
        return parse_discovery(res.stdout)

    def discover_isns(
        self,
        server: Portal,
        *,
        iface: str | None = None,
        persist: bool = True,
        timeout: float | None = None,
    ) -> list[DiscoveredTarget]:
        """iSNS discovery against ``server`` (default iSNS port 3205 when none was given)."""
        args = ["-m", "discovery", "-t", "isns", "-p", _p(server)]
        if iface:
            args += ["-I", validate_iface_name(iface)]
        if not persist:
            args += ["-o", "nonpersistent"]
        res = self.call(
            args,
            ok=(NoObjectsFoundError.code,),
            timeout=timeout,
            mutating=persist,
            db_write=persist,
            retry_on=_RETRY_READ,
        )
        return parse_discovery(res.stdout)

    def delete_discovery(self, portal: Portal, kind: str = "st") -> None:
        """Delete a discovery record (and the node links it made). Missing is success."""
        self.call(["-m", "discoverydb", "-t", kind, "-p", _p(portal), "-o", "delete"], ok=(21, 7), mutating=True)

    # ---- node records -----------------------------------------------------------------

    def node_new(self, target: str, portal: Portal, *, iface: str | None = None) -> None:
        """Create a node record (static configuration, no discovery). Existing is fine."""
        args = self._node_args(target, portal, iface)
        if portal.tpgt is not None:
            # "-p addr:port,tpgt" makes a new-style record with the right tpgt.
            args[args.index("-p") + 1] = f"{_p(portal)},{portal.tpgt}"
        self.call([*args, "-o", "new"], mutating=True, db_write=True)

    def node_exists(self, target: str, portal: Portal | None = None, *, iface: str | None = None) -> bool:
        try:
            self.call([*self._node_args(target, portal, iface), "-o", "show"], retry_on=_RETRY_READ)
        except NoObjectsFoundError:
            return False
        return True

    def node_update(
        self,
        target: str,
        portal: Portal | None,
        settings: Mapping[str, str | int],
        *,
        iface: str | None = None,
        redact: Iterable[str] = (),
    ) -> None:
        """Set node record keys (``node.startup``, ``node.session.scan``, timeouts...).

        One ``-o update`` per key, in the given order; iscsiadm rejects an unknown key or
        value with ISCSI_ERR_INVAL (7), which is raised as InvalidParameterError.
        """
        base = self._node_args(target, portal, iface)
        secrets = list(redact)
        for key, value in settings.items():
            if not _KEY_RE.match(key):
                raise UsageError(f"not an open-iscsi node setting: {key!r}")
            self.call(
                [*base, "-o", "update", "-n", key, "-v", str(value)],
                mutating=True,
                redact=secrets,
                db_write=True,
            )

    def set_session_chap(self, target: str, portal: Portal | None, chap: Chap, *, iface: str | None = None) -> None:
        """Session CHAP into the node records, by the DB writer (the secret is never in argv)."""
        self.write_node_settings(target, portal, chap.settings(SESSION_CHAP_KEYS), iface=iface)

    def node_delete(self, target: str, portal: Portal | None = None, *, iface: str | None = None) -> None:
        """Delete node records. Missing records are success."""
        self.call([*self._node_args(target, portal, iface), "-o", "delete"], ok=(21,), mutating=True)

    # ---- login / logout ---------------------------------------------------------------

    def login(
        self,
        target: str,
        portal: Portal | None = None,
        *,
        iface: str | None = None,
        timeout: float | None = None,
    ) -> list[PortalOutcome]:
        """Log in to one portal, or to every portal of ``target`` when ``portal`` is None.

        Already logged in (15) is success. Returns what iscsiadm reported per portal.
        """
        res = self.call(
            self.argv_login(target, portal, iface=iface)[1:],
            ok=(SessionExistsError.code,),
            timeout=self.login_timeout if timeout is None else timeout,
            mutating=True,
        )
        return parse_portal_outcomes(res.stdout, res.stderr)

    def login_all(self, which: str = "all", *, timeout: float | None = None) -> list[PortalOutcome]:
        """Log in to every node record (``which="all"``), or those with ``node.startup`` =
        ``automatic`` / ``manual`` / ``onboot``. Existing sessions and no records are success."""
        if which not in ("all", "automatic", "manual", "onboot"):
            raise UsageError(f"login_all: which must be all, automatic, manual or onboot, got {which!r}")
        res = self.call(
            ["-m", "node", f"--loginall={which}"],
            ok=(SessionExistsError.code, NoObjectsFoundError.code),
            timeout=self.login_timeout if timeout is None else timeout,
            mutating=True,
        )
        return parse_portal_outcomes(res.stdout, res.stderr)

    def logout(self, target: str, portal: Portal | None = None, *, iface: str | None = None) -> list[PortalOutcome]:
        """Log out of one portal, or every session of ``target``. Not logged in (21) is success."""
        res = self.call(
            self.argv_logout(target, portal, iface=iface)[1:], ok=(NoObjectsFoundError.code,), mutating=True
        )
        return parse_portal_outcomes(res.stdout, res.stderr)

    def logout_all(self) -> list[PortalOutcome]:
        res = self.call(["-m", "node", "--logoutall=all"], ok=(NoObjectsFoundError.code,), mutating=True)
        return parse_portal_outcomes(res.stdout, res.stderr)

    def logout_session(self, sid: int) -> list[PortalOutcome]:
        """Log out of session ``sid`` directly: works even when its node record is gone (tns-csi#209).

        A session that no longer exists (2, 21, 22) is success.
        """
        res = self.call(
            ["-m", "session", "-r", str(int(sid)), "-u"],
            ok=(SessionNotFoundError.code, NoObjectsFoundError.code, SysfsLookupError.code),
            mutating=True,
        )
        return parse_portal_outcomes(res.stdout, res.stderr)

    # ---- sessions ---------------------------------------------------------------------

    def rescan_session(self, sid: int, *, timeout: float | None = None) -> None:
        """``-m session -r SID --rescan``: scans every LUN of the session (slow on big targets)."""
        self.call(["-m", "session", "-r", str(int(sid)), "--rescan"], timeout=timeout, mutating=True)

    def sessions(self, level: int = 0, *, sid: int | None = None) -> list[SessionInfo]:
        """Parsed ``-m session -P level``. None (21) is an empty list. Prefer sysfs for listing."""
        if level not in (0, 1, 2, 3):
            raise UsageError(f"print level must be 0-3, got {level}")
        args = ["-m", "session"]
        if sid is not None:
            args += ["-r", str(int(sid))]
        if level:
            args += ["-P", str(level)]
        res = self.call(args, ok=(NoObjectsFoundError.code,), retry_on=_RETRY_READ)
        if res.returncode:
            return []
        return parse_session_tree(res.stdout) if level else parse_session_flat(res.stdout)

    # ---- ifaces -----------------------------------------------------------------------

    def iface_show(self, name: str) -> dict[str, str | None]:
        res = self.call(["-m", "iface", "-I", validate_iface_name(name), "-o", "show"], retry_on=_RETRY_READ)
        return parse_record(res.stdout)

    def iface_exists(self, name: str) -> bool:
        try:
            self.iface_show(name)
        except (NoObjectsFoundError, SessionNotFoundError) as exc:
            log.debug("iface %s: %s", name, exc)
            return False
        except IscsiadmError as exc:
            if exc.error_code in (7, 21, 6):
                return False
            raise
        return True

    def iface_new(self, name: str) -> None:
        self.call(["-m", "iface", "-I", validate_iface_name(name), "-o", "new"], mutating=True, db_write=True)

    def iface_update(self, name: str, settings: Mapping[str, str]) -> None:
        for key, value in settings.items():
            if not _KEY_RE.match(key) or not key.startswith("iface."):
                raise UsageError(f"not an open-iscsi iface setting: {key!r}")
            self.call(
                ["-m", "iface", "-I", validate_iface_name(name), "-o", "update", "-n", key, "-v", value],
                mutating=True,
                db_write=True,
            )

    def iface_delete(self, name: str) -> None:
        """Delete an iface record (and its node bindings). Missing is success."""
        self.call(["-m", "iface", "-I", validate_iface_name(name), "-o", "delete"], ok=(21, 7), mutating=True)
