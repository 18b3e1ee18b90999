"""Mutation testing of the safety-critical modules with mutmut, and its report (scripts/mutation)."""

from __future__ import annotations

from collections.abc import Callable

# NAME -> renderer of the markdown between <!-- generated: NAME --> markers (scripts/gen_docs.py).
DOC_SECTIONS: dict[str, Callable[[], str]] = {"mutation": lambda: "No report yet."}
