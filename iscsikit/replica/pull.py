"""Rebuild by pull (protocol revision 2): a rebuilding replica copies ranges straight from a
healthy source replica, so the data never passes through the controller.

The controller (which owns both replicas) gives the source a one-time read grant (GRANT), tells
the target where the source is and which token to show (SOURCE), then, for each chunk, holds its
range lock and sends PULL to the target: the target makes that range identical to the source's
and answers. Writes to the chunk wait on the controller's lock meanwhile, exactly as with the
relay rebuild, so a pull never overwrites newer data.

Both ends are blocking drivers on their own sockets and threads; the GIL is released in
``recv_into``, ``sendfile``, ``pwrite`` and CRC32C, so the copy runs at memory speed with no
Python-side copies:

* :func:`serve_reads` runs on the **source** for a peer whose HELLO showed a granted token. It
  answers READ, EXTENTS, CHECKSUM and PING in order and nothing else. A READ payload's CRC32C is
  computed over a read-only mapping of the page cache, then the data goes out with
  ``os.sendfile`` (page cache to socket).
* :class:`Puller` runs on the **target**: it keeps a few connections to the source, and
  :meth:`Puller.pull` lists the source's extents in the range, unmaps its own data where the
  source has holes, compares CRC32C per 64 KiB where both have data, and copies what differs
  with several READs in flight, received straight into a reused buffer (``recv_into``),
  checked against the frame's CRC32C and written with ``pwrite``.

Authentication (revision 3): the target connects to the source as a controller would, with its
own server's secret (the AUTH handshake, checking that the source holds the volume before it
proves itself) and its own certificate as the TLS client certificate. With TLS the data is sent
with ordinary sends instead of ``sendfile`` (the source serves TLS peers on its event loop).

Fencing: a grant belongs to the source's owner connection and dies with it (a new claim, or the
connection closing), which also closes every connection that used it. A puller belongs to the
target's owner connection; when another controller claims the target, the puller is closed and
the claim is answered only after every disk write started for the older owner has finished.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from iscsikit.errors import ReplicaError, ReplicaPeerError, ReplicaProtocolError
from iscsikit.replica import protocol as p
from iscsikit.replica.extents import GRANULE, Extents, differing_runs, holes, intersect, pieces
from iscsikit.replica.store import ReplicaStore

if TYPE_CHECKING:
    from iscsikit.replica.auth import Credentials

log = logging.getLogger("iscsikit.replica.pull")

#: Bytes per READ of a pull, and how many READs are in flight on one connection.
PIECE = 1 << 20
WINDOW = 8
#: Receive buffers per connection: pieces received while earlier ones are being written. As many
#: as the window, so the receiver never waits for the disk in the middle of a PULL.
BUFFERS = 8
#: Threads writing received pieces (each O_DIRECT write waits for the disk): the disk's queue depth.
WRITERS = 4
#: Largest request payload a granted peer may send (CHECKSUM carries 4 bytes).
MAX_PEER_PAYLOAD = 4096
#: A granted connection that says nothing for this long is closed.
IDLE_TIMEOUT = 300.0


def set_io_timeout(sock: socket.socket, seconds: float) -> None:
    """Kernel-side send/receive timeouts on a *blocking* socket (``sendfile`` needs blocking)."""
    sock.setblocking(True)
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def recv_exact(sock: socket.socket, view: memoryview, eof_ok: bool = False) -> bool:
    """Fill ``view`` from ``sock``. False on a clean EOF before the first byte when ``eof_ok``."""
    got = 0
    total = len(view)
    while got < total:
        try:
            n = sock.recv_into(view[got:])
        except BlockingIOError:
            raise TimeoutError("the peer sent nothing within the timeout") from None
        if n == 0:
            if eof_ok and got == 0:
                return False
            raise ConnectionError(f"the peer closed the connection ({got} of {total} bytes received)")
        got += n
    return True


# --------------------------------------------------------------------------------------
# Source side


class Grant:
    """A read grant given by the owner of a replica: peers showing ``token`` may read.

    ``revoke()`` is called from the event loop (the owner revoked it, lost the replica to
    another claim, or went away); it shuts down every connection that used the grant.
    """

    def __init__(self, token: str, owner: object) -> None:
        self.token = token
        self.owner = owner
        self.revoked = False
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket) -> bool:
        with self._lock:
            if self.revoked:
                return False
            self._socks.add(sock)
            return True

    def detach(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)

    def revoke(self) -> None:
        with self._lock:
            self.revoked = True
            socks, self._socks = list(self._socks), set()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve_reads(sock: socket.socket, store: ReplicaStore, grant: Grant, hello: p.Frame, hello_payload: bytes) -> None:
    """Serve one granted peer on ``sock`` until it closes, the grant is revoked, or it errs.

    ``hello`` is the peer's HELLO, already received (its answer is sent first, from here, so the
    answer and everything after it go out on this socket in order).
    """
    peer = "?"
    try:
        peer = "{}:{}".format(*sock.getpeername()[:2])
        set_io_timeout(sock, IDLE_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not grant.attach(sock):
            return
        _send(sock, p.encode(_response(hello, hello_payload)))
        log.info("peer %s reads with a grant", peer)
        _serve_loop(sock, store, grant)
    except (OSError, ReplicaProtocolError) as exc:
        if not grant.revoked:
            log.warning("granted connection from %s closed: %s", peer, exc)
    finally:
        grant.detach(sock)
        sock.close()
        log.debug("granted connection from %s done", peer)


def _response(req: p.Frame, payload: bytes = b"", status: p.Status = p.Status.OK) -> p.Frame:
    return p.Frame(req.op, req.seq, req.offset, req.length, p.FLAG_RESPONSE, status, payload)


def _send(sock: socket.socket, bufs: list[bytes]) -> None:
    sock.sendall(bufs[0] if len(bufs) == 1 else b"".join(bufs))


def _serve_loop(sock: socket.socket, store: ReplicaStore, grant: Grant) -> None:
    head = memoryview(bytearray(p.HEADER_SIZE))
    small = memoryview(bytearray(MAX_PEER_PAYLOAD))
    while True:
        if not recv_exact(sock, head, eof_ok=True):
            return
        header = p.decode_header(head, MAX_PEER_PAYLOAD)
        req = header.frame
        if header.payload_len:
            recv_exact(sock, small[: header.payload_len])
            try:
                p.check_payload(header, small[: header.payload_len])
            except p.PayloadChecksumError as exc:
                _send(sock, p.encode(_response(req, str(exc).encode(), p.Status.BADCRC)))
                continue
            req.payload = bytes(small[: header.payload_len])
        p.check_request(req)
        if grant.revoked:
            _send(sock, p.encode(_response(req, b"the read grant was revoked", p.Status.FENCED)))
            return
        if req.op not in p.GRANTED_OPS:
            message = f"a peer with a read grant may not send {req.op.name}"
            _send(sock, p.encode(_response(req, message.encode(), p.Status.FENCED)))
            continue
        try:
            if p.is_range_op(req.op):
                store.check_range(req.offset, req.length)
            p.response_bound(req)  # an answer too large to send: refused before any work
        except (ValueError, ReplicaProtocolError) as exc:
            _send(sock, p.encode(_response(req, str(exc).encode(), p.Status.EINVAL)))
            continue
        if req.op == p.Op.READ:
            _send_read(sock, store, req)
            continue
        try:
            if req.op == p.Op.EXTENTS:
                payload = p.pack_extents(store.iter_extents(req.offset, req.length))
            elif req.op == p.Op.CHECKSUM:
                granule = p.parse_granule(req.payload)
                payload = p.pack_checksums(store.checksum_array(req.offset, req.length, granule))
            else:  # PING
                payload = b""
        except OSError as exc:
            log.error("%s %d+%d for a peer failed: %s", req.op.name, req.offset, req.length, exc)
            _send(sock, p.encode(_response(req, str(exc).encode()[:4096], p.Status.EIO)))
            continue
        except ReplicaProtocolError as exc:
            _send(sock, p.encode(_response(req, str(exc).encode(), p.Status.EINVAL)))
            continue
        _send(sock, p.encode(_response(req, payload)))


def _send_read(sock: socket.socket, store: ReplicaStore, req: p.Frame) -> None:
    """Header (with the payload's CRC32C) and then the data straight from the page cache."""
    n = req.length
    try:
        crc = store.crc(req.offset, n)
    except OSError as exc:
        _send(sock, p.encode(_response(req, str(exc).encode()[:4096], p.Status.EIO)))
        return
    sock.sendall(p.encode_head(_response(req), n, crc), socket.MSG_MORE if n else 0)
    sent = 0
    out, fd = sock.fileno(), store.fileno()
    while sent < n:
        try:
            k = os.sendfile(out, fd, req.offset + sent, n - sent)
        except BlockingIOError:
            raise TimeoutError("the peer took nothing within the timeout") from None
        if k == 0:
            raise OSError(f"the data file ended at {req.offset + sent}")
        sent += k


# --------------------------------------------------------------------------------------
# Target side


class _SourceConnection:
    """One blocking connection from a pulling replica to its source (in-order answers)."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        self.client = p.OrderedClient()
        self.last_payload = b""
        self._head = memoryview(bytearray(p.HEADER_SIZE))
        # Page-aligned (mmap) so the store can write them with O_DIRECT.
        self._bufs = [memoryview(mmap.mmap(-1, PIECE)) for _ in range(BUFFERS)]

    def close(self) -> None:
        self.shutdown()
        self.sock.close()

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send(self, op: p.Op, *, offset: int = 0, length: int | None = None, payload: bytes = b"") -> None:
        _send(self.sock, self.client.request(op, offset=offset, length=length, payload=payload))

    def header(self) -> p.Header:
        recv_exact(self.sock, self._head)
        return self.client.response_header(self._head)

    def payload(self, header: p.Header) -> bytes:
        """Receive a small payload (JSON, extents, checksums, error text) and check it."""
        data = memoryview(bytearray(header.payload_len))
        recv_exact(self.sock, data)
        self.client.check_payload(header, data)
        return bytes(data)

    def call(self, op: p.Op, *, offset: int = 0, length: int | None = None, payload: bytes = b"") -> bytes:
        self.send(op, offset=offset, length=length, payload=payload)
        return self.answer()

    def call_raw(self, op: p.Op, payload: bytes) -> p.Header:
        """Send a request and receive its answer whatever its status (``last_payload`` holds the payload)."""
        self.send(op, payload=payload)
        header = self.header()
        self.last_payload = self.payload(header)
        return header

    def answer_auth(self, header: p.Header, what: str) -> None:
        from iscsikit.errors import ReplicaAuthError

        if header.frame.status != p.Status.OK:
            text = self.last_payload.decode("utf-8", "replace")
            raise ReplicaAuthError(f"{what} refused: {header.frame.status.name}: {text}")

    def answer(self) -> bytes:
        """The payload of the next answer (to the oldest request); an error answer raises."""
        header = self.header()
        body = self.payload(header)
        if header.frame.status != p.Status.OK:
            f = header.frame
            text = body.decode("utf-8", "replace")
            raise ReplicaPeerError(f"{f.op.name} {f.offset}+{f.length} failed on the source: {f.status.name}: {text}")
        return body

    def copy(self, runs: Extents, writer: _Writer, cancelled: Callable[[], bool]) -> int:
        """READ ``runs`` from the source (``WINDOW`` in flight); bytes copied.

        Two stages: this thread receives a piece into one of ``BUFFERS`` reused buffers and checks
        its CRC32C, ``writer`` writes it, meanwhile the next piece is received. Returns only when
        every write it started has ended (also when it raises), so no write outlives the PULL.
        """
        items = pieces(runs, PIECE)
        sent = done = copied = 0
        writes: deque[Future[None]] = deque()
        try:
            while done < len(items):
                while sent < len(items) and sent - done < WINDOW:
                    pos, n = items[sent]
                    self.send(p.Op.READ, offset=pos, length=n)
                    sent += 1
                pos, n = items[done]
                header = self.header()
                if header.frame.status != p.Status.OK:
                    text = self.payload(header).decode("utf-8", "replace")
                    raise ReplicaPeerError(f"READ {pos}+{n} failed on the source: {header.frame.status.name}: {text}")
                if len(writes) == len(self._bufs):
                    writes.popleft().result()  # the oldest buffer is free again
                view = self._bufs[done % len(self._bufs)][:n]
                recv_exact(self.sock, view)
                self.client.check_payload(header, view)
                if cancelled():
                    raise ReplicaPeerError("the pull was cancelled")
                writes.append(writer.submit(pos, view))
                copied += n
                done += 1
            while writes:
                writes.popleft().result()
        finally:
            for w in writes:
                w.exception()  # wait; the first error is the one raised above
        return copied


class _Writer:
    """One thread that writes received pieces to the store, in order; the receiver goes on."""

    def __init__(self, store: ReplicaStore) -> None:
        self.store = store
        # Several, so the disk has several O_DIRECT writes to work on while the receiver goes on.
        self._pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="replica-pull-write")

    def submit(self, pos: int, data: memoryview) -> Future[None]:
        return self._pool.submit(_local, self.store.write_bulk, pos, data)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class Puller:
    """The target's side of a pull rebuild: connections to one source, and :meth:`pull`.

    Blocking; :meth:`pull` runs in the replica server's thread pool, one call per connection
    at a time. Source problems (unreachable, refused, broken link, bad CRC) raise
    :class:`ReplicaPeerError`; the target's own disk errors raise :class:`OSError`.

    Example::

        puller = Puller(store, "tcp://10.0.0.1:9700", token, volume_id, timeout=2.0)
        puller.open()
        result = puller.pull(0, 4 << 20)  # PullResult(copied=..., skipped=..., unmapped=...)
        puller.close()
    """

    def __init__(
        self,
        store: ReplicaStore,
        address: str,
        token: str,
        volume_id: str,
        timeout: float,
        credentials: Credentials | None = None,
    ) -> None:
        from iscsikit.replica.client import parse_address

        self.credentials = credentials
        self.store = store
        self.address = address
        self.host, self.port = parse_address(address)
        self.token = token
        self.volume_id = volume_id
        self.timeout = timeout
        self.closed = False
        self.source_meta: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._idle: list[_SourceConnection] = []
        self._all: set[_SourceConnection] = set()
        self._writer = _Writer(store)
        # Starting writeback of copied ranges costs CPU (block allocation, I/O submission): off the
        # receive/write path, fire and forget (durability comes from the FLUSH at the end).
        self._writeback = ThreadPoolExecutor(1, thread_name_prefix="replica-pull-writeback")

    def open(self) -> dict[str, Any]:
        """Connect once (checks the grant, the volume and the size); returns the source's metadata."""
        conn = self._connect()
        with self._lock:
            self._idle.append(conn)
        return self.source_meta

    def close(self) -> None:
        """Stop: every connection is shut down, pulls in progress fail (from any thread)."""
        with self._lock:
            self.closed = True
            conns, self._idle = list(self._all), []
        for c in conns:
            c.shutdown()
        self._writer.close()
        self._writeback.shutdown(wait=False)

    def _connect(self) -> _SourceConnection:
        if self.closed:
            raise ReplicaPeerError("the pull was cancelled", self.address)
        creds = self.credentials
        tls = creds.tls if creds is not None else None
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise ReplicaPeerError(f"cannot connect to the source: {exc}", self.address) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:  # Python-level timeouts: an SSL socket cannot use the kernel's
                sock = tls.wrap_socket(sock, server_hostname=self.host)
            else:
                set_io_timeout(sock, self.timeout)
        except OSError as exc:
            sock.close()
            raise ReplicaPeerError(f"TLS handshake with the source failed: {exc}", self.address) from None
        conn = _SourceConnection(sock, self.address)
        try:
            with self._lock:
                self._all.add(conn)
            if creds is not None and creds.secret is not None:
                _authenticate(conn, creds.secret, self.volume_id)
            meta = p.unpack_json(conn.call(p.Op.HELLO, payload=p.pack_json({"claim": False, "grant": self.token})),
                                 "HELLO response")  # fmt: skip
            if meta.get("volume_id") != self.volume_id:
                raise ReplicaPeerError(f"the source holds volume {meta.get('volume_id')}, not {self.volume_id}")
            if int(meta.get("size", -1)) != self.store.size:
                raise ReplicaPeerError(f"the source's size {meta.get('size')} differs from {self.store.size}")
        except BaseException as exc:
            self._drop(conn)
            if isinstance(exc, ReplicaPeerError):
                raise ReplicaPeerError(str(exc), self.address) from None
            if isinstance(exc, OSError | ReplicaError):
                raise ReplicaPeerError(f"the source failed the HELLO: {exc}", self.address) from None
            raise
        self.source_meta = meta
        return conn

    def _drop(self, conn: _SourceConnection) -> None:
        with self._lock:
            self._all.discard(conn)
        conn.close()

    def pull(self, offset: int, length: int) -> p.PullResult:
        """Make [offset, offset+length) of the store identical to the source's."""
        self.store.check_range(offset, length)
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            result = self._sync(conn, offset, length)
        except OSError as exc:
            self._drop(conn)
            if _is_local(exc):
                raise  # the target's own disk
            raise ReplicaPeerError(f"lost the source: {exc}", self.address) from None
        except ReplicaError as exc:
            self._drop(conn)
            if isinstance(exc, ReplicaPeerError):
                raise ReplicaPeerError(str(exc).removeprefix(f"replica {self.address}: "), self.address) from None
            raise ReplicaPeerError(f"bad answer from the source: {exc}", self.address) from None
        except BaseException:
            self._drop(conn)
            raise
        with self._lock:
            if self.closed:
                conn.close()
            else:
                self._idle.append(conn)
        return result

    def _sync(self, conn: _SourceConnection, start: int, length: int) -> p.PullResult:
        store = self.store
        end = start + length
        s_ext = p.unpack_extents(conn.call(p.Op.EXTENTS, offset=start, length=length))
        t_ext = _local(store.extents, start, length)
        unmapped = 0
        for hs, hn in intersect(holes(s_ext, start, end), t_ext):
            _local(store.unmap, hs, hn)
            unmapped += hn
        # Where both have data, compare CRC32C per granule: the source computes its checksums
        # while this side computes its own (all requests first, answers after).
        both = [(ds, dn) for ds, dn in s_ext if intersect([(ds, dn)], t_ext)]
        for ds, dn in both:
            conn.send(p.Op.CHECKSUM, offset=ds, length=dn, payload=p.granule_payload(GRANULE))
        ours = [_local(store.checksums, ds, dn, GRANULE) for ds, dn in both]
        differ = {
            (ds, dn): differing_runs(ds, dn, GRANULE, p.unpack_checksums(conn.answer()), mine)
            for (ds, dn), mine in zip(both, ours, strict=True)
        }
        runs: Extents = []
        skipped = 0
        for ds, dn in s_ext:
            diff = differ.get((ds, dn), [(ds, dn)])
            runs += diff
            skipped += dn - sum(n for _, n in diff)

        copied = conn.copy(runs, self._writer, lambda: self.closed)
        if copied and not self.closed and not store.direct_writes:
            self._writeback.submit(store.start_writeback, start, length)
        return p.PullResult(copied, skipped, unmapped)


def _authenticate(conn: _SourceConnection, secret: bytes, volume_id: str) -> None:
    """The AUTH handshake with the source; ReplicaPeerError when it refuses or fails to prove itself."""
    from iscsikit.errors import ReplicaAuthError
    from iscsikit.replica.auth import ClientAuth

    auth = ClientAuth(secret, volume_id=volume_id)
    try:
        conn.answer_auth(conn.call_raw(p.Op.AUTH, auth.challenge()), "AUTH step 1")
        conn.answer_auth(conn.call_raw(p.Op.AUTH, auth.answer(conn.last_payload)), "AUTH step 2")
    except ReplicaAuthError as exc:
        raise ReplicaPeerError(f"authentication with the source failed: {exc}") from None
    except ConnectionError:
        raise ReplicaPeerError(
            "the source closed the connection on AUTH: it is older than protocol revision 3 or refuses us"
        ) from None


class _LocalDiskError(OSError):
    """An OSError of the target's own store (not of the source connection)."""


def _local(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except OSError as exc:
        raise _LocalDiskError(exc.errno, exc.strerror or str(exc)) from exc


def _is_local(exc: OSError) -> bool:
    return isinstance(exc, _LocalDiskError)
