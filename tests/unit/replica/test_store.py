"""The replica store: sparse data file, extents, checksums, metadata persistence, locking."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from crc32c import crc32c

from iscsikit.errors import ReplicaError, UsageError
from iscsikit.replica.store import DATA_FILE, META_FILE, ReplicaMeta, ReplicaStore, read_meta
from tests.support import tiers

MiB = 1 << 20
NO_LINKS = "a replica's files are never opened through links (remove it)"
SETTABLE = "['clean', 'epoch', 'members', 'revision', 'state', 'volume_id']"


def exactly(message: str) -> str:
    """A ``pytest.raises`` match for the whole message, nothing added."""
    return "^" + re.escape(message) + "$"


def test_new_replica_is_sparse_and_reads_zeros(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", 8 * MiB)
    assert store.read(0, 4096) == bytes(4096)
    assert store.extents(0, 8 * MiB) == []
    assert store.allocated_bytes() == 0
    assert (tmp_path / "r" / DATA_FILE).stat().st_size == 8 * MiB
    store.close()


def test_writes_unmaps_extents_and_checksums(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path, 8 * MiB)
    store.write(MiB, b"a" * 65536)
    store.write(4 * MiB, b"b" * 8192)
    assert store.extents(0, 8 * MiB) == [(MiB, 65536), (4 * MiB, 8192)]
    assert store.extents(MiB + 4096, 4096) == [(MiB + 4096, 4096)]  # clipped to the range
    sums = store.checksums(MiB - 65536, 3 * 65536, 65536)
    assert sums == [crc32c(bytes(65536)), crc32c(b"a" * 65536), crc32c(bytes(65536))]
    store.unmap(MiB, 65536)
    assert store.read(MiB, 65536) == bytes(65536)
    assert store.extents(0, 8 * MiB) == [(4 * MiB, 8192)]
    assert store.revision == 3
    store.close()


def test_range_outside_the_volume_is_refused(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path, MiB)
    with pytest.raises(ValueError, match=exactly(f"range {MiB - 512}+1024 is outside the volume of 1048576 bytes")):
        store.write(MiB - 512, bytes(1024))
    store.close()


def test_metadata_survives_reopen_and_tracks_clean_and_revision(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path, MiB)
    rid = store.meta.replica_id
    assert store.meta.clean
    store.write(0, b"x" * 512)
    assert json.loads((tmp_path / META_FILE).read_text())["clean"] is False  # dirty before the data
    store.update_meta({"volume_id": "v1", "epoch": 4, "members": [{"id": rid, "address": "a"}], "state": "rw"})
    store.close(clean=True)
    again = ReplicaStore.open(tmp_path)
    assert (again.meta.replica_id, again.meta.volume_id, again.meta.epoch, again.meta.state) == (rid, "v1", 4, "rw")
    assert again.meta.clean and again.revision == 1
    with pytest.raises(ReplicaError, match=exactly("replica belongs to volume v1, not v2")):
        again.update_meta({"volume_id": "v2"})
    with pytest.raises(ValueError, match="cannot be set"):
        again.update_meta({"size": 5})
    again.close()


def test_one_server_per_directory_and_sizes_must_match(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path, MiB)
    with pytest.raises(ReplicaError, match=exactly(f"{tmp_path} is in use by another replica server (lock held)")):
        ReplicaStore.open(tmp_path, MiB)
    store.close()
    with pytest.raises(
        UsageError, match=exactly(f"{tmp_path} holds a replica of 1048576 bytes, not the --size 2097152 asked for")
    ):
        ReplicaStore.open(tmp_path, 2 * MiB)
    with pytest.raises(UsageError, match=exactly(f"{tmp_path / 'empty'} holds no replica; give --size to create one")):
        ReplicaStore.open(tmp_path / "empty")


def test_malformed_metadata_is_named(tmp_path: Path) -> None:
    ReplicaStore.open(tmp_path, MiB).close()
    (tmp_path / META_FILE).write_text('{"replica_id": "x", "size": 1048576, "members": [], "state": "odd"}')
    with pytest.raises(ReplicaError, match=r"replica.json: unknown state 'odd'"):
        ReplicaStore.open(tmp_path)


@pytest.mark.parametrize("where", ["tmp", "shm"])
def test_bulk_writes_read_back_with_or_without_o_direct(
    request: pytest.FixtureRequest, tmp_path: Path, where: str
) -> None:
    import mmap
    import os
    import tempfile

    if where == "shm":  # tmpfs: no O_DIRECT on older kernels, the store falls back to buffered writes
        if not os.path.isdir("/dev/shm"):
            tiers.unavailable(request, "no /dev/shm (a tmpfs) on this host")
        root = Path(tempfile.mkdtemp(dir="/dev/shm"))
    else:
        root = tmp_path
    try:
        store = ReplicaStore.open(root / "r", 8 * MiB)
        store.write(0, b"old" * 10000)  # cached pages the direct write must not leave stale
        buf = mmap.mmap(-1, MiB)
        data = os.urandom(MiB)
        buf[:] = data
        with memoryview(buf) as view:
            store.write_bulk(0, view)  # aligned: O_DIRECT where the filesystem has it
            store.write_bulk(3 * MiB + 512, view[: 64 << 10])  # unaligned: buffered
        assert store.read(0, MiB) == data
        assert store.read(3 * MiB + 512, 64 << 10) == data[: 64 << 10]
        assert store.checksums(0, MiB, 64 << 10) == [crc32c(data[i : i + (64 << 10)]) for i in range(0, MiB, 64 << 10)]
        assert store.revision == 3
        store.flush()
        store.close()
        assert (root / "r" / DATA_FILE).read_bytes()[:MiB] == data
        buf.close()
    finally:
        if where == "shm":
            import shutil

            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Files planted in DIR are never followed: the store refuses them by name, their targets stay.

VICTIM = b"the victim's bytes\n"


def plant(link: Path, tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    return victim


@pytest.mark.parametrize("name", [DATA_FILE, "lock"])
def test_a_new_replica_refuses_a_planted_link_and_leaves_its_target(tmp_path: Path, name: str) -> None:
    victim = plant(tmp_path / "r" / name, tmp_path)
    with pytest.raises(ReplicaError, match=exactly(f"{tmp_path / 'r' / name} is a symbolic link: {NO_LINKS}")):
        ReplicaStore.open(tmp_path / "r", 8 * MiB)
    assert victim.read_bytes() == VICTIM


@pytest.mark.parametrize("name", [DATA_FILE, META_FILE, "lock"])
def test_an_existing_replica_refuses_a_planted_link(tmp_path: Path, name: str) -> None:
    ReplicaStore.open(tmp_path / "r", 8 * MiB).close()
    moved = tmp_path / "moved"
    (tmp_path / "r" / name).rename(moved)
    (tmp_path / "r" / name).symlink_to(moved)  # even to the real file: a link is not followed
    before = moved.read_bytes()
    with pytest.raises(ReplicaError, match=exactly(f"{tmp_path / 'r' / name} is a symbolic link: {NO_LINKS}")):
        ReplicaStore.open(tmp_path / "r")
    assert moved.read_bytes() == before


def test_a_new_data_file_with_another_hard_link_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    (tmp_path / "r").mkdir()
    os.link(victim, tmp_path / "r" / DATA_FILE)
    with pytest.raises(
        ReplicaError,
        match=exactly(f"{tmp_path / 'r' / DATA_FILE} has 2 hard links; refusing to overwrite a file linked elsewhere"),
    ):
        ReplicaStore.open(tmp_path / "r", 8 * MiB)
    assert victim.read_bytes() == VICTIM


def test_a_planted_metadata_temporary_is_refused_and_a_leftover_one_replaced(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", 8 * MiB)
    tmp = tmp_path / "r" / (META_FILE + ".tmp")
    victim = plant(tmp, tmp_path)
    with pytest.raises(ReplicaError, match=exactly(f"{tmp} is a symbolic link: {NO_LINKS}")):
        store.update_meta({"epoch": 9})
    with pytest.raises(ReplicaError, match=exactly(f"{tmp} is a symbolic link: {NO_LINKS}")):
        store.write(0, b"x" * 512)  # the first write marks the replica dirty: a metadata save
    assert victim.read_bytes() == VICTIM
    assert json.loads((tmp_path / "r" / META_FILE).read_text())["epoch"] == 0
    tmp.unlink()
    tmp.write_text("half a save\n")  # a leftover of a crash in the middle of one
    store.update_meta({"epoch": 9})
    assert json.loads((tmp_path / "r" / META_FILE).read_text())["epoch"] == 9 and not tmp.exists()
    store.close()


def test_checksums_across_mapping_windows_and_long_zero_runs(tmp_path: Path) -> None:
    size = 200 * MiB  # sparse: more than two 64 MiB windows
    store = ReplicaStore.open(tmp_path / "r", size)
    pieces = {64 * MiB - 3000: os.urandom(6000), 128 * MiB + 512: os.urandom(MiB), 199 * MiB: os.urandom(4096)}
    for off, data in pieces.items():
        store.write(off, data)
    image = bytearray(size)
    for off, data in pieces.items():
        image[off : off + len(data)] = data
    for offset, length, granule in [(512, size - 512, 3 * MiB + 512), (60 * MiB, 80 * MiB, 5 * MiB), (0, size, size)]:
        want = [crc32c(image[i : min(i + granule, offset + length)]) for i in range(offset, offset + length, granule)]
        assert store.checksums(offset, length, granule) == want, (offset, length, granule)
    store.close()


# --------------------------------------------------------------------------------------
# What a replica directory holds, and what a failed open or a close leaves behind.


def open_fds(under: Path) -> set[str]:
    """This process's open descriptors of files under ``under`` (the test's directory: whatever
    else the process has open, a test runner's own files say, comes and goes on its own)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith(f"{under}/") or target == str(under):
            fds.add(name)
    return fds


