"""Replica servers in the test's own event loop, on loopback, with real stores in temp dirs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from iscsikit.replica.auth import ServerSecurity
from iscsikit.replica.server import ReplicaServer
from iscsikit.replica.store import DATA_FILE, META_FILE, ReplicaStore


class LocalCluster:
    """``n`` replica servers on 127.0.0.1; each keeps its port across restarts."""

    def __init__(self, root: Path, n: int, size: int, security: list[ServerSecurity] | None = None, **kw: Any) -> None:
        """``security``: one per server (a secret, TLS); ``kw`` goes to every :class:`ReplicaServer`."""
        self.security = security or [ServerSecurity()] * n
        self.kw = kw
        self.root = root
        self.size = size
        self.dirs = [root / f"r{i}" for i in range(n)]
        self.ports = [0] * n
        self.servers: list[ReplicaServer | None] = [None] * n

    @property
    def addresses(self) -> list[str]:
        return [f"tcp://127.0.0.1:{p}" for p in self.ports]

    async def start(self, i: int | None = None) -> None:
        for j in range(len(self.dirs)) if i is None else [i]:
            assert self.servers[j] is None
            server = ReplicaServer(ReplicaStore.open(self.dirs[j], self.size), security=self.security[j], **self.kw)
            await server.start("127.0.0.1", self.ports[j])
            self.ports[j] = server.port
            self.servers[j] = server

    async def kill(self, i: int) -> None:
        """Like kill -9 of the process: connections reset, no flush, no metadata written."""
        server = self.servers[i]
        assert server is not None
        self.servers[i] = None
        assert server._server is not None
        server._server.close()
        for conn in list(server._conns):
            conn.abort()
            server._release(conn)  # read grants (their peer connections) and pulls end with the process
        await server._server.wait_closed()
        server._pull_pool.shutdown(wait=True)
        server._pool.shutdown(wait=True)
        os.close(server.store._fd)
        os.close(server.store._lock_fd)
        server.store._fd = -1

    def freeze(self, i: int) -> None:
        """Stop reading requests (a hung replica or a cut link): the controller must time out."""
        server = self.servers[i]
        assert server is not None
        for conn in list(server._conns):
            if conn.transport is not None:
                conn.transport.pause_reading()

    async def stop(self) -> None:
        for i, s in enumerate(self.servers):
            if s is not None:
                await self.kill(i)

    def data(self, i: int) -> bytes:
        return (self.dirs[i] / DATA_FILE).read_bytes()

    def assert_identical(self, acked: dict[int, bytes]) -> None:
        """Every replica file holds every acknowledged write, and all replicas are identical."""
        images = [self.data(i) for i in range(len(self.dirs))]
        for off, data in acked.items():
            for i, img in enumerate(images):
                assert img[off : off + len(data)] == data, f"replica {i} lost the write at {off}"
        assert all(img == images[0] for img in images), "replicas differ"

    def meta(self, i: int) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.dirs[i] / META_FILE).read_text())
        return data
