"""Branch coverage of the unit and interop tiers per module, and the docs/testing.md section made from it."""

from __future__ import annotations

from collections.abc import Callable

# NAME -> renderer of the markdown between <!-- generated: NAME --> markers (scripts/gen_docs.py).
DOC_SECTIONS: dict[str, Callable[[], str]] = {"coverage": lambda: "No report yet."}