def lock_is_free(directory: Path) -> bool:
    """Whether another process could take DIR's lock now (flock conflicts between descriptors)."""
    import fcntl

    fd = os.open(directory / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_a_new_replica_starts_fresh_clean_and_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = ReplicaStore.open(tmp_path / "r", MiB)
    finally:
        os.umask(old)
    want = {
        "replica_id": store.meta.replica_id, "size": MiB, "volume_id": None, "epoch": 0, "members": [],
        "state": "fresh", "clean": True, "revision": 0, "format": 1, "controller": None, "fenced_controllers": [],
    }  # fmt: skip
    assert json.loads((tmp_path / "r" / META_FILE).read_text()) == want
    assert read_meta(tmp_path / "r").to_json() == want
    for name in (DATA_FILE, META_FILE, "lock"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == 0o600, name
    assert not (tmp_path / "r" / (META_FILE + ".tmp")).exists()
    store.close()


def test_metadata_defaults_and_what_is_refused_by_name() -> None:
    meta = ReplicaMeta.from_json({"replica_id": 7, "size": "512", "members": [{"id": 1}]}, "here")
    assert meta.to_json() == {
        "replica_id": "7", "size": 512, "volume_id": None, "epoch": 0, "members": [{"id": "1", "address": ""}],
        "state": "fresh", "clean": True, "revision": 0, "format": 1, "controller": None, "fenced_controllers": [],
    }  # fmt: skip
    full = {
        "replica_id": "r", "size": 1024, "volume_id": "v", "epoch": 3, "members": [{"id": "r", "address": "a:1"}],
        "state": "rebuilding", "clean": False, "revision": 9, "format": 1, "controller": "c2",
        "fenced_controllers": ["c0", "c1"],
    }  # fmt: skip
    assert ReplicaMeta.from_json(full, "here").to_json() == full
    with pytest.raises(ReplicaError, match=exactly("here: malformed replica metadata (KeyError: 'members')")):
        ReplicaMeta.from_json({"replica_id": "r", "size": 1}, "here")
    with pytest.raises(ReplicaError, match=re.escape("here: malformed replica metadata (ValueError: ")):
        ReplicaMeta.from_json({**full, "epoch": "x"}, "here")
    with pytest.raises(ReplicaError, match=exactly("here: metadata format 2 is not supported (want 1)")):
        ReplicaMeta.from_json({**full, "format": 2}, "here")
    with pytest.raises(
        ReplicaError, match=exactly("here: unknown state 'odd' (expected one of fresh, rw, rebuilding)")
    ):
        ReplicaMeta.from_json({**full, "state": "odd"}, "here")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("[1, 2]", ": replica metadata is not a JSON object"),
        (
            "{not json",
            ": cannot read replica metadata: Expecting property name enclosed in double quotes:"
            " line 1 column 2 (char 1)",
        ),
        (None, " is not a regular file"),  # opened without blocking: a FIFO there must not hang the server
    ],
)
def test_unreadable_metadata_is_named_and_releases_the_directory(
    tmp_path: Path, content: str | None, error: str
) -> None:
    ReplicaStore.open(tmp_path / "r", MiB).close()
    meta = tmp_path / "r" / META_FILE
    meta.unlink()
    if content is None:
        os.mkfifo(meta)
    else:
        meta.write_text(content)
    before = open_fds(tmp_path)
    with pytest.raises(ReplicaError, match=exactly(f"{meta}{error}")):
        ReplicaStore.open(tmp_path / "r")
    with pytest.raises(ReplicaError, match=exactly(f"{meta}{error}")):
        read_meta(tmp_path / "r")
    assert open_fds(tmp_path) == before and lock_is_free(tmp_path / "r")


