"""What every harness shares: where corpora live, the memory-bound check, and the atheris entry point.

A harness module ``fuzz/fuzz_NAME.py`` defines ``check(data: bytes) -> None``, which raises
(an ``AssertionError`` or an exception the code under test must not let escape) when an invariant
breaks, and calls :func:`fuzz_main` under ``if __name__ == "__main__"``. The same ``check`` replays
the regression inputs in ``tests/unit/test_fuzz_regressions.py``, so a crash found by libFuzzer and a
crash replayed by pytest go through one function.
"""

from __future__ import annotations

import os
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent
#: Seed inputs, made from real valid inputs by ``fuzz/make_corpus.py`` (committed).
CORPUS = ROOT / "corpus"
#: Inputs that once broke an invariant; each is replayed by the unit tests (committed).
REGRESSIONS = ROOT / "regressions"
_OUT = Path(os.environ.get("ISCSIKIT_FUZZ_OUT", str(ROOT)))
#: Where ``scripts/fuzz`` has libFuzzer write crashing inputs (not committed).
CRASHES = _OUT / "crashes"
#: libFuzzer's growing corpus of inputs that found new coverage (not committed).
WORK = _OUT / "work"

#: Every harness, by name: ``fuzz/fuzz_NAME.py``.
HARNESSES = ("pdu", "login", "replica_frames", "replica_auth", "db_record", "restore_member")


#: libFuzzer dictionaries (tokens the mutator splices in), by harness.
DICTS = {"pdu": ROOT / "dict" / "iscsi_text.dict", "login": ROOT / "dict" / "iscsi_text.dict"}


class MemoryBoundExceeded(AssertionError):
    """One input made the code under test allocate more than its declared limit allows."""


@contextmanager
def allocation_limit(limit: int, what: str) -> Iterator[None]:
    """Fail when the Python heap grows by more than ``limit`` bytes (peak) inside the block.

    tracemalloc sees every allocation made through Python's allocators (bytes, bytearray, lists),
    so a length field that makes a decoder reserve a large buffer is caught whether or not the
    pages are ever touched (RSS would miss an untouched ``bytearray(n)``).
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        yield
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        if started:
            tracemalloc.stop()
    if peak > limit:
        raise MemoryBoundExceeded(f"{what}: allocated {peak} bytes at peak, the limit is {limit}")


def instrument(*packages: str) -> AbstractContextManager[object]:
    """``atheris.instrument_imports`` over ``packages`` in a fuzzing process (``python -m fuzz.fuzz_NAME``).

    Anywhere else (the unit tests replaying regressions, ``fuzz.make_corpus``) nothing is
    instrumented: an instrumented module stays so for the whole process, and would slow down
    every other test that uses it.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith("fuzz.fuzz_"):
        import atheris  # type: ignore[import-untyped]

        return atheris.instrument_imports(include=list(packages))  # type: ignore[no-any-return]
    return nullcontext()


def fuzz_main(test_one_input: Callable[[bytes], None]) -> None:
    """libFuzzer's main loop over ``test_one_input`` (argv: libFuzzer flags and corpus directories)."""
    import atheris

    tracemalloc.start()  # kept on: allocation_limit() then costs two calls per input
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
