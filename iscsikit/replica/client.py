"""The controller's connection to one replica: a thin asyncio driver around :class:`ClientSession`.

Requests are pipelined on one TCP connection (up to ``max_in_flight`` at once) and matched to
responses by sequence number, in whatever order they come back. Every request has a deadline
(``timeout``; flushes and metadata updates ``flush_timeout``): when one passes, the replica is
treated as hung, the connection is aborted and every pending request fails with
:class:`ReplicaTimeoutError`. Any other loss of the connection fails them with
:class:`ReplicaError`. A client is single-use: after it fails, the controller makes a new one.

With :class:`~iscsikit.replica.auth.Credentials`, :meth:`ReplicaClient.connect` first does TLS
(the replica's certificate checked against the CA and the address) and/or the AUTH handshake
(protocol revision 3) before its HELLO; afterwards requests cost exactly what they did before.

Example::

    client = ReplicaClient("127.0.0.1:9700")
    meta = await client.connect()
    await client.write(0, b"x" * 4096)
    assert await client.read(0, 4096) == b"x" * 4096
    client.close()
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, NoReturn

from iscsikit.errors import (
    ReplicaAuthError,
    ReplicaError,
    ReplicaFencedError,
    ReplicaProtocolError,
    ReplicaRemoteError,
    ReplicaTimeoutError,
)
from iscsikit.names import Portal
from iscsikit.replica import protocol as p

if TYPE_CHECKING:
    from iscsikit.replica.auth import Credentials

DEFAULT_TIMEOUT = 2.0
DEFAULT_FLUSH_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 2.0
#: EXTENTS are asked for this many bytes at a time (see :meth:`ReplicaClient.extents`).
EXTENTS_WINDOW = 1 << 30


def parse_address(text: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` or ``HOST:PORT`` -> (host, port); IPv6 in brackets."""
    body = text.removeprefix("tcp://")
    if not body or "/" in body:
        raise ReplicaError(f"replica address {text!r} is not tcp://HOST:PORT")
    portal = Portal.parse(body, default_port=0)
    if portal.port == 0:
        raise ReplicaError(f"replica address {text!r} has no port")
    return portal.address, portal.port


