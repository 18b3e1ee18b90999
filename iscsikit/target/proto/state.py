"""Every phase and stage transition of a target connection, as data.

Rule 1 (from h11): everything that decides *whether* a PDU or a transition is allowed lives in
this file, in the tables below. :mod:`.connection` and :mod:`.login` look things up here and
never hard-code a phase check of their own.

Rule 2: this file knows nothing about bytes, sockets or sessions; only names.

Two machines:

* The **login stage** machine (RFC 7143 6.3): SecurityNegotiation (0) ->
  LoginOperationalNegotiation (1) -> FullFeaturePhase (3). A Login Request with the T bit
  asks to move from its CSG to its NSG; :data:`LOGIN_STAGE_TRANSITIONS` lists the legal moves.
* The **connection phase** machine: LOGIN -> FULL_FEATURE -> LOGOUT_PENDING -> CLOSED, with
  ERROR reachable from anywhere. :data:`PHASE_TRANSITIONS` maps (phase, trigger) to the next
  phase; :data:`PHASE_ACCEPTS` says which opcodes each phase takes in.

``docs/target.md`` shows the diagram drawn from these tables (:func:`diagram`).
"""

from __future__ import annotations

import enum

from iscsikit.target.proto.errors import LocalProtocolError
from iscsikit.target.proto.pdu import Opcode

__all__ = [
    "DISCOVERY_ACCEPTS",
    "LOGIN_STAGE_TRANSITIONS",
    "PHASE_ACCEPTS",
    "PHASE_TRANSITIONS",
    "Phase",
    "Stage",
    "Trigger",
    "diagram",
    "next_phase",
]


class Stage(enum.IntEnum):
    """Login stages as the CSG/NSG fields encode them."""

    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3


class Phase(enum.Enum):
    """Where a connection is."""

    LOGIN = "login"
    FULL_FEATURE = "full-feature"
    LOGOUT_PENDING = "logout-pending"
    CLOSED = "closed"
    ERROR = "error"


class Trigger(enum.Enum):
    """What moves a connection from one phase to the next."""

    LOGIN_COMPLETE = "login complete"
    LOGIN_FAILED = "login failed"
    LOGOUT_REQUEST = "logout request"
    LOGOUT_RESPONSE = "logout response sent"
    EOF = "peer closed"
    FATAL = "fatal protocol error"
    CLOSE = "closed by the server"


#: (CSG, NSG) pairs a Login Request with T=1 may ask for.
LOGIN_STAGE_TRANSITIONS: frozenset[tuple[Stage, Stage]] = frozenset(
    {
        (Stage.SECURITY, Stage.OPERATIONAL),
        (Stage.SECURITY, Stage.FULL_FEATURE),
        (Stage.OPERATIONAL, Stage.FULL_FEATURE),
    }
)

#: (phase, trigger) -> next phase. Anything missing is a bug in the caller.
PHASE_TRANSITIONS: dict[tuple[Phase, Trigger], Phase] = {
    (Phase.LOGIN, Trigger.LOGIN_COMPLETE): Phase.FULL_FEATURE,
    (Phase.LOGIN, Trigger.LOGIN_FAILED): Phase.CLOSED,
    (Phase.FULL_FEATURE, Trigger.LOGOUT_REQUEST): Phase.LOGOUT_PENDING,
    (Phase.LOGOUT_PENDING, Trigger.LOGOUT_RESPONSE): Phase.CLOSED,
}
for _phase in Phase:
    if _phase is not Phase.CLOSED:
        PHASE_TRANSITIONS[(_phase, Trigger.FATAL)] = Phase.ERROR
    PHASE_TRANSITIONS[(_phase, Trigger.EOF)] = Phase.CLOSED if _phase is not Phase.ERROR else Phase.ERROR
    PHASE_TRANSITIONS[(_phase, Trigger.CLOSE)] = Phase.CLOSED if _phase is not Phase.ERROR else Phase.ERROR

#: Opcodes each phase takes in from a Normal session. Others get a Reject (full feature) or end
#: the login (login phase).
PHASE_ACCEPTS: dict[Phase, frozenset[int]] = {
    Phase.LOGIN: frozenset({Opcode.LOGIN_REQUEST}),
    Phase.FULL_FEATURE: frozenset(
        {
            Opcode.NOP_OUT,
            Opcode.SCSI_COMMAND,
            Opcode.TASK_MGMT_REQUEST,
            Opcode.TEXT_REQUEST,
            Opcode.DATA_OUT,
            Opcode.LOGOUT_REQUEST,
            Opcode.SNACK_REQUEST,
        }
    ),
    # After a Logout Request the initiator may still finish data for commands it sent before.
    Phase.LOGOUT_PENDING: frozenset({Opcode.DATA_OUT, Opcode.NOP_OUT}),
    Phase.CLOSED: frozenset(),
    Phase.ERROR: frozenset(),
}

#: A Discovery session in full feature phase takes only these (RFC 7143 4.3).
DISCOVERY_ACCEPTS: frozenset[int] = frozenset({Opcode.TEXT_REQUEST, Opcode.LOGOUT_REQUEST, Opcode.NOP_OUT})


def next_phase(phase: Phase, trigger: Trigger) -> Phase:
    """The phase after ``trigger``; LocalProtocolError if the table has no such move."""
    try:
        return PHASE_TRANSITIONS[(phase, trigger)]
    except KeyError:
        raise LocalProtocolError(f"cannot {trigger.value!r} in phase {phase.value}") from None


def diagram() -> str:
    """The phase machine as Graphviz dot text, drawn from the tables (for docs)."""
    lines = ["digraph phases {"]
    for (src, trig), dst in sorted(PHASE_TRANSITIONS.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)):
        if src is not dst:
            lines.append(f'  "{src.value}" -> "{dst.value}" [label="{trig.value}"];')
    for a, b in sorted(LOGIN_STAGE_TRANSITIONS):
        lines.append(f'  "stage {a.name}" -> "stage {b.name}" [label="T=1"];')
    lines.append("}")
    return "\n".join(lines)
