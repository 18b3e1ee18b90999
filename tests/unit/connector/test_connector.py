"""Connector logic on a simulated host (see fakehost.py): what a CSI plugin would notice."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from iscsikit.connector import Attachment, Chap, Connector, StateStore, Timeouts, VolumeSpec
from iscsikit.connector.state import StateError
from iscsikit.errors import AttachmentError, DeviceBusyError, DeviceTimeoutError, LoginAuthFailedError, UsageError
from iscsikit.names import Portal
from tests.unit.connector.fakehost import FakeHost, FakeTarget, connector_on

T = "iqn.2026-11.test:tgt1"
MiB = 1 << 20


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "sys", [FakeTarget(T, {1: 64 * MiB, 2: 32 * MiB, 3: 16 * MiB})])


def make(host: FakeHost, tmp_path: Path) -> Connector:
    return connector_on(host, tmp_path)


def spec(volume_id: str, lun: int, **kw) -> VolumeSpec:
    return VolumeSpec(volume_id=volume_id, target=T, portals=("127.0.0.1:3260",), lun=lun, **kw)


def test_connect_returns_the_lun_device_and_persists_it(host, tmp_path):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 2), timeout=10)
    assert a.state == "attached" and a.size_bytes == 32 * MiB
    assert a.device is not None and a.device.startswith("/dev/sd") and a.sessions == host.sessions()
    assert a.wwid is not None and a.wwid.startswith("3600")
    # only the requested LUN was scanned (node.session.scan = manual)
    assert host.disks() == [a.device.removeprefix("/dev/")]
    record = host.nodes[(T, "127.0.0.1:3260", "default")]
    assert record["node.startup"] == "manual" and record["node.session.scan"] == "manual"
    assert c.get("v1") == a
    saved = json.loads((tmp_path / "state/attachments/v1.json").read_text())
    assert saved["attachment"]["device"] == a.device


def test_connect_is_idempotent_and_cheap_the_second_time(host, tmp_path):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    n = len(host.calls)
    assert c.connect(spec("v1", 1)) == a
    assert len(host.calls) == n  # nothing ran: sysfs showed the device in place


def test_two_luns_share_a_session_and_disconnect_keeps_the_other(host, tmp_path):
    c = make(host, tmp_path)
    a1 = c.connect(spec("v1", 1))
    a2 = c.connect(spec("v2", 2))
    assert a1.sessions == a2.sessions and len(host.sessions()) == 1
    c.disconnect("v1")
    assert host.sessions() == a2.sessions
    assert host.disks() == [a2.device.removeprefix("/dev/")]
    assert c.get("v1") is None and c.get("v2") is not None
    c.disconnect("v2")
    assert host.sessions() == [] and host.disks() == []
    assert host.nodes == {}  # node record removed with the last session
    assert c.attachments() == []


def test_disconnect_unknown_volume_is_success(host, tmp_path):
    make(host, tmp_path).disconnect("never-attached")
    assert host.calls == []


def test_crash_after_login_then_retry_converges(host, tmp_path):
    c = make(host, tmp_path)

    def crash(*a, **kw):
        raise KeyboardInterrupt("killed between login and device wait")

    c._wait_devices = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        c.connect(spec("v1", 1))
    assert c.get("v1").state == "connecting" and len(host.sessions()) == 1
    c2 = make(host, tmp_path)  # a new process
    a = c2.connect(spec("v1", 1))
    assert a.state == "attached" and len(host.sessions()) == 1 and len(host.disks()) == 1


def test_crash_then_disconnect_cleans_up(host, tmp_path):
    c = make(host, tmp_path)
    c._wait_devices = lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("crash"))  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        c.connect(spec("v1", 1))
    make(host, tmp_path).disconnect("v1")
    assert host.sessions() == [] and host.disks() == [] and c.get("v1") is None


def test_connecting_record_of_another_volume_keeps_the_session(host, tmp_path):
    """A volume still connecting (its device not there yet) must not lose its session."""
    c = make(host, tmp_path)
    c.connect(spec("v1", 1))
    StateStore(tmp_path / "state").save(Attachment("v2", spec("v2", 2), "connecting"))
    c.disconnect("v1")
    assert len(host.sessions()) == 1


def test_other_disk_on_the_session_keeps_it(host, tmp_path):
    """A disk nobody recorded (an admin's login, auto scan) also keeps the session."""
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    (sid,) = a.sessions
    host.write_file(host.sys / f"class/scsi_host/host{a.paths[0].host}/scan", "0 0 3")
    c.disconnect("v1")
    assert host.sessions() == [sid]


def test_disconnect_by_spec_without_a_record(host, tmp_path):
    c = make(host, tmp_path)
    c.connect(spec("v1", 1))
    (tmp_path / "state/attachments/v1.json").unlink()  # plugin state lost
    c.disconnect(spec("v1", 1))
    assert host.sessions() == [] and host.disks() == []


def test_logout_by_sid_works_without_node_records(host, tmp_path):
    c = make(host, tmp_path)
    c.connect(spec("v1", 1))
    host.nodes.clear()  # someone deleted the node records (tns-csi#209)
    c.disconnect("v1")
    assert host.sessions() == []


def test_chap_and_timeouts_are_set_and_secrets_not_persisted(host, tmp_path):
    host.targets[T].chap = ("user1", "s3cret pass#1")
    c = make(host, tmp_path)
    s = spec("v1", 1, chap=Chap("user1", "s3cret pass#1"), timeouts=Timeouts(replacement_timeout=15))
    c.connect(s)
    record = host.nodes[(T, "127.0.0.1:3260", "default")]
    assert record["node.session.auth.authmethod"] == "CHAP"
    assert record["node.session.timeo.replacement_timeout"] == "15"
    text = (tmp_path / "state/attachments/v1.json").read_text()
    assert "s3cret" not in text and "user1" in text
    assert not [argv for argv in host.calls if "s3cret pass#1" in " ".join(argv)]  # never on a command line


def test_wrong_chap_raises_the_typed_error(host, tmp_path):
    host.targets[T].chap = ("user1", "right")
    c = make(host, tmp_path)
    with pytest.raises(LoginAuthFailedError) as err:
        c.connect(spec("v1", 1, chap=Chap("user1", "wrong")))
    assert "wrong" not in str(err.value) and err.value.error_code == 24


def test_custom_initiator_name_clones_the_iface(host, tmp_path):
    c = make(host, tmp_path)
    s = spec("v1", 1, initiator_name="iqn.2026-11.test:node-a")
    a = c.connect(s)
    iface = s.login_iface
    assert host.ifaces[iface]["iface.initiatorname"] == "iqn.2026-11.test:node-a"
    assert a.paths[0].iface == iface
    c.disconnect("v1")
    assert iface not in host.ifaces


def test_same_id_for_a_different_lun_is_refused(host, tmp_path):
    c = make(host, tmp_path)
    c.connect(spec("v1", 1))
    with pytest.raises(AttachmentError) as err:
        c.connect(spec("v1", 2))
    assert err.value.step == "check" and str(err.value) == (
        f"volume v1: check: already attached as LUN 1 of {T}; "
        "disconnect it before attaching something else under this id"
    )
    assert c.get("v1").spec.lun == 1


def test_missing_lun_times_out_naming_it(host, tmp_path):
    c = make(host, tmp_path)
    with pytest.raises(AttachmentError) as err:
        c.connect(spec("v1", 9), timeout=0.05)
    assert "LUN 9" in str(err.value) and err.value.step == "device"


def test_busy_device_is_not_removed_and_session_kept(host, tmp_path):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    disk = a.device.removeprefix("/dev/")
    holders = Path(host.sys / "class/block" / disk).resolve() / "holders"
    (holders / "dm-7").mkdir()
    with pytest.raises(DeviceBusyError):
        c.disconnect("v1")
    assert host.disks() == [disk] and len(host.sessions()) == 1
    c.disconnect("v1", force=True)
    assert host.sessions() == []


def test_expand(host, tmp_path):
    c = make(host, tmp_path)
    c.connect(spec("v1", 1))
    host.targets[T].luns[1] = 128 * MiB
    a = c.expand("v1", new_size=128 * MiB, timeout=5)
    assert a.size_bytes == 128 * MiB and c.get("v1").size_bytes == 128 * MiB
    with pytest.raises(AttachmentError, match="not attached"):
        c.expand("nope")


def test_parallel_connect_disconnect_of_different_luns(host, tmp_path):
    host.targets[T].luns = {n: 8 * MiB for n in range(1, 9)}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            c = make(host, tmp_path)
            for _ in range(2):
                c.connect(spec(f"v{n}", n), timeout=20)
                c.disconnect(f"v{n}", timeout=20)
            c.connect(spec(f"v{n}", n), timeout=20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    c = make(host, tmp_path)
    assert sorted(a.spec.lun for a in c.attachments()) == list(range(1, 9))
    assert len(host.sessions()) == 1 and len(host.disks()) == 8


# ---- spec and store ------------------------------------------------------------------


def test_spec_validation_names_the_field():
    with pytest.raises(UsageError, match="LUN"):
        spec("v", -1)
    with pytest.raises(UsageError, match="portal"):
        VolumeSpec(volume_id="v", target=T, portals=(), lun=1)
    with pytest.raises(UsageError, match="volume id"):
        VolumeSpec(volume_id="../x", target=T, portals=("1.2.3.4",), lun=1)
    with pytest.raises(UsageError, match="replacement_timeout"):
        Timeouts(replacement_timeout=-5)
    with pytest.raises(UsageError, match="unknown keys"):
        VolumeSpec.from_dict({"volume_id": "v", "target": T, "portals": ["1.2.3.4"], "lun": 1, "lnu": 2})


def test_spec_round_trip_and_masked_chap():
    s = spec("v", 3, chap=Chap("u", "p"), multipath=True, timeouts=Timeouts(abort_timeout=5))
    d = s.to_dict()
    assert d["chap"] == {"username": "u"} and "p" not in json.dumps(d["chap"])
    back = VolumeSpec.from_dict(d)
    assert back.same_volume(s) and back.timeouts == s.timeouts
    assert VolumeSpec.from_dict(s.to_dict(secrets=True)) == s
    assert "p'" not in repr(Chap("u", "p"))


def test_corrupt_record_names_the_file(tmp_path):
    store = StateStore(tmp_path)
    store.dir.mkdir(parents=True)
    (store.dir / "bad.json").write_text("{not json")
    with pytest.raises(StateError, match=r"bad\.json:1"):
        store.load("bad")
    assert store.all() == [] and "bad.json" in store.problems()[0]


def test_store_write_is_atomic_and_private(tmp_path):
    store = StateStore(tmp_path)
    store.save(Attachment("v1", spec("v1", 1), "connecting"))
    path = store.path("v1")
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in store.dir.iterdir()] == ["v1.json"]  # no temp file left


def test_second_lun_of_a_logged_in_target_runs_no_iscsiadm(host, tmp_path):
    """A live session is reused as is: only the LUN scan happens (short hold of the target lock)."""
    c = make(host, tmp_path)
    c.connect(spec("v1", 1))
    before = len(host.calls)
    c.connect(spec("v2", 2))
    assert host.calls[before:] == []
    assert len(host.disks()) == 2


# ---- multipath, failures and what is left behind (mutation testing, issue 14) ----------------


P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"


@pytest.fixture
def mp_host(tmp_path: Path) -> FakeHost:
    h = FakeHost(tmp_path / "sys", [FakeTarget(T, {1: 64 * MiB, 2: 32 * MiB}, portals=(P1, P2))])
    h.multipathd = True
    return h


def mp_spec(volume_id: str, lun: int, **kw) -> VolumeSpec:
    return VolumeSpec(volume_id=volume_id, target=T, portals=(P1, P2), lun=lun, multipath=True, **kw)


def test_multipath_connect_returns_the_map_over_every_path_and_disconnect_flushes_it(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    a = c.connect(mp_spec("v1", 1), timeout=10)
    ((dm, paths),) = mp_host.maps().items()
    assert a.device == f"/dev/{dm}" and a.multipath == dm and a.multipath_name == "/dev/mapper/mpath-1"
    assert a.size_bytes == 64 * MiB and a.warnings == ()
    assert sorted(p.device.removeprefix("/dev/") for p in a.paths) == paths == mp_host.disks()
    assert sorted(p.portal for p in a.paths) == [f"{P1},1", f"{P2},1"] and len(set(a.sessions)) == 2
    assert {p.by_path for p in a.paths} == {
        str(tmp_path / "dev/disk/by-path" / f"ip-{addr}:3260-iscsi-{T}-lun-1") for addr in ("127.0.0.1", "127.0.0.2")
    }
    assert a.wwid is not None and a.wwn is not None
    n = len(mp_host.calls)
    assert c.connect(mp_spec("v1", 1)) == a and len(mp_host.calls) == n  # in place: nothing runs
    c.disconnect("v1")
    assert mp_host.maps() == {} and mp_host.disks() == [] and mp_host.sessions() == []
    flush = mp_host.calls.index(["multipath", "-f", "mpath-1"])
    logouts = [i for i, argv in enumerate(mp_host.calls) if argv[-1:] == ["-u"]]
    assert len(logouts) == 2 and flush < min(logouts)
    assert mp_host.nodes == {} and c.get("v1") is None


def test_multipath_reconnect_with_a_path_missing_logs_in_again(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    a = c.connect(mp_spec("v1", 1))
    (sid2,) = [p.sid for p in a.paths if p.portal.startswith("127.0.0.2")]
    mp_host.run(["iscsiadm", "-m", "session", "-r", str(sid2), "-u"])  # a path went away
    again = c.connect(mp_spec("v1", 1))
    assert len(again.paths) == 2 and sid2 not in again.sessions and len(mp_host.sessions()) == 2
    assert again.device == a.device


def test_multipath_with_a_portal_down_names_the_missing_map_and_login(mp_host, tmp_path):
    mp_host.targets[T].portals = (P1,)  # the second portal does not answer
    c = connector_on(mp_host, tmp_path, instant=True)
    with pytest.raises(AttachmentError) as err:
        c.connect(mp_spec("v1", 1), timeout=1)
    assert err.value.step == "multipath" and "expected a dm-multipath map over sda" in str(err.value)
    assert c.get("v1").state == "connecting" and len(mp_host.sessions()) == 1
    c.disconnect("v1")
    assert mp_host.sessions() == [] and mp_host.disks() == [] and mp_host.nodes == {}


def test_every_portal_failing_names_each_and_one_failing_falls_back_to_the_next(host, tmp_path):
    host.targets[T].portals = (P2,)
    c = make(host, tmp_path)
    two = VolumeSpec(volume_id="v1", target=T, portals=(P1, "127.0.0.3:3260"), lun=1)
    with pytest.raises(AttachmentError) as err:
        c.connect(two)
    assert err.value.step == "login" and isinstance(err.value, AttachmentError)
    assert [part.split(":", 2)[:2] for part in str(err.value).split("; login to ")] == [
        ["volume v1", " login"],
        ["127.0.0.3", "3260 failed"],
    ]
    assert f"login to {P1} failed: " in str(err.value) and str(err.value).count("connection timed out") == 2
    a = c.connect(VolumeSpec(volume_id="v2", target=T, portals=(P1, P2), lun=1))
    assert [p.portal for p in a.paths] == [f"{P2},1"] and len(host.sessions()) == 1
    assert len(a.warnings) == 1 and a.warnings[0].startswith(f"login to {P1} failed: ")


def test_a_login_that_reports_success_without_a_session_is_an_error(host, tmp_path):
    c = make(host, tmp_path)
    real = host._create_session
    host._create_session = lambda *a, **kw: None  # type: ignore[method-assign]
    with pytest.raises(AttachmentError) as err:
        c.connect(spec("v1", 1))
    assert err.value.step == "login" and "reported success but no session is in sysfs" in str(err.value)
    host._create_session = real  # type: ignore[method-assign]
    assert c.connect(spec("v1", 1)).state == "attached"


def test_an_attached_volume_whose_device_went_away_is_attached_again(host, tmp_path):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    host.write_file(host.sys / f"class/block/{a.device.removeprefix('/dev/')}/device/delete", "1")
    assert host.disks() == []
    b = c.connect(spec("v1", 1))
    assert b.device != a.device and host.disks() == [b.device.removeprefix("/dev/")]
    assert c.get("v1") == b and b.sessions == a.sessions


def test_a_held_target_lock_times_out_before_anything_changes(host, tmp_path):
    from iscsikit.connector.locks import Locks
    from iscsikit.errors import LockTimeoutError

    c = make(host, tmp_path)
    c.lock_timeout = 0.05
    with Locks(tmp_path / "state").target(T), pytest.raises(LockTimeoutError, match=f"target {T}"):
        c.connect(spec("v1", 1))
    assert host.calls == [] and c.get("v1") is None


def test_a_failed_logout_keeps_the_record_for_a_retry(host, tmp_path):
    from iscsikit.errors import IscsiadmError

    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    host.fail_next["-u"] = 8
    with pytest.raises(IscsiadmError):
        c.disconnect("v1")
    assert c.get("v1").state == "disconnecting" and len(host.sessions()) == 1 and host.disks() == []
    assert c.get("v1").device == a.device  # the record keeps what was attached, for the retry
    c.disconnect("v1")
    assert host.sessions() == [] and c.get("v1") is None and host.nodes == {}


def test_a_node_record_another_volume_waits_on_is_kept(host, tmp_path):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    StateStore(tmp_path / "state").save(Attachment("v2", spec("v2", 2), "connecting"))
    other = VolumeSpec(volume_id="v3", target=T, portals=("127.0.0.5:3260",), lun=3)
    StateStore(tmp_path / "state").save(Attachment("v3", other, "connecting"))  # another portal
    host.run(["iscsiadm", "-m", "session", "-r", str(a.sessions[0]), "-u"])  # the session dropped
    c.disconnect("v1")
    assert list(host.nodes) == [(T, P1, "default")]  # v2 will log in through it
    c.disconnect("v2")
    assert host.nodes == {}


def test_a_cloned_iface_is_reused_updated_and_kept_while_used(host, tmp_path):
    host.ifaces["default"].update({"iface.hwaddress": "52:54:00:12:34:56", "iface.net_ifacename": "eth1"})
    c = make(host, tmp_path)
    s1 = spec("v1", 1, initiator_name="iqn.2026-11.test:node-a")
    iface = s1.login_iface
    c.connect(s1)
    assert host.ifaces[iface] == {
        "iface.hwaddress": "52:54:00:12:34:56",
        "iface.net_ifacename": "eth1",
        "iface.initiatorname": "iqn.2026-11.test:node-a",
    }  # the transport (tcp, the default) is not copied: setting it loads a module
    n = len(host.calls)
    c.connect(spec("v2", 2, initiator_name="iqn.2026-11.test:node-a"))
    assert not [argv for argv in host.calls[n:] if "iface" in argv and "update" in argv]
    host.ifaces[iface]["iface.initiatorname"] = "iqn.2026-11.test:changed-by-hand"
    c.disconnect("v2")
    assert iface in host.ifaces  # v1 still uses it
    c.connect(spec("v3", 3, initiator_name="iqn.2026-11.test:node-a"))
    assert host.ifaces[iface]["iface.initiatorname"] == "iqn.2026-11.test:node-a"
    c.disconnect("v1")
    assert iface in host.ifaces  # a session (v3's) still runs through it
    c.disconnect("v3")
    assert iface not in host.ifaces


def test_expand_refuses_paths_that_are_not_running_or_missing(host, tmp_path):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    disk = a.device.removeprefix("/dev/")
    (host.sys / f"class/block/{disk}/device/state").write_text("blocked\n")
    with pytest.raises(AttachmentError, match=rf"expand: paths not running: {disk} \(blocked\)"):
        c.expand("v1")
    host.write_file(host.sys / f"class/block/{disk}/device/delete", "1")
    with pytest.raises(AttachmentError, match="expand: no device of this LUN is present"):
        c.expand("v1")
    StateStore(tmp_path / "state").save(Attachment("v2", spec("v2", 2), "connecting"))
    with pytest.raises(AttachmentError, match="v2: expand: not attached"):
        c.expand("v2")


def test_expand_waits_for_the_size_asked_and_names_what_it_saw(host, tmp_path):
    c = connector_on(host, tmp_path, instant=True)
    c.connect(spec("v1", 1))
    with pytest.raises(Exception, match=rf"to report at least {128 * MiB} bytes; they report \[{64 * MiB}\]"):
        c.expand("v1", new_size=128 * MiB, timeout=1)
    assert c.get("v1").size_bytes == 64 * MiB
    host.targets[T].luns[1] = 96 * MiB
    assert c.expand("v1").size_bytes == 96 * MiB  # no size asked: whatever the rescan shows


def test_multipath_expand_grows_the_map(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    c.connect(mp_spec("v1", 1))
    mp_host.targets[T].luns[1] = 128 * MiB
    a = c.expand("v1", new_size=128 * MiB, timeout=5)
    assert a.size_bytes == 128 * MiB and c.get("v1").size_bytes == 128 * MiB
    assert ["multipathd", "resize", "map", "mpath-1"] in mp_host.calls


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": 2, "attachment": {}}', r"v\.json: not an iscsikit attachment record \(format 1\)$"),
        ("[1]", r"v\.json: not an iscsikit attachment record \(format 1\)$"),
        ('{"format": 1, "attachment": {}}', r"v\.json: bad attachment record: "),
        ('{"format": 1}', r"v\.json: bad attachment record: 'attachment'"),
        ("\n\n{", r"v\.json:3: not valid JSON \(Expecting property name"),
    ],
)
def test_every_unreadable_record_is_an_error_naming_the_file_and_the_fault(tmp_path, text, message):
    store = StateStore(tmp_path)
    store.dir.mkdir(parents=True)
    (store.dir / "v.json").write_text(text)
    with pytest.raises(StateError, match=message) as err:
        store.load("v")
    assert str(err.value).startswith(f"{store.dir}/v.json")
    assert store.problems() == [str(err.value)] and store.all() == []


def test_store_lists_only_records_and_reads_them_in_order(tmp_path):
    store = StateStore(tmp_path)
    assert store.all() == [] and store.problems() == [] and store.load("v1") is None
    for vid in ("v2", "v1"):
        store.save(Attachment(vid, spec(vid, 1), "connecting"))
    (store.dir / ".v3.abc.tmp").write_text("{half")  # a save killed half-way
    (store.dir / ".v4.json").write_text(store.path("v1").read_text())  # hidden: not a record, even when readable
    (store.dir / "notes.txt").write_text("x")
    (store.dir / "v0.json").mkdir()  # cannot be read
    assert [a.volume_id for a in store.all()] == ["v1", "v2"]
    assert store.problems() == [f"[Errno 21] Is a directory: '{store.dir}/v0.json'"]
    with pytest.raises(StateError, match=rf"cannot read attachment record {store.dir}/v0\.json: Is a directory"):
        store.load("v0")
    assert store.dir.stat().st_mode & 0o777 == 0o700
    store.delete("v2")
    store.delete("v2")  # already gone: fine
    assert [a.volume_id for a in store.all()] == ["v1"]


def test_a_failed_save_leaves_the_old_record_and_no_temp_file(tmp_path):
    store = StateStore(tmp_path)
    store.save(Attachment("v1", spec("v1", 1), "connecting"))
    before = store.path("v1").read_bytes()
    store.path("v1").unlink()
    store.path("v1").mkdir()
    (store.path("v1") / "x").write_text("")  # rename over a non-empty directory fails
    with pytest.raises(OSError):
        store.save(Attachment("v1", spec("v1", 1), "attached"))
    assert sorted(p.name for p in store.dir.iterdir()) == ["v1.json"]
    shutil.rmtree(store.path("v1"))
    store.path("v1").write_bytes(before)
    assert store.load("v1").state == "connecting"


def test_a_device_that_does_not_go_away_stops_the_disconnect_before_the_logout(host, tmp_path):
    c = connector_on(host, tmp_path, instant=True)
    a = c.connect(spec("v1", 1))
    disk = a.device.removeprefix("/dev/")
    host.stuck.add(disk)
    with pytest.raises(AttachmentError) as err:
        c.disconnect("v1", timeout=1)
    assert err.value.step == "remove devices" and f"expected {disk} to be removed, but still present" in str(err.value)
    assert len(host.sessions()) == 1 and c.get("v1").state == "disconnecting" and host.nodes
    host.stuck.clear()
    c.disconnect("v1")
    assert host.sessions() == [] and host.disks() == [] and c.get("v1") is None


def test_a_record_is_indented_json_written_next_to_its_final_name(tmp_path, monkeypatch):
    import tempfile

    # the temp file is made in the attachments directory (never in /tmp), so the rename is atomic
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))
    store = StateStore(tmp_path / "a/b/state")  # parents are made as needed
    a = Attachment("v1", spec("v1", 1), "connecting")
    store.save(a)
    text = store.path("v1").read_text()
    assert text == json.dumps({"format": 1, "attachment": a.to_dict()}, indent=2) + "\n"
    assert text.startswith('{\n  "format": 1,\n  "attachment": {\n    "volume_id": "v1",')


