"""A pytest plugin loaded only under mutmut (pyproject's [tool.mutmut] pytest_add_cli_args).

mutmut names the active mutant in the environment variable MUTANT_UNDER_TEST, which child
processes inherit. A test that runs the CLI in a child process (the docs' shell examples, the
bad-input matrix) would then load mutmut's trampolines outside the mutants/ tree, where mutmut
cannot find its configuration, and fail for that reason alone. Moving the name into mutmut's
process-local copy keeps the mutant active in the test process and leaves children unmutated:
those tests neither kill nor spare a mutant by accident.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    name = os.environ.pop("MUTANT_UNDER_TEST", None)
    if name is None:
        return
    from mutmut.mutation import trampoline

    trampoline._mutant_under_test = name
