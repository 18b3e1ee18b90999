"""The mutation report (tests/mutation/report.json) and its excuses file stay well-formed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import mutation_report as mr


def test_every_module_under_mutation_has_an_entry_whose_counts_add_up() -> None:
    data = json.loads(mr.REPORT.read_text())
    assert set(data["modules"]) == set(mr.modules())
    for module, e in data["modules"].items():
        parts = e["killed"] + e["survived"] + e["equivalent"] + e.get("log_text", 0) + e.get("not_run", 0)
        assert parts <= e["mutants"], module
        judged = e["mutants"] - e["equivalent"] - e.get("log_text", 0)
        assert e["score"] == pytest.approx(100 * e["killed"] / judged if judged else 100.0, abs=0.051), module


def test_the_excuses_file_names_modules_under_mutation_and_gives_every_entry_a_reason() -> None:
    excuses = mr.load_equivalents()
    assert set(excuses) <= set(mr.modules())
    assert all(x.reason.strip() and x.line.strip() for per in excuses.values() for x in per.values())


def test_an_entry_without_a_reason_is_refused_naming_the_file_and_entry(tmp_path: Path) -> None:
    bad = tmp_path / "equivalent.toml"
    bad.write_text('[["iscsikit/db/lock.py"]]\nmutant = "m"\nline = "x = 1"\n')
    with pytest.raises(SystemExit, match=r"equivalent.toml: \[\['iscsikit/db/lock.py'\]\] entry 1 needs .*reason"):
        mr.load_equivalents(bad)


def test_a_module_not_under_mutation_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "equivalent.toml"
    bad.write_text('[["iscsikit/cli/main.py"]]\nmutant = "m"\nline = "x"\nreason = "r"\n')
    with pytest.raises(SystemExit, match="not a module under mutation"):
        mr.load_equivalents(bad)


def test_the_docs_table_marks_a_module_below_the_goal() -> None:
    text = mr.render()
    for module, e in json.loads(mr.REPORT.read_text())["modules"].items():
        row = next(line for line in text.splitlines() if f"`{module}`" in line)
        assert row.rstrip(" |").split("|")[-2].strip() == ("yes" if e["score"] >= 90 else "**no**"), row


ORIG = """
    def drop(self, iface):
        if not iface:
            return
        try:
            self.iscsiadm.iface_delete(iface)
        except IscsiadmError as exc:
            log.warning("could not delete iface %s: %s", iface, exc)
"""


@pytest.mark.parametrize(
    ("old", "new", "log_only"),
    [
        ('log.warning("could not delete iface %s: %s", iface, exc)', "log.warning(None, iface, exc)", True),
        ('log.warning("could not delete iface %s: %s", iface, exc)', 'log.warning("XXcould notXX", exc)', True),
        ('log.warning("could not delete iface %s: %s", iface, exc)', 'log.error("could not", iface, exc)', False),
        ("if not iface:", "if iface:", False),
        ("self.iscsiadm.iface_delete(iface)", "self.iscsiadm.iface_delete(None)", False),
        ('log.warning("could not delete iface %s: %s", iface, exc)', 'print("could not", iface, exc)', False),
    ],
)
def test_only_a_change_inside_a_logging_call_s_arguments_counts_as_log_text(old: str, new: str, log_only: bool) -> None:
    assert old in ORIG
    assert mr.is_log_text_only(ORIG, ORIG.replace(old, new)) is log_only
    assert mr.is_log_text_only(ORIG, ORIG) is False  # no change is no mutant
