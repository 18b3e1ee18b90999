"""Reservations: SPC-2 RESERVE/RELEASE(6/10) and SPC-4 persistent reservations (PR IN/OUT).

Both key on the I_T nexus (:attr:`Nexus.port_key`: initiator name + ISID, target name + TPGT),
so a re-login with the same ISID keeps its registration, as SPC-4 requires.

* RESERVE(6/10): one holder; every other nexus gets RESERVATION CONFLICT except for INQUIRY,
  REPORT LUNS, REQUEST SENSE and RELEASE (a no-op for non-holders). Released by RELEASE, by
  losing the nexus (logout, connection drop) and by LOGICAL UNIT RESET.
* Persistent reservations: REGISTER, REGISTER AND IGNORE EXISTING KEY, RESERVE, RELEASE, CLEAR,
  PREEMPT, PREEMPT AND ABORT; READ KEYS, READ RESERVATION, REPORT CAPABILITIES, READ FULL
  STATUS. All six types. Not persistent across power loss (PTPL_C = 0; APTPL rejected), not
  SPEC_I_PT / ALL_TG_PT, no REGISTER AND MOVE.

Unit attentions follow SPC-4 5.9.11: RESERVATIONS RELEASED goes to the *other* registrants when
a registrants-only or all-registrants reservation is released (never to the nexus that did it,
which is what makes tgt fail libiscsi's ProutReserve.Ownership* tests), REGISTRATIONS
PREEMPTED to preempted nexuses, RESERVATIONS PREEMPTED to all others after CLEAR.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from iscsikit.target.scsi import sense
from iscsikit.target.scsi.cdb import Op
from iscsikit.target.scsi.core import Nexus, ScsiResponse, Status

if TYPE_CHECKING:
    from iscsikit.target.scsi.lu import Handler, LogicalUnit, Request

__all__ = ["HANDLERS", "Reservations"]

PortKey = tuple[str, bytes, str, int]

# Persistent reservation types (SPC-4 table 211)
WRITE_EXCLUSIVE = 1
EXCLUSIVE_ACCESS = 3
WRITE_EXCLUSIVE_RO = 5
EXCLUSIVE_ACCESS_RO = 6
WRITE_EXCLUSIVE_AR = 7
EXCLUSIVE_ACCESS_AR = 8
_TYPES = frozenset({1, 3, 5, 6, 7, 8})
_ALL_REGISTRANTS = frozenset({WRITE_EXCLUSIVE_AR, EXCLUSIVE_ACCESS_AR})
_REGISTRANTS = frozenset({5, 6, 7, 8})
_EXCLUSIVE_ACCESS = frozenset({EXCLUSIVE_ACCESS, EXCLUSIVE_ACCESS_RO, EXCLUSIVE_ACCESS_AR})

# PR OUT service actions
SA_REGISTER = 0
SA_RESERVE = 1
SA_RELEASE = 2
SA_CLEAR = 3
SA_PREEMPT = 4
SA_PREEMPT_AND_ABORT = 5
SA_REGISTER_AND_IGNORE = 6

#: Commands nobody is ever refused for (SPC-4 table 79/80, SBC-3 table 13: "Allowed").
_ALWAYS = frozenset(
    {
        Op.INQUIRY,
        Op.REPORT_LUNS,
        Op.REQUEST_SENSE,
        Op.TEST_UNIT_READY,
        Op.READ_CAPACITY_10,
        Op.SERVICE_ACTION_IN_16,
        Op.PERSISTENT_RESERVE_IN,
        Op.PERSISTENT_RESERVE_OUT,
        Op.MAINTENANCE_IN,
        Op.PREVENT_ALLOW,
    }
)
#: Allowed for non-holders under Write Exclusive types, refused under Exclusive Access types.
_READS = frozenset(
    {
        Op.READ_6,
        Op.READ_10,
        Op.READ_12,
        Op.READ_16,
        Op.VERIFY_10,
        Op.VERIFY_12,
        Op.VERIFY_16,
        Op.PRE_FETCH_10,
        Op.PRE_FETCH_16,
        Op.MODE_SENSE_6,
        Op.MODE_SENSE_10,
        Op.READ_DEFECT_DATA_10,
        Op.READ_DEFECT_DATA_12,
    }
)
#: What a non-holder may still send while an SPC-2 RESERVE is held by someone else.
_SPC2_ALLOWED = frozenset({Op.INQUIRY, Op.REPORT_LUNS, Op.REQUEST_SENSE, Op.RELEASE_6, Op.RELEASE_10})


class Reservations:
    """Reservation state of one logical unit."""

    def __init__(self, lu: LogicalUnit) -> None:
        self.lu = lu
        self.spc2_holder: PortKey | None = None
        self.registrations: dict[PortKey, int] = {}
        self._nexus_of: dict[PortKey, Nexus] = {}
        self.pr_holder: PortKey | None = None  # None with a type set: all-registrants reservation
        self.pr_type: int = 0  # 0: no persistent reservation
        self.generation = 0

    @property
    def active(self) -> bool:
        return self.spc2_holder is not None or self.pr_type != 0

    # ------------------------------------------------------------------ conflicts

    def holds_pr(self, key: PortKey) -> bool:
        if not self.pr_type:
            return False
        if self.pr_type in _REGISTRANTS:
            return key in self.registrations
        return self.pr_holder == key

    def conflicts(self, nexus: Nexus, cdb: bytes) -> bool:
        """Whether ``cdb`` from ``nexus`` must get RESERVATION CONFLICT."""
        op = cdb[0]
        key = nexus.port_key
        if self.spc2_holder is not None and self.spc2_holder != key:
            return op not in _SPC2_ALLOWED
        if self.pr_type:
            if op in (Op.RESERVE_6, Op.RESERVE_10, Op.RELEASE_6, Op.RELEASE_10):
                return True  # SPC-2 reservation commands conflict with any persistent reservation
            if op in _ALWAYS or self.holds_pr(key):
                return False
            if op in _READS:
                return self.pr_type in _EXCLUSIVE_ACCESS
            return True
        return False

    # ------------------------------------------------------------------ events

    def reset(self) -> None:
        """LOGICAL UNIT RESET releases SPC-2 reservations; persistent ones survive (SPC-4 5.9.1)."""
        self.spc2_holder = None

    def nexus_lost(self, nexus: Nexus) -> None:
        if self.spc2_holder == nexus.port_key:
            self.spc2_holder = None

    def _post(self, keys: set[PortKey], code: sense.SenseCode) -> None:
        if keys:
            self.lu.ua.post_where(code, lambda n: n.port_key in keys)

    # ------------------------------------------------------------------ SPC-2

    def reserve(self, nexus: Nexus, cdb: bytes) -> ScsiResponse:
        if cdb[0] == Op.RESERVE_10 and cdb[1] & 0x12:  # 3RDPTY / LONGID: third-party reservations
            raise sense.INVALID_FIELD_IN_CDB.error(field=1)
        if cdb[0] == Op.RESERVE_6 and cdb[1] & 0x1F:  # obsolete extent reservations
            raise sense.INVALID_FIELD_IN_CDB.error(field=1)
        key = nexus.port_key
        if self.spc2_holder not in (None, key):
            return ScsiResponse(Status.RESERVATION_CONFLICT)
        self.spc2_holder = key
        return ScsiResponse.good()

    def release(self, nexus: Nexus, cdb: bytes) -> ScsiResponse:
        if self.spc2_holder == nexus.port_key:
            self.spc2_holder = None
        return ScsiResponse.good()

    # ------------------------------------------------------------------ PR IN

    def pr_in(self, cdb: bytes) -> ScsiResponse:
        sa = cdb[1] & 0x1F
        alloc = struct.unpack_from(">H", cdb, 7)[0]
        if sa == 0x00:  # READ KEYS
            keys = b"".join(struct.pack(">Q", k) for k in self.registrations.values())
            data = struct.pack(">II", self.generation, len(keys)) + keys
        elif sa == 0x01:  # READ RESERVATION
            if self.pr_type:
                holder_key = 0
                if self.pr_type not in _ALL_REGISTRANTS and self.pr_holder is not None:
                    holder_key = self.registrations.get(self.pr_holder, 0)
                body = struct.pack(">QIBBH", holder_key, 0, 0, self.pr_type & 0x0F, 0)
            else:
                body = b""
            data = struct.pack(">II", self.generation, len(body)) + body
        elif sa == 0x02:  # REPORT CAPABILITIES
            # CRH=0, SIP_C=0, ATP_C=0, PTPL_C=0; TMV=1, ALLOW COMMANDS=0; type mask: all six
            mask = 0x80 | 0x40 | 0x20 | 0x08 | 0x02  # WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX
            data = struct.pack(">HBBBBH", 8, 0x00, 0x80, mask, 0x01, 0)
        elif sa == 0x03:  # READ FULL STATUS
            data = self._full_status()
        else:
            raise sense.INVALID_FIELD_IN_CDB.error(field=1)
        return ScsiResponse.good(data[:alloc])

    def _full_status(self) -> bytes:
        descriptors = bytearray()
        for port, key in self.registrations.items():
            nexus = self._nexus_of.get(port)
            holder = self.holds_pr(port) and (self.pr_type in _ALL_REGISTRANTS or self.pr_holder == port)
            transport_id = _transport_id(port)
            descriptors += struct.pack(
                ">Q4xBB4xHI",
                key,
                0x01 if holder else 0x00,  # R_HOLDER
                (self.pr_type & 0x0F) if holder else 0,
                (nexus.tpgt if nexus is not None else port[3]) & 0xFFFF,  # relative target port id
                len(transport_id),
            )
            descriptors += transport_id
        return struct.pack(">II", self.generation, len(descriptors)) + bytes(descriptors)

    # ------------------------------------------------------------------ PR OUT

    def pr_out(self, nexus: Nexus, cdb: bytes, data: bytes) -> ScsiResponse:
        sa = cdb[1] & 0x1F
        scope_type = cdb[2]
        length = struct.unpack_from(">I", cdb, 5)[0]
        if sa > SA_REGISTER_AND_IGNORE:
            raise sense.INVALID_FIELD_IN_CDB.error(field=1)  # REGISTER AND MOVE and reserved
        if length != 24:
            raise sense.PARAM_LIST_LENGTH_ERROR.error()
        if len(data) < 24:
            raise sense.PARAM_LIST_LENGTH_ERROR.error()
        res_key, sa_key = struct.unpack_from(">QQ", data, 0)
        flags = data[20]
        if flags & 0x08:  # SPEC_I_PT
            raise sense.INVALID_FIELD_IN_PARAM_LIST.error(field=20, bit=3, in_cdb=False)
        if flags & 0x04:  # ALL_TG_PT
            raise sense.INVALID_FIELD_IN_PARAM_LIST.error(field=20, bit=2, in_cdb=False)
        if flags & 0x01:  # APTPL: we cannot persist through power loss
            raise sense.INVALID_FIELD_IN_PARAM_LIST.error(field=20, bit=0, in_cdb=False)
        port = nexus.port_key
        self._nexus_of[port] = nexus
        if sa in (SA_REGISTER, SA_REGISTER_AND_IGNORE):
            return self._register(port, res_key, sa_key, ignore=sa == SA_REGISTER_AND_IGNORE)
        # Everything else needs a registered nexus whose key matches.
        if self.registrations.get(port) != res_key or port not in self.registrations:
            return ScsiResponse(Status.RESERVATION_CONFLICT)
        scope, ptype = scope_type >> 4, scope_type & 0x0F
        if sa == SA_RESERVE:
            self._check_type(scope, ptype)
            return self._reserve(port, ptype)
        if sa == SA_RELEASE:
            self._check_type(scope, ptype)
            return self._release(port, ptype)
        if sa == SA_CLEAR:
            others = set(self.registrations) - {port}
            self.registrations.clear()
            self.pr_holder, self.pr_type = None, 0
            self.generation += 1
            self._post(others, sense.RESERVATIONS_PREEMPTED)
            return ScsiResponse.good()
        self._check_type(scope, ptype)
        return self._preempt(port, sa_key, ptype)

    @staticmethod
    def _check_type(scope: int, ptype: int) -> None:
        if scope != 0:
            raise sense.INVALID_FIELD_IN_CDB.error(field=2, bit=4)
        if ptype not in _TYPES:
            raise sense.INVALID_FIELD_IN_CDB.error(field=2, bit=0)

    def _register(self, port: PortKey, res_key: int, sa_key: int, *, ignore: bool) -> ScsiResponse:
        current = self.registrations.get(port)
        if current is None:
            if res_key != 0 and not ignore:
                return ScsiResponse(Status.RESERVATION_CONFLICT)
            if sa_key != 0:
                self.registrations[port] = sa_key
                self.generation += 1
            return ScsiResponse.good()
        if current != res_key and not ignore:
            return ScsiResponse(Status.RESERVATION_CONFLICT)
        if sa_key != 0:
            self.registrations[port] = sa_key
        else:
            self._unregister(port)
        self.generation += 1
        return ScsiResponse.good()

    def _unregister(self, port: PortKey) -> None:
        del self.registrations[port]
        if not self.pr_type:
            return
        if self.pr_type in _ALL_REGISTRANTS:
            if not self.registrations:  # the last registrant leaves: the reservation goes too
                self.pr_holder, self.pr_type = None, 0
            return
        if self.pr_holder == port:
            released_type = self.pr_type
            self.pr_holder, self.pr_type = None, 0
            if released_type in _REGISTRANTS:
                self._post(set(self.registrations), sense.RESERVATIONS_RELEASED)

    def _reserve(self, port: PortKey, ptype: int) -> ScsiResponse:
        if self.pr_type:
            if self.holds_pr(port) and self.pr_type == ptype:
                return ScsiResponse.good()
            return ScsiResponse(Status.RESERVATION_CONFLICT)
        self.pr_type = ptype
        self.pr_holder = None if ptype in _ALL_REGISTRANTS else port
        return ScsiResponse.good()

    def _release(self, port: PortKey, ptype: int) -> ScsiResponse:
        if not self.pr_type:
            return ScsiResponse.good()
        is_holder = self.pr_type in _ALL_REGISTRANTS or self.pr_holder == port
        if not is_holder:
            return ScsiResponse.good()
        if ptype != self.pr_type:
            raise sense.INVALID_RELEASE_OF_PR.error()
        released_type = self.pr_type
        self.pr_holder, self.pr_type = None, 0
        if released_type in _REGISTRANTS:
            self._post(set(self.registrations) - {port}, sense.RESERVATIONS_RELEASED)
        return ScsiResponse.good()

    def _preempt(self, port: PortKey, sa_key: int, ptype: int) -> ScsiResponse:
        """PREEMPT / PREEMPT AND ABORT (SPC-4 5.9.11.4); aborting tasks is the protocol layer's part."""
        victims = {p for p, k in self.registrations.items() if k == sa_key and p != port}
        if not self.pr_type:
            if sa_key == 0:
                raise sense.INVALID_FIELD_IN_PARAM_LIST.error(field=8, in_cdb=False)
            if not any(k == sa_key for k in self.registrations.values()):
                return ScsiResponse(Status.RESERVATION_CONFLICT)
            self._drop(victims)
            self.generation += 1
            return ScsiResponse.good()
        if self.pr_type in _ALL_REGISTRANTS:
            if sa_key == 0:
                victims = set(self.registrations) - {port}
                self._drop(victims)
                self.pr_type, self.pr_holder = ptype, (None if ptype in _ALL_REGISTRANTS else port)
            else:
                if not victims and sa_key != self.registrations[port]:
                    return ScsiResponse(Status.RESERVATION_CONFLICT)
                self._drop(victims)
            self.generation += 1
            return ScsiResponse.good()
        holder_key = self.registrations.get(self.pr_holder) if self.pr_holder is not None else None
        if sa_key == holder_key:
            old_type = self.pr_type
            self._drop(victims)
            self.pr_type, self.pr_holder = ptype, (None if ptype in _ALL_REGISTRANTS else port)
            if old_type != ptype:
                self._post(set(self.registrations) - {port}, sense.RESERVATIONS_RELEASED)
        else:
            if sa_key == 0:
                raise sense.INVALID_FIELD_IN_PARAM_LIST.error(field=8, in_cdb=False)
            if not victims:
                return ScsiResponse(Status.RESERVATION_CONFLICT)
            self._drop(victims)
        self.generation += 1
        return ScsiResponse.good()

    def _drop(self, victims: set[PortKey]) -> None:
        for victim in victims:
            self.registrations.pop(victim, None)
        self._post(victims, sense.REGISTRATIONS_PREEMPTED)


