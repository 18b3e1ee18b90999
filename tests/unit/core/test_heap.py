"""keep_large_buffers: a server that allocates and frees megabyte buffers stops faulting them in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import tiers

PROGRAM = """
import resource, sys
from iscsikit.heap import keep_large_buffers
if sys.argv[1] == "tuned":
    assert keep_large_buffers()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # like a server with eight 1 MiB requests in flight, then idle
    bufs = [b"x" * (1 << 20) for _ in range(8)]  # touches all 256 pages of each
    del bufs
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_freed_megabyte_buffers_stay_in_the_heap(request: pytest.FixtureRequest) -> None:
    if not sys.platform.startswith("linux"):
        tiers.unavailable(request, "needs glibc's mallopt (Linux)")
    untuned, tuned = faults("default"), faults("tuned")
    # 50 rounds of 8 x 256 pages: glibc's defaults give the freed top of the heap back each round
    # (~100,000 faults); tuned, only the first round faults its pages in.
    assert tuned < 10_000, f"{tuned} page faults for 50 rounds of reused 1 MiB buffers"
    assert untuned > 5 * tuned, f"untuned {untuned} vs tuned {tuned}: the test would not notice a regression"


ATTACK = """
import ctypes, sys
from concurrent.futures import ThreadPoolExecutor
from iscsikit.heap import keep_large_buffers

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / (1 << 20)

if sys.argv[1] == "tuned":
    assert keep_large_buffers()
else:  # the uncapped tuning this module once had: 32 MiB from the heap, 256 MiB kept at its top
    mallopt = ctypes.CDLL(None).mallopt
    assert mallopt(-3, 32 << 20) and mallopt(-1, 256 << 20)
pool = ThreadPoolExecutor(4)  # the server's I/O threads read answers into fresh buffers
base = rss_mib()
worst = 0.0
kept = []  # small objects that outlive each burst (a log record, a connection's state)
# What a hostile peer makes a server allocate: 16 MiB answers, then bursts of 4 MiB ones, 64 MiB
# and more at once, in the I/O threads and on the event loop; each burst is freed afterwards.
for size, count in ((16 << 20, 4), (16 << 20, 8), (4 << 20, 24), (4 << 20, 16)):
    bufs = list(pool.map(lambda _: b"x" * size, range(count))) + [b"y" * size for _ in range(count // 4)]
    if size > 4 << 20:  # a few stay: between the burst's buffers in the heap, if they came from it
        kept += [bytes(4096) for _ in range(64)]
    del bufs
    worst = max(worst, rss_mib() - base)
print(worst)
"""


def kept_after_bursts(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", ATTACK, mode], capture_output=True, text=True, check=True)
    return float(out.stdout)


def test_attack_sized_buffers_go_back_to_the_kernel_once_freed(request: pytest.FixtureRequest) -> None:
    if not sys.platform.startswith("linux"):
        tiers.unavailable(request, "needs glibc's mallopt (Linux)")
    tuned, uncapped = kept_after_bursts("tuned"), kept_after_bursts("uncapped")
    # Each burst holds 80-160 MiB while it lasts; once freed, the tuned heap keeps at most its trim
    # threshold of it (16 MiB buffers are mapped and unmapped; one arena, whose top is trimmed
    # whenever more than 32 MiB there is free), the uncapped one all of it.
    assert tuned < 40, f"{tuned:.0f} MiB above the baseline stayed after the bursts"
    assert uncapped > 48, f"uncapped tuning kept only {uncapped:.0f} MiB: the test would not notice a regression"
