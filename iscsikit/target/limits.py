"""What one peer may make ``target serve`` hold: connection and session limits, timeouts, budgets.

Plain data and a rate-limited refusal log, no I/O; :mod:`iscsikit.target.server` applies them
(``[limits]`` in the config, see docs/target.md "Limits"). The per-command bounds live with
the protocol: :attr:`TargetLimits.max_transfer_length
<iscsikit.target.proto.keys.TargetLimits.max_transfer_length>` and the write buffer budget
(:class:`iscsikit.target.buffers.WriteBudget`).

Example::

    limits = ServerLimits(login_timeout=5, max_connections_per_address=16)
    refusals = RefusalLog(logging.getLogger("iscsikit.target"))
    refusals.note("192.0.2.7", "connections per address", "16 connections already", now=time.monotonic())
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

__all__ = ["RefusalLog", "ServerLimits"]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds the server enforces on peers (defaults are generous; every one is in ``[limits]``)."""

    #: Seconds from TCP accept to the final Login Response; a slower login is dropped.
    login_timeout: float = 15.0
    #: Seconds a connection without a Normal session (a discovery session) may stay silent.
    idle_timeout: float = 60.0
    #: Seconds commands may wait for Data-Out without any arriving before the connection is
    #: dropped (their buffers held all along).
    data_timeout: float = 30.0
    #: Open connections of the whole process (logged in or not).
    max_connections: int = 4096
    #: Open connections from one source address.
    max_connections_per_address: int = 256
    #: Normal sessions logged in to one target.
    max_sessions_per_target: int = 1024
    #: Sessions (Normal and discovery) from one source address.
    max_sessions_per_address: int = 256
    #: Bytes of Data-Out buffers the whole process may hold; over it writes get TASK SET FULL.
    write_buffer_budget: int = 512 << 20

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{f.name} must be a positive number, got {value!r}")


class RefusalLog:
    """Log each kind of refusal of one peer address once per ``interval``, counting the rest.

    A peer opening a thousand connections produces one warning, then one line per interval with
    the count of refusals it did not log. ``max_keys`` bounds the memory it uses.
    """

    def __init__(
        self, log: logging.Logger, *, prefix: str = "refused", interval: float = 60.0, max_keys: int = 4096
    ) -> None:
        self.log = log
        self.prefix = prefix
        self.interval = interval
        self.max_keys = max_keys
        #: (address, kind) -> [time of the last line logged, refusals not logged since]
        self._seen: dict[tuple[str, str], list[float]] = {}
        #: Every refusal noted, by kind (status, tests).
        self.counts: dict[str, int] = {}

    def note(self, address: str, kind: str, reason: str, *, now: float) -> bool:
        """Record one refusal; returns True if it was logged."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        key = (address, kind)
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        suppressed = int(entry[1]) if entry is not None else 0
        if entry is None and len(self._seen) >= self.max_keys:
            self._expire(now)
        self._seen[key] = [now, 0]
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        self.log.warning("%s %s: %s: %s%s", self.prefix, address, kind, reason, more)
        return True

    def _expire(self, now: float) -> None:
        stale = [k for k, (t, _) in self._seen.items() if now - t >= self.interval]
        for k in stale:
            del self._seen[k]
        if len(self._seen) >= self.max_keys:
            self._seen.clear()  # many addresses at once: start over rather than grow