def test_read_meta_needs_a_replica(tmp_path: Path) -> None:
    with pytest.raises(ReplicaError, match=exactly(f"{tmp_path} holds no replica (replica.json is missing)")):
        read_meta(tmp_path)
    assert not (tmp_path / "lock").exists()


@pytest.mark.parametrize("size", [0, -512, 1000, 511])
def test_a_replica_size_must_be_a_positive_multiple_of_512(tmp_path: Path, size: int) -> None:
    with pytest.raises(UsageError, match=exactly(f"replica size {size} must be a positive multiple of 512 bytes")):
        ReplicaStore.open(tmp_path / "r", size)
    assert not (tmp_path / "r").exists()
    ReplicaStore.open(tmp_path / "r", 512).close()


def test_a_failed_open_leaves_no_descriptor_and_no_lock(tmp_path: Path) -> None:
    d = tmp_path / "r"
    ReplicaStore.open(d, MiB).close()
    before = open_fds(tmp_path)
    with pytest.raises(UsageError, match="holds a replica of 1048576 bytes, not the --size 2097152"):
        ReplicaStore.open(d, 2 * MiB)
    assert open_fds(tmp_path) == before and lock_is_free(d)
    os.truncate(d / DATA_FILE, MiB - 512)
    with pytest.raises(ReplicaError, match=exactly(f"{d / DATA_FILE} is not 1048576 bytes long as replica.json says")):
        ReplicaStore.open(d)
    assert open_fds(tmp_path) == before and lock_is_free(d)
    (d / DATA_FILE).unlink()
    (d / DATA_FILE).mkdir()
    with pytest.raises((ReplicaError, IsADirectoryError)):
        ReplicaStore.open(d)
    assert open_fds(tmp_path) == before and lock_is_free(d)
    (d / DATA_FILE).rmdir()
    os.mkfifo(d / DATA_FILE)
    with pytest.raises(ReplicaError, match=exactly(f"{d / DATA_FILE} is not a regular file")):
        ReplicaStore.open(d)
    assert open_fds(tmp_path) == before and lock_is_free(d)
    held = ReplicaStore.open(tmp_path / "other", MiB)
    with pytest.raises(ReplicaError, match="in use by another replica server"):
        ReplicaStore.open(tmp_path / "other")
    assert open_fds(tmp_path) - before == {str(held._fd), str(held._lock_fd)}
    held.close()
    assert open_fds(tmp_path) == before


