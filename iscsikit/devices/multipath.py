"""dm-multipath maps over iSCSI paths: find, wait for, flush, resize.

A map is recognised from sysfs alone: a ``holders/dm-N`` entry of a path device whose
``dm/uuid`` starts with ``mpath-`` (os-brick's method; ``multipath -l`` is slow and stalls on
flaky paths). Flushing and resizing go through ``multipath``/``multipathd`` via the Runner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from iscsikit.errors import CommandError, DeviceBusyError
from iscsikit.runner import Runner
from iscsikit.session.sysfs import BlockDevices, SysfsRoot

log = logging.getLogger("iscsikit.devices")


class Multipath:
    def __init__(
        self,
        runner: Runner,
        sysfs_root: SysfsRoot | Path | str = Path("/sys"),
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.runner = runner
        self.root = sysfs_root if isinstance(sysfs_root, SysfsRoot) else SysfsRoot(Path(sysfs_root))
        self.blocks = BlockDevices(self.root)
        self._sleep = sleep

    def map_of(self, name: str) -> str | None:
        """``dm-N`` of the multipath map holding path device ``name``, or None."""
        dev = self.blocks.from_name(name)
        if dev is None:
            return None
        for holder in dev.holders:
            if (self.blocks.dm_uuid(holder) or "").startswith("mpath-"):
                return holder
        return None

    def name(self, dm: str) -> str | None:
        """The map's name (``mpatha`` or the WWID), as ``/dev/mapper/<name>``."""
        return self.blocks.dm_name(dm)

    def wwid(self, dm: str) -> str | None:
        uuid = self.blocks.dm_uuid(dm)
        return uuid.removeprefix("mpath-") if uuid and uuid.startswith("mpath-") else None

    def paths(self, dm: str) -> list[str]:
        return self.blocks.slaves(dm)

    def exists(self, dm: str) -> bool:
        return self.blocks.from_name(dm) is not None

    def flush(self, dm: str, *, attempts: int = 3, timeout: float = 60.0) -> None:
        """``multipath -f <map>``; gone already is success; raises DeviceBusyError if still in use."""
        name = self.name(dm)
        if name is None:
            return
        dev = self.blocks.from_name(dm)
        held = [h for h in (dev.holders if dev else ()) if not self._idle_partition(dm, h)]
        if held:
            raise DeviceBusyError(f"multipath map {name} ({dm}) is held by {', '.join(held)}")
        last: CommandError | None = None
        for attempt in range(attempts):
            try:
                self.runner.run(["multipath", "-f", name], timeout=timeout, mutating=True)
                return
            except CommandError as exc:
                if not self.exists(dm):
                    return
                last = exc
                log.debug("multipath -f %s failed (attempt %d): %s", name, attempt + 1, exc)
                self._sleep(0.5 * (attempt + 1))
        raise DeviceBusyError(f"could not flush multipath map {name} ({dm}): {last}")

    def _idle_partition(self, dm: str, holder: str) -> bool:
        """A kpartx partition map of ``dm`` (uuid ``partN-<uuid of dm>``) that nothing holds:
        ``multipath -f`` removes those itself, so they do not make the map busy."""
        uuid = self.blocks.dm_uuid(dm) or ""
        part_uuid = self.blocks.dm_uuid(holder) or ""
        part = self.blocks.from_name(holder)
        return (
            bool(uuid)
            and part_uuid.startswith("part")
            and part_uuid.endswith("-" + uuid)
            and part is not None
            and not part.holders
        )

    def resize(self, dm: str) -> None:
        name = self.name(dm)
        if name is not None:
            self.runner.run(["multipathd", "resize", "map", name], timeout=60, mutating=True)
