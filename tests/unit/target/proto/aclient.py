"""An asyncio test initiator over a real socket (for server, robustness and interop tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from iscsikit.target.proto import InitiatorConnection
from iscsikit.target.proto.pdu import PDU, R2T, RESERVED_TAG, DataIn, NopIn, ScsiResponse

READ10 = 0x28
WRITE10 = 0x2A


def rw10(op: int, lba: int, blocks: int) -> bytes:
    return bytes([op, 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"


class Client:
    """One connection: login, SCSI reads/writes, raw PDUs. Answers target NOP-In pings."""

    def __init__(self, ini: InitiatorConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.ini = ini
        self.reader = reader
        self.writer = writer
        self.pending: list[PDU] = []
        self.answer_pings = True
        self.pings = 0

    @classmethod
    async def connect(cls, host: str, port: int, ini: InitiatorConnection, *, login: bool = True) -> Client:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(ini, reader, writer)
        if login:
            await client.login()
        return client

    async def send(self, wire: bytes) -> None:
        self.writer.write(wire)
        await self.writer.drain()

    async def pdu(self, timeout: float = 10.0) -> PDU:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            if not data:
                raise ConnectionError("target closed the connection")
            for p in self.ini.feed(data):
                if isinstance(p, NopIn) and p.itt == RESERVED_TAG:
                    self.pings += 1
                    if self.answer_pings:
                        await self.send(self.ini.nop_out(ttt=p.ttt)[1])
                    continue
                self.pending.append(p)
        return self.pending.pop(0)

    async def login(self) -> None:
        await self.send(self.ini.login_request())
        while True:
            nxt = self.ini.login_response(await self.pdu())  # type: ignore[arg-type]
            if nxt is None:
                return
            await self.send(nxt)

    async def read(self, lun: int, lba: int, blocks: int, block_size: int = 512) -> tuple[ScsiResponse | DataIn, bytes]:
        itt, wire = self.ini.scsi_command(rw10(READ10, lba, blocks), lun=lun, read_length=blocks * block_size)
        await self.send(wire)
        data = bytearray()
        while True:
            p = await self.pdu()
            assert getattr(p, "itt", None) == itt, p
            if isinstance(p, DataIn):
                data += b"".join(bytes(d) for d in p.data)
                if p.status_present:
                    return p, bytes(data)
            else:
                assert isinstance(p, ScsiResponse)
                return p, bytes(data)

    async def write(self, lun: int, lba: int, data: bytes, block_size: int = 512) -> ScsiResponse:
        ini = self.ini
        itt, wire = ini.scsi_command(rw10(WRITE10, lba, len(data) // block_size), lun=lun, write_data=data)
        await self.send(wire)
        while True:
            p = await self.pdu()
            if isinstance(p, R2T):
                off, sn = p.offset, 0
                end = p.offset + p.length
                while off < end:
                    n = min(ini.target_mrdsl, end - off)
                    await self.send(ini.data_out(itt, p.ttt, sn, off, data[off : off + n], off + n == end, lun=lun))
                    off, sn = off + n, sn + 1
                continue
            assert isinstance(p, ScsiResponse) and p.itt == itt, p
            return p

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def closed_by_target(self, timeout: float = 10.0) -> bool:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except (ConnectionError, OSError):
            return True
        except TimeoutError:
            return False

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)