def test_an_existing_replica_may_have_other_hard_links(tmp_path: Path) -> None:
    # Only a file the store creates (or overwrites) must be its own: a replica whose data file
    # was hard-linked (a backup made with cp -l) is still served, and the link shares its bytes.
    d = tmp_path / "r"
    store = ReplicaStore.open(d, MiB)
    store.write(0, b"a" * 512)
    store.close()
    os.link(d / DATA_FILE, tmp_path / "backup.img")
    again = ReplicaStore.open(d)
    assert again.read(0, 512) == b"a" * 512
    again.close()


def test_close_releases_everything_once_and_records_clean_only_when_asked(tmp_path: Path) -> None:
    import mmap

    d = tmp_path / "r"
    before = open_fds(tmp_path)
    store = ReplicaStore.open(d, MiB)
    buf = mmap.mmap(-1, 4096)
    with memoryview(buf) as view:
        store.write_bulk(0, view)  # opens the O_DIRECT descriptor where the filesystem has one
        store.write_bulk(4096, view)  # and uses it again
    buf.close()
    assert len(open_fds(tmp_path) - before) <= 3  # data, lock, O_DIRECT
    store.close()
    assert open_fds(tmp_path) == before and lock_is_free(d)
    assert json.loads((d / META_FILE).read_text())["clean"] is False  # no clean close: a resync is due
    store.close()  # a second close does nothing
    store.close(clean=True)
    assert json.loads((d / META_FILE).read_text())["clean"] is False
    again = ReplicaStore.open(d)
    again.close(clean=True)
    assert json.loads((d / META_FILE).read_text())["clean"] is True
    assert open_fds(tmp_path) == before


