"""A small sans-IO *initiator*: builds requests and parses responses with the same codec.

It is what the protocol tests, the robustness fuzzer and the Python benchmark client speak to
the target with; it is not a general-purpose initiator (one connection, ERL 0, no recovery).

    >>> ini = InitiatorConnection("iqn.2026-01.test:i", target="iqn.2026-01.test:t")
    >>> wire = ini.login_request()
    >>> wire[0] == 0x43
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from iscsikit.target.proto.chap import chap_response, decode_binary, encode_binary
from iscsikit.target.proto.digest import crc32c, data_digest, header_digest
from iscsikit.target.proto.pdu import (
    BHS_LEN,
    PDU,
    READERS,
    RESERVED_TAG,
    Buffer,
    DataOut,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    NopOut,
    ScsiCommand,
    TaskMgmtRequest,
    TextRequest,
    encode_lun,
    pad_len,
    parse_header,
    write_pdu,
)
from iscsikit.target.proto.text import decode_text, encode_text

__all__ = ["InitiatorConnection", "LoginFailed"]


class LoginFailed(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(f"login failed with status 0x{status:04x} {message}".strip())
        self.status = status


@dataclass
class _Chap:
    user: str
    secret: bytes


class InitiatorConnection:
    """The initiator side of one connection (test tool)."""

    def __init__(
        self,
        name: str,
        *,
        target: str | None = None,
        discovery: bool = False,
        isid: bytes = b"\x80\x00\x00\x00\x00\x01",
        chap: tuple[str, bytes] | None = None,
        mutual: tuple[str, bytes] | None = None,
        chap_algorithms: str = "5",
        header_digest: bool = False,
        data_digest: bool = False,
        keys: Sequence[tuple[str, str]] = (),
        cmd_sn: int = 1,
    ) -> None:
        self.name = name
        self.target = target
        self.discovery = discovery or target is None
        self.isid = isid
        self.chap = _Chap(*chap) if chap else None
        self.mutual = _Chap(*mutual) if mutual else None
        self.chap_algorithms = chap_algorithms
        self.want_hd = header_digest
        self.want_dd = data_digest
        self.extra_keys = list(keys)
        self.cmd_sn = cmd_sn
        self.exp_stat_sn = 0
        self.max_cmd_sn = cmd_sn
        self.tsih = 0
        self._itt = 0
        self._buf = bytearray()
        self._hd = False
        self._dd = False
        self._step = 0
        self._mutual_challenge = b""
        self._mutual_id = 0
        self.logged_in = False
        #: Keys the target answered during login, merged.
        self.target_keys: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------------------

    def next_itt(self) -> int:
        self._itt = (self._itt + 1) & 0x7FFFFFFF
        return self._itt

    def encode(self, event: PDU) -> bytes:
        return b"".join(
            bytes(p)
            for p in write_pdu(
                event,
                header_digest=header_digest if self._hd else None,
                data_digest=data_digest if self._dd else None,
            )
        )

    def feed(self, data: bytes) -> list[PDU]:
        """Parse every complete PDU in ``data`` (plus what was left over)."""
        self._buf += data
        out: list[PDU] = []
        while len(self._buf) >= BHS_LEN:
            opcode, _imm, ahs_len, dslen = parse_header(self._buf)
            hd = 4 if self._hd else 0
            dd = 4 if (self._dd and dslen) else 0
            total = BHS_LEN + ahs_len + hd + dslen + pad_len(dslen) + dd
            if len(self._buf) < total:
                break
            bhs = bytes(self._buf[:BHS_LEN])
            ahs = bytes(self._buf[BHS_LEN : BHS_LEN + ahs_len])
            if hd and header_digest(bhs + ahs) != bytes(self._buf[BHS_LEN + ahs_len : BHS_LEN + ahs_len + 4]):
                raise ValueError("header digest mismatch from target")
            start = BHS_LEN + ahs_len + hd
            data_seg = bytes(self._buf[start : start + dslen])
            if dd:
                padded = data_seg + b"\0" * pad_len(dslen)
                got = int.from_bytes(self._buf[start + len(padded) : start + len(padded) + 4], "little")
                if crc32c(padded) != got:
                    raise ValueError("data digest mismatch from target")
            del self._buf[:total]
            pdu = READERS[opcode](bhs, ahs, data_seg)
            self._track(pdu)
            out.append(pdu)
        return out

    def _track(self, pdu: PDU) -> None:
        stat_sn = getattr(pdu, "stat_sn", None)
        if stat_sn is not None and getattr(pdu, "itt", 0) != RESERVED_TAG:
            self.exp_stat_sn = (stat_sn + 1) & 0xFFFFFFFF
        max_cmd_sn = getattr(pdu, "max_cmd_sn", None)
        if max_cmd_sn is not None:
            self.max_cmd_sn = max_cmd_sn

    # -- login -------------------------------------------------------------------------------

    def _leading(self) -> list[tuple[str, str]]:
        keys = [("InitiatorName", self.name)]
        if self.discovery:
            keys.append(("SessionType", "Discovery"))
        else:
            assert self.target is not None
            keys += [("SessionType", "Normal"), ("TargetName", self.target)]
        return keys

    def _operational(self) -> list[tuple[str, str]]:
        keys = [
            ("HeaderDigest", "CRC32C" if self.want_hd else "None"),
            ("DataDigest", "CRC32C" if self.want_dd else "None"),
            ("MaxRecvDataSegmentLength", "262144"),
        ]
        if not self.discovery:
            keys += [
                ("InitialR2T", "No"),
                ("ImmediateData", "Yes"),
                ("MaxBurstLength", "16776192"),
                ("FirstBurstLength", "262144"),
                ("MaxOutstandingR2T", "1"),
                ("ErrorRecoveryLevel", "0"),
                ("DefaultTime2Wait", "2"),
                ("DefaultTime2Retain", "0"),
            ]
        return keys + self.extra_keys

    def _login(self, csg: int, nsg: int, transit: bool, keys: list[tuple[str, str]]) -> bytes:
        req = LoginRequest(
            self.isid, self._itt, csg, nsg, transit, False, self.tsih, 0, self.cmd_sn, self.exp_stat_sn, 0, 0,
            encode_text(keys),
        )  # fmt: skip
        return self.encode(req)

    def login_request(self) -> bytes:
        """The first Login Request."""
        self.next_itt()
        if self.chap is not None:
            self._step = 1
            return self._login(0, 1, True, [*self._leading(), ("AuthMethod", "CHAP")])
        self._step = 10
        return self._login(1, 3, True, self._leading() + self._operational())

    def login_response(self, resp: LoginResponse) -> bytes | None:
        """Next Login Request for ``resp``, or None when login is complete."""
        if resp.status != 0:
            raise LoginFailed(resp.status)
        keys = dict(decode_text(resp.data))
        self.target_keys.update(keys)
        if self._step == 1:  # AuthMethod answered
            if keys.get("AuthMethod") != "CHAP":
                raise LoginFailed(-1, f"target answered AuthMethod={keys.get('AuthMethod')}")
            self._step = 2
            return self._login(0, 1, False, [("CHAP_A", self.chap_algorithms)])
        if self._step == 2:  # challenge
            assert self.chap is not None
            alg = int(keys["CHAP_A"])
            ident = int(keys["CHAP_I"])
            challenge = decode_binary(keys["CHAP_C"])
            answer = chap_response(alg, ident, self.chap.secret, challenge)
            out = [("CHAP_N", self.chap.user), ("CHAP_R", encode_binary(answer))]
            if self.mutual is not None:
                import secrets

                self._mutual_id = secrets.randbelow(256)
                self._mutual_challenge = secrets.token_bytes(16)
                out += [("CHAP_I", str(self._mutual_id)), ("CHAP_C", encode_binary(self._mutual_challenge))]
            self._chap_alg = alg
            self._step = 3
            return self._login(0, 1, True, out)
        if self._step == 3:  # authenticated; check mutual, go operational
            if self.mutual is not None:
                expected = chap_response(self._chap_alg, self._mutual_id, self.mutual.secret, self._mutual_challenge)
                if keys.get("CHAP_N") != self.mutual.user or decode_binary(keys.get("CHAP_R", "0x")) != expected:
                    raise LoginFailed(-2, "target failed mutual CHAP")
            if not resp.transit:
                raise LoginFailed(-3, "target did not leave the security stage")
            self._step = 10
            return self._login(1, 3, True, self._operational())
        if self._step == 10:
            if not resp.transit or resp.nsg != 3:
                raise LoginFailed(-4, "target did not go to full feature phase")
            self.tsih = resp.tsih
            self.logged_in = True
            self._hd = keys.get("HeaderDigest") == "CRC32C" or self.target_keys.get("HeaderDigest") == "CRC32C"
            self._dd = keys.get("DataDigest") == "CRC32C" or self.target_keys.get("DataDigest") == "CRC32C"
            self.cmd_sn = resp.exp_cmd_sn
            return None
        raise LoginFailed(-5, f"unexpected login step {self._step}")

    @property
    def target_mrdsl(self) -> int:
        return int(self.target_keys.get("MaxRecvDataSegmentLength", "8192"))

    # -- full feature ------------------------------------------------------------------------

    def _take_cmd_sn(self, immediate: bool) -> int:
        sn = self.cmd_sn
        if not immediate:
            self.cmd_sn = (sn + 1) & 0xFFFFFFFF
        return sn

    def scsi_command(
        self,
        cdb: bytes,
        *,
        lun: int = 0,
        read_length: int = 0,
        write_data: Buffer = b"",
        immediate_length: int | None = None,
        final: bool = True,
        edtl: int | None = None,
    ) -> tuple[int, bytes]:
        """(itt, wire bytes) of a SCSI Command; immediate data up to ``immediate_length``."""
        itt = self.next_itt()
        write = len(write_data) > 0
        n_imm = min(len(write_data), immediate_length if immediate_length is not None else self.target_mrdsl)
        length = edtl if edtl is not None else (len(write_data) if write else read_length)
        cmd = ScsiCommand(
            itt, encode_lun(lun), cdb, length, self._take_cmd_sn(False), self.exp_stat_sn,
            read_length > 0, write, final, 1, False, None, bytes(write_data[:n_imm]),
        )  # fmt: skip
        return itt, self.encode(cmd)

    def data_out(self, itt: int, ttt: int, data_sn: int, offset: int, data: Buffer, final: bool, lun: int = 0) -> bytes:
        return self.encode(DataOut(itt, ttt, data_sn, offset, final, encode_lun(lun), self.exp_stat_sn, bytes(data)))

    def nop_out(self, data: bytes = b"", *, ttt: int = RESERVED_TAG, immediate: bool = True) -> tuple[int, bytes]:
        itt = RESERVED_TAG if ttt != RESERVED_TAG else self.next_itt()
        pdu = NopOut(itt, ttt, self._take_cmd_sn(immediate), self.exp_stat_sn, 0, immediate, data)
        return itt, self.encode(pdu)

    def text(self, pairs: list[tuple[str, str]], *, ttt: int = RESERVED_TAG) -> tuple[int, bytes]:
        itt = self.next_itt()
        pdu = TextRequest(
            itt, ttt, True, False, self._take_cmd_sn(False), self.exp_stat_sn, 0, False, encode_text(pairs)
        )
        return itt, self.encode(pdu)

    def task_management(self, function: int, *, lun: int = 0, referenced_itt: int = RESERVED_TAG) -> tuple[int, bytes]:
        itt = self.next_itt()
        pdu = TaskMgmtRequest(
            itt, function, encode_lun(lun), referenced_itt, self._take_cmd_sn(True), self.exp_stat_sn, 0, 0, True
        )
        return itt, self.encode(pdu)

    def logout(self, reason: int = 0) -> tuple[int, bytes]:
        itt = self.next_itt()
        pdu = LogoutRequest(itt, reason, 0, self._take_cmd_sn(True), self.exp_stat_sn, True)
        return itt, self.encode(pdu)
