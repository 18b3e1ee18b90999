"""Benchmark result files (bench/results/NAME.json) and the docs/benchmarks.md sections made from them."""

from __future__ import annotations

from collections.abc import Callable

# NAME -> renderer of the markdown between <!-- generated: NAME --> markers (scripts/gen_docs.py).
DOC_SECTIONS: dict[str, Callable[[], str]] = {}
