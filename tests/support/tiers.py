"""Test tiers and loud skips.

Three tiers, chosen by directory:

* ``tests/unit``: no root, no network beyond loopback sockets the test opens itself.
* ``tests/interop``: root, the real tools on the host (iscsiadm in a private mount
  namespace, tgtd, libiscsi's tools, qemu-img).
* ``tests/kernel``: scenarios run inside one virtme-ng VM with a real kernel initiator.

A test that cannot run says why through :func:`require` / :func:`require_root` /
:func:`require_module` / :func:`unavailable`, and through nothing else (a unit meta-test,
tests/unit/test_skips_only_through_tiers.py, fails on any other skip mechanism). Those
skips are collected and printed in a summary block, per tier. With ``CI=true`` a missing
tool or root is a *failure*, not a skip: ``.ci/run`` installs everything, so a skip there
means the install is broken.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_TIER_DIRS = {"unit": "unit", "interop": "interop", "kernel": "kernel"}
_loud_skips: dict[str, list[str]] = defaultdict(list)

# apt package for each tool the tiers need, for messages that say how to fix a skip.
TOOL_PACKAGES = {
    "iscsiadm": "open-iscsi",
    "iscsid": "open-iscsi",
    "tgtd": "tgt",
    "tgtadm": "tgt",
    "iscsi-ls": "libiscsi-bin",
    "iscsi-inq": "libiscsi-bin",
    "iscsi-readcapacity16": "libiscsi-bin",
    "iscsi-test-cu": "libiscsi-bin",
    "iscsi-perf": "libiscsi-bin",
    "qemu-img": "qemu-utils",
    "qemu-io": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "isnsd": "open-isns-server",
    "isnsadm": "open-isns-utils",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "multipath": "multipath-tools",
    "vng": "virtme-ng (pip, in the venv)",
}


def tier_of(path: Path) -> str:
    try:
        rel = path.resolve().relative_to(ROOT / "tests")
    except ValueError:
        return "unit"
    return _TIER_DIRS.get(rel.parts[0], "unit") if rel.parts else "unit"


def mark_tiers(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(Path(str(item.fspath)))
        if tier in ("interop", "kernel"):
            item.add_marker(getattr(pytest.mark, tier))


def _unavailable(nodeid: str, reason: str) -> None:
    tier = tier_of(ROOT / nodeid.split("::", 1)[0])
    if IN_CI:
        pytest.fail(f"CI=true and this {tier} test cannot run: {reason}. .ci/run must provide it.")
    _loud_skips[tier].append(f"{nodeid}: {reason}")
    pytest.skip(reason)


def require(request: pytest.FixtureRequest, *tools: str) -> None:
    """Skip (or, in CI, fail) the requesting test unless every tool is on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    path = f"{venv_bin}:{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    missing = [t for t in tools if shutil.which(t, path=path) is None]
    if missing:
        hints = ", ".join(f"{t} ({TOOL_PACKAGES.get(t, '?')})" for t in missing)
        _unavailable(request.node.nodeid, f"missing tools: {hints}")


def require_root(request: pytest.FixtureRequest) -> None:
    if os.geteuid() != 0:
        _unavailable(request.node.nodeid, "needs root (mount namespaces, tgtd, sysfs writes)")


def require_module(request: pytest.FixtureRequest, name: str) -> ModuleType:
    """The Python module ``name``; skip (or fail in CI) when the venv lacks it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _unavailable(request.node.nodeid, f"missing Python module {name} ({exc}; scripts/bootstrap installs it)")
        raise  # not reached: _unavailable skips or fails


def unavailable(request: pytest.FixtureRequest, reason: str) -> None:
    """Skip (or fail in CI) for any other missing precondition, loudly."""
    _unavailable(request.node.nodeid, reason)


def write_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _loud_skips:
        return
    terminalreporter.section("tiers that could not run everything", sep="=", yellow=True, bold=True)
    for tier, reasons in sorted(_loud_skips.items()):
        terminalreporter.write_line(f"{tier}: {len(reasons)} test(s) skipped")
        seen: set[str] = set()
        for reason in reasons:
            why = reason.split(": ", 1)[-1]
            if why not in seen:
                seen.add(why)
                terminalreporter.write_line(f"    - {why}")