def crash(store: ReplicaStore) -> None:
    """The server dies: its descriptors go, nothing more is written."""
    os.close(store._fd)
    os.close(store._lock_fd)
    store._fd = -1


def test_a_flush_persists_the_revision_and_an_idle_one_writes_no_metadata(tmp_path: Path) -> None:
    d = tmp_path / "r"
    store = ReplicaStore.open(d, MiB)
    store.write(0, b"a" * 512)
    store.write(512, b"b" * 512, fua=True)
    store.unmap(4096, 4096)
    assert json.loads((d / META_FILE).read_text())["revision"] == 0  # per flush, not per write
    store.flush()
    assert json.loads((d / META_FILE).read_text())["revision"] == 3
    inode = (d / META_FILE).stat().st_ino
    store.flush()
    assert (d / META_FILE).stat().st_ino == inode, "a flush with nothing new rewrote the metadata"
    store.update_meta({"revision": 40})  # what a rebuild sets
    assert store.revision == 40
    inode = (d / META_FILE).stat().st_ino
    store.flush()
    assert (d / META_FILE).stat().st_ino == inode
    store.write(0, b"c" * 512)
    crash(store)
    again = ReplicaStore.open(d)
    assert (again.revision, again.meta.revision, again.meta.clean) == (40, 40, False)
    assert again.read(0, 1024) == b"c" * 512 + b"b" * 512
    again.close()


@pytest.mark.parametrize(
    ("offset", "length", "ok"),
    [(0, MiB, True), (MiB, 0, True), (MiB - 512, 512, True), (-1, 1, False), (0, -1, False), (MiB - 511, 512, False),
     (MiB + 1, 0, False)],
)  # fmt: skip
def test_every_range_operation_checks_its_range(tmp_path: Path, offset: int, length: int, ok: bool) -> None:
    store = ReplicaStore.open(tmp_path / "r", MiB)
    ops = [
        lambda: store.read(offset, length),
        lambda: store.write(offset, bytes(max(length, 0))) if length >= 0 else store.check_range(offset, length),
        lambda: store.unmap(offset, length),
        lambda: store.iter_extents(offset, length),  # checked when asked, not on first use
        lambda: store.checksum_array(offset, length, 512),
        lambda: store.crc(offset, length),
    ]
    for op in ops:
        if ok:
            op()
        else:
            with pytest.raises(
                ValueError, match=exactly(f"range {offset}+{length} is outside the volume of {MiB} bytes")
            ):
                op()
    assert store.read(0, MiB) == bytes(MiB)
    store.close()


