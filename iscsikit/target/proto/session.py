"""What the protocol core knows about targets and sessions: plain data, no I/O.

* :class:`TargetDirectory` is the configuration the core needs: the targets (name, portals,
  ACL, CHAP), discovery authentication and the negotiation limits. The server builds it from
  :mod:`iscsikit.target.config`.
* :class:`SessionTable` is shared by every connection of a process: TSIH allocation, the
  (initiator, ISID, target) index used for session reinstatement, and the CHAP replay log.
* :class:`Session` holds the session-wide sequence numbers (ExpCmdSN and the window) and the
  negotiated parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from iscsikit.target.proto.chap import ChallengeLog, ChapCredentials
from iscsikit.target.proto.keys import SessionParams, TargetLimits
from iscsikit.target.proto.serial import sn_add

if TYPE_CHECKING:
    from iscsikit.target.proto.connection import TargetConnection

__all__ = ["AuthConfig", "PortalInfo", "Session", "SessionTable", "TargetDirectory", "TargetInfo"]


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


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """One target as the protocol sees it (its LUNs live in the server)."""

    name: str
    portals: tuple[PortalInfo, ...] = ()
    alias: str = ""
    #: Initiator names allowed to log in; None allows every initiator.
    allowed_initiators: frozenset[str] | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)

    def allows(self, initiator: str) -> bool:
        return self.allowed_initiators is None or initiator in self.allowed_initiators


@dataclass(frozen=True, slots=True)
class TargetDirectory:
    """Everything the core needs from configuration."""

    targets: Mapping[str, TargetInfo]
    limits: TargetLimits = field(default_factory=TargetLimits)
    discovery_auth: AuthConfig = field(default_factory=AuthConfig)
    #: Seconds between target NOP-In pings (the server's timer reads it).
    nop_interval: float = 5.0

    def visible_to(self, initiator: str) -> list[TargetInfo]:
        """Targets SendTargets may list for ``initiator`` (the ACL hides the others)."""
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
