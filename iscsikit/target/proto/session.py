"""What the protocol core knows about targets and sessions: plain data, no I/O.

* :class:`TargetDirectory` is the configuration the core needs: the targets (name, portals,
  ACL, CHAP), discovery authentication and the negotiation limits. The server builds it from
  :mod:`iscsikit.target.config`.
* :class:`InitiatorAcl` is one entry of a target's access list (LIO's "node ACL"): an initiator
  name, optionally with CHAP credentials of its own. A target with no list (``acls=None``)
  admits every initiator name; one with a list (even an empty one) admits only those named.
* :class:`SessionTable` is shared by every connection of a process: TSIH allocation, the
  (initiator, ISID, target) index used for session reinstatement, and the CHAP replay log.
* :class:`Session` holds the session-wide sequence numbers (ExpCmdSN and the window) and the
  negotiated parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from iscsikit.target.proto.chap import ChallengeLog, ChapCredentials
from iscsikit.target.proto.keys import SessionParams, TargetLimits
from iscsikit.target.proto.serial import sn_add

if TYPE_CHECKING:
    from iscsikit.target.proto.connection import TargetConnection

__all__ = [
    "AuthConfig",
    "InitiatorAcl",
    "PortalInfo",
    "Session",
    "SessionTable",
    "TargetDirectory",
    "TargetInfo",
    "acl_map",
]


@dataclass(frozen=True, slots=True)
class PortalInfo:
    """A network portal and its target portal group tag."""

    address: str
    port: int = 3260
    tpgt: int = 1

    def target_address(self) -> str:
        """``TargetAddress`` value: ``ip:port,tpgt`` with IPv6 in brackets."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port},{self.tpgt}"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """CHAP settings for one kind of session: ``chap`` the initiator must prove, ``mutual`` ours."""

    chap: ChapCredentials | None = None
    mutual: ChapCredentials | None = None
    algorithms: tuple[int, ...] = (7, 8, 6, 5)

    def __post_init__(self) -> None:
        if self.mutual is not None and self.chap is None:
            raise ValueError("mutual CHAP needs one-way CHAP credentials too")
        if self.mutual is not None and self.chap is not None and self.mutual.secret == self.chap.secret:
            # RFC 7143 12.1.3: a secret that authenticates an initiator must not authenticate a target.
            raise ValueError("the mutual (target) secret must differ from the initiator's CHAP secret")


@dataclass(frozen=True, slots=True)
class InitiatorAcl:
    """One initiator admitted to a target; ``auth`` its own CHAP, or None for the target's."""

    initiator: str
    auth: AuthConfig | None = None

    def __post_init__(self) -> None:
        if self.auth is not None and self.auth.chap is None:
            raise ValueError(f"ACL for {self.initiator}: own CHAP settings need a CHAP user and secret")


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """One target as the protocol sees it (its LUNs live in the server)."""

    name: str
    portals: tuple[PortalInfo, ...] = ()
    alias: str = ""
    #: The access list by initiator name; None admits every initiator (no ACL at all).
    acls: Mapping[str, InitiatorAcl] | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)

    def allows(self, initiator: str) -> bool:
        return self.acls is None or initiator in self.acls

    def acl_for(self, initiator: str) -> InitiatorAcl | None:
        return None if self.acls is None else self.acls.get(initiator)

    def auth_for(self, initiator: str) -> AuthConfig:
        """What ``initiator`` must prove: its ACL entry's own CHAP, else the target's."""
        acl = self.acl_for(initiator)
        if acl is not None and acl.auth is not None:
            return AuthConfig(acl.auth.chap, acl.auth.mutual, self.auth.algorithms)
        return self.auth

    @property
    def protected(self) -> bool:
        """It checks something: an access list or CHAP (what a non-loopback portal requires)."""
        return self.acls is not None or self.auth.chap is not None


def acl_map(entries: Iterable[InitiatorAcl] | None) -> dict[str, InitiatorAcl] | None:
    """Entries by initiator name (None stays None: no ACL)."""
    return None if entries is None else {e.initiator: e for e in entries}


