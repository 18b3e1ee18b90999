"""A target connection and the test initiator wired back to back (like h11's ConnectionPair)."""

from __future__ import annotations

from iscsikit.target.proto import (
    NEED_DATA,
    AuthConfig,
    ChapCredentials,
    InitiatorConnection,
    PortalInfo,
    SessionTable,
    TargetConnection,
    TargetDirectory,
    TargetInfo,
    TargetLimits,
)
from iscsikit.target.proto.pdu import PDU
from iscsikit.target.proto.session import InitiatorAcl

TARGET = "iqn.2026-11.org.example:disk"
INITIATOR = "iqn.2026-11.org.example:host"
PORTAL = PortalInfo("127.0.0.1", 3260, 1)


def directory(
    *,
    auth: AuthConfig | None = None,
    allow: frozenset[str] | None = None,
    acls: tuple[InitiatorAcl, ...] | None = None,
    limits: TargetLimits | None = None,
    discovery_auth: AuthConfig | None = None,
    extra: tuple[str, ...] = (),
) -> TargetDirectory:
    entries = None if allow is None and acls is None else [*(InitiatorAcl(a) for a in allow or ()), *(acls or ())]
    acl = None if entries is None else {e.initiator: e for e in entries}
    targets = {TARGET: TargetInfo(TARGET, (PORTAL, PortalInfo("10.0.0.2", 3260, 2)), "disk", acl, auth or AuthConfig())}
    for name in extra:
        targets[name] = TargetInfo(name, (PORTAL,))
    return TargetDirectory(targets, limits=limits or TargetLimits(), discovery_auth=discovery_auth or AuthConfig())


def creds(user: str = "user1", secret: bytes = b"secret-12345678") -> ChapCredentials:
    return ChapCredentials(user, secret)


class Pair:
    """``target`` (TargetConnection) and ``ini`` (InitiatorConnection); ``send`` moves bytes."""

    def __init__(
        self, ini: InitiatorConnection | None = None, *, table: SessionTable | None = None, **kw: object
    ) -> None:
        self.directory = directory(**kw)  # type: ignore[arg-type]
        self.table = table or SessionTable()
        self.target = TargetConnection(self.directory, self.table, PORTAL)
        self.ini = ini or InitiatorConnection(INITIATOR, target=TARGET)
        self.events: list[object] = []

    def send(self, wire: bytes) -> list[PDU]:
        """Feed bytes to the target; collect its events; return the PDUs it answered with."""
        self.target.receive_data(wire)
        while (ev := self.target.next_event()) is not NEED_DATA:
            self.events.append(ev)
        return self.receive()

    def receive(self) -> list[PDU]:
        while (ev := self.target.next_event()) is not NEED_DATA:
            self.events.append(ev)
        out = b"".join(bytes(b) for b in self.target.data_to_send())
        return self.ini.feed(out) if out else []

    def login(self) -> list[PDU]:
        """Run the initiator's whole login; returns the final responses."""
        pdus = self.send(self.ini.login_request())
        while True:
            assert len(pdus) == 1, pdus
            nxt = self.ini.login_response(pdus[0])  # type: ignore[arg-type]
            if nxt is None:
                return pdus
            pdus = self.send(nxt)

    def take_events(self) -> list[object]:
        ev, self.events = self.events, []
        return ev


# An 8-block READ(10)/WRITE(10) of LBA 0, and a pair past login: what most command tests start from.
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0])
READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])


def logged_in(**kw: object) -> Pair:
    pair = Pair(**kw)  # type: ignore[arg-type]
    pair.login()
    pair.take_events()
    return pair
