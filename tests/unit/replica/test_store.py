"""The replica store: sparse data file, extents, checksums, metadata persistence, locking."""

from __future__ import annotations

import json
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
