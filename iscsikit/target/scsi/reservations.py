"""Reservations: SPC-2 RESERVE/RELEASE(6/10) and SPC-4 PERSISTENT RESERVE IN/OUT.

(Placeholder while the seam lands: no reservation is ever held.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iscsikit.target.scsi.core import Nexus

if TYPE_CHECKING:
    from iscsikit.target.scsi.lu import Handler, LogicalUnit

__all__ = ["HANDLERS", "Reservations"]


class Reservations:
    def __init__(self, lu: LogicalUnit) -> None:
        self.lu = lu
        self.active = False

    def conflicts(self, nexus: Nexus, cdb: bytes) -> bool:
        return False

    def reset(self) -> None:
        pass

    def nexus_lost(self, nexus: Nexus) -> None:
        pass


HANDLERS: dict[int, Handler] = {}