def test_unreadable_records_are_logged_when_listed(tmp_path, caplog):
    store = StateStore(tmp_path)
    store.dir.mkdir(parents=True)
    (store.dir / "bad.json").write_text("[]")
    with caplog.at_level("WARNING", logger="iscsikit.connector"):
        assert store.all() == []
    assert caplog.messages == [
        f"skipping attachment record {store.dir}/bad.json: {store.dir}/bad.json: "
        "not an iscsikit attachment record (format 1)"
    ]


def test_discovery_finds_the_target_and_a_portal_that_does_not_answer_is_skipped(host, tmp_path, caplog):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1, discovery=True))
    assert ["iscsiadm", "-m", "discovery", "-t", "st", "-p", P1, "-I", "default"] in host.calls
    assert a.state == "attached" and host.nodes[(T, P1, "default")]["node.startup"] == "manual"
    c.disconnect("v1")
    host.answering.add(P2)  # answers, but offers other targets
    two = VolumeSpec(volume_id="v2", target=T, portals=("127.0.0.3:3260", P2, P1), lun=1, discovery=True)
    with caplog.at_level("WARNING", logger="iscsikit.connector"):
        a = c.connect(two)
    assert [p.portal for p in a.paths] == [f"{P1},1"]
    assert caplog.messages[0].startswith("volume v2: discovery on 127.0.0.3:3260 failed: ")
    assert "connection failure" in caplog.messages[0]
    assert caplog.messages[1] == f"volume v2: {P2} does not list {T}"
    c.disconnect("v2")
    assert host.nodes == {}  # the records made for the portals that failed go too
    # with one portal, a failed discovery is the error
    from iscsikit.errors import IscsiadmError

    with pytest.raises(IscsiadmError, match="connection failure"):
        c.connect(VolumeSpec(volume_id="v3", target=T, portals=("127.0.0.3:3260",), lun=2, discovery=True))
    assert c.get("v3").state == "connecting" and host.nodes == {} and host.sessions() == []


