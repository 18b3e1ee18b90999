"""Choosing which replicas may serve a volume when the controller starts: a pure function.

The rule that keeps acknowledged writes safe (``docs/replication.md``, "Why a stale replica is
never chosen"): the controller persists ``(epoch, members)`` on every read-write replica
*before* it acknowledges any write that a departed replica missed. So the replicas holding
every acknowledged write are exactly the ``members`` of the highest epoch, and a replica that
missed writes has a lower epoch or is not a member, or is marked ``rebuilding``.

The highest epoch can only be trusted if no unreachable replica might hold a higher one.
Every epoch is written to at least one member of the epoch before it, so if every member of
the highest epoch seen is reachable, no higher epoch exists anywhere. When some are missing
the plan says so and the controller waits for them (or starts anyway with ``force``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iscsikit.errors import VolumeStartError


@dataclass(slots=True)
class StartPlan:
    """What :func:`plan_start` decided, by replica address."""

    volume_id: str | None  # None: every replica is fresh, a new volume starts
    epoch: int  # the highest epoch seen (0 for a new volume)
    size: int
    #: Serve reads and writes at once (they hold every acknowledged write and agree).
    rw: list[str] = field(default_factory=list)
    #: Held every acknowledged write, but may differ from ``rw`` in writes that were never
    #: acknowledged (the controller stopped without a clean close): resync from ``rw``.
    resync: list[str] = field(default_factory=list)
    #: Missed writes (lower epoch, not a member, fresh, or an unfinished rebuild): rebuild.
    stale: list[str] = field(default_factory=list)
    #: Members of the highest epoch that could not be reached: "id@address" entries.
    missing: list[dict[str, str]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


def plan_start(found: dict[str, dict[str, Any]], *, size: int | None = None, force: bool = False) -> StartPlan:
    """Plan from the HELLO metadata of every reachable replica (address -> metadata).

    Raises :class:`VolumeStartError` when no consistent set exists: no replica reachable,
    replicas of different volumes or sizes, no complete copy, or (without ``force``) members
    of the newest epoch missing.
    """
    if not found:
        raise VolumeStartError("no replica is reachable")
    sizes = {int(m["size"]) for m in found.values()}
    if size is not None and sizes != {size}:
        bad = ", ".join(f"{a} has {m['size']}" for a, m in found.items() if int(m["size"]) != size)
        raise VolumeStartError(f"the volume is {size} bytes but {bad}")
    if len(sizes) > 1:
        listing = ", ".join(f"{a}: {m['size']}" for a, m in sorted(found.items()))
        raise VolumeStartError(f"replicas disagree on the volume size ({listing})")
    vol_size = sizes.pop()
    volumes = {m["volume_id"] for m in found.values() if m.get("volume_id")}
    if len(volumes) > 1:
        listing = ", ".join(f"{a}: {m.get('volume_id')}" for a, m in sorted(found.items()))
        raise VolumeStartError(f"replicas belong to different volumes ({listing})")
    if not volumes:
        return StartPlan(None, 0, vol_size, rw=sorted(found), reasons=dict.fromkeys(found, "new volume"))

    volume_id = volumes.pop()
    plan = StartPlan(volume_id, 0, vol_size)
    complete = {a: m for a, m in found.items() if m.get("volume_id") == volume_id and m.get("state") == "rw"}
    if not complete:
        raise VolumeStartError(
            f"no reachable replica of volume {volume_id} holds a complete copy "
            f"(all are fresh or in an unfinished rebuild: {', '.join(sorted(found))})"
        )
    epoch = max(int(m["epoch"]) for m in complete.values())
    top = {a: m for a, m in complete.items() if int(m["epoch"]) == epoch}
    members = next(iter(top.values()))["members"]
    member_ids = {m["id"] for m in members}
    reachable_ids = {m["replica_id"] for m in found.values()}
    plan.epoch = epoch
    plan.missing = [m for m in members if m["id"] not in reachable_ids]
    if plan.missing and not force:
        names = ", ".join(f"{m['id']} at {m.get('address') or '?'}" for m in plan.missing)
        raise VolumeStartError(
            f"members of epoch {epoch} are unreachable ({names}); one of them may hold newer writes. "
            "Start them, or start with force_start=1 to serve from the others (unsafe)"
        )
    candidates = {a: m for a, m in top.items() if m["replica_id"] in member_ids}
    if not candidates:
        raise VolumeStartError(f"no reachable replica is a member of epoch {epoch}")
    if all(m.get("clean") for m in candidates.values()):
        plan.rw = sorted(candidates)
        for a in plan.rw:
            plan.reasons[a] = f"member of epoch {epoch}, clean"
    else:
        primary = max(candidates, key=lambda a: (bool(candidates[a].get("clean")), int(candidates[a]["revision"]), a))
        plan.rw = [primary]
        plan.reasons[primary] = (
            f"member of epoch {epoch}, chosen as the source (revision {candidates[primary]['revision']})"
        )
        for a in sorted(candidates):
            if a != primary:
                plan.resync.append(a)
                plan.reasons[a] = f"member of epoch {epoch}, not shut down cleanly: resync from {primary}"
    for a, m in sorted(found.items()):
        if a in candidates:
            continue
        plan.stale.append(a)
        if m.get("volume_id") is None:
            plan.reasons[a] = "fresh replica"
        elif m.get("state") != "rw":
            plan.reasons[a] = "its last rebuild did not finish"
        elif int(m["epoch"]) < epoch:
            plan.reasons[a] = f"epoch {m['epoch']} < {epoch}: it missed writes"
        else:
            plan.reasons[a] = f"not a member of epoch {epoch}"
    return plan
