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