class ReplicaClient:
    """One connection to one replica server."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        flush_timeout: float = DEFAULT_FLUSH_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_in_flight: int = 64,
        max_in_flight_bytes: int = 16 << 20,
        credentials: Credentials | None = None,
    ) -> None:
        self.address = address
        self.credentials = credentials
        self.host, self.port = parse_address(address)
        self.timeout = timeout
        self.flush_timeout = flush_timeout
        self.connect_timeout = connect_timeout
        self._session = p.ClientSession()
        self._pending: dict[int, tuple[asyncio.Future[p.Response], asyncio.TimerHandle]] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        # Data in flight (both directions) is bounded too, so a request's deadline measures the
        # replica, not a queue of megabytes ahead of it on a slow link.
        self.max_in_flight_bytes = max_in_flight_bytes
        self._bytes = 0
        self._byte_waiters: list[asyncio.Future[None]] = []
        self._transport: asyncio.Transport | None = None
        self._failure: ReplicaError | None = None
        # Cleared while the transport's send buffer is above its high-water mark: requests wait
        # instead of piling megabytes into asyncio's buffer (whose front-deletes then copy).
        self._writable = asyncio.Event()
        self._writable.set()
        self.meta: dict[str, Any] = {}

    @property
    def failed(self) -> ReplicaError | None:
        """Why this client stopped working, or None while it works."""
        return self._failure

    async def connect(self, claim: bool = True, controller: str | None = None) -> dict[str, Any]:
        """Connect and say HELLO; returns the replica's metadata. ``claim`` fences older controllers;
        ``controller`` (this controller's id) makes that for good: a replica refuses any later claim
        of a controller it saw replaced, with :class:`ReplicaFencedError`."""
        loop = asyncio.get_running_loop()
        creds = self.credentials
        tls = creds.tls if creds is not None else None
        extra: dict[str, Any] = {} if tls is None else {"ssl": tls, "server_hostname": self.host,
                                                        "ssl_handshake_timeout": self.connect_timeout}  # fmt: skip
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self), self.host, self.port, **extra), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            if tls is not None and not isinstance(exc, ConnectionRefusedError):
                reason = f"TLS: {reason} (does the replica serve TLS, with a certificate for {self.host} from our CA?)"
            self._failure = ReplicaError(f"cannot connect: {reason}", self.address)
            raise self._failure from None
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if creds is not None and creds.secret is not None:
            await self._authenticate(creds.secret)
        try:
            return await self._hello(claim, controller)
        except (ReplicaRemoteError, ReplicaAuthError, ReplicaProtocolError, ReplicaTimeoutError):
            raise
        except ReplicaError as exc:  # closed on us: a TLS server sees garbage, or it refused the connection
            if tls is not None:
                raise
            reason = str(exc).removeprefix(f"replica {self.address}: ")
            raise ReplicaError(
                f"{reason} at HELLO: does the replica require TLS (tls_cert, tls_key, tls_ca in the LUN spec)? "
                "Or it refused the connection (see its log)",
                self.address,
            ) from None

    async def claim(self, controller: str | None = None) -> dict[str, Any]:
        """Claim the replica on a connection made with ``connect(claim=False)`` (after looking at
        its metadata first: a replica that turns out to be one we own already is left alone)."""
        return await self._hello(True, controller)

    async def _hello(self, claim: bool, controller: str | None) -> dict[str, Any]:
        hello: dict[str, Any] = {"claim": claim}
        if controller is not None:
            hello["controller"] = controller
        try:
            resp = await self._call(p.Op.HELLO, payload=p.pack_json(hello), timeout=self.connect_timeout)
        except ReplicaRemoteError as exc:
            text = str(exc).split("failed: ", 1)[-1]
            if exc.status == "FENCED" and "authentication required" in text:
                self._give_up(ReplicaAuthError(f"{text} (this controller has no secret for it)", self.address))
            if exc.status == "FENCED" and claim:
                self._give_up(ReplicaFencedError(text, "FENCED", self.address))
            raise
        self.meta = p.unpack_json(resp.frame.payload, "HELLO response")
        return self.meta

    async def _authenticate(self, secret: bytes) -> None:
        """The AUTH handshake (revision 3): prove we know the secret, check that the replica does."""
        from iscsikit.replica.auth import ClientAuth

        auth = ClientAuth(secret)
        step = "1"
        try:
            resp = await self._send(p.Op.AUTH, 0, None, auth.challenge(), False, self.connect_timeout, None)
            if resp.frame.status == p.Status.OK:
                step = "2"
                resp = await self._send(
                    p.Op.AUTH, 0, None, auth.answer(resp.frame.payload), False, self.connect_timeout, None
                )
        except ReplicaAuthError as exc:
            self._give_up(ReplicaAuthError(str(exc), self.address))
        except ReplicaTimeoutError:
            raise
        except ReplicaError:
            self._give_up(
                ReplicaAuthError(
                    f"the replica closed the connection at AUTH step {step}: it speaks a protocol revision older "
                    "than 3 and cannot authenticate (upgrade it), or it requires TLS (tls_cert, tls_key, tls_ca "
                    "in the LUN spec), or it refused this connection (see its log)",
                    self.address,
                )
            )
        if resp.frame.status != p.Status.OK:
            text = resp.frame.error_text()
            self._give_up(ReplicaAuthError(f"authentication refused: {resp.frame.status.name}: {text}", self.address))

    def _give_up(self, exc: ReplicaError) -> NoReturn:
        """Fail the client with ``exc`` (also when the connection already failed otherwise) and raise it."""
        self._fail(exc)
        self._failure = exc
        raise exc

    # ------------------------------------------------------------------ requests

    async def read(self, offset: int, length: int) -> bytes:
        return (await self._call(p.Op.READ, offset=offset, length=length)).frame.payload

    async def write(self, offset: int, data: bytes, fua: bool = False, crc: int | None = None) -> None:
        """Write ``data``; ``crc`` is its CRC32C if the caller already computed it."""
        await self._call(p.Op.WRITE, offset=offset, payload=data, fua=fua, payload_crc=crc,
                         timeout=self.flush_timeout if fua else None)  # fmt: skip

    async def unmap(self, offset: int, length: int) -> None:
        await self._call(p.Op.UNMAP, offset=offset, length=length)

    async def flush(self) -> None:
        await self._call(p.Op.FLUSH, timeout=self.flush_timeout)

    async def ping(self) -> None:
        await self._call(p.Op.PING)

    async def extents(self, offset: int, length: int) -> list[tuple[int, int]]:
        """Allocated extents in the range, asked for :data:`EXTENTS_WINDOW` bytes at a time.

        A frame's ``length`` is a u32, and one answer holds at most ``MAX_EXTENTS`` pairs; a
        window of 1 GiB has at most 131,073 extents (a file system block is 4 KiB), so any
        volume is listed, however large or fragmented. Extents cut at a window edge are joined.
        """
        out: list[tuple[int, int]] = []
        for start in range(offset, offset + length, EXTENTS_WINDOW):
            n = min(EXTENTS_WINDOW, offset + length - start)
            resp = await self._call(p.Op.EXTENTS, offset=start, length=n)
            for s, m in p.unpack_extents(resp.frame.payload):
                if out and out[-1][0] + out[-1][1] == s:
                    out[-1] = (out[-1][0], out[-1][1] + m)
                else:
                    out.append((s, m))
        return out

    async def checksums(self, offset: int, length: int, granule: int) -> list[int]:
        resp = await self._call(
            p.Op.CHECKSUM, offset=offset, length=length, payload=p.granule_payload(granule),
            timeout=self.flush_timeout,
        )  # fmt: skip
        return p.unpack_checksums(resp.frame.payload)

    async def set_meta(self, **fields: Any) -> dict[str, Any]:
        """Persist metadata fields on the replica; returns its metadata afterwards."""
        resp = await self._call(p.Op.SET_META, payload=p.pack_json(fields), timeout=self.flush_timeout)
        self.meta = p.unpack_json(resp.frame.payload, "SET_META response")
        return self.meta

    @property
    def protocol_revision(self) -> int:
        """What the replica said it speaks in its HELLO (1 when it did not say)."""
        return int(self.meta.get("protocol_revision", 1))

    async def grant(self, token: str, revoke: bool = False) -> None:
        """Let a peer that shows ``token`` read this replica (revision 2), or stop letting it."""
        fields: dict[str, Any] = {"token": token, "revoke": True} if revoke else {"token": token}
        await self._call(p.Op.GRANT, payload=p.pack_json(fields))

    async def source(self, address: str | None, token: str = "", volume_id: str = "", timeout: float = 2.0) -> None:
        """Point this replica at the source it pulls from (revision 2); None forgets the source."""
        fields: dict[str, Any] = (
            {"address": None}
            if address is None
            else {"address": address, "token": token, "volume_id": volume_id, "timeout": timeout}
        )
        await self._call(p.Op.SOURCE, payload=p.pack_json(fields), timeout=self.flush_timeout)

    async def pull(self, offset: int, length: int) -> p.PullResult:
        """Make a range identical to the source's (revision 2); what was copied, skipped, unmapped."""
        resp = await self._call(p.Op.PULL, offset=offset, length=length, timeout=self.flush_timeout)
        return p.PullResult.unpack(resp.frame.payload)

    async def close_clean(self) -> None:
        """Flush and mark the replica cleanly shut down (the controller has no more writes)."""
        await self._call(p.Op.CLOSE, timeout=self.flush_timeout)

    def close(self) -> None:
        """Drop the connection; pending requests fail."""
        self._fail(ReplicaError("connection closed by the controller", self.address))

    # ------------------------------------------------------------------ machinery

    async def _call(
        self,
        op: p.Op,
        *,
        offset: int = 0,
        length: int | None = None,
        payload: bytes = b"",
        fua: bool = False,
        timeout: float | None = None,
        payload_crc: int | None = None,
    ) -> p.Response:
        if self._failure is not None:
            raise self._failure
        size = len(payload) + (length or 0 if op == p.Op.READ else 0)
        async with self._slots:
            while self._bytes and self._bytes + size > self.max_in_flight_bytes and self._failure is None:
                waiter = asyncio.get_running_loop().create_future()
                self._byte_waiters.append(waiter)
                await waiter
            if self._failure is not None:
                raise self._failure
            self._bytes += size
            try:
                resp = await self._send(op, offset, length, payload, fua, timeout, payload_crc)
            finally:
                self._bytes -= size
                waiters, self._byte_waiters = self._byte_waiters, []
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
        frame = resp.frame
        if frame.status != p.Status.OK:
            raise ReplicaRemoteError(
                f"{op.name} {offset}+{resp.request_length} failed: {frame.error_text()}",
                frame.status.name,
                self.address,
            )
        return resp

    async def _send(
        self,
        op: p.Op,
        offset: int,
        length: int | None,
        payload: bytes,
        fua: bool,
        timeout: float | None,
        payload_crc: int | None,
    ) -> p.Response:
        if not self._writable.is_set():
            await self._writable.wait()
            if self._failure is not None:
                raise self._failure
        transport = self._transport
        assert transport is not None, "connect() first"
        bufs = self._session.request(
            op, offset=offset, length=length, payload=payload, fua=fua, payload_crc=payload_crc
        )
        seq = self._session.last_seq
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[p.Response] = loop.create_future()
        handle = loop.call_later(timeout or self.timeout, self._expire, seq, op)
        self._pending[seq] = (fut, handle)
        transport.writelines(bufs)
        return await fut

    def _expire(self, seq: int, op: p.Op) -> None:
        if seq in self._pending:
            self._fail(ReplicaTimeoutError(f"{op.name} seq={seq} not answered within its timeout", self.address))

    def _fail(self, exc: ReplicaError) -> None:
        if self._failure is None:
            self._failure = exc
        pending, self._pending = self._pending, {}
        for fut, handle in pending.values():
            handle.cancel()
            if not fut.done():
                fut.set_exception(self._failure)
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        self._writable.set()  # wake writers so they see the failure
        for w in self._byte_waiters:
            if not w.done():
                w.set_result(None)

    def _on_data(self, data: bytes) -> None:
        session = self._session
        session.receive_data(data)
        while True:
            try:
                resp = session.next_response()
            except ReplicaProtocolError as exc:
                self._fail(ReplicaProtocolError(str(exc), self.address))
                return
            if resp is None:
                return
            entry = self._pending.pop(resp.frame.seq, None)
            if entry is None:  # answered after we gave up on it: the client has already failed
                continue
            fut, handle = entry
            handle.cancel()
            if not fut.done():
                fut.set_result(resp)

    def _on_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(ReplicaError(f"connection lost ({exc or 'closed by the replica'})", self.address))


class _Protocol(asyncio.Protocol):
    def __init__(self, client: ReplicaClient) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._on_lost(exc)

    def pause_writing(self) -> None:
        self.client._writable.clear()

    def resume_writing(self) -> None:
        self.client._writable.set()