def test_a_read_never_returns_short_data(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", MiB)
    store.write(0, b"x" * 8192)
    os.truncate(tmp_path / "r" / DATA_FILE, 4096)  # shrunk behind the server's back
    assert store.read(0, 8192) == b"x" * 4096 + bytes(4096)
    assert store.read(MiB - 512, 512) == bytes(512)
    crash(store)


def test_an_empty_unmap_changes_nothing(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", MiB)
    store.unmap(4096, 0)
    assert store.revision == 0 and store.meta.clean
    assert json.loads((tmp_path / "r" / META_FILE).read_text())["clean"] is True
    store.close()


GiB = 1 << 30


def test_unmap_and_writeback_beyond_4_gib(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", 8 * GiB)  # sparse
    off = 5 * GiB + 4096
    store.write(off, b"y" * 65536)
    store.start_writeback(off, 65536)
    store.start_writeback(off, 0)
    store.unmap(off, 4096)
    assert store.read(off, 8192) == bytes(4096) + b"y" * 4096
    assert store.extents(5 * GiB, MiB) == [(off + 4096, 65536 - 4096)]
    store.close()


def test_unmap_without_hole_punching_writes_zeros(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A filesystem without FALLOC_FL_PUNCH_HOLE (the fake fallocate says so, as the kernel would).
    import ctypes
    import errno

    from iscsikit.replica import store as store_module

    calls: list[tuple[int, int, int]] = []

    def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
        calls.append((mode, offset, length))
        ctypes.set_errno(answer[0])
        return -1

    monkeypatch.setattr(store_module, "_fallocate", fallocate)
    store = ReplicaStore.open(tmp_path / "r", 4 * MiB)
    data = os.urandom(4 * MiB)
    store.write(0, data)
    answer = [0]
    for answer[0] in (errno.EOPNOTSUPP, errno.ENOSYS):
        store.unmap(512, 2 * MiB + 512)  # more than one zero chunk, not a whole number of them
        assert store.read(0, 4 * MiB) == data[:512] + bytes(2 * MiB + 512) + data[2 * MiB + 1024 :]
        store.write(0, data)
    answer[0] = errno.EIO
    with pytest.raises(OSError, match="Input/output error") as exc:
        store.unmap(0, 4096)
    assert exc.value.errno == errno.EIO
    assert store.read(0, 4 * MiB) == data
    assert calls == [(0x03, 512, 2 * MiB + 512)] * 2 + [(0x03, 0, 4096)]  # PUNCH_HOLE | KEEP_SIZE
    store.close()
    monkeypatch.setattr(store_module, "_fallocate", None)
    store = ReplicaStore.open(tmp_path / "r")
    store.unmap(MiB, MiB)
    assert store.read(0, 4 * MiB) == data[:MiB] + bytes(MiB) + data[2 * MiB :]
    store.close()


def direct_io_works(directory: Path) -> bool:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        os.close(fd)
        fd = os.open(directory / "probe", os.O_RDWR | os.O_CREAT | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    os.unlink(directory / "probe")
    return True


def test_bulk_writes_that_o_direct_refuses_go_through_the_page_cache(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import mmap

    if not direct_io_works(tmp_path):
        tiers.unavailable(request, f"{tmp_path}: no O_DIRECT on this filesystem")
    store = ReplicaStore.open(tmp_path / "r", 4 * MiB)
    assert store.direct_writes
    aligned = mmap.mmap(-1, 2 * 4096)
    aligned[:] = b"A" * 4096 + b"B" * 4096
    with memoryview(aligned) as view:
        store.write_bulk(4096, view[:512])  # a partial page: buffered, O_DIRECT stays in use
        store.write_bulk(8192, view[:4096])
        assert store.direct_writes
        store.write_bulk(12288, view[0:0])  # nothing to write
        store.write_bulk(24576, view[:100])  # not even a sector, at a page: buffered
        store.write_bulk(28672 + 100, view[:4096])  # a page, not at a page: buffered
        assert store.direct_writes
    assert store.revision == 5
    store.write(24576, bytes(4196))  # as before those two
    odd = memoryview(bytearray(b"\0" + b"C" * 8192))[1:]  # an unaligned buffer: the kernel says EINVAL
    store.write_bulk(16384, odd)
    assert not store.direct_writes  # this device's alignment rules differ: buffered from now on
    assert store.revision == 7
    store.write_bulk(32768, memoryview(aligned))
    assert store.read(4096, 4096) == b"A" * 512 + bytes(3584)
    assert store.read(8192, 4096) == b"A" * 4096
    assert store.read(16384, 8192) == b"C" * 8192
    assert store.read(32768, 8192) == b"A" * 4096 + b"B" * 4096
    assert store.revision == 8 and not store.meta.clean
    aligned.close()
    store.close()


def test_bulk_writes_never_go_to_a_file_that_replaced_the_data_file(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import mmap

    if not direct_io_works(tmp_path):
        tiers.unavailable(request, f"{tmp_path}: no O_DIRECT on this filesystem")
    d = tmp_path / "r"
    store = ReplicaStore.open(d, MiB)
    (d / DATA_FILE).rename(tmp_path / "served.img")
    (d / DATA_FILE).write_bytes(bytes(MiB))  # another file under the name, opened by nobody
    buf = mmap.mmap(-1, 4096)
    buf[:] = b"D" * 4096
    with memoryview(buf) as view:
        store.write_bulk(0, view)
    assert not store.direct_writes
    assert (d / DATA_FILE).read_bytes() == bytes(MiB)
    assert (tmp_path / "served.img").read_bytes()[:4096] == b"D" * 4096
    buf.close()
    store.close()


def test_extents_and_checksums_at_their_edges(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", 4 * MiB)
    data = os.urandom(8192)
    store.write(MiB, data)
    assert store.extents(0, MiB) == []  # data starting exactly at the end of the range
    assert store.extents(MiB + 8192, MiB) == []  # and ending exactly at its start
    assert store.extents(MiB + 4096, 4096) == [(MiB + 4096, 4096)]
    assert list(store.iter_extents(0, 4 * MiB)) == [(MiB, 8192)]
    assert store.checksums(MiB - 1, 3, 1) == [crc32c(b"\0"), crc32c(data[:1]), crc32c(data[1:2])]
    granules = [crc32c(data[i : i + 4096]) for i in (0, 4096)]
    assert store.checksums(MiB - 4096, 4 * 4096, 4096) == [crc32c(bytes(4096)), *granules, crc32c(bytes(4096))]
    assert store.checksums(MiB, 8192 + 512, 3000) == [
        crc32c(data[0:3000]), crc32c(data[3000:6000]), crc32c(data[6000:8192] + bytes(512)),
    ]  # fmt: skip
    assert store.checksum_array(0, 0, 512).tolist() == []
    for granule in (0, -4096):
        with pytest.raises(ValueError, match=exactly(f"checksum granule {granule} must be positive")):
            store.checksums(0, 4096, granule)
    assert store.crc(MiB + 100, 0) == 0
    assert store.crc(MiB + 100, 5000) == crc32c(data[100:5100])
    assert store.crc(0, 4096) == crc32c(bytes(4096))
    store.write(0, data)  # data at the very start: an extent longer than where it starts
    assert store.checksums(0, 8192, 4096) == granules
    store.close()


def test_zero_run_checksums_stay_right_and_bounded_for_any_granule(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", 8 * MiB)
    for granule in range(512, 512 * 101, 512):  # a peer that varies the granule
        assert store.checksums(0, granule, granule) == [crc32c(bytes(granule))]
        assert len(store._zero_crc) <= 64
    big = 3 * MiB + 512  # more than one zero chunk
    assert store.checksums(0, 2 * big, big) == [crc32c(bytes(big))] * 2
    store.close()


def test_allocated_bytes_count_the_blocks_in_use(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", 8 * MiB)
    store.write(MiB, os.urandom(64 << 10))
    store.flush()
    allocated = store.allocated_bytes()
    assert allocated == (tmp_path / "r" / DATA_FILE).stat().st_blocks * 512
    assert 64 << 10 <= allocated < MiB
    store.close()


def test_metadata_updates_name_what_they_refuse_and_keep_the_volume(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", MiB)
    with pytest.raises(
        ValueError, match=exactly(f"metadata fields ['replica_id', 'size'] cannot be set (settable: {SETTABLE})")
    ):
        store.update_meta({"size": 2, "replica_id": "x", "epoch": 1})
    with pytest.raises(ReplicaError, match=re.escape("SET_META: unknown state 'odd'")):
        store.update_meta({"state": "odd"})
    assert store.meta.epoch == 0 and json.loads((tmp_path / "r" / META_FILE).read_text())["epoch"] == 0
    new = store.update_meta({"volume_id": "v1", "epoch": 2})
    assert new is store.meta and (new.volume_id, new.epoch) == ("v1", 2)
    assert store.update_meta({"volume_id": "v1", "state": "rw"}).state == "rw"  # the same volume again
    with pytest.raises(ReplicaError, match=exactly("replica belongs to volume v1, not None")):
        store.update_meta({"volume_id": None})
    store.write(0, b"x" * 512)
    store.write(512, b"x" * 512)
    assert store.update_meta({"epoch": 3}).revision == 2  # the writes so far are counted
    on_disk = json.loads((tmp_path / "r" / META_FILE).read_text())
    assert (on_disk["volume_id"], on_disk["epoch"], on_disk["state"], on_disk["revision"]) == ("v1", 3, "rw", 2)
    store.close()


@pytest.mark.parametrize("kind", ["dir", "hardlink"])
def test_a_metadata_temporary_that_is_not_a_leftover_is_refused(tmp_path: Path, kind: str) -> None:
    store = ReplicaStore.open(tmp_path / "r", MiB)
    tmp = tmp_path / "r" / (META_FILE + ".tmp")
    if kind == "dir":
        tmp.mkdir()
    else:
        (tmp_path / "victim").write_bytes(VICTIM)
        os.link(tmp_path / "victim", tmp)
    with pytest.raises(
        ReplicaError, match=exactly(f"{tmp} is not a plain file left by an interrupted save (remove it)")
    ):
        store.update_meta({"epoch": 5})
    assert json.loads((tmp_path / "r" / META_FILE).read_text())["epoch"] == 0
    if kind == "hardlink":
        assert (tmp_path / "victim").read_bytes() == VICTIM
    store.close()


def test_the_libc_bindings_take_64_bit_offsets_and_report_errno(tmp_path: Path) -> None:
    # Bound when the module is imported; called here again so that what they bind is checked.
    import ctypes
    import errno

    from iscsikit.replica.store import _libc_fallocate, _libc_sync_file_range

    fallocate, sync_file_range = _libc_fallocate(), _libc_sync_file_range()
    path = tmp_path / "f"
    path.write_bytes(b"")
    os.truncate(path, 6 * GiB)
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, b"z" * 8192, 5 * GiB)
        assert sync_file_range(fd, 5 * GiB, 8192, 0x2) == 0
        assert fallocate(fd, 0x03, 5 * GiB, 4096) == 0  # PUNCH_HOLE | KEEP_SIZE
        assert os.pread(fd, 8192, 5 * GiB) == bytes(4096) + b"z" * 4096
        assert os.fstat(fd).st_size == 6 * GiB
    finally:
        os.close(fd)
    for fn, args in [(fallocate, (0x03, 0, 4096)), (sync_file_range, (0, 4096, 0x2))]:
        ctypes.set_errno(0)
        assert fn(fd, *args) == -1  # closed by now
        assert ctypes.get_errno() == errno.EBADF


def test_read_meta_names_the_file_of_bad_metadata(tmp_path: Path) -> None:
    ReplicaStore.open(tmp_path / "r", MiB).close()
    meta = tmp_path / "r" / META_FILE
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "state": "odd"}))
    with pytest.raises(
        ReplicaError, match=exactly(f"{meta}: unknown state 'odd' (expected one of fresh, rw, rebuilding)")
    ):
        read_meta(tmp_path / "r")


def test_metadata_is_read_as_json_bytes_whatever_its_unicode_encoding(tmp_path: Path) -> None:
    # JSON may be UTF-8, UTF-16 or UTF-32 (RFC 8259 readers detect which): an editor that saved
    # replica.json as UTF-16 does not make the replica unreadable.
    ReplicaStore.open(tmp_path / "r", MiB).close()
    meta = tmp_path / "r" / META_FILE
    data = json.loads(meta.read_text())
    meta.write_bytes(json.dumps(data).encode("utf-16"))
    assert read_meta(tmp_path / "r").to_json() == data


def test_aligned_bulk_writes_leave_the_page_cache_alone(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # What O_DIRECT is for: a rebuild's hundreds of megabytes do not push the page cache out.
    import mmap
    import subprocess

    tiers.require(request, "fincore")
    if not direct_io_works(tmp_path):
        tiers.unavailable(request, f"{tmp_path}: no O_DIRECT on this filesystem")

    def cached() -> int:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(tmp_path / "r" / DATA_FILE)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return int(out.strip())

    store = ReplicaStore.open(tmp_path / "r", 4 * MiB)
    buf = mmap.mmap(-1, MiB)
    buf[:] = os.urandom(MiB)
    with memoryview(buf) as view:
        store.write_bulk(MiB, view)
        store.write_bulk(3 * MiB, view[: 64 << 10])
    assert cached() == 0
    assert store.read(MiB, 4096) == buf[:4096]
    assert cached() >= 4096  # (what fincore counts: a read does fill the cache)
    buf.close()
    store.close()


def test_a_claim_is_recorded_without_claiming_unflushed_writes(tmp_path: Path) -> None:
    # The persisted revision says which writes are durable (start-up picks its source by it): a
    # claim recorded between a write and its flush must not persist the newer count.
    store = ReplicaStore.open(tmp_path / "r", MiB)
    store.write(0, b"x" * 4096)
    store.flush()
    store.write(4096, b"y" * 4096)
    store.record_claim("c2", ["c1"])
    on_disk = json.loads((tmp_path / "r" / META_FILE).read_text())
    assert (on_disk["revision"], on_disk["controller"], on_disk["fenced_controllers"]) == (1, "c2", ["c1"])
    assert read_meta(tmp_path / "r").controller == "c2" and store.revision == 2
    store.flush()
    assert json.loads((tmp_path / "r" / META_FILE).read_text())["revision"] == 2
    assert json.loads((tmp_path / "r" / META_FILE).read_text())["controller"] == "c2"  # a flush keeps the claim
    store.close()
