"""docs/go-iscsi-helper.md cannot rot: its API map covers go-iscsi-helper, its iscsikit names exist, its examples run.

* Every exported go-iscsi-helper symbol in the research notes (../shared/reference/go-iscsi-helper.md,
  parsed here, not copied) has a row in the doc's API map, under its package; and every Go symbol
  the doc names is one the notes list (no invented Go API).
* Every ``iscsikit.…`` name in the library column imports; every ``iscsikit …`` command in the CLI
  column exists, with each flag it names in its ``--help``.
* Relative links and their anchors resolve.
* The ``python`` porting examples run: here on a simulated host (tests/unit/connector/fakehost.py)
  or with a dry-run Runner; the ones that need real tools (tgtd, iscsiadm discovery) in
  tests/interop/test_go_iscsi_helper_doc.py. Together they run every block of the doc.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import iscsikit.connector
from iscsikit.cli.main import COMMANDS, app
from iscsikit.connector import Connector
from iscsikit.iscsiadm import Iscsiadm
from iscsikit.names import Portal
from tests.support import tiers
from tests.support.tiers import ROOT
from tests.unit.connector.fakehost import FakeHost, FakeTarget, connector_on

DOC = ROOT / "docs" / "go-iscsi-helper.md"
SHARED = Path(os.environ.get("ISCSIKIT_SHARED", str(ROOT.parent / "shared")))
REFERENCE = SHARED / "reference" / "go-iscsi-helper.md"

IQN = "iqn.2019-10.io.longhorn:vol1"

# --------------------------------------------------------------------------------------
# Reading Markdown


def _sections(text: str, level: str) -> Iterator[tuple[str, str]]:
    """(heading, body) for each heading of exactly ``level`` ('##', '###')."""
    parts = re.split(rf"^{level} (.*)$", text, flags=re.M)
    for i in range(1, len(parts), 2):
        yield parts[i].strip(), parts[i + 1]


def _cells(line: str) -> list[str]:
    """Cells of a Markdown table row (``\\|`` inside a cell is not a separator)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _table_rows(body: str) -> list[list[str]]:
    rows = [_cells(ln) for ln in body.splitlines() if ln.lstrip().startswith("|")]
    return [r for r in rows if r and not set(r[0]) <= set("-: ")]


def _ticks(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# --------------------------------------------------------------------------------------
# The reference: which Go symbols exist


@dataclass(frozen=True)
class GoSymbol:
    package: str
    receiver: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.package}.{self.receiver + '.' if self.receiver else ''}{self.name}"


_DECL = re.compile(r"^(?:\(\*(\w+)\)\s+)?(?:const\s+)?([A-Z]\w*)")


def _decl(token: str, package: str) -> GoSymbol | None:
    m = _DECL.match(token)
    return GoSymbol(package, m.group(1), m.group(2)) if m else None


@cache
def reference_symbols() -> frozenset[GoSymbol]:
    """Exported symbols the notes list: section 2 (go-iscsi-helper's packages), plus the
    go-common-libs calls (section 1 and ``lhns.``/``lhexec.``/``lhtypes.`` anywhere), the pre-2023
    ``util`` API (section 1.5) and longhorn-engine's frontend (section 4)."""
    text = REFERENCE.read_text()
    out: set[GoSymbol] = set()
    chapters = dict(_sections(text, "##"))
    inventory = next(body for head, body in chapters.items() if head.startswith("2."))
    for head, body in _sections(inventory, "###"):
        m = re.search(r"`package (\w+)`", head)
        if m is None:
            continue
        pkg = m.group(1)
        for row in _table_rows(body):
            out.update(s for t in _ticks(row[0]) if (s := _decl(t, pkg)))
        for line in body.splitlines():
            if line.startswith("- `") or re.match(r"(Package variables and constants|Constants):", line):
                out.update(s for t in _ticks(line) if (s := _decl(t, pkg)))
    execution = next(body for head, body in chapters.items() if head.startswith("1."))
    for head, body in _sections(execution, "###"):
        for token in _ticks(body):
            if head.startswith("1.5"):
                m = re.match(r"^(?:(?:util|ne)\.)?([A-Z]\w*)", token)
                if m:
                    out.add(GoSymbol("util", None, m.group(1)))
            elif m := re.match(r"^([A-Z]\w*)\(", token):
                out.add(GoSymbol("lhns", None, m.group(1)))
    for m in re.finditer(r"\b(lhns|lhexec|lhtypes)\.([A-Z]\w*)", text):
        out.add(GoSymbol(m.group(1), None, m.group(2)))
    flow = next(body for head, body in chapters.items() if head.startswith("4."))
    for token in _ticks(flow):
        if m := re.match(r"^(tgt|Tgt|Controller)\.([A-Z]\w*)", token):
            out.add(GoSymbol("longhorn-engine", None if m.group(1) == "tgt" else m.group(1), m.group(2)))
    return frozenset(out)


