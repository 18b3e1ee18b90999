"""Write the seed corpora in fuzz/corpus/NAME/ from real, valid inputs (deterministic; re-run to refresh).

* pdu: every PDU the target and an initiator exchange, as the codec writes them, including the
  Login Requests open-iscsi sends (security stage first, its full key set) and a SCSI command
  with both AHS kinds.
* login: byte streams an initiator sent in real conversations with a ``TargetConnection``
  configured as the harness configures it (recorded while the target answered): the test
  initiator's logins and open-iscsi's, CHAP (one-way, mutual, discovery), digests, then reads,
  writes (immediate data, unsolicited Data-Out, R2T-solicited Data-Out), NOP-Out, SendTargets,
  task management and logout.
* replica_frames: every request a controller sends, as ``ClientSession`` encodes it; and, for
  the client side, requests in flight with the responses a replica sends.
* db_record: records iscsiadm 2.1.8 wrote (tests/fixtures/kernel/etc-iscsi.tar.gz from a real
  kernel VM, and tests/unit/db/support.py), and settings as a user gives them.

Usage: ``.venv/bin/python -m fuzz.make_corpus``
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import tarfile
from collections.abc import Callable

from fuzz import fuzz_db_record, fuzz_login, fuzz_replica_auth, fuzz_replica_frames, fuzz_restore_member
from fuzz._common import CORPUS, HARNESSES, ROOT
from iscsikit.clean import backup
from iscsikit.replica import protocol as rp
from iscsikit.target.proto import InitiatorConnection
from iscsikit.target.proto.chap import chap_response, decode_binary, encode_binary
from iscsikit.target.proto.pdu import (
    R2T,
    AsyncMessage,
    DataIn,
    DataOut,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Reject,
    ScsiCommand,
    ScsiResponse,
    SnackRequest,
    TaskMgmtRequest,
    TaskMgmtResponse,
    TextRequest,
    TextResponse,
    encode_lun,
    write_pdu,
)
from iscsikit.target.proto.text import decode_text, encode_text

TARGET = fuzz_login.TARGET
INITIATOR = fuzz_login.INITIATOR
#: open-iscsi's ISID: OUI format (type 0), its OUI 00:02:3d, qualifier 1.
OPEN_ISCSI_ISID = bytes.fromhex("00023d000001")
#: The operational keys open-iscsi 2.1 offers for a Normal session (iscsid.conf defaults).
OPEN_ISCSI_NORMAL = [
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("ErrorRecoveryLevel", "0"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxBurstLength", "16776192"),
    ("FirstBurstLength", "262144"),
    ("MaxOutstandingR2T", "1"),
    ("MaxConnections", "1"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("MaxRecvDataSegmentLength", "262144"),
]
OPEN_ISCSI_DISCOVERY = [
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("ErrorRecoveryLevel", "0"),
    ("MaxRecvDataSegmentLength", "32768"),
]


def _wire(event: object) -> bytes:
    return b"".join(bytes(b) for b in write_pdu(event))  # type: ignore[arg-type]


def _save(name: str, label: str, data: bytes) -> None:
    d = CORPUS / name
    d.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    (d / f"{label}-{digest}").write_bytes(data)


# ---- login streams: a real conversation, recording what the initiator sent ----------------------


class _Recorder:
    def __init__(self, config: int, ini: InitiatorConnection) -> None:
        self.config = config
        self.ini = ini
        self.server = fuzz_login.connect(config)
        self.server.blind = False
        self.conn = self.server.conn
        self.stream = bytearray()

    def send(self, wire: bytes) -> list[object]:
        self.stream += wire
        self.conn.receive_data(wire)
        self.server.drain()
        self.server.run_ready()
        self.server.drain()
        out = b"".join(bytes(b) for b in self.conn.data_to_send())
        return list(self.ini.feed(out)) if out else []

    def login(self) -> None:
        pdus = self.send(self.ini.login_request())
        while True:
            (resp,) = pdus
            nxt = self.ini.login_response(resp)  # type: ignore[arg-type]
            if nxt is None:
                return
            pdus = self.send(nxt)

    def open_iscsi_login(self, discovery: bool = False, chap: tuple[str, bytes] | None = None) -> None:
        """Security stage first, as open-iscsi logs in (usr/login.c's key order)."""
        ini = self.ini
        ini.isid = OPEN_ISCSI_ISID
        leading = [("InitiatorName", INITIATOR), ("InitiatorAlias", "fuzzhost")]
        leading += [("SessionType", "Discovery")] if discovery else [("TargetName", TARGET), ("SessionType", "Normal")]
        methods = "CHAP,None" if chap else "None"
        itt = ini.next_itt()

        def login(csg: int, nsg: int, transit: bool, keys: list[tuple[str, str]]) -> LoginResponse:
            req = LoginRequest(OPEN_ISCSI_ISID, itt, csg, nsg, transit, False, 0, 0, ini.cmd_sn, ini.exp_stat_sn, 0, 0,
                               encode_text(keys))  # fmt: skip
            (resp,) = self.send(_wire(req))
            assert isinstance(resp, LoginResponse)
            return resp

        resp = login(0, 1, not chap, [*leading, ("AuthMethod", methods)])
        if chap:
            resp = login(0, 1, False, [("CHAP_A", "5")])
            keys = dict(decode_text(resp.data))
            if "CHAP_C" in keys:
                answer = chap_response(int(keys["CHAP_A"]), int(keys["CHAP_I"]), chap[1], decode_binary(keys["CHAP_C"]))
                resp = login(0, 1, True, [("CHAP_N", chap[0]), ("CHAP_R", encode_binary(answer))])
        if resp.status:
            return
        resp = login(1, 3, True, OPEN_ISCSI_DISCOVERY if discovery else OPEN_ISCSI_NORMAL)
        ini.tsih = resp.tsih
        ini.logged_in = True
        ini.cmd_sn = resp.exp_cmd_sn
        ini.target_keys.update(dict(decode_text(resp.data)))

    def full_feature(self) -> None:
        ini = self.ini
        send = self.send
        send(ini.scsi_command(bytes(6))[1])  # TEST UNIT READY
        send(ini.scsi_command(bytes([0x12, 0, 0, 0, 96, 0]), read_length=96)[1])  # INQUIRY
        send(ini.scsi_command(bytes([0x12, 1, 0x80, 0, 255, 0]), read_length=255)[1])  # INQUIRY VPD
        send(ini.scsi_command(bytes([0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0]), read_length=4096, lun=1)[1])  # READ(10)
        payload = bytes(range(256)) * 8
        write10 = bytes([0x2A, 0, 0, 0, 0, 16, 0, 0, 4, 0])
        send(ini.scsi_command(write10, write_data=payload)[1])  # WRITE(10), all immediate
        itt, wire = ini.scsi_command(write10, write_data=payload * 4, immediate_length=1024, final=False)
        got = send(wire)  # immediate data, then unsolicited Data-Out up to FirstBurstLength
        got += send(ini.data_out(itt, 0xFFFFFFFF, 0, 1024, payload[:1024] * 7, True))
        for r2t in [p for p in got if isinstance(p, R2T)]:
            off, sn = r2t.offset, 0
            while off < r2t.offset + r2t.length:
                n = min(4096, r2t.offset + r2t.length - off)
                got = send(
                    ini.data_out(
                        itt, r2t.ttt, sn, off, (payload * 8)[off : off + n], off + n == r2t.offset + r2t.length
                    )
                )
                off, sn = off + n, sn + 1
        # Immediate WRITEs (I bit) without data, each waiting for an R2T, and a WRITE(16) whose
        # EDTL is far over any transfer limit: the shapes of issue 13's attacks.
        for _ in range(2):
            cmd = ScsiCommand(ini.next_itt(), 0, write10, 4096, ini.cmd_sn, ini.exp_stat_sn, write=True, immediate=True)
            send(ini.encode(cmd))
        write16 = bytes([0x8A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0])
        cmd = ScsiCommand(ini.next_itt(), 0, write16, 64 << 20, ini.cmd_sn, ini.exp_stat_sn, write=True)
        ini.cmd_sn += 1
        send(ini.encode(cmd))
        send(ini.nop_out(b"ping")[1])
        send(ini.text([("SendTargets", "")])[1])
        itt, _ = ini.scsi_command(bytes(6))
        send(ini.task_management(1, referenced_itt=itt)[1])
        send(ini.task_management(5, lun=1)[1])
        send(ini.logout()[1])


def _login_seeds() -> None:
    secret = fuzz_login.INITIATOR_SECRET

    def rec(label: str, config: int, make: Callable[[_Recorder], None], **ini_kw: object) -> None:
        r = _Recorder(config, InitiatorConnection(INITIATOR, **ini_kw))  # type: ignore[arg-type]
        try:
            make(r)
        except Exception as e:  # a login the target refused still makes a good seed
            print(f"  {label}: {type(e).__name__}: {e}")
        _save("login", label, bytes([config]) + bytes(r.stream))

    def normal(r: _Recorder) -> None:
        r.login()
        r.full_feature()

    def discovery(r: _Recorder) -> None:
        r.login()
        r.send(r.ini.text([("SendTargets", "All")])[1])
        r.send(r.ini.logout()[1])

    def oi_normal(r: _Recorder) -> None:
        r.open_iscsi_login()
        r.full_feature()

    def oi_discovery(r: _Recorder) -> None:
        r.open_iscsi_login(discovery=True)
        r.send(r.ini.text([("SendTargets", "All")])[1])
        r.send(r.ini.logout()[1])

    rec("normal", 0x00, normal, target=TARGET)
    rec("normal-chunks", 0x00 | (3 << 3), normal, target=TARGET)
    rec("normal-eof", 0x80 | (5 << 3), normal, target=TARGET)
    rec("open-iscsi-normal", 0x00, oi_normal)
    rec("open-iscsi-discovery", 0x00, oi_discovery)
    rec("discovery", 0x00, discovery)
    rec("digests", 0x04, normal, target=TARGET, header_digest=True, data_digest=True)
    rec("chap", 0x01, normal, target=TARGET, chap=("user1", secret))
    rec("open-iscsi-chap", 0x01, lambda r: r.open_iscsi_login(chap=("user1", secret)))
    rec(
        "mutual-chap", 0x02, normal, target=TARGET, chap=("user1", secret), mutual=("target1", fuzz_login.TARGET_SECRET)
    )
    rec("discovery-chap", 0x03, discovery, chap=("disc", fuzz_login.DISCOVERY_SECRET))
    rec("acl-refused", 0x40, normal, target=TARGET)
    rec("acl-own-chap", 0x03, normal, target=TARGET, chap=("acluser", fuzz_login.ACL_SECRET))
    rec("other-target", 0x00, normal, target=fuzz_login.OTHER_TARGET)


# ---- PDUs -------------------------------------------------------------------------------------


def _pdu_seeds() -> None:
    keys = [("InitiatorName", INITIATOR), ("InitiatorAlias", "fuzzhost"), ("TargetName", TARGET),
            ("SessionType", "Normal"), ("AuthMethod", "CHAP,None")]  # fmt: skip
    events = {
        "login-security-open-iscsi": LoginRequest(
            OPEN_ISCSI_ISID, 1, 0, 1, True, False, 0, 0, 1, 0, 0, 0, encode_text(keys)
        ),
        "login-operational-open-iscsi": LoginRequest(
            OPEN_ISCSI_ISID, 1, 1, 3, True, False, 0, 0, 1, 1, 0, 0, encode_text(OPEN_ISCSI_NORMAL)
        ),
        "login-response": LoginResponse(
            OPEN_ISCSI_ISID, 1, 1, 3, True, False, 7, 1, 1, 128, 0, 0, 0, encode_text([("TargetPortalGroupTag", "1")])
        ),
        "read10": ScsiCommand(3, encode_lun(1), bytes([0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0]), 4096, 5, 2, read=True),
        "write16-immediate": ScsiCommand(
            4, 0, bytes([0x8A] + [0] * 12 + [8, 0, 0]), 4096, 6, 2, write=True, data=bytes(1000)
        ),
        "cdb32-bidi": ScsiCommand(5, encode_lun(300), bytes(range(32)), 512, 7, 2, True, True, True, 1, False, 512),
        "data-out": DataOut(4, 9, 0, 1000, True, 0, 2, b"abcd" * 100),
        "nop-out": NopOut(6, cmd_sn=8, exp_stat_sn=3, data=b"ping"),
        "tmf-abort": TaskMgmtRequest(7, 1, 0, 3, 9, 3),
        "text-sendtargets": TextRequest(8, data=encode_text([("SendTargets", "All")])),
        "logout": LogoutRequest(9, 0, 0, 10, 4, True),
        "snack": SnackRequest(10, 1, 5, 0, 4, 1, 2),
        "nop-in": NopIn(0xFFFFFFFF, 12, 5, 10, 137),
        "scsi-response-sense": ScsiResponse(3, 2, 0, 5, 10, 137, 0, data=bytes([0, 18, 0x70, 0, 5] + [0] * 15)),
        "tmf-response": TaskMgmtResponse(7, 0, 6, 10, 137),
        "text-response": TextResponse(
            8, data=encode_text([("TargetName", TARGET), ("TargetAddress", "127.0.0.1:3260,1")])
        ),
        "data-in-status": DataIn(3, 0, 0, [bytes(512)], True, True, 0, False, False, True, 3584),
        "logout-response": LogoutResponse(9, 0, 7, 11, 138, 2, 0),
        "r2t": R2T(4, 9, 0, 1000, 3096, 0, 7, 11, 138),
        "async-logout": AsyncMessage(1, 0, 0, 0, 2, 0, 8, 11, 138),
        "reject": Reject(9, bytes(48), 8, 11, 138),
    }
    for label, event in events.items():
        _save("pdu", label, _wire(event))


# ---- replica frames ---------------------------------------------------------------------------


def _replica_seeds() -> None:
    client = rp.ClientSession()
    meta = {"volume_id": "vol-1", "epoch": 3, "members": ["127.0.0.1:7001"], "revision": 9}
    requests = [
        ("hello", rp.Op.HELLO, {"payload": rp.pack_json({"claim": True})}),
        ("read", rp.Op.READ, {"offset": 4096, "length": 4096}),
        ("write-fua", rp.Op.WRITE, {"offset": 8192, "payload": bytes(range(256)) * 2, "fua": True}),
        ("unmap", rp.Op.UNMAP, {"offset": 0, "length": 1 << 20}),
        ("flush", rp.Op.FLUSH, {}),
        ("ping", rp.Op.PING, {}),
        ("extents", rp.Op.EXTENTS, {"offset": 0, "length": 1 << 30}),
        ("checksum", rp.Op.CHECKSUM, {"offset": 0, "length": 1 << 20, "payload": rp.granule_payload(65536)}),
        ("checksum-min-granule", rp.Op.CHECKSUM, {"offset": 0, "length": 8192, "payload": rp.granule_payload(512)}),
        ("set-meta", rp.Op.SET_META, {"payload": rp.pack_json(meta)}),
        ("grant", rp.Op.GRANT, {"payload": rp.pack_json({"token": "t" * 32})}),
        (
            "source",
            rp.Op.SOURCE,
            {
                "payload": rp.pack_json(
                    {"address": "127.0.0.1:7002", "token": "t" * 32, "volume_id": "vol-1", "timeout": 2.0}
                )
            },
        ),
        ("pull", rp.Op.PULL, {"offset": 0, "length": 1 << 20}),
        ("close", rp.Op.CLOSE, {}),
    ]
    stream = b""
    for label, op, kw in requests:
        wire = b"".join(client.request(op, **kw))  # type: ignore[arg-type]
        _save("replica_frames", f"server-{label}", b"\x00" + wire)
        stream += wire
    _save("replica_frames", "server-session", b"\x00" + stream)
    _save("replica_frames", "server-session-chunked", bytes([0x10 | (2 << 1)]) + stream)
    # Client side: parameters (op index, u16 length, offset/512) for requests 1..n, then responses.
    ops = fuzz_replica_frames._OPS
    server = rp.ServerSession()
    params = b""
    answers = b""
    plan = [(rp.Op.READ, 512, 1), (rp.Op.WRITE, 32, 2), (rp.Op.CHECKSUM, 8192, 2), (rp.Op.EXTENTS, 8192, 0),
            (rp.Op.PULL, 4096, 0), (rp.Op.HELLO, 0, 0), (rp.Op.PING, 0, 0)]  # fmt: skip
    for seq, (op, length, arg) in enumerate(plan, start=1):
        params += bytes([ops.index(op)]) + struct.pack("<H", length) + bytes([arg])
        req = rp.Frame(op, seq, arg * 512, length)
        if op == rp.Op.READ:
            payload = bytes(length)
        elif op == rp.Op.CHECKSUM:
            payload = rp.pack_checksums([0] * rp.checksum_count(length, (arg or 1) * rp.MIN_GRANULE))
        elif op == rp.Op.EXTENTS:
            payload = rp.pack_extents([(0, 4096)])
        elif op == rp.Op.PULL:
            payload = rp.PullResult(4096, 0, 0).pack()
        elif op == rp.Op.HELLO:
            payload = rp.pack_json({"protocol_revision": 2, **meta})
        else:
            payload = b""
        answers += b"".join(server.respond(req, payload))
    n = len(plan)
    _save("replica_frames", "client-responses", bytes([1 | (n << 4)]) + params + answers)
    _save("replica_frames", "client-responses-chunked", bytes([1 | (n << 4) | (1 << 1)]) + params + answers)
    err = b"".join(server.respond_error(rp.Frame(rp.Op.READ, 1, 0, 512), rp.Status.EIO, "disk failed"))
    _save("replica_frames", "client-error", bytes([1 | (1 << 4)]) + params[:4] + err)


def _replica_auth_seeds() -> None:
    from iscsikit.replica import auth

    fa = fuzz_replica_auth
    for index, volume in enumerate(fa.VOLUMES):
        server = auth.ServerAuth(fa.SECRET, lambda v=volume: v, nonce=lambda n: fa.SERVER_NONCE[:n])  # type: ignore[misc]
        client = auth.ClientAuth(fa.SECRET, nonce=lambda n: fa.CLIENT_NONCE[:n])
        session = rp.ClientSession()
        step1 = client.challenge()
        wire = b"".join(session.request(rp.Op.AUTH, payload=step1))
        answer = server.receive(rp.Frame(rp.Op.AUTH, 1, payload=step1))
        step2 = client.answer(answer.payload)
        good = wire + b"".join(session.request(rp.Op.AUTH, payload=step2))
        good += b"".join(session.request(rp.Op.HELLO, payload=rp.pack_json({"claim": True})))
        good += b"".join(session.request(rp.Op.READ, offset=0, length=4096))
        good += b"".join(session.request(rp.Op.WRITE, offset=0, payload=bytes(512)))
        config = index << 1
        _save("replica_auth", f"server-handshake-vol{index}", bytes([config]) + good)
        wrong = wire + b"".join(rp.ClientSession().request(rp.Op.AUTH, payload=step2[:-1] + b"\0"))
        _save("replica_auth", f"server-wrong-proof-vol{index}", bytes([config]) + wrong)
        answer_seed = len(answer.payload).to_bytes(2, "little") + answer.payload
        _save("replica_auth", f"client-answer-vol{index}", bytes([1 | (2 if index == 2 else 0)]) + answer_seed)
    old = b"".join(rp.ClientSession().request(rp.Op.HELLO, payload=rp.pack_json({"claim": True})))
    _save("replica_auth", "server-hello-first", b"\x00" + old)
    _save("replica_auth", "server-chunked", bytes([1 << 3]) + good)


# ---- DB records -------------------------------------------------------------------------------


def _db_seeds() -> None:
    from tests.unit.db import support

    kinds = fuzz_db_record.KINDS
    from iscsikit.db.schema import RecordKind

    def kind_of(path: str) -> RecordKind:
        if "/ifaces/" in path:
            return RecordKind.IFACE
        if path.endswith("st_config"):
            return RecordKind.SENDTARGETS
        if path.endswith("isns_config"):
            return RecordKind.ISNS
        return RecordKind.NODE

    with tarfile.open(ROOT.parent / "tests/fixtures/kernel/etc-iscsi.tar.gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.startswith("etc/iscsi/") or member.name.count("/") < 3:
                continue
            f = tar.extractfile(member)
            assert f is not None
            data = f.read()
            if not data.startswith(b"# BEGIN RECORD"):
                continue
            kind = kind_of(member.name)
            _save("db_record", "kernel-" + kind.value, bytes([kinds.index(kind)]) + data)
    for label, text, kind, hint in (
        ("t1-node", support.T1_RECORD, RecordKind.NODE, 0),
        ("oldstyle-node", support.OLDSTYLE_RECORD, RecordKind.NODE, 0),
        ("st-config-chap", support.ST_CONFIG_CHAP, RecordKind.SENDTARGETS, 0),
        ("isns-config", support.ISNS_CONFIG, RecordKind.ISNS, 0),
    ):
        _save("db_record", label, bytes([kinds.index(kind) | hint << 2]) + text.encode())
    from iscsikit.db import schema

    for kind, key, value in (
        (RecordKind.NODE, "node.session.auth.password", "s3cret pass#1"),
        (RecordKind.NODE, "node.startup", "automatic"),
        (RecordKind.NODE, "node.session.timeo.replacement_timeout", "120"),
        (RecordKind.NODE, "node.session.auth.chap_algs", "SHA3-256,SHA256,MD5"),
        (RecordKind.IFACE, "iface.ipaddress", "192.0.2.9"),
        (RecordKind.SENDTARGETS, "discovery.sendtargets.auth.username", "discuser"),
    ):
        index = list(schema.all_keys(kind).by_name).index(key)
        _save(
            "db_record",
            "setting-" + key.rsplit(".", 1)[-1],
            bytes([0x80 | kinds.index(kind), index % 256]) + value.encode(),
        )


def _restore_member_seeds() -> None:
    """Members as a clean backup holds them: the real DB tree of the kernel capture, under db/."""
    kinds = [k for k, _ in fuzz_restore_member.KINDS]

    def seed(label: str, kind: str, mode: int, name: str, linkname: str = "", config: bool = False) -> None:
        head = bytes([kinds.index(kind) | (8 if config else 0)]) + mode.to_bytes(2, "little")
        _save("restore_member", label, head + name.encode() + (b"\0" + linkname.encode() if linkname else b""))

    with tarfile.open(ROOT.parent / "tests/fixtures/kernel/etc-iscsi.tar.gz") as tar:
        for member in tar.getmembers():
            rel = member.name.removeprefix("etc/iscsi").strip("/")
            if not rel:
                continue
            kind = backup.member_kind(member)
            label = "kernel-" + kind.replace(" ", "-") + "-" + rel.split("/")[0]
            seed(
                label,
                kind,
                member.mode,
                "db/" + rel,
                member.linkname,
                config=rel in ("iscsid.conf", "initiatorname.iscsi"),
            )
    target = "iqn.2026-11.org.example:disk"
    seed(
        "static-link",
        "link",
        0o777,
        f"db/static/{target},10.0.0.1,3260,1,default",
        f"/etc/iscsi/nodes/{target}/10.0.0.1,3260,1",
    )
    seed("setuid-record", "file", 0o4755, f"db/nodes/{target}/10.0.0.1,3260,1/default")
    seed("attachment", "file", 0o644, "state/attachments/pvc-0a1b2c3d.json")
    seed("config-without-flag", "file", 0o644, "db/iscsid.conf")
    seed("device", "character device", 0o600, "db/nodes/x")


def main() -> None:
    for name in HARNESSES:
        shutil.rmtree(CORPUS / name, ignore_errors=True)
    _pdu_seeds()
    _login_seeds()
    _replica_seeds()
    _replica_auth_seeds()
    _db_seeds()
    _restore_member_seeds()
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")


if __name__ == "__main__":
    main()
