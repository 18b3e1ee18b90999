"""Result files of the benchmarks: bench/results/NAME.json, one per bench script, written by its run.

Every bench script records what it measured through :class:`Result` (the one place that writes
these files), and docs/benchmarks.md's tables are rendered from them (bench/report.py, through
scripts/gen_docs.py), so that every figure there names the run behind it and can be re-run.

A file holds:

* ``command``: the exact command line that made it (``.venv/bin/python -m bench.NAME ...``);
* ``commit``: ``git describe``-style short sha of the checkout, ``+dirty`` when tracked files
  outside bench/results differed from it; ``date``: UTC, ISO 8601, when the run started;
* ``load``: the 1/5/15-minute load averages at the start and at the end of the run (the machine
  is shared: the load says what the figures were measured under);
* ``machine``: CPU model, cores, memory, kernel, Python;
* ``parameters``: the script's options; ``info``: facts of the run that are not timed (versions of
  the reference tools, record counts...);
* ``cases``: per case (one measured quantity of one subject), its ``unit`` and every timed
  ``samples`` value, and its ``median``;
* ``ratios``: NAME -> ``case`` / ``reference`` of the medians (ours against tgtd or iscsiadm in
  the same run, where the script compares side by side), with its ``value``;
* ``goals``: NAME -> a bound on a case's median or a ratio (``of``, ``op`` ``<=`` or ``>=``,
  ``value``); whether it is met is computed from the medians when the doc is rendered
  (:func:`goal_met`), never written by hand.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: Keys every result file has (tests/unit/test_bench_results.py checks them).
REQUIRED = ("name", "command", "commit", "date", "load", "machine", "parameters", "info", "cases", "ratios", "goals")
OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}


def command_line(name: str, argv: Iterable[str] | None = None) -> str:
    """The re-runnable command of bench script ``name`` with ``argv`` (default: this process's)."""
    args = list(sys.argv[1:] if argv is None else argv)
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(ROOT))
    except ValueError:
        shown = str(python)
    return shlex.join([shown, "-m", f"bench.{name}", *args])


def commit() -> str:
    """Short sha of HEAD, ``+dirty`` when tracked files differ from it (bench/results aside)."""

    def git(*args: str) -> str:
        res = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return res.stdout.strip() if res.returncode == 0 else ""

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    return sha + ("+dirty" if dirty else "")


