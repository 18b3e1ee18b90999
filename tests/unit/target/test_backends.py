"""The file and memory backends, and the LUN spec registry."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from iscsikit.errors import ConfigError
from iscsikit.target.backend import Backend, BackendError
from iscsikit.target.backends import (
    FileBackend,
    MemoryBackend,
    backend_from_spec,
    backend_kinds,
    open_backend,
    parse_backend_spec,
    register_backend,
)

MiB = 1 << 20


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.fixture(params=["memory", "file", "file-pool"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memory":
        return MemoryBackend(16 * MiB)
    return FileBackend(tmp_path / "disk.img", size=16 * MiB, inline=request.param == "file")


async def _roundtrip(b: Backend) -> None:
    await b.open()
    try:
        data = os.urandom(3 * 4096 + 512)
        await b.write(4096 - 512, data)
        assert bytes(await b.read(4096 - 512, len(data))) == data
        assert b"".join(bytes(p) for p in await b.readv(4096 - 512, len(data))) == data
        assert bytes(await b.read(0, 512)) == bytes(512)
        await b.write(8 * MiB, b"f" * 512, fua=True)
        await b.flush()
        await b.unmap(4096, 4096)
        got = bytes(await b.read(4096 - 512, len(data)))
        assert got[:512] == data[:512] and got[512 : 512 + 4096] == bytes(4096) and got[4608:] == data[4608:]
        with pytest.raises(BackendError):
            await b.read(16 * MiB - 512, 1024)
        with pytest.raises(BackendError):
            await b.write(-512, b"x" * 512)
    finally:
        await b.close()


def test_roundtrip(backend: Backend) -> None:
    run(_roundtrip(backend))


def test_reads_are_snapshots_not_views(backend: Backend) -> None:
    async def main() -> None:
        await backend.open()
        await backend.write(0, b"a" * 512)
        before = await backend.readv(0, 512)
        await backend.write(0, b"b" * 512)
        assert b"".join(bytes(p) for p in before) == b"a" * 512
        await backend.close()

    run(main())


def test_file_is_created_sparse_at_the_given_size(tmp_path: Path) -> None:
    path = tmp_path / "new.img"

    async def main() -> None:
        b = FileBackend(path, size=1 << 30)
        await b.open()
        assert path.stat().st_size == 1 << 30 and path.stat().st_blocks == 0
        await b.write(0, b"x" * MiB)
        allocated = path.stat().st_blocks
        assert allocated >= MiB // 512
        assert await b.allocation_status(0, 1 << 30) == (MiB, True)
        assert await b.allocation_status(MiB, 4 * MiB) == (4 * MiB, False)
        await b.unmap(0, MiB)
        assert path.stat().st_blocks < allocated  # the hole really gave the space back
        assert await b.allocation_status(0, 2 * MiB) == (2 * MiB, False)
        assert b.describe()["path"] == str(path)
        await b.close()
        assert oct(path.stat().st_mode & 0o777) == "0o600"

    run(main())


def test_existing_file_keeps_its_size_and_checks_it(tmp_path: Path) -> None:
    path = tmp_path / "old.img"
    path.write_bytes(b"z" * (2 * MiB))

    async def main() -> None:
        b = FileBackend(path)
        await b.open()
        assert b.size == 2 * MiB and bytes(await b.read(0, 512)) == b"z" * 512
        await b.close()
        with pytest.raises(BackendError, match="configured size"):
            await FileBackend(path, size=4 * MiB).open()
        with pytest.raises(BackendError, match="No such file"):
            await FileBackend(tmp_path / "missing.img").open()
        (tmp_path / "odd.img").write_bytes(b"1" * 1000)
        with pytest.raises(BackendError, match="multiple of the block size"):
            await FileBackend(tmp_path / "odd.img").open()
        assert path.stat().st_size == 2 * MiB  # nothing changed by the failed opens
        with pytest.raises(BackendError, match="not open"):
            await FileBackend(path).read(0, 512)

    run(main())


def test_memory_backend_is_sparse() -> None:
    async def main() -> None:
        b = MemoryBackend(1 << 40)
        await b.write(1 << 39, b"q" * 512)
        assert b.describe()["allocated_bytes"] == 64 << 10
        assert await b.allocation_status(0, 1 << 20) == (1 << 20, False)
        await b.unmap(1 << 39, 64 << 10)
        assert b.describe()["allocated_bytes"] == 0

    run(main())


@pytest.mark.parametrize(
    ("spec", "kind", "options"),
    [
        ("file:/srv/disk.img", "file", {"path": "/srv/disk.img"}),
        ("file:/srv/disk.img,size=1G,thin=no", "file", {"path": "/srv/disk.img", "size": "1G", "thin": "no"}),
        ("memory:size=512M", "memory", {"size": "512M"}),
        ("memory:size=64M,block_size=4096", "memory", {"size": "64M", "block_size": "4096"}),
    ],
)
def test_parse_backend_spec(spec: str, kind: str, options: dict[str, str]) -> None:
    assert parse_backend_spec(spec) == (kind, options)


def test_backend_from_spec_builds_configured_backends(tmp_path: Path) -> None:
    mem = backend_from_spec("memory:size=1GiB,thin=no,block_size=4096")
    assert isinstance(mem, MemoryBackend) and mem.size == 1 << 30 and not mem.thin and mem.block_size == 4096
    f = backend_from_spec(f"file:{tmp_path / 'a.img'},size=512M")
    assert isinstance(f, FileBackend) and f.thin and f.size == 512 * MiB
    assert {"file", "memory"} <= set(backend_kinds())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("disk.img", "not a backend spec"),
        ("tape:/dev/st0", "unknown backend 'tape'"),
        ("memory:", "size= is required"),
        ("memory:size=lots", "not a size"),
        ("memory:size=1000", "multiple of 512"),
        ("memory:size=1M,colour=red", "unknown option"),
        ("memory:size=1M,thin=maybe", "not a boolean"),
        ("memory:size=1M,block_size=1000", "block_size must be"),
        ("file:", "needs a path"),
        ("file:/a,size=1M,size=2M", "repeated"),
        ("file:/a,size=1M,junk", "not key=value"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        backend_from_spec(spec, where="lun 4")
    assert str(info.value).startswith("lun 4: ")


def test_register_backend_adds_a_kind() -> None:
    register_backend("test-null", lambda options, where: MemoryBackend(int(options["size"])), {"size"})
    try:
        assert open_backend("test-null", {"size": "4096"}).size == 4096
    finally:
        from iscsikit.target import backends

        backends._REGISTRY.pop("test-null")


def test_inline_reads_survive_a_filesystem_without_nowait_writes(tmp_path: Path) -> None:
    """ext4 refuses RWF_NOWAIT writes; that must not send page-cache reads to the thread pool too."""

    async def main() -> None:
        b = FileBackend(tmp_path / "n.img", size=MiB)
        await b.open()
        inline_reads = b.inline_reads
        await b.write(0, b"w" * 4096)
        assert bytes(await b.read(0, 4096)) == b"w" * 4096
        assert b.inline_reads == inline_reads
        await b.close()

    run(main())
