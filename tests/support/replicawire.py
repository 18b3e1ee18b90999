"""A replica protocol peer on a plain blocking socket that sends whatever frames it is told.

The hostile peer of the bounds tests (and a controller written by hand): frames are built and
parsed with :mod:`iscsikit.replica.protocol`'s codec, nothing else, so a test can send requests
the real client refuses to make (a granule of 1, a 64 MiB READ) and leave answers unread.

Example::

    peer = RawPeer("127.0.0.1", 9700)
    peer.claim()
    answer = peer.call(p.Op.READ, offset=0, length=4096)
    assert answer.status == p.Status.OK and len(answer.payload) == 4096
    peer.close()
"""

from __future__ import annotations

import socket
from typing import Any

from iscsikit.replica import protocol as p


class RawPeer:
    """One connection to a replica server; ``rcvbuf`` shrinks the socket's receive buffer (set
    before connecting, so the kernel holds little of what the server sends and the test is read)."""

    def __init__(self, host: str, port: int, *, rcvbuf: int | None = None, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self._decoder = p.FrameDecoder()
        self._seq = 0

    def send(self, op: p.Op, *, offset: int = 0, length: int = 0, payload: bytes = b"", flags: int = 0) -> int:
        """Send one request as given (no client-side checks); returns its sequence number."""
        self._seq += 1
        self.sock.sendall(b"".join(p.encode(p.Frame(op, self._seq, offset, length, flags, p.Status.OK, payload))))
        return self._seq

    def pipeline(self, requests: list[p.Frame]) -> None:
        """Send many requests at once, in one write: the server decodes them all from one read.
        Their ``seq`` are set here."""
        wire = []
        for req in requests:
            self._seq += 1
            req.seq = self._seq
            wire += p.encode(req)
        self.sock.sendall(b"".join(wire))

    def recv(self) -> p.Frame:
        """The next whole frame from the server (a ConnectionError if it closed first)."""
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                return frame
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the replica server closed the connection")
            self._decoder.receive_data(data)

    def call(self, op: p.Op, **kw: Any) -> p.Frame:
        seq = self.send(op, **kw)
        frame = self.recv()
        assert frame.seq == seq and frame.is_response, f"answer {frame} to seq={seq}"
        return frame

    def claim(self) -> dict[str, Any]:
        """Become the replica's owner (``HELLO {"claim": true}``); returns its metadata."""
        answer = self.call(p.Op.HELLO, payload=p.pack_json({"claim": True}))
        assert answer.status == p.Status.OK, answer.error_text()
        return p.unpack_json(answer.payload, "HELLO response")

    def close(self) -> None:
        self.sock.close()
