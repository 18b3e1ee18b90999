"""Benchmark result files (bench/results/NAME.json) and the docs/benchmarks.md sections made from them.

Each bench script's section (``<!-- generated: bench.NAME -->``) names the run behind it (command,
commit, date, load, machine) and lists every case's median with the spread of its samples, the
ratios against the reference measured in the same run, and each goal with whether the median
meets it: computed here from the file, never written by hand. ``bench.summary`` gathers every
goal of every file; ``bench.commands`` lists the command of each script (bench/run_all.py).
Rendered by scripts/gen_docs.py; its ``--check`` fails when the document and the files differ.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.results import RESULTS, goal_met, load, measured
from bench.run_all import SCRIPTS

#: What each script measures, for the summary and the section headings' readers.
TITLES: dict[str, str] = {
    "startup": "CLI start-up",
    "scsi_layer": "SCSI layer alone",
    "file_backend": "file backend, inline vs thread pool",
    "target_core": "target path in-process, CPU per command",
    "db_listing": "node list / show, 10,000 records, vs iscsiadm",
    "db_delete": "node delete by pattern vs an iscsiadm loop",
    "clean_records": "clean of 10,000 stale records vs an iscsiadm loop",
    "target_perf": "built-in target vs tgtd",
    "replica_write": "replicated writes, 3 replicas vs 1",
    "replica_cpu": "replicated writes, CPU per MiB",
    "replica_failover": "longest write around a replica fault",
    "replica_rebuild": "rebuild vs cp",
    "device_wait": "device found after login (VM)",
    "session_list": "session list, 32 sessions, vs iscsiadm (VM)",
    "vm_boot": "the kernel tier's VM",
}


def number(value: float) -> str:
    """A figure with as many digits as it deserves (3 significant ones, thousands separated)."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    if a == 0:
        return "0"
    digits = 2 - math.floor(math.log10(a))
    return f"{value:.{digits}f}"


def _unit(unit: str) -> str:
    return "" if not unit else f" {unit}"


def run_line(data: Mapping[str, Any]) -> str:
    m = data["machine"]
    start, end = (" / ".join(f"{x:.2f}" for x in data["load"][k]) for k in ("start", "end"))
    return (
        f"Run: `{data['command']}`, commit `{data['commit']}`, {data['date'].replace('T', ' ').replace('Z', ' UTC')}; "
        f"load average (1 / 5 / 15 min) {start} at the start, {end} at the end; "
        f"{m['cpu']}, {m['cores']} cores, {m['memory_mib'] / 1024:.0f} GiB, Linux {m['kernel']}, Python {m['python']}."
    )


def goal_text(data: Mapping[str, Any], name: str) -> str:
    goal = data["goals"][name]
    of = goal["of"]
    unit = "" if of in data["ratios"] else _unit(data["cases"][of]["unit"])
    return f"{goal['op']} {goal['value']:g}{unit}"


def met(data: Mapping[str, Any], name: str) -> str:
    return "yes" if goal_met(data, name) else "**no**"


def _goals_of(data: Mapping[str, Any], of: str) -> list[str]:
    return [name for name, g in data["goals"].items() if g["of"] == of]


def cases_table(data: Mapping[str, Any]) -> list[str]:
    with_goals = any(g["of"] in data["cases"] for g in data["goals"].values())
    head = "| case | median | range of the samples | samples |" + (" goal | met |" if with_goals else "")
    out = [head, "|---|---|---|---|" + ("---|---|" if with_goals else "")]
    for case, c in data["cases"].items():
        unit = _unit(c["unit"])
        spread = f"{number(min(c['samples']))} - {number(max(c['samples']))}" if len(c["samples"]) > 1 else ""
        row = f"| {case} | {number(c['median'])}{unit} | {spread} | {len(c['samples'])} |"
        if with_goals:
            names = _goals_of(data, case)
            row += f" {'; '.join(goal_text(data, n) for n in names)} | {'; '.join(met(data, n) for n in names)} |"
        out.append(row)
    return out


def ratios_table(data: Mapping[str, Any]) -> list[str]:
    if not data["ratios"]:
        return []
    out = ["| ratio | of the medians | value | goal | met |", "|---|---|---|---|---|"]
    for name, r in data["ratios"].items():
        names = _goals_of(data, name)
        goals = "; ".join(goal_text(data, n) for n in names)
        out.append(
            f"| {name} | {r['case']} / {r['reference']} | {number(r['value'])} | {goals} | "
            f"{'; '.join(met(data, n) for n in names)} |"
        )
    return out


def _fact(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fact(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(_fact(v) for v in value)
    if isinstance(value, float):
        return number(value)
    return f"`{value}`" if isinstance(value, str) and " URL" in value else str(value)


def rerun(name: str) -> str:
    """The command that makes ``name``'s committed result file (bench/run_all.py's parameters)."""
    return shlex.join([".venv/bin/python", "-m", f"bench.{name}", *SCRIPTS[name]])


def missing(name: str) -> str:
    return f"No result file yet: run `{rerun(name)}`."


def section(name: str, directory: Path = RESULTS) -> str:
    data = load(name, directory)
    if data is None:
        return missing(name)
    parts = [run_line(data), "", *cases_table(data)]
    ratios = ratios_table(data)
    if ratios:
        parts += ["", *ratios]
    if data["info"]:
        parts += ["", "Also recorded: " + "; ".join(f"{k}: {_fact(v)}" for k, v in data["info"].items()) + "."]
    return "\n".join(parts)


def summary(directory: Path = RESULTS) -> str:
    out = ["| what | goal | measured | met | run |", "|---|---|---|---|---|"]
    for name in SCRIPTS:
        data = load(name, directory)
        if data is None:
            out.append(f"| {TITLES[name]} | | no result file | | |")
            continue
        for goal in data["goals"]:
            of = data["goals"][goal]["of"]
            value = measured(data, of)
            what = f"{of}, ratio" if of in data["ratios"] else of
            unit = "" if of in data["ratios"] else _unit(data["cases"][of]["unit"])
            load1 = data["load"]["start"][0]
            out.append(
                f"| {TITLES[name]}: {what} | {goal_text(data, goal)} | {number(value)}{unit} | {met(data, goal)} "
                f"| `{name}`, {data['date'][:10]}, load {load1:.1f} |"
            )
    return "\n".join(out)


def commands() -> str:
    out = ["| script | command (as run for the committed result file) |", "|---|---|"]
    for name in SCRIPTS:
        out.append(f"| {TITLES[name]} | `{rerun(name)}` |")
    return "\n".join(out)


def _section(name: str) -> Callable[[], str]:
    return lambda: section(name)


# NAME -> renderer of the markdown between <!-- generated: NAME --> markers (scripts/gen_docs.py).
DOC_SECTIONS: dict[str, Callable[[], str]] = {
    "bench.summary": summary,
    "bench.commands": commands,
    **{f"bench.{name}": _section(name) for name in SCRIPTS},
}
