"""One SCSI task as the iSCSI layer tracks it: data collection, R2T bookkeeping, state."""

from __future__ import annotations

import enum
import mmap

from iscsikit.target.proto.pdu import Buffer

__all__ = ["Task", "TaskState"]


class TaskState(enum.Enum):
    COLLECTING = "collecting data"  # waiting for unsolicited / R2T-solicited Data-Out
    WAITING = "waiting for CmdSN order"  # arrived ahead of a gap in CmdSN
    READY = "ready"  # handed to the server (CommandReady)
    DONE = "done"
    ABORTED = "aborted"


class Task:
    """A SCSI command in flight on one connection.

    ``buffer`` receives every byte of Data-Out (immediate, unsolicited and solicited) at its
    BufferOffset, so payloads land in place and are handed to the SCSI layer without a copy.
    """

    __slots__ = (
        "buffer",
        "cdb",
        "cmd_sn",
        "expected_length",
        "immediate",
        "itt",
        "lun",
        "lun_raw",
        "r2t_burst_end",
        "r2t_data_sn",
        "r2t_next_offset",
        "r2t_offset",
        "r2t_sn",
        "r2t_ttt",
        "read",
        "received",
        "solicit_from",
        "state",
        "unsol_data_sn",
        "unsol_done",
        "unsol_limit",
        "unsol_next",
        "write",
    )

    def __init__(
        self,
        itt: int,
        lun_raw: int,
        lun: int,
        cdb: bytes,
        expected_length: int,
        cmd_sn: int,
        read: bool,
        write: bool,
        immediate: bool,
        state: TaskState = TaskState.COLLECTING,
    ) -> None:
        # Positional (the per-command fast path calls it so); keywords work as well.
        self.itt = itt
        self.lun_raw = lun_raw
        self.lun = lun
        self.cdb = cdb
        self.expected_length = expected_length
        self.cmd_sn = cmd_sn
        self.read = read
        self.write = write
        self.immediate = immediate
        self.state = state
        self.buffer: bytearray | mmap.mmap | None = None
        self.received = 0
        # Unsolicited data (immediate + Data-Out with TTT 0xffffffff)
        self.unsol_limit = 0
        self.unsol_next = 0
        self.unsol_data_sn = 0
        self.unsol_done = True
        # Solicited data (one outstanding R2T at a time: MaxOutstandingR2T=1)
        self.solicit_from = 0
        self.r2t_sn = 0
        self.r2t_ttt = 0xFFFFFFFF
        self.r2t_offset = 0
        self.r2t_next_offset = 0
        self.r2t_burst_end = 0
        self.r2t_data_sn = 0

    @property
    def data_out(self) -> Buffer | None:
        """All Data-Out as one buffer (None for commands without data)."""
        if self.buffer is None:
            return None
        return memoryview(self.buffer)[: self.received]

    def __repr__(self) -> str:
        return (
            f"<Task itt=0x{self.itt:08x} lun={self.lun} op=0x{self.cdb[0]:02x} cmdsn={self.cmd_sn} "
            f"edtl={self.expected_length} {self.state.value}>"
        )