def _transport_id(port: PortKey) -> bytes:
    """iSCSI TransportID, format 01b: ``<initiator name>,i,0x<ISID>`` NUL-terminated, padded to 4."""
    name = f"{port[0]},i,0x{port[1].hex()}".encode() + b"\x00"
    name += bytes(-len(name) % 4)
    return bytes([0x40 | 0x05, 0]) + struct.pack(">H", len(name)) + name


async def reserve(lu: LogicalUnit, req: Request) -> ScsiResponse:
    return lu.reservations.reserve(req.nexus, req.cdb)


async def release(lu: LogicalUnit, req: Request) -> ScsiResponse:
    return lu.reservations.release(req.nexus, req.cdb)


async def persistent_reserve_in(lu: LogicalUnit, req: Request) -> ScsiResponse:
    return lu.reservations.pr_in(req.cdb)


async def persistent_reserve_out(lu: LogicalUnit, req: Request) -> ScsiResponse:
    return lu.reservations.pr_out(req.nexus, req.cdb, bytes(req.data_out[:24]))


HANDLERS: dict[int, Handler] = {
    Op.RESERVE_6: reserve,
    Op.RESERVE_10: reserve,
    Op.RELEASE_6: release,
    Op.RELEASE_10: release,
    Op.PERSISTENT_RESERVE_IN: persistent_reserve_in,
    Op.PERSISTENT_RESERVE_OUT: persistent_reserve_out,
}