@dataclass(frozen=True, slots=True)
class TargetDirectory:
    """Everything the core needs from configuration."""

    targets: Mapping[str, TargetInfo]
    limits: TargetLimits = field(default_factory=TargetLimits)
    discovery_auth: AuthConfig = field(default_factory=AuthConfig)
    #: Seconds between target NOP-In pings (the server's timer reads it).
    nop_interval: float = 5.0

    def visible_to(self, initiator: str) -> list[TargetInfo]:
        """Targets SendTargets may list for ``initiator``: those whose ACL admits its name.

        A target without an access list is listed to everyone; one with a list (even empty)
        only to the initiators on it, as LIO lists only targets with a node ACL for the name.
        """
        return [t for t in self.targets.values() if t.allows(initiator)]


@dataclass(slots=True, eq=False)
class Session:
    """One iSCSI session (one connection at MaxConnections=1)."""

    tsih: int
    session_id: int
    isid: bytes
    initiator_name: str
    target_name: str
    discovery: bool
    params: SessionParams
    exp_cmd_sn: int = 0
    queue_depth: int = 128
    #: Non-immediate commands accepted (ExpCmdSN advanced past them) and not yet answered.
    active: int = 0
    initiator_alias: str = ""
    #: The CHAP user the initiator proved at login ("" when the login used no CHAP).
    chap_user: str = ""
    connection: TargetConnection | None = field(default=None, repr=False)

    @property
    def max_cmd_sn(self) -> int:
        """Window edge: the window closes as commands pile up, and reopens as they complete."""
        free = self.queue_depth - self.active
        return sn_add(self.exp_cmd_sn, (free if free > 0 else 0) - 1)


@dataclass(slots=True)
class SessionTable:
    """Process-wide session registry: TSIHs, reinstatement lookup, CHAP replay log."""

    by_tsih: dict[int, Session] = field(default_factory=dict)
    by_key: dict[tuple[str, bytes, str], Session] = field(default_factory=dict)
    challenges: ChallengeLog = field(default_factory=ChallengeLog)
    _next_tsih: int = 1
    _next_id: int = 1

    def find(self, initiator: str, isid: bytes, target: str) -> Session | None:
        return self.by_key.get((initiator, isid, target))

    def create(
        self,
        *,
        isid: bytes,
        initiator_name: str,
        target_name: str,
        discovery: bool,
        params: SessionParams,
        exp_cmd_sn: int,
        queue_depth: int,
    ) -> tuple[Session, Session | None]:
        """A new session with a fresh TSIH; returns (session, the session it reinstates or None)."""
        old = None if discovery else self.find(initiator_name, isid, target_name)
        if old is not None:
            self.remove(old)
        tsih = self._allocate_tsih()
        session = Session(
            tsih=tsih,
            session_id=self._next_id,
            isid=isid,
            initiator_name=initiator_name,
            target_name=target_name,
            discovery=discovery,
            params=params,
            exp_cmd_sn=exp_cmd_sn,
            queue_depth=queue_depth,
        )
        self._next_id += 1
        self.by_tsih[tsih] = session
        if not discovery:
            self.by_key[(initiator_name, isid, target_name)] = session
        return session, old

    def remove(self, session: Session) -> None:
        if self.by_tsih.get(session.tsih) is session:
            del self.by_tsih[session.tsih]
        key = (session.initiator_name, session.isid, session.target_name)
        if self.by_key.get(key) is session:
            del self.by_key[key]

    def _allocate_tsih(self) -> int:
        for _ in range(65536):
            tsih = self._next_tsih
            self._next_tsih = self._next_tsih % 65535 + 1  # 1..65535; 0 is reserved
            if tsih not in self.by_tsih:
                return tsih
        raise RuntimeError("all 65535 TSIHs are in use")

    def sessions_of(self, target: str) -> list[Session]:
        return [s for s in self.by_tsih.values() if s.target_name == target and not s.discovery]
