"""Run fuzz harnesses with libFuzzer (atheris): ``scripts/fuzz [NAME...] [--seconds N]``.

Each harness runs in its own process (libFuzzer exits the process on a crash), one after the
other, over its committed seeds (fuzz/corpus/NAME, read only) and its growing corpus
(fuzz/work/NAME, where new coverage is saved, kept between runs). A crashing input goes to
fuzz/crashes/NAME-crash-<sha1>; the exception and how to replay it are printed.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fuzz._common import CORPUS, CRASHES, DICTS, HARNESSES, ROOT, WORK

REPO = ROOT.parent
_STATS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+(?: lim: \d+)? exec/s: (\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Result:
    """What one run of a harness did."""

    name: str
    returncode: int
    runs: int = 0
    coverage: int = 0
    features: int = 0
    corpus: int = 0
    exec_per_s: int = 0
    crash: Path | None = None
    log: str = field(default="", repr=False)
    error: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.crash is None

    def summary(self) -> str:
        head = f"{self.name}: {self.runs} runs, cov {self.coverage}, ft {self.features}, corpus {self.corpus}"
        if self.ok:
            return head + f", ~{self.exec_per_s} exec/s"
        return head + f"\n  FAILED (exit {self.returncode})\n" + self.reproducer()

    def reproducer(self) -> str:
        lines = [*self.error]
        if self.crash is not None and self.crash.exists():
            data = self.crash.read_bytes()
            lines += [
                f"  input: {self.crash} ({len(data)} bytes)",
                f"  base64: {base64.b64encode(data[:4096]).decode()}" + (" ..." if len(data) > 4096 else ""),
                f"  replay: .venv/bin/python -m fuzz.fuzz_{self.name} {self.crash}",
                f"  then keep it: cp {self.crash} fuzz/regressions/{self.name}/<what-it-breaks>",
            ]
        elif not self.error:
            lines += self.log.splitlines()[-30:]
        return "\n".join(lines)


def _parse(name: str, returncode: int, log: str) -> Result:
    result = Result(name, returncode, log=log)
    for m in _STATS.finditer(log):
        result.runs, result.coverage, result.features, result.corpus = (int(g) for g in m.groups()[:4])
        result.exec_per_s = int(m.group(5)) or result.exec_per_s
    done = re.search(r"Done (\d+) runs in (\d+) second", log)
    if done:
        result.runs = int(done.group(1))
        result.exec_per_s = int(done.group(1)) // max(1, int(done.group(2)))
    artifact = _ARTIFACT.search(log)
    if artifact:
        path = Path(artifact.group(1))
        result.crash = path if path.is_absolute() else REPO / path
    if "Uncaught Python exception" in log:
        section = log.split("=== Uncaught Python exception: ===", 1)[1]
        result.error = ["  " + line for line in section.split("\n\n", 1)[0].strip().splitlines()[-12:]]
    return result


def run_harness(
    name: str,
    *,
    seconds: int | None = None,
    runs: int | None = None,
    seed: int | None = None,
    work: Path | None = None,
    crashes: Path = CRASHES,
    extra: tuple[str, ...] = (),
) -> Result:
    """Run ``fuzz/fuzz_NAME.py`` under libFuzzer in a child process; return what it did."""
    if name not in HARNESSES:
        raise ValueError(f"no harness {name!r}; the harnesses are {', '.join(HARNESSES)}")
    work = work if work is not None else WORK / name
    work.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", f"fuzz.fuzz_{name}", f"-artifact_prefix={crashes}/{name}-"]
    argv += ["-rss_limit_mb=2048", "-timeout=30", "-print_final_stats=1"]
    if seconds is not None:
        argv.append(f"-max_total_time={seconds}")
    if runs is not None:
        argv.append(f"-runs={runs}")
    if seed is not None:
        argv.append(f"-seed={seed}")
    if name in DICTS:
        argv.append(f"-dict={DICTS[name]}")
    argv += [*extra, str(work), str(CORPUS / name)]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.run(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        log.seek(0)
        text = log.read()
    return _parse(name, proc.returncode, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"harnesses to run (default: all of {', '.join(HARNESSES)})"
    )
    parser.add_argument("--seconds", type=int, default=60, help="how long each harness runs (default 60)")
    parser.add_argument("--runs", type=int, default=None, help="stop each harness after this many inputs")
    parser.add_argument("--seed", type=int, default=None, help="libFuzzer's random seed (default: random)")
    parser.epilog = "Flags after -- go to libFuzzer (e.g. -- -max_len=8192 -jobs=1)."
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: tuple[str, ...] = ()
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], tuple(argv[at + 1 :])
    args = parser.parse_args(argv)
    names = args.names or list(HARNESSES)
    unknown = [n for n in names if n not in HARNESSES]
    if unknown:
        parser.error(f"no harness {', '.join(unknown)}; the harnesses are {', '.join(HARNESSES)}")
    failed = 0
    for name in names:
        print(f"fuzz: {name} for {args.seconds} s ...", flush=True)
        result = run_harness(name, seconds=args.seconds, runs=args.runs, seed=args.seed, extra=extra)
        print(result.summary(), flush=True)
        failed += not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
