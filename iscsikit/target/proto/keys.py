"""Operational text key negotiation (RFC 7143 6.2 and chapter 13), the target side.

Each key has a *result function* (:data:`KEYS`): ``or`` and ``and`` for booleans, ``min`` and
``max`` for numbers, ``list`` (answer with the first offered value we support), and
``declarative`` (each side states its own value, nothing to answer). The initiator offers,
the target answers once per key. Unknown keys are answered ``NotUnderstood``; keys that do not
apply to a Discovery session are answered ``Irrelevant``; bad values are answered ``Reject``
and the RFC default stays in force.

Security keys (``AuthMethod``, ``CHAP_*``) and the leading-login declarations
(``InitiatorName``, ``TargetName``, ``SessionType``, ``InitiatorAlias``) are handled by the
login state machine in :mod:`.login`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["KEYS", "KeyDef", "Negotiator", "SessionParams", "TargetLimits"]

Kind = Literal["or", "and", "min", "max", "list", "declarative", "fixed"]


@dataclass(frozen=True, slots=True)
class KeyDef:
    """How one key is negotiated: result function, value range, RFC default, discovery relevance."""

    name: str
    kind: Kind
    default: str
    low: int = 0
    high: int = 0
    discovery: bool = False


def _num(name: str, kind: Kind, default: int, low: int, high: int, discovery: bool = False) -> KeyDef:
    return KeyDef(name, kind, str(default), low, high, discovery)


#: Every operational key the target negotiates (RFC 7143 chapter 13). One table, one place.
KEYS: dict[str, KeyDef] = {
    k.name: k
    for k in (
        KeyDef("HeaderDigest", "list", "None", discovery=True),
        KeyDef("DataDigest", "list", "None", discovery=True),
        _num("MaxConnections", "min", 1, 1, 65535),
        KeyDef("InitialR2T", "or", "Yes"),
        KeyDef("ImmediateData", "and", "Yes"),
        _num("MaxRecvDataSegmentLength", "declarative", 8192, 512, (1 << 24) - 1, discovery=True),
        _num("MaxBurstLength", "min", 262144, 512, (1 << 24) - 1),
        _num("FirstBurstLength", "min", 65536, 512, (1 << 24) - 1),
        _num("DefaultTime2Wait", "max", 2, 0, 3600, discovery=True),
        _num("DefaultTime2Retain", "min", 20, 0, 3600, discovery=True),
        _num("MaxOutstandingR2T", "min", 1, 1, 65535),
        KeyDef("DataPDUInOrder", "or", "Yes"),
        KeyDef("DataSequenceInOrder", "or", "Yes"),
        _num("ErrorRecoveryLevel", "min", 0, 0, 2, discovery=True),
        # Markers were removed in RFC 7143; old initiators still offer No.
        KeyDef("IFMarker", "and", "No", discovery=True),
        KeyDef("OFMarker", "and", "No", discovery=True),
        KeyDef("TaskReporting", "list", "RFC3720"),
        _num("iSCSIProtocolLevel", "min", 0, 0, 31, discovery=True),
    )
}

#: Keys that exist but are never negotiated by us: answered Irrelevant.
IRRELEVANT = frozenset({"OFMarkInt", "IFMarkInt"})


@dataclass(frozen=True, slots=True)
class TargetLimits:
    """What this target supports or prefers; the ``min``/``or`` partner of each key."""

    max_recv_data_segment_length: int = 262144
    first_burst_length: int = 262144
    max_burst_length: int = 1048576
    max_outstanding_r2t: int = 1
    immediate_data: bool = True
    initial_r2t: bool = False
    header_digests: tuple[str, ...] = ("None", "CRC32C")
    data_digests: tuple[str, ...] = ("None", "CRC32C")
    default_time2wait: int = 2
    default_time2retain: int = 0
    queue_depth: int = 128
    #: Largest transfer (bytes) one command may ask for, whatever the CDB or the EDTL says: the
    #: Block Limits VPD page advertises it, and a command over it gets CHECK CONDITION (INVALID
    #: FIELD IN CDB) before anything is allocated for it.
    max_transfer_length: int = 8 << 20

    def __post_init__(self) -> None:
        for name in ("max_recv_data_segment_length", "first_burst_length", "max_burst_length"):
            value = getattr(self, name)
            if not 512 <= value < (1 << 24):
                raise ValueError(f"{name} must be 512..16777215, got {value}")
        if self.first_burst_length > self.max_burst_length:
            raise ValueError("first_burst_length must not exceed max_burst_length")
        if not 1 <= self.queue_depth <= 65535:
            raise ValueError(f"queue_depth must be 1..65535, got {self.queue_depth}")
        if not 4096 <= self.max_transfer_length <= 1 << 30:
            raise ValueError(f"max_transfer_length must be 4096..1073741824 bytes, got {self.max_transfer_length}")
        for digests in (self.header_digests, self.data_digests):
            if not digests or any(d not in ("None", "CRC32C") for d in digests):
                raise ValueError(f"digests must be a non-empty list of None/CRC32C, got {digests!r}")

    def ours(self, key: str) -> str:
        """The target's side of a ``min``/``max``/``or``/``and`` key."""
        return {
            "MaxConnections": "1",
            "InitialR2T": _yn(self.initial_r2t),
            "ImmediateData": _yn(self.immediate_data),
            "MaxBurstLength": str(self.max_burst_length),
            "FirstBurstLength": str(self.first_burst_length),
            "DefaultTime2Wait": str(self.default_time2wait),
            "DefaultTime2Retain": str(self.default_time2retain),
            "MaxOutstandingR2T": str(self.max_outstanding_r2t),
            "DataPDUInOrder": "Yes",
            "DataSequenceInOrder": "Yes",
            "ErrorRecoveryLevel": "0",
            "IFMarker": "No",
            "OFMarker": "No",
            "iSCSIProtocolLevel": "1",
        }[key]