# --------------------------------------------------------------------------------------
# The doc's API map


@dataclass(frozen=True)
class Row:
    packages: frozenset[str]
    symbols: tuple[tuple[str, ...], ...]  # "Device.StartInitator" -> ("Device", "StartInitator")
    library: str
    cli: str
    line: str


@cache
def doc_rows() -> tuple[Row, ...]:
    chapters = dict(_sections(DOC.read_text(), "##"))
    rows: list[Row] = []
    for head, body in _sections(chapters["API map"], "###"):
        packages = frozenset(t for t in _ticks(head) if re.fullmatch(r"[\w-]+", t))
        assert packages, f"API map heading {head!r} names no package in backticks"
        for cells in _table_rows(body)[1:]:  # [0] is the header
            assert len(cells) == 5, f"{head}: a row needs 5 cells, got {len(cells)}: {cells}"
            symbols = tuple(tuple(t.removesuffix("()").split(".")) for t in _ticks(cells[0]))
            assert symbols, f"{head}: row without a Go symbol: {cells}"
            rows.append(Row(packages, symbols, cells[2], cells[3], " | ".join(cells)))
    return tuple(rows)


def test_every_reference_symbol_is_in_the_doc(request: pytest.FixtureRequest) -> None:
    if not REFERENCE.is_file():
        tiers.unavailable(request, f"the go-iscsi-helper research notes are not at {REFERENCE}")
    ref = reference_symbols()
    # The parser must see the whole inventory, or this test could pass by reading nothing.
    for expected in (
        GoSymbol("iscsi", None, "LoginTarget"),
        GoSymbol("iscsi", None, "FindNextAvailableTargetID"),
        GoSymbol("iscsidev", "Device", "StartInitator"),
        GoSymbol("iscsidev", None, "LogoutTarget"),
        GoSymbol("longhorndev", "LonghornDeviceCreator", "NewDevice"),
        GoSymbol("longhorndev", None, "GetEndpoint"),
        GoSymbol("types", None, "TgtadmPreventRemoval"),
        GoSymbol("util", None, "ISCSIdProcess"),
        GoSymbol("util", None, "ExecuteWithStdin"),
        GoSymbol("lhns", None, "NewLock"),
        GoSymbol("lhns", None, "Unlock"),
        GoSymbol("longhorn-engine", "Tgt", "Upgrade"),
    ):
        assert expected in ref
    assert len(ref) > 120
    rows = doc_rows()
    missing = [
        str(s)
        for s in sorted(ref, key=str)
        if not any(
            s.package in row.packages
            and comps[-1] == s.name
            and (s.receiver is None or (len(comps) > 1 and comps[-2] == s.receiver))
            for row in rows
            for comps in row.symbols
        )
    ]
    assert not missing, f"go-iscsi-helper symbols without a row in {DOC.name}: {missing}"


def test_every_go_symbol_in_the_doc_is_real(request: pytest.FixtureRequest) -> None:
    if not REFERENCE.is_file():
        tiers.unavailable(request, f"the go-iscsi-helper research notes are not at {REFERENCE}")
    known = {(s.package, s.name) for s in reference_symbols()}
    invented = [
        ".".join(comps)
        for row in doc_rows()
        for comps in row.symbols
        if not any((pkg, comps[-1]) in known for pkg in row.packages)
    ]
    assert not invented, f"{DOC.name} names Go symbols the research notes do not list: {invented}"


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_library_names_resolve() -> None:
    seen = 0
    for row in doc_rows():
        names = _ticks(row.library)
        if not names:
            assert "none" in row.library, f"library cell with no name and no 'none': {row.line}"
        for name in names:
            assert name.startswith("iscsikit."), f"library cell names {name!r}, not an iscsikit name: {row.line}"
            dotted = re.match(r"[\w.]+", name)
            assert dotted is not None
            try:
                _resolve(dotted.group(0))
            except (ImportError, AttributeError) as exc:
                pytest.fail(f"{name} does not exist ({exc}); row: {row.line}")
            seen += 1
    assert seen > 100


@cache
def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, f"iscsikit {' '.join(path)} --help exited {result.exit_code}: {result.output}"
    return result.output


def cli_commands() -> list[tuple[tuple[str, ...], tuple[str, ...], str]]:
    """(command path, flags, row) for each ``iscsikit …`` in the CLI column."""
    out = []
    for row in doc_rows():
        commands = _ticks(row.cli)
        if not commands:
            assert "none" in row.cli, f"CLI cell with no command and no 'none': {row.line}"
        for cmd in commands:
            words = cmd.split()
            assert words[0] == "iscsikit", f"CLI cell names {cmd!r}, not an iscsikit command: {row.line}"
            path: list[str] = []
            for word in words[1:]:
                if word.startswith("-"):
                    break
                path.append(word)
            flags = tuple(w for w in words[1 + len(path) :] if w.startswith("-"))
            out.append((tuple(path), flags, row.line))
    return out


