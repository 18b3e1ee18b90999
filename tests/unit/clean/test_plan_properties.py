"""Safety invariants of the planner over random hosts (hypothesis): whatever the host and flags,
nothing in use is removed, nothing kept is touched, and the order is safe."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iscsikit.clean.model import DeviceView, SessionView, Survey, Usage
from iscsikit.clean.plan import Kind, Selection, plan
from iscsikit.db.layout import NodeRef
from iscsikit.names import Portal
from tests.support.profiles import examples

TARGETS = [f"iqn.2026-11.org.example:{n}" for n in ("a", "b", "c", "db-1", "db-2")]
ADDRESSES = ["10.0.0.1", "10.0.0.2"]


@st.composite
def hosts(draw: st.DrawFn) -> Survey:
    survey = Survey(db_root="/etc/iscsi")
    sid = 0
    for target in TARGETS:
        for address in ADDRESSES:
            if draw(st.booleans()):
                survey.nodes.append(NodeRef(target, address, 3260, 1, draw(st.sampled_from(["default", "eth1"]))))
            if draw(st.booleans()):
                sid += 1
                failing = draw(st.booleans())
                survey.sessions.append(
                    SessionView(
                        sid, target, address, 3260, 1, draw(st.sampled_from(["default", "eth1"])),
                        "FAILED" if failing else "LOGGED_IN", "failed" if failing else "up", 120, sid + 1,
                        failed_for=draw(st.sampled_from([0.0, 30.0, 900.0])) if failing else None,
                    )
                )  # fmt: skip
                for lun in range(draw(st.integers(0, 2))):
                    users = draw(st.lists(st.sampled_from([Usage("mount", "/mnt"), Usage("open", "pid 9 (x)")]),
                                          max_size=1))  # fmt: skip
                    state = draw(st.sampled_from(["running", "blocked", "offline"]))
                    name, devnum = f"sd{sid}{lun}", f"8:{sid * 16 + lun}"
                    hctl = f"{sid + 1}:0:0:{lun}"
                    view = DeviceView(hctl, sid, lun, name, devnum, state, 0, "/sys/x", users=tuple(users))
                    survey.devices.append(view)
    return survey


selections = st.builds(
    Selection,
    targets=st.sampled_from([(), ("iqn.2026-11.org.example:db-*",), ("iqn.2026-11.org.example:a",)]),
    portals=st.sampled_from([(), (Portal("10.0.0.1"),)]),
    stale_only=st.booleans(),
    older_than=st.sampled_from([0.0, 60.0]),
    keep=st.sampled_from([(), ("iqn.2026-11.org.example:b",)]),
    reset=st.booleans(),
    force=st.booleans(),
)


@settings(max_examples=examples(300), deadline=None)
@given(survey=hosts(), sel=selections)
def test_planner_safety_invariants(survey: Survey, sel: Selection) -> None:
    p = plan(survey, sel)
    assert [a.order for a in p.actions] == list(range(1, len(p.actions) + 1))
    assert [a.phase for a in p.actions] == sorted(a.phase for a in p.actions)
    runnable = p.runnable
    busy = {d.hctl for d in survey.devices if d.users}
    by_sid = {s.sid: s for s in survey.sessions}
    logged_out = {a.sid for a in runnable if a.kind is Kind.LOGOUT}
    for a in p.actions:
        assert a.target is None or a.target not in sel.keep, "a --keep target was touched"
    for a in runnable:
        if a.kind is Kind.REMOVE_DEVICE and not sel.force:
            assert a.subject.hctl not in busy, f"{a.device} is in use but its removal runs"
        if a.kind is Kind.LOGOUT and not sel.force:
            assert not [d for d in survey.devices if d.sid == a.sid and d.users], "a session with a busy disk"
        if a.kind is Kind.LOGOUT and sel.stale_only:
            s = by_sid[a.sid]
            assert s.failing and (s.failed_for or 0) >= sel.older_than
        if a.kind is Kind.DELETE_NODE:
            ref: NodeRef = a.subject
            for s in survey.sessions:
                on_it = s.target == ref.target and s.address == ref.address and s.iface == ref.iface
                assert not on_it or s.sid in logged_out, f"record {ref} of session {s.sid}, which stays"