def _yn(b: bool) -> str:
    return "Yes" if b else "No"


@dataclass(slots=True)
class SessionParams:
    """Negotiated values in force for a connection/session (RFC defaults until negotiated)."""

    header_digest: bool = False
    data_digest: bool = False
    #: The initiator's MaxRecvDataSegmentLength: the largest data segment we may send.
    max_send_data_segment_length: int = 8192
    #: Ours: the largest data segment we accept.
    max_recv_data_segment_length: int = 8192
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    initial_r2t: bool = True
    immediate_data: bool = True
    max_outstanding_r2t: int = 1
    error_recovery_level: int = 0
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_connections: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class Negotiator:
    """Answers operational keys for one connection's login (and Text negotiation in FFP).

    >>> n = Negotiator(TargetLimits(), discovery=False)
    >>> n.negotiate([("InitialR2T", "No"), ("MaxBurstLength", "16776192"), ("X-foo", "1")])
    [('InitialR2T', 'No'), ('MaxBurstLength', '1048576'), ('X-foo', 'NotUnderstood')]
    >>> n.params.max_burst_length
    1048576
    """

    limits: TargetLimits
    discovery: bool
    params: SessionParams = field(default_factory=SessionParams)
    answered: set[str] = field(default_factory=set)
    declared_mrdsl: bool = False

    def negotiate(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Answer each offered key; updates :attr:`params`. Keys offered twice get ``Reject``."""
        out: list[tuple[str, str]] = []
        for key, value in pairs:
            answer = self._one(key, value)
            if answer is not None:
                out.append((key, answer))
        # Keep FirstBurstLength <= MaxBurstLength whatever order they came in.
        if self.params.first_burst_length > self.params.max_burst_length:
            self.params.first_burst_length = self.params.max_burst_length
        return out

    def declarations(self) -> list[tuple[str, str]]:
        """Declarative keys the target states once (our MaxRecvDataSegmentLength)."""
        if self.declared_mrdsl:
            return []
        self.declared_mrdsl = True
        self.params.max_recv_data_segment_length = self.limits.max_recv_data_segment_length
        return [("MaxRecvDataSegmentLength", str(self.limits.max_recv_data_segment_length))]

    def _one(self, key: str, value: str) -> str | None:
        if key in IRRELEVANT:
            return "Irrelevant"
        spec = KEYS.get(key)
        if spec is None:
            return "NotUnderstood"
        if key in self.answered and spec.kind != "declarative":
            return "Reject"
        self.answered.add(key)
        if self.discovery and not spec.discovery:
            return "Irrelevant"
        if value in ("NotUnderstood", "Irrelevant", "Reject"):
            return None  # the initiator answering one of our offers; nothing to say back
        if spec.kind == "list":
            return self._list(key, value)
        if spec.kind in ("or", "and"):
            return self._bool(key, spec, value)
        return self._number(key, spec, value)

    def _list(self, key: str, value: str) -> str:
        offered = [v.strip() for v in value.split(",")]
        if key in ("HeaderDigest", "DataDigest") and self.discovery:
            supported: tuple[str, ...] = ("None", "CRC32C")  # a required digest is for Normal sessions
        elif key == "HeaderDigest":
            supported = self.limits.header_digests
        elif key == "DataDigest":
            supported = self.limits.data_digests
        else:
            supported = ("RFC3720",)
        for v in offered:
            if v in supported:
                if key == "HeaderDigest":
                    self.params.header_digest = v == "CRC32C"
                elif key == "DataDigest":
                    self.params.data_digest = v == "CRC32C"
                return v
        return "Reject"

    def _bool(self, key: str, spec: KeyDef, value: str) -> str:
        if value not in ("Yes", "No"):
            return "Reject"
        theirs = value == "Yes"
        ours = self.limits.ours(key) == "Yes"
        result = (theirs or ours) if spec.kind == "or" else (theirs and ours)
        attr = {
            "InitialR2T": "initial_r2t",
            "ImmediateData": "immediate_data",
            "DataPDUInOrder": "data_pdu_in_order",
            "DataSequenceInOrder": "data_sequence_in_order",
        }.get(key)
        if attr is not None:
            setattr(self.params, attr, result)
        return _yn(result)

    def _number(self, key: str, spec: KeyDef, value: str) -> str | None:
        try:
            if not value.isdigit() or len(value) > 10:
                raise ValueError(value)
            n = int(value)
        except ValueError:
            return "Reject"
        if not spec.low <= n <= spec.high:
            return "Reject"
        if spec.kind == "declarative":
            # The initiator's MaxRecvDataSegmentLength: our send limit. No answer.
            self.params.max_send_data_segment_length = n
            return None
        ours = int(self.limits.ours(key))
        result = min(n, ours) if spec.kind == "min" else max(n, ours)
        attr = {
            "MaxConnections": "max_connections",
            "MaxBurstLength": "max_burst_length",
            "FirstBurstLength": "first_burst_length",
            "DefaultTime2Wait": "default_time2wait",
            "DefaultTime2Retain": "default_time2retain",
            "MaxOutstandingR2T": "max_outstanding_r2t",
            "ErrorRecoveryLevel": "error_recovery_level",
        }.get(key)
        if attr is not None:
            setattr(self.params, attr, result)
        return str(result)
