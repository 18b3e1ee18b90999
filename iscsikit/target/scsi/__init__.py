"""The SCSI block device of iscsikit's built-in target (SPC-4 / SBC-3), sans-IO and socket-free.

The protocol layer hands every complete SCSI command to :meth:`LunMap.execute` and turns the
:class:`ScsiResponse` into Data-In PDUs and a SCSI Response; nothing here knows about iSCSI.

Example::

    from iscsikit.target.backends import MemoryBackend
    from iscsikit.target.scsi import LogicalUnit, LunMap, LuIdentity, Nexus

    luns = LunMap({1: LogicalUnit(MemoryBackend(64 << 20), identity=LuIdentity.from_name("iqn.x:t/1"))})
    nexus = Nexus("iqn.2026-11.org.example:host", bytes(6), "iqn.x:t", 1, session_id=1)
    rsp = await luns.execute(1, bytes([0x25]) + bytes(9), None, nexus)   # READ CAPACITY(10)
    rsp.status, rsp.sense, b"".join(rsp.data)

Contract with the protocol layer:

* ``data_out`` is every byte of Data-Out the initiator sent for the command (immediate,
  unsolicited and solicited), *not* cut to :meth:`LunMap.data_out_length`: some commands must
  fail when the initiator sent too much (WRITE SAME, COMPARE AND WRITE). Commands use at most
  what their CDB asks for; the protocol layer computes residuals (for writes from
  ``data_out_length`` vs EDTL, for reads from the returned data length vs EDTL).
* ``execute`` may be called concurrently for different tasks; it never raises for SCSI-level
  errors (they come back as CHECK CONDITION with sense).
* Call :meth:`LunMap.nexus_lost` when a session ends, and :meth:`LunMap.task_management` for
  TMFs after aborting the affected tasks.
"""

from iscsikit.target.scsi.core import Nexus, ScsiResponse, Status, TmfFunction, TmfResponse
from iscsikit.target.scsi.identity import LuIdentity, identity_path_for
from iscsikit.target.scsi.lu import LogicalUnit
from iscsikit.target.scsi.lunmap import LunMap
from iscsikit.target.scsi.sense import SenseCode, SenseError, SenseKey

__all__ = [
    "LogicalUnit",
    "LuIdentity",
    "LunMap",
    "Nexus",
    "ScsiResponse",
    "SenseCode",
    "SenseError",
    "SenseKey",
    "Status",
    "TmfFunction",
    "TmfResponse",
    "identity_path_for",
]