def machine() -> dict[str, object]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_mib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mib = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "memory_mib": memory_mib,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Result:
    """What one run of a bench script measured; :meth:`write` makes bench/results/NAME.json.

    Created at the start of the run (it notes the date and the load then)::

        result = Result("startup", vars(args))
        result.add("iscsikit --version", samples, "s")
        result.ratio("version vs python", "iscsikit --version", "python -c pass")
        result.goal("start-up", "iscsikit --version", "<", 0.150)
        result.write()
    """

    def __init__(self, name: str, parameters: Mapping[str, object], argv: Iterable[str] | None = None) -> None:
        self.name = name
        self.data: dict[str, Any] = {
            "name": name,
            "command": command_line(name, argv),
            "commit": commit(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "load": {"start": _load(), "end": None},
            "machine": machine(),
            "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in parameters.items()},
            "info": {},
            "cases": {},
            "ratios": {},
            "goals": {},
        }

    def info(self, **facts: object) -> None:
        self.data["info"].update(facts)

    def add(self, case: str, samples: Iterable[float], unit: str) -> float:
        """Record every sample of ``case``; returns their median."""
        values = [float(s) for s in samples]
        if not values:
            raise ValueError(f"{self.name}: no samples for {case!r}")
        med = statistics.median(values)
        self.data["cases"][case] = {"unit": unit, "samples": values, "median": med}
        return med

    def median(self, case: str) -> float:
        return float(self.data["cases"][case]["median"])

    def ratio(self, name: str, case: str, reference: str) -> float:
        """``case`` / ``reference`` of the medians (both already added)."""
        value = self.median(case) / self.median(reference)
        self.data["ratios"][name] = {"case": case, "reference": reference, "value": value}
        return value

    def goal(self, name: str, of: str, op: str, value: float) -> None:
        """A goal on the median of case ``of`` or on ratio ``of``: ``median op value``."""
        if op not in OPS:
            raise ValueError(f"{self.name}: goal {name!r}: op must be one of {', '.join(OPS)}")
        if of not in self.data["cases"] and of not in self.data["ratios"]:
            raise ValueError(f"{self.name}: goal {name!r}: no case or ratio {of!r}")
        self.data["goals"][name] = {"of": of, "op": op, "value": value}

    def write(self, directory: Path = RESULTS) -> Path:
        self.data["load"]["end"] = _load()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        path.write_text(json.dumps(self.data, indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", file=sys.stderr)
        return path


def load(name: str, directory: Path = RESULTS) -> dict[str, Any] | None:
    path = directory / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def measured(data: Mapping[str, Any], of: str) -> float:
    """The median of case ``of``, or the value of ratio ``of``."""
    if of in data["ratios"]:
        return float(data["ratios"][of]["value"])
    return float(data["cases"][of]["median"])


def goal_met(data: Mapping[str, Any], name: str) -> bool:
    goal = data["goals"][name]
    value = measured(data, goal["of"])
    return bool(OPS[goal["op"]](value, goal["value"])) and not math.isnan(value)


def problems(data: Mapping[str, Any], name: str) -> list[str]:
    """What is wrong with the result file ``name`` (empty when its shape is right).

    Every required key; the command re-runs this script; a commit, a UTC date, two load triples;
    every case with a unit and samples whose median is the recorded one; every ratio of two
    recorded cases with its value; every goal on a case or ratio with a known operator.
    """
    out = [f"missing key {k!r}" for k in REQUIRED if k not in data]
    if out:
        return out
    if data["name"] != name:
        out.append(f"name {data['name']!r} is not the file's {name!r}")
    argv = shlex.split(data["command"])
    if argv[1:3] != ["-m", f"bench.{name}"]:
        out.append(f"command {data['command']!r} does not run bench.{name}")
    if not re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", data["commit"]):
        out.append(f"commit {data['commit']!r} is not a short sha")
    try:
        when = datetime.datetime.fromisoformat(data["date"].replace("Z", "+00:00"))
        if when.utcoffset() != datetime.timedelta(0):
            out.append(f"date {data['date']!r} is not UTC")
    except ValueError:
        out.append(f"date {data['date']!r} is not ISO 8601")
    for moment in ("start", "end"):
        triple = data["load"].get(moment)
        if not (isinstance(triple, list) and len(triple) == 3 and all(isinstance(x, int | float) for x in triple)):
            out.append(f"load at the {moment} is not a 1/5/15-minute triple: {triple!r}")
    for key in ("cpu", "cores", "memory_mib", "kernel", "python"):
        if key not in data["machine"]:
            out.append(f"machine lacks {key!r}")
    if not data["cases"]:
        out.append("no cases")
    for case, c in data["cases"].items():
        samples = c.get("samples")
        if not isinstance(c.get("unit"), str) or not samples or not all(isinstance(s, int | float) for s in samples):
            out.append(f"case {case!r}: needs a unit and a non-empty list of numbers as samples")
            continue
        if not math.isclose(c.get("median", math.nan), statistics.median(samples), rel_tol=1e-9):
            out.append(f"case {case!r}: median {c.get('median')!r} is not the median of its samples")
    for ratio, r in data["ratios"].items():
        if r.get("case") not in data["cases"] or r.get("reference") not in data["cases"]:
            out.append(f"ratio {ratio!r}: {r.get('case')!r} / {r.get('reference')!r} are not both cases")
            continue
        value = data["cases"][r["case"]]["median"] / data["cases"][r["reference"]]["median"]
        if not math.isclose(r.get("value", math.nan), value, rel_tol=1e-9):
            out.append(f"ratio {ratio!r}: value {r.get('value')!r} is not {value!r}, the ratio of the medians")
    for goal, g in data["goals"].items():
        if g.get("of") not in data["cases"] and g.get("of") not in data["ratios"]:
            out.append(f"goal {goal!r}: {g.get('of')!r} is neither a case nor a ratio")
        if g.get("op") not in OPS or not isinstance(g.get("value"), int | float):
            out.append(f"goal {goal!r}: needs an op ({', '.join(OPS)}) and a number")
        if "met" in g:
            out.append(f"goal {goal!r}: 'met' is computed from the medians, not recorded")
    return out
