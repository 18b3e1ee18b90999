"""The demo's machinery without a kernel: step runner rules, report, renderers, event stream, flags.

The flow itself (real open-iscsi, ext4, replicas) runs in tests/kernel/test_demo.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from iscsikit.cli.main import app
from iscsikit.demo.context import DemoOptions
from iscsikit.demo.flow import Done, Step, run_flow
from iscsikit.demo.procs import wait_for
from iscsikit.demo.render import EventTail, EventWriter, PlainRenderer, Tee, replay, summary
from iscsikit.demo.report import Report, StepResult
from iscsikit.demo.steps import STEPS
from iscsikit.demo.vmmode import guest_argv
from iscsikit.errors import DemoStepError, UsageError


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def note(self, message: str) -> None:
        self.events.append(("note", message))

    def step_started(self, name: str, title: str) -> None:
        self.events.append(("started", name))

    def step_progress(self, name: str, fraction: float, text: str) -> None:
        self.events.append(("progress", (name, fraction, text)))

    def step_finished(self, result: StepResult) -> None:
        self.events.append(("finished", (result.name, result.ok, result.detail)))


def ok(detail: str) -> Step[list[str]]:
    def run(ran: list[str]) -> str:
        ran.append(detail)
        return detail

    return Step(detail, detail, run)


def broken(name: str, exc: BaseException, cleanup: bool = False) -> Step[list[str]]:
    def run(ran: list[str]) -> str:
        ran.append(name)
        raise exc

    return Step(name, name, run, cleanup=cleanup)


def tidy(name: str) -> Step[list[str]]:
    step = ok(name)
    return Step(step.name, step.title, step.run, cleanup=True)


def test_a_failure_skips_the_rest_but_every_cleanup_step_runs() -> None:
    ran: list[str] = []
    steps = [ok("a"), broken("b", DemoStepError("disk on fire")), ok("c"), tidy("x"), broken("y", OSError(5, "EIO"),
             cleanup=True), tidy("z")]  # fmt: skip
    report = run_flow(steps, ran, Recorder())
    assert ran == ["a", "b", "x", "y", "z"]
    assert report.skipped == ["c"] and not report.ok
    assert [(s.name, s.ok) for s in report.steps] == [("a", True), ("b", False), ("x", True), ("y", False),
                                                      ("z", True)]  # fmt: skip
    assert report.step("b").detail == "disk on fire"  # our errors: their own words
    assert report.step("y").detail == "OSError: [Errno 5] EIO"  # others: with their type
    doc = report.to_json()
    assert doc["failed_step"] == "b" and doc["skipped"] == ["c"] and doc["ok"] is False


def test_ctrl_c_fails_the_running_step_and_the_cleanup_still_runs() -> None:
    ran: list[str] = []
    report = run_flow([ok("a"), broken("b", KeyboardInterrupt()), ok("c"), tidy("x")], ran, Recorder())
    assert ran == ["a", "b", "x"] and report.interrupted and not report.ok
    assert report.step("b").detail == "interrupted (Ctrl-C or SIGTERM)"
    assert summary(report).startswith("demo interrupted (skipped: c)")


def test_observer_sees_each_step_start_and_finish_in_order() -> None:
    seen = Recorder()
    run_flow([ok("a"), Step("b", "b", lambda _: Done("made b", {"n": 1}))], [], seen)
    assert seen.events == [("started", "a"), ("finished", ("a", True, "a")), ("started", "b"),
                           ("finished", ("b", True, "made b"))]  # fmt: skip


def test_a_run_with_no_steps_is_not_a_pass() -> None:
    assert not Report().ok


step_results = st.builds(
    StepResult,
    name=st.text(min_size=1, max_size=12),
    ok=st.booleans(),
    seconds=st.floats(0, 1e4).map(lambda x: round(x, 3)),
    detail=st.text(max_size=40),
    data=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3),
    cleanup=st.booleans(),
)


@given(st.lists(step_results, max_size=6), st.lists(st.text(max_size=8), max_size=3), st.booleans(), st.booleans())
def test_report_json_round_trips(steps: list[StepResult], skipped: list[str], interrupted: bool, vm: bool) -> None:
    report = Report(steps, skipped, interrupted, vm, "why" if vm else None, "/tmp/w", {"iqn": "iqn.x"})
    doc = json.loads(json.dumps(report.to_json()))
    back = Report.from_json(doc)
    assert back.to_json() == doc
    assert doc["ok"] == (bool(steps) and all(s.ok for s in steps) and not skipped and not interrupted)


def test_events_written_in_one_process_replay_in_order_in_another(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    tail = EventTail(path)
    assert tail.read() == []
    writer.note("hello")
    writer.step_started("rebuild", "rebuild it")
    writer.step_progress("rebuild", 0.5, "half")
    seen = Recorder()
    for event in tail.read():
        replay(event, seen)
    with open(path, "a") as f:  # a line cut short (the writer mid-write) waits for its end
        f.write('{"event": "note", "mess')
    assert tail.read() == []
    with open(path, "a") as f:
        f.write('age": "done"}\nnot json\n')
    writer.step_finished(StepResult("rebuild", True, 1.5, "rebuilt", {"copied": 3}))
    results = [r for event in tail.read() if (r := replay(event, seen)) is not None]
    writer.close()
    assert results == [StepResult("rebuild", True, 1.5, "rebuilt", {"copied": 3})]
    assert seen.events == [("note", "hello"), ("started", "rebuild"), ("progress", ("rebuild", 0.5, "half")),
                           ("note", "done"), ("finished", ("rebuild", True, "rebuilt"))]  # fmt: skip


def test_plain_renderer_prints_one_greppable_line_per_step() -> None:
    out = io.StringIO()
    seen = Recorder()
    report = run_flow([ok("mkfs"), broken("mount", DemoStepError("no /dev/sda"))], [], Tee(PlainRenderer(out), seen))
    assert out.getvalue().splitlines() == [
        "ok       0.0s  mkfs           mkfs",
        "FAIL     0.0s  mount          no /dev/sda",
    ]
    assert len(seen.events) == 4
    assert summary(report) == "demo FAILED at mount: no /dev/sda"


def test_wait_for_names_what_it_waited_for() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(DemoStepError, match=r"^gave up after 2 s: the socket does not answer$"):
        wait_for(lambda: None, 2, lambda: "the socket does not answer", clock=lambda: now[0], sleep=sleep)
    values = iter([None, False, "up"])
    assert wait_for(lambda: next(values), 2, lambda: "?", clock=lambda: now[0], sleep=sleep) == "up"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"size": 16 << 20}, "--size 16777216: the demo needs at least 32 MiB"),
        ({"size": (64 << 20) + 512}, "must be a multiple of 4096"),
        ({"replicas": 1}, "--replicas 1: choose 2 to 9"),
        ({"step_timeout": 0}, "--step-timeout and --boot-timeout must be positive"),
    ],
)
def test_options_refuse_what_cannot_work(kwargs: dict[str, int], words: str) -> None:
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        DemoOptions(**kwargs)  # type: ignore[arg-type]


def test_the_guest_runs_the_same_flow_with_the_same_settings(tmp_path: Path) -> None:
    argv = guest_argv(DemoOptions(size=128 << 20, replicas=4, step_timeout=90, keep=True), tmp_path / "ev")
    i = argv.index("demo")
    assert argv[i - 1] == "--json"
    assert argv[i + 1 :] == ["--no-vm", "--events", str(tmp_path / "ev"), "--size", str(128 << 20), "--replicas",
                             "4", "--step-timeout", "90", "--keep"]  # fmt: skip


def test_the_steps_are_the_issue_s_flow_and_cleanup_comes_last() -> None:
    names = [s.name for s in STEPS]
    assert names == ["target-up", "discover", "login", "device", "mkfs-mount", "write", "kill-replica",
                     "write-degraded", "rebuild", "verify", "unmount", "logout", "clean", "nothing-left"]  # fmt: skip
    first_cleanup = next(i for i, s in enumerate(STEPS) if s.cleanup)
    assert all(s.cleanup for s in STEPS[first_cleanup:])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--dry-run", "demo"], "--dry-run: the demo only makes sense for real"),
        (["demo", "--size", "1M"], "--size 1048576: the demo needs at least 32 MiB"),
        (["demo", "--size", "lots"], "--size"),
    ],
)
def test_cli_usage_errors_exit_2_and_say_which_flag(args: list[str], words: str) -> None:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert words in res.output
