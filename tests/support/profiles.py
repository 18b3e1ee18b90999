"""Hypothesis profiles: the one place that decides how property tests draw their examples.

* ``ci`` (the default, also for a plain local run): derandomized, so every run draws the same
  examples and passes or fails for a reason, never by chance; no example database (nothing
  from an earlier run changes this one); no deadline (two shared cores make timings noise);
  a failure prints its reproduction blob.
* ``explore``: random, twenty times the examples, failures kept in ``.hypothesis/`` and
  replayed first next time. Use it to search: ``HYPOTHESIS_PROFILE=explore .venv/bin/pytest
  tests/unit/db/test_record_fuzz.py`` (or ``--hypothesis-profile explore``). Every failure it
  finds becomes an ``@example`` on the test, so that ``ci`` checks it from then on.

A test that needs another number of examples than the profile's default asks for
``max_examples=examples(N)``: N under ``ci``, scaled with the profile under ``explore``
(an explicit ``max_examples=N`` would override the profile and never explore further).
"""

from __future__ import annotations

import os

from hypothesis import settings

#: Hypothesis's own default example count; ``examples(N)`` scales N by the profile's count over this.
BASE_EXAMPLES = 100
EXPLORE_FACTOR = 20

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=BASE_EXAMPLES,
    deadline=None,
    print_blob=True,
)
settings.register_profile(
    "explore",
    derandomize=False,
    max_examples=BASE_EXAMPLES * EXPLORE_FACTOR,
    deadline=None,
    print_blob=True,
)

PROFILE_ENV = "HYPOTHESIS_PROFILE"


def load() -> str:
    """Load the profile named by ``$HYPOTHESIS_PROFILE`` (``ci`` when unset) and return its name.

    ``--hypothesis-profile NAME`` (Hypothesis's own pytest option) still overrides it, later."""
    name = os.environ.get(PROFILE_ENV) or "ci"
    settings.load_profile(name)
    return name


def examples(n: int, profile: settings | None = None) -> int:
    """``n`` examples under ``ci``; as many more under a profile with more (``explore``: 20 times).

    ``profile``: the loaded one unless given."""
    current = profile if profile is not None else settings.default
    return max(1, n * current.max_examples // BASE_EXAMPLES)
