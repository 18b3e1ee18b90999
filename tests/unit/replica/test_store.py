"""The replica store: sparse data file, extents, checksums, metadata persistence, locking."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from crc32c import crc32c

from iscsikit.errors import ReplicaError, UsageError
from iscsikit.replica.store import DATA_FILE, META_FILE, ReplicaStore
from tests.support import tiers

MiB = 1 << 20


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
    with pytest.raises(ValueError, match="outside the volume of 1048576 bytes"):
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
    with pytest.raises(ReplicaError, match="belongs to volume v1, not v2"):
        again.update_meta({"volume_id": "v2"})
    with pytest.raises(ValueError, match="cannot be set"):
        again.update_meta({"size": 5})
    again.close()


def test_one_server_per_directory_and_sizes_must_match(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path, MiB)
    with pytest.raises(ReplicaError, match="in use by another replica server"):
        ReplicaStore.open(tmp_path, MiB)
    store.close()
    with pytest.raises(UsageError, match="holds a replica of 1048576 bytes, not the --size 2097152"):
        ReplicaStore.open(tmp_path, 2 * MiB)
    with pytest.raises(UsageError, match="holds no replica; give --size"):
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
    with pytest.raises(ReplicaError, match=re.escape(f"{tmp_path / 'r' / name} is a symbolic link")):
        ReplicaStore.open(tmp_path / "r", 8 * MiB)
    assert victim.read_bytes() == VICTIM


@pytest.mark.parametrize("name", [DATA_FILE, META_FILE, "lock"])
def test_an_existing_replica_refuses_a_planted_link(tmp_path: Path, name: str) -> None:
    ReplicaStore.open(tmp_path / "r", 8 * MiB).close()
    moved = tmp_path / "moved"
    (tmp_path / "r" / name).rename(moved)
    (tmp_path / "r" / name).symlink_to(moved)  # even to the real file: a link is not followed
    before = moved.read_bytes()
    with pytest.raises(ReplicaError, match=re.escape(f"{tmp_path / 'r' / name} is a symbolic link")):
        ReplicaStore.open(tmp_path / "r")
    assert moved.read_bytes() == before


def test_a_new_data_file_with_another_hard_link_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    (tmp_path / "r").mkdir()
    os.link(victim, tmp_path / "r" / DATA_FILE)
    with pytest.raises(ReplicaError, match=re.escape("volume.img has 2 hard links")):
        ReplicaStore.open(tmp_path / "r", 8 * MiB)
    assert victim.read_bytes() == VICTIM


def test_a_planted_metadata_temporary_is_refused_and_a_leftover_one_replaced(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", 8 * MiB)
    tmp = tmp_path / "r" / (META_FILE + ".tmp")
    victim = plant(tmp, tmp_path)
    with pytest.raises(ReplicaError, match=re.escape(f"{tmp} is a symbolic link")):
        store.update_meta({"epoch": 9})
    with pytest.raises(ReplicaError, match=re.escape(f"{tmp} is a symbolic link")):
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