def test_cli_commands_and_flags_exist() -> None:
    commands = cli_commands()
    assert len(commands) > 50
    for path, flags, line in commands:
        if path:
            assert path[0] in COMMANDS, f"iscsikit has no command {path[0]!r}; row: {line}"
        text = _help(path)
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                f"`iscsikit {' '.join(path)}` has no {flag}; row: {line}"
            )


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_resolve() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", DOC.read_text())
    assert len(links) > 10
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        name, _, anchor = link.partition("#")
        path = DOC.parent / name if name else DOC
        assert path.is_file(), f"{DOC.name} links to {link}, which does not exist"
        if anchor:
            slugs = {_slug(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)}
            assert anchor in slugs, f"{DOC.name} links to {link}: no such heading in {path.name}"


# --------------------------------------------------------------------------------------
# The porting examples


@dataclass(frozen=True)
class Example:
    code: str
    expected: str | None  # a ```text block right after it is its output


def python_blocks() -> list[Example]:
    text = DOC.read_text()
    blocks = list(re.finditer(r"```(\w*)\n(.*?)```", text, re.S))
    out = []
    for i, m in enumerate(blocks):
        if m.group(1) != "python":
            continue
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        follows = nxt is not None and nxt.group(1) == "text" and not text[m.end() : nxt.start()].strip()
        out.append(Example(m.group(2), nxt.group(2) if follows and nxt is not None else None))
    return out


def needs_real_tools(code: str) -> bool:
    """Examples run by tests/interop/test_go_iscsi_helper_doc.py (tgtd, iscsiadm discovery)."""
    return "from iscsikit.tgt import" in code or "discover_sendtargets(" in code


def run_example(example: Example, substitutions: dict[str, str], ns: dict[str, Any] | None = None) -> str:
    """Run ``example`` with literal substitutions (each must occur); return its stdout, checked
    against the ```text block that follows it, if any."""
    code = example.code
    for old, new in substitutions.items():
        assert old in code, f"the example no longer contains {old!r}; update the test harness"
        code = code.replace(old, new)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {"__name__": "go_iscsi_helper_doc", **(ns or {})})
    if example.expected is not None:
        assert out.getvalue() == example.expected
    return out.getvalue()


def _fake_host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "sys", [FakeTarget(IQN, {1: 64 << 20})])


def _run_connector_example(example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = _fake_host(tmp_path)

    def fake_connector(**kw: Any) -> Connector:
        return connector_on(host, tmp_path, instant=True)

    monkeypatch.setattr(iscsikit.connector, "Connector", fake_connector)
    out = run_example(example, {})
    assert out == "/dev/sda 67108864 2:0:0:1\n"
    updates = [c[c.index("-n") + 1 :] for c in host.calls if "update" in c]
    assert ["node.session.err_timeo.abort_timeout", "-v", "15"] in updates
    assert ["node.session.timeo.replacement_timeout", "-v", "15"] in updates
    # disconnect undid everything: no session, no disk, no node record, no attachment record
    assert host.sessions() == [] and host.disks() == [] and host.nodes == {}
    assert not list((tmp_path / "state" / "attachments").glob("*.json"))


def _run_sysfs_example(example: Example, tmp_path: Path) -> None:
    host = _fake_host(tmp_path)
    adm = Iscsiadm(host)
    portal = Portal.parse("127.0.0.1:3260")
    adm.node_new(IQN, portal)
    adm.login(IQN, portal)
    out = run_example(example, {'"/sys"': repr(str(host.sys))})
    assert out == "1 127.0.0.1:3260,1 LOGGED_IN /dev/sda 8:16\n"


def _run_dry_run_example(example: Example) -> None:
    assert example.expected is not None, "the dry-run example's output block is missing"
    run_example(example, {})


def test_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    all_examples = python_blocks()
    here = [e for e in all_examples if not needs_real_tools(e.code)]
    ran = 0
    for i, example in enumerate(here):
        work = tmp_path / str(i)
        work.mkdir()
        if "Connector(" in example.code:
            _run_connector_example(example, work, monkeypatch)
        elif "Sessions(" in example.code:
            _run_sysfs_example(example, work)
        elif "Runner(dry_run=True)" in example.code:
            _run_dry_run_example(example)
        else:
            pytest.fail(f"no harness runs this example; add one:\n{example.code}")
        ran += 1
    interop = [e for e in all_examples if needs_real_tools(e.code)]
    assert ran == len(here) >= 3
    assert len(interop) >= 2  # run by tests/interop/test_go_iscsi_helper_doc.py, which counts them too
    assert ran + len(interop) == DOC.read_text().count("```python")


def test_every_fence_is_tagged() -> None:
    fences = re.findall(r"^```(.*)$", DOC.read_text(), re.M)
    openings = fences[0::2]
    assert openings and all(tag in ("python", "text") for tag in openings), openings