def test_multipath_expand_waits_for_the_map_to_show_the_new_size(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    a = c.connect(mp_spec("v1", 1))
    mp_host.map_resize_delay = 0.2
    mp_host.targets[T].luns[1] = 128 * MiB
    grown = c.expand("v1", timeout=10)
    assert grown.size_bytes == 128 * MiB and grown.device == a.device
    assert (mp_host.sys / f"class/block/{a.multipath}/size").read_text() == f"{128 * MiB // 512}\n"


def test_multipath_expand_with_one_path_left_grows_the_map_through_it(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    a = c.connect(mp_spec("v1", 1))
    mp_host.run(["iscsiadm", "-m", "session", "-r", str(a.paths[1].sid), "-u"])
    mp_host.targets[T].luns[1] = 128 * MiB
    grown = c.expand("v1", new_size=128 * MiB, timeout=10)
    assert grown.size_bytes == 128 * MiB and grown.multipath == a.multipath and len(grown.paths) == 1


def test_multipath_expand_with_paths_disagreeing_names_the_sizes(mp_host, tmp_path):
    c = connector_on(mp_host, tmp_path, instant=True)
    a = c.connect(mp_spec("v1", 1))
    names = sorted(p.device.removeprefix("/dev/") for p in a.paths)
    mp_host.stuck.add(names[1])  # this path does not see the new size
    mp_host.targets[T].luns[1] = 128 * MiB
    with pytest.raises(Exception) as err:
        c.expand("v1", timeout=1)
    assert f"to report one size; they report [{128 * MiB}, {64 * MiB}]" in str(err.value)
    assert ", ".join(names) in str(err.value)
    assert ["multipathd", "resize", "map", "mpath-1"] not in mp_host.calls and c.get("v1").size_bytes == 64 * MiB


def test_the_size_reported_is_the_maps_and_missing_identifiers_are_none(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    a = c.connect(mp_spec("v1", 1))
    for p in a.paths:  # the paths see the new size, the map is not resized yet
        mp_host.write_file(mp_host.sys / f"class/block/{p.device.removeprefix('/dev/')}/device/rescan", "1")
    mp_host.targets[T].luns[1] = 128 * MiB
    for p in a.paths:
        mp_host.write_file(mp_host.sys / f"class/block/{p.device.removeprefix('/dev/')}/device/rescan", "1")
        (mp_host.sys / f"class/block/{p.device.removeprefix('/dev/')}/device/wwid").unlink()
    again = c.connect(mp_spec("v1", 1))
    assert again.size_bytes == 64 * MiB and again.wwid is None and again.wwn is None


def test_a_single_path_volume_has_no_map(host, tmp_path):
    a = make(host, tmp_path).connect(spec("v1", 1))
    assert a.multipath is None and a.multipath_name is None and a.device.startswith("/dev/sd")
    assert a.paths[0].iface == "default" and a.paths[0].host == 2 and a.paths[0].hctl == "2:0:0:1"


def test_volumes_on_different_portals_of_a_target_keep_their_own_sessions_and_records(tmp_path):
    host = FakeHost(tmp_path / "sys", [FakeTarget(T, {1: 64 * MiB, 2: 32 * MiB}, portals=(P1, P2))])
    host.multipathd = True
    c = make(host, tmp_path)
    a1 = c.connect(spec("v1", 1))
    a2 = c.connect(VolumeSpec(volume_id="v2", target=T, portals=(P2,), lun=2))
    assert [p.portal for p in a2.paths] == [f"{P2},1"] and a1.sessions != a2.sessions
    c.disconnect("v1")
    assert host.sessions() == a2.sessions and list(host.nodes) == [(T, P2, "default")]
    # a single-path volume over portals that both have sessions uses one of them
    c.connect(mp_spec("v3", 1))
    a4 = c.connect(VolumeSpec(volume_id="v4", target=T, portals=(P1, P2), lun=2))
    assert len(a4.paths) == 1


def test_the_lowest_sid_is_reused_when_a_portal_has_two_sessions(host, tmp_path):
    c = make(host, tmp_path)
    c.connect(spec("v1", 1))
    host._create_session(T, Portal.parse(P1), "default", scan=False)  # an admin's second login
    a = c.connect(spec("v2", 2))
    assert a.sessions == [min(host.sessions())]


def test_a_lock_held_too_long_fails_after_what_is_left_of_the_timeout(host, tmp_path):
    from iscsikit.connector.locks import Locks
    from iscsikit.errors import LockTimeoutError

    c = make(host, tmp_path)
    assert c.lock_timeout is None
    with Locks(tmp_path / "state").target(T), pytest.raises(LockTimeoutError, match=r"within 1 s"):
        c.connect(spec("v1", 1), timeout=0.05)  # at least a second, however little is left


def test_a_connector_needs_nothing_until_used_and_defaults_to_the_hosts_trees():
    c = Connector()
    assert (str(c.root.path), str(c.dev_root), str(c.store.dir)) == ("/sys", "/dev", "/var/lib/iscsikit/attachments")
    assert c.wait_for_udev is False and c.lock_timeout is None and c.iscsiadm.runner is c.runner
    assert c.scsi.runner is c.runner and c.multipath.runner is c.runner


def test_an_iface_a_waiting_volume_will_use_is_kept(host, tmp_path):
    c = make(host, tmp_path)
    s1 = spec("v1", 1, initiator_name="iqn.2026-11.test:node-a")
    c.connect(s1)
    other = VolumeSpec(
        volume_id="v9", target=f"{T}-other", portals=(P2,), lun=2, initiator_name="iqn.2026-11.test:node-a"
    )
    StateStore(tmp_path / "state").save(Attachment("v9", other, "connecting"))  # another target, same iface
    c.disconnect("v1")
    assert s1.login_iface in host.ifaces and host.sessions() == []


def _in_place_without_the_lock(h: FakeHost, s: VolumeSpec, tmp_path: Path) -> None:
    from iscsikit.connector.locks import Locks
    from iscsikit.errors import LockTimeoutError

    c = make(h, tmp_path)
    c.lock_timeout = 0.05
    a = c.connect(s)
    with Locks(tmp_path / "state").target(T):  # a long operation on another LUN of the target
        assert c.connect(s) == a
        with pytest.raises(LockTimeoutError):
            c.expand("v1")


def test_an_attached_volume_in_place_is_returned_without_the_target_lock(host, tmp_path):
    _in_place_without_the_lock(host, spec("v1", 1), tmp_path)


def test_an_attached_multipath_volume_in_place_is_returned_without_the_target_lock(mp_host, tmp_path):
    _in_place_without_the_lock(mp_host, mp_spec("v1", 1), tmp_path)


def test_expand_errors_name_the_volume(host, tmp_path):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    disk = a.device.removeprefix("/dev/")
    (host.sys / f"class/block/{disk}/device/state").write_text("offline\n")
    with pytest.raises(AttachmentError) as err:
        c.expand("v1")
    assert str(err.value) == f"volume v1: expand: paths not running: {disk} (offline)"
    host.write_file(host.sys / f"class/block/{disk}/device/delete", "1")
    with pytest.raises(AttachmentError) as err:
        c.expand("v1")
    assert str(err.value) == "volume v1: expand: no device of this LUN is present"


def test_a_session_without_an_ifacename_counts_as_default(host, tmp_path):
    c = make(host, tmp_path)
    a1 = c.connect(spec("v1", 1))
    StateStore(tmp_path / "state").save(Attachment("v2", spec("v2", 2), "connecting"))  # no disk yet
    (sid,) = a1.sessions
    link = host.sys / f"class/iscsi_session/session{sid}"
    (link.resolve() / "ifacename").unlink()  # an older kernel
    c.disconnect("v1")
    assert host.sessions() == [sid]  # v2 still uses it


def test_a_disconnect_that_cannot_take_the_lock_leaves_a_disconnecting_record(host, tmp_path):
    from iscsikit.connector.locks import Locks
    from iscsikit.errors import LockTimeoutError

    c = make(host, tmp_path)
    c.connect(spec("v1", 1))
    (tmp_path / "state/attachments/v1.json").unlink()  # the plugin lost its state
    c.lock_timeout = 0.05
    with Locks(tmp_path / "state").target(T), pytest.raises(LockTimeoutError):
        c.disconnect(spec("v1", 1))
    assert c.get("v1").state == "disconnecting" and host.disks() == [] and len(host.sessions()) == 1
    c.disconnect("v1")
    assert host.sessions() == [] and c.get("v1") is None


# ---- which sessions, records and devices a step touches, and how long it waits -----------------


def _waited(err: BaseException) -> float:
    """The seconds a wait gave up after, from its message ("timed out after N s: ...")."""
    m = re.search(r"timed out after ([0-9.e+]+) s: ", str(err))
    assert m is not None, str(err)
    return float(m.group(1))


def test_with_no_time_left_each_wait_gives_up_at_once_naming_the_volume(host, tmp_path):
    c = connector_on(host, tmp_path, instant=True)
    with pytest.raises(AttachmentError) as err:
        c.connect(spec("v9", 9), timeout=0)
    assert str(err.value).startswith("volume v9: device: timed out after 0 s: expected LUN 9 of session 1 ")
    c.disconnect("v9")
    a = c.connect(spec("v1", 1))
    disk = a.device.removeprefix("/dev/")
    host.stuck.add(disk)
    with pytest.raises(AttachmentError) as err:
        c.disconnect("v1", timeout=0)
    assert str(err.value) == (
        f"volume v1: remove devices: timed out after 0 s: expected {disk} to be removed, but still present"
    )


def test_with_no_time_left_multipath_waits_give_up_at_once(mp_host, tmp_path):
    c = connector_on(mp_host, tmp_path, instant=True)
    with pytest.raises(AttachmentError) as err:
        c.connect(mp_spec("v9", 9), timeout=0)
    # one message per path, each saying what is missing
    assert re.fullmatch(
        r"volume v9: device: timed out after 0 s: expected LUN 9 of session 1 [^;]+; the target has not reported "
        r"that LUN \(LUNs seen: none; session state LOGGED_IN\); timed out after 0 s: expected LUN 9 of session 2 .*",
        str(err.value),
    )
    c.disconnect("v9")
    a = c.connect(mp_spec("v1", 1))
    names = [p.device.removeprefix("/dev/") for p in a.paths]
    mp_host.stuck.add(names[1])
    mp_host.targets[T].luns[1] = 128 * MiB
    with pytest.raises(DeviceTimeoutError) as err:
        c.expand("v1", timeout=0)
    assert str(err.value).startswith(f"timed out after 0 s: expected {', '.join(names)} to report one size; ")
    mp_host.stuck = {a.multipath}  # the paths grow, the map does not
    with pytest.raises(DeviceTimeoutError) as err:
        c.expand("v1", timeout=0)
    assert str(err.value) == f"timed out after 0 s: expected multipath map {a.multipath} to grow to {128 * MiB} bytes"
    with pytest.raises(DeviceTimeoutError) as err:
        c.disconnect("v1", timeout=0)
    assert str(err.value) == f"timed out after 0 s: expected {a.multipath} to be removed, but still present"
    mp_host.stuck.clear()
    c.disconnect("v1")
    assert mp_host.maps() == {} and mp_host.sessions() == [] and c.get("v1") is None


def test_by_default_connect_and_disconnect_wait_120_s_and_expand_60_s(mp_host, tmp_path):
    c = connector_on(mp_host, tmp_path, instant=True)  # the clock moves 0.1 s per look
    with pytest.raises(AttachmentError) as err:
        c.connect(spec("v9", 9))
    assert err.value.step == "device" and 119 < _waited(err.value) <= 120
    c.disconnect("v9")
    a = c.connect(mp_spec("v1", 1))
    stuck = a.paths[1].device.removeprefix("/dev/")
    mp_host.stuck.add(stuck)
    mp_host.targets[T].luns[1] = 128 * MiB
    with pytest.raises(DeviceTimeoutError) as err:
        c.expand("v1")
    assert 59 < _waited(err.value) <= 60
    with pytest.raises(AttachmentError) as err:
        c.disconnect("v1")
    assert err.value.step == "remove devices" and 119 < _waited(err.value) <= 120


def test_disconnect_touches_only_its_targets_sessions_on_its_iface(tmp_path):
    t2 = f"{T}-b"
    host = FakeHost(tmp_path / "sys", [FakeTarget(T, {1: 64 * MiB, 2: 32 * MiB}), FakeTarget(t2, {1: 16 * MiB})])
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    # an admin's logins, recorded nowhere: this target through another iface, another target through this one
    host._create_session(T, Portal.parse(P1), "other", scan=True)
    host._create_session(t2, Portal.parse(P1), "default", scan=True)
    before = host.disks()
    assert len(before) == 4
    c.disconnect("v1")
    assert host.sessions() == [2, 3] and host.disks() == [d for d in before if d != a.device.removeprefix("/dev/")]
    assert host.nodes == {}  # its node record goes: the sessions left are not its


def test_a_session_kept_for_another_disk_keeps_its_node_record(host, tmp_path):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    host.write_file(host.sys / f"class/scsi_host/host{a.paths[0].host}/scan", "0 0 3")  # an admin's scan
    c.disconnect("v1")
    assert host.sessions() == a.sessions and list(host.nodes) == [(T, P1, "default")]


def test_a_multipath_volume_logs_out_only_the_paths_nothing_else_uses(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    c.connect(mp_spec("v1", 1))
    b = c.connect(VolumeSpec(volume_id="v2", target=T, portals=(P1,), lun=2))
    c.disconnect("v1")
    assert mp_host.sessions() == b.sessions and list(mp_host.nodes) == [(T, P1, "default")]
    assert mp_host.disks() == [b.device.removeprefix("/dev/")] and mp_host.maps() == {}
    a = c.connect(mp_spec("v1", 1))
    p1 = next(p for p in a.paths if p.portal == f"{P1},1")
    c.disconnect("v2")
    mp_host.write_file(mp_host.sys / f"class/scsi_host/host{p1.host}/scan", "0 0 2")  # an admin's scan
    c.disconnect("v1")
    assert mp_host.sessions() == [p1.sid] and list(mp_host.nodes) == [(T, P1, "default")]


def test_a_failed_logout_still_logs_out_the_other_paths_then_raises(mp_host, tmp_path):
    from iscsikit.errors import IscsiadmError

    c = make(mp_host, tmp_path)
    a = c.connect(mp_spec("v1", 1))
    first = min(a.sessions)
    mp_host.fail_next[f"-r {first} -u"] = 8
    with pytest.raises(IscsiadmError, match="injected failure 8"):
        c.disconnect("v1")
    assert mp_host.sessions() == [first] and c.get("v1").state == "disconnecting"
    assert list(mp_host.nodes) == [(T, P1, "default")]
    c.disconnect("v1")
    assert mp_host.sessions() == [] and mp_host.nodes == {} and c.get("v1") is None


def test_a_path_another_process_logs_out_meanwhile_is_no_error(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    a = c.connect(mp_spec("v1", 1))
    first, second = sorted(a.sessions)
    mp_host.meanwhile[f"-r {first} -u"] = lambda: mp_host._destroy_session(second)
    c.disconnect("v1")
    assert mp_host.sessions() == [] and mp_host.nodes == {} and c.get("v1") is None


def test_a_controller_lun_without_a_disk_does_not_keep_the_session(tmp_path):
    host = FakeHost(tmp_path / "sys", [FakeTarget(T, {0: 0, 1: 64 * MiB}, controllers=(0,))])
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    host.write_file(host.sys / f"class/scsi_host/host{a.paths[0].host}/scan", "0 0 0")  # tgt's LUN 0, seen by a scan
    assert os.path.lexists(host.sys / "bus/scsi/devices/2:0:0:0")
    c.disconnect("v1")
    assert host.sessions() == [] and host.nodes == {}


def test_a_lun_without_a_block_device_is_named_and_deleted_on_disconnect(tmp_path):
    host = FakeHost(tmp_path / "sys", [FakeTarget(T, {1: 64 * MiB, 4: 0}, controllers=(4,))])
    c = connector_on(host, tmp_path, instant=True)
    with pytest.raises(AttachmentError) as err:
        c.connect(spec("v1", 4), timeout=1)
    assert err.value.step == "device"
    assert str(err.value).endswith("exists as SCSI device 2:0:0:4 (state running) but has no block device")
    c.disconnect("v1")
    deletes = [(Path(path).parent.name, data) for path, data in host.writes if path.endswith("/delete")]
    assert deletes == [("2:0:0:4", "1")]  # the SCSI device is deleted before the logout
    assert host.sessions() == [] and not os.path.lexists(host.sys / "bus/scsi/devices/2:0:0:4")


@pytest.mark.parametrize("target_id", [3, None])  # an offload host's target; a kernel without the attribute
def test_the_lun_is_scanned_on_the_sessions_scsi_target(host, tmp_path, target_id):
    host.target_id = target_id
    a = connector_on(host, tmp_path, instant=True).connect(spec("v1", 2), timeout=1)
    tid = target_id or 0
    assert a.paths[0].hctl == f"2:0:{tid}:2" and a.size_bytes == 32 * MiB
    assert host.writes == [(str(host.sys / "class/scsi_host/host2/scan"), f"0 {tid} 2")]


def test_a_lun_already_present_is_not_scanned_again(host, tmp_path):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    (tmp_path / "state/attachments/v1.json").unlink()  # the plugin lost its state: a whole connect again
    before = len(host.writes)
    assert c.connect(spec("v1", 1)) == a and host.writes[before:] == []


def test_a_clone_iface_goes_with_its_last_session_and_stays_while_one_uses_it(host, tmp_path):
    c = make(host, tmp_path)
    s1 = spec("v1", 1, initiator_name="iqn.2026-11.test:node-a")
    c.connect(s1)
    c.connect(spec("v2", 2))  # through the default iface: not a user of the clone
    c.disconnect("v1")
    assert s1.login_iface not in host.ifaces and len(host.sessions()) == 1
    a3 = c.connect(spec("v3", 1, initiator_name="iqn.2026-11.test:node-a"))
    host.write_file(host.sys / f"class/scsi_host/host{a3.paths[0].host}/scan", "0 0 3")  # an admin's scan
    c.disconnect("v3")
    assert a3.sessions[0] in host.sessions() and s1.login_iface in host.ifaces


def test_a_clone_ifaces_node_record_goes_with_it(host, tmp_path):
    c = make(host, tmp_path)
    s = spec("v1", 1, initiator_name="iqn.2026-11.test:node-a")
    c.connect(s)
    assert list(host.nodes) == [(T, P1, s.login_iface)]
    c.disconnect("v1")
    assert host.nodes == {} and host.sessions() == []


def test_a_path_of_a_session_without_an_ifacename_is_on_the_default_iface(host, tmp_path):
    c = make(host, tmp_path)
    a = c.connect(spec("v1", 1))
    (sid,) = a.sessions
    ((host.sys / f"class/iscsi_session/session{sid}").resolve() / "ifacename").unlink()  # an older kernel
    again = c.connect(spec("v1", 1))  # in place: described from sysfs again
    assert again.paths[0].iface == "default" and again == a


def test_expand_of_a_single_path_volume_leaves_a_map_it_did_not_ask_for(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    a = c.connect(spec("v1", 1))
    mp_host._create_session(T, Portal.parse(P2), "default", scan=True)  # an admin's login: multipathd maps LUN 1
    assert len(mp_host.maps()) == 1
    mp_host.targets[T].luns[1] = 128 * MiB
    grown = c.expand("v1", new_size=128 * MiB, timeout=5)
    assert grown.device == a.device and grown.multipath is None and grown.size_bytes == 128 * MiB
    assert not [argv for argv in mp_host.calls if argv[0] == "multipathd"]


def test_multipath_expand_with_a_path_device_gone_grows_through_the_rest(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    a = c.connect(mp_spec("v1", 1))
    mp_host.write_file(mp_host.sys / f"class/block/{a.paths[1].device.removeprefix('/dev/')}/device/delete", "1")
    mp_host.targets[T].luns[1] = 128 * MiB
    grown = c.expand("v1", new_size=128 * MiB, timeout=5)
    assert grown.size_bytes == 128 * MiB and grown.multipath == a.multipath
    assert [p.sid for p in grown.paths] == [a.paths[0].sid]


def test_expand_names_every_path_that_is_not_running(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    a = c.connect(mp_spec("v1", 1))
    names = [p.device.removeprefix("/dev/") for p in a.paths]
    for name in names:
        (mp_host.sys / f"class/block/{name}/device/state").write_text("blocked\n")
    with pytest.raises(AttachmentError) as err:
        c.expand("v1")
    assert str(err.value) == f"volume v1: expand: paths not running: {names[0]} (blocked), {names[1]} (blocked)"


def test_a_dry_run_disconnect_records_what_it_would_do_and_waits_for_nothing(host, tmp_path):
    c = connector_on(host, tmp_path, instant=True)
    a = c.connect(spec("v1", 1))
    host.dry_run = True
    c.disconnect("v1", timeout=1)
    disk = a.device.removeprefix("/dev/")
    assert host.disks() == [disk] and host.sessions() == a.sessions
    assert [Path(r.path).name for r in host.recorded if r.kind == "write"] == ["delete"]
    assert ["iscsiadm", "-m", "session", "-r", str(a.sessions[0]), "-u"] in [r.argv for r in host.recorded]
    # Nothing was undone, so the record stays as it was: a real disconnect still finds what to undo.
    assert c.get("v1") == a
    host.dry_run = False
    c.disconnect("v1", timeout=1)
    assert host.disks() == [] and host.sessions() == [] and c.get("v1") is None


def test_a_dry_run_connect_leaves_no_record(host, tmp_path):
    c = connector_on(host, tmp_path, instant=True)
    host.dry_run = True
    with pytest.raises((AttachmentError, DeviceTimeoutError)):
        c.connect(spec("v1", 1), timeout=1)  # nothing logs in, so no device appears
    assert c.get("v1") is None and not (tmp_path / "state/attachments/v1.json").exists()


def test_discovery_chap_is_sent_from_the_discovery_record_never_on_a_command_line(host, tmp_path):
    host.targets[T].discovery_chap = ("disc-user", "disc pass#2")
    c = make(host, tmp_path)
    with pytest.raises(LoginAuthFailedError, match="authorization failure"):
        c.connect(spec("v0", 1, discovery=True))
    c.disconnect("v0")
    a = c.connect(spec("v1", 1, discovery=True, discovery_chap=Chap("disc-user", "disc pass#2")))
    assert a.state == "attached" and host.discoveries[P1]["discovery.sendtargets.auth.password"] == "disc pass#2"
    assert not [argv for argv in host.calls if "disc pass#2" in " ".join(argv)]
    assert "disc pass#2" not in (tmp_path / "state/attachments/v1.json").read_text()


def test_devices_that_come_and_go_a_moment_after_the_write_are_waited_for(mp_host, tmp_path):
    c = make(mp_host, tmp_path)  # a real clock: each wait has the call's whole timeout
    mp_host.async_delay = 0.2  # the kernel probes the LUN (and tears it down) after the write returns
    a = c.connect(spec("v1", 1), timeout=30)
    assert a.state == "attached" and mp_host.disks() == [a.device.removeprefix("/dev/")]
    c.disconnect("v1", timeout=30)
    assert mp_host.disks() == [] and mp_host.sessions() == [] and c.get("v1") is None


def test_with_no_time_left_the_multipath_map_is_not_waited_for(mp_host, tmp_path):
    mp_host.targets[T].portals = (P1,)  # the second path does not come up: no map
    c = connector_on(mp_host, tmp_path, instant=True)
    with pytest.raises(AttachmentError) as err:
        c.connect(mp_spec("v1", 1), timeout=0)
    assert str(err.value).startswith("volume v1: multipath: timed out after 0 s: expected a dm-multipath map over sda;")


def test_an_attachment_describes_every_path_exactly(mp_host, tmp_path):
    c = make(mp_host, tmp_path)
    by_path = str(tmp_path / "dev/disk/by-path") + "/ip-{}:3260-iscsi-" + T + "-lun-{}"

    def path(sid: int, addr: str, lun: int, disk: str) -> dict[str, object]:
        return {
            "sid": sid,
            "portal": f"{addr}:3260,1",
            "iface": "default",
            "host": sid + 1,
            "hctl": f"{sid + 1}:0:0:{lun}",
            "device": f"/dev/{disk}",
            "by_path": by_path.format(addr, lun),
        }

    for a in (c.connect(mp_spec("v1", 1)), c.get("v1")):
        got = a.to_dict()
        del got["spec"]
        assert got == {
            "volume_id": "v1",
            "state": "attached",
            "device": "/dev/dm-1",
            "wwn": "0x60000000000000000e00000000000101",
            "wwid": "360000000000000000e00000000000101",
            "size_bytes": 64 * MiB,
            "multipath": "dm-1",
            "multipath_name": "/dev/mapper/mpath-1",
            "paths": [path(1, "127.0.0.1", 1, "sda"), path(2, "127.0.0.2", 1, "sdb")],
            "sessions": [1, 2],
            "warnings": [],
        }
    got = c.connect(VolumeSpec(volume_id="v2", target=T, portals=(P2,), lun=2)).to_dict()
    del got["spec"]
    assert got == {
        "volume_id": "v2",
        "state": "attached",
        "device": "/dev/sdc",
        "wwn": "0x60000000000000000e00000000000202",
        "wwid": "360000000000000000e00000000000202",
        "size_bytes": 32 * MiB,
        "multipath": None,
        "multipath_name": None,
        "paths": [path(2, "127.0.0.2", 2, "sdc")],
        "sessions": [2],
        "warnings": [],
    }
