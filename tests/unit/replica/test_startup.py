"""Start-up planning: which replicas may serve after a controller (re)start."""

from __future__ import annotations

from typing import Any

import pytest

from iscsikit.errors import VolumeStartError
from iscsikit.replica.startup import plan_start

SIZE = 1 << 20


def meta(rid: str, epoch: int = 0, members: str = "", *, vol: str | None = "v", state: str = "rw",
         clean: bool = False, revision: int = 0, size: int = SIZE) -> dict[str, Any]:  # fmt: skip
    return {
        "replica_id": rid, "size": size, "volume_id": vol, "epoch": epoch, "state": state, "clean": clean,
        "revision": revision, "members": [{"id": m, "address": f"addr-{m}"} for m in members],
    }  # fmt: skip


def test_all_fresh_replicas_start_a_new_volume() -> None:
    plan = plan_start({"a": meta("A", vol=None, state="fresh"), "b": meta("B", vol=None, state="fresh")})
    assert (plan.volume_id, plan.rw, plan.stale) == (None, ["a", "b"], [])


def test_replica_that_missed_writes_is_stale_after_controller_restart() -> None:
    # A was dropped at epoch 6 (B and C went on); then the controller died and all came back.
    found = {"a": meta("A", 5, "ABC"), "b": meta("B", 6, "BC"), "c": meta("C", 6, "BC")}
    plan = plan_start(found)
    assert len(plan.rw) == 1 and sorted(plan.rw + plan.resync) == ["b", "c"] and plan.stale == ["a"]
    assert "epoch 5 < 6" in plan.reasons["a"]


def test_clean_members_all_serve_at_once() -> None:
    found = {x.lower(): meta(x, 3, "ABC", clean=True) for x in "ABC"}
    assert plan_start(found).rw == ["a", "b", "c"]


def test_dirty_members_resync_from_the_one_with_the_highest_revision() -> None:
    found = {"a": meta("A", 3, "AB", revision=10), "b": meta("B", 3, "AB", revision=12)}
    plan = plan_start(found)
    assert (plan.rw, plan.resync) == (["b"], ["a"])


def test_unreachable_member_of_the_newest_epoch_blocks_start_unless_forced() -> None:
    # Only A (epoch 5) answers; B or C may hold epoch 6 with writes A never saw.
    found = {"a": meta("A", 5, "ABC")}
    with pytest.raises(VolumeStartError, match=r"members of epoch 5 are unreachable .*B at addr-B"):
        plan_start(found)
    assert plan_start(found, force=True).rw == ["a"]


def test_rebuilding_fresh_and_foreign_replicas_are_never_sources() -> None:
    found = {"a": meta("A", 7, "A", state="rebuilding"), "b": meta("B", 4, "B"),
             "c": meta("C", vol=None, state="fresh")}  # fmt: skip
    plan = plan_start(found)
    assert plan.rw == ["b"] and sorted(plan.stale) == ["a", "c"]
    with pytest.raises(VolumeStartError, match="no reachable replica of volume v holds a complete copy"):
        plan_start({"a": meta("A", 7, "A", state="rebuilding")})
    with pytest.raises(VolumeStartError, match="replicas belong to different volumes"):
        plan_start({"a": meta("A", 1, "A"), "b": meta("B", 1, "B", vol="w")})
    with pytest.raises(VolumeStartError, match="the volume is 2097152 bytes but a has 1048576"):
        plan_start({"a": meta("A", 1, "A")}, size=2 * SIZE)
