"""The --desired list parser: both forms, errors naming file and line, fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iscsikit.clean.desired import DesiredEntry, load_desired, parse_desired
from iscsikit.errors import UsageError
from iscsikit.names import Portal
from tests.support.profiles import examples

T = "iqn.2026-11.org.example"


def test_text_form() -> None:
    entries = parse_desired(
        f"""
        # volumes this node still publishes
        {T}:vol1
        {T}:vol2  10.0.0.5:3260          # one portal only
        {T}:shared [2001:db8::5]:3261,2 lun=1,3 iface=eth1 volume=pvc-9
        {T}:db-*
        """,
        "desired.txt",
    )
    assert entries == (
        DesiredEntry(f"{T}:vol1"),
        DesiredEntry(f"{T}:vol2", Portal("10.0.0.5", 3260)),
        DesiredEntry(f"{T}:shared", Portal("2001:db8::5", 3261, 2), frozenset({1, 3}), "eth1", "pvc-9"),
        DesiredEntry(f"{T}:db-*"),
    )
    assert entries[3].matches(f"{T}:db-main") and not entries[3].matches(f"{T}:dbx")
    assert entries[1].matches(f"{T}:vol2", Portal("10.0.0.5", 3260, 1))
    assert not entries[1].matches(f"{T}:vol2", Portal("10.0.0.6", 3260, 1))
    assert entries[1].matches(f"{T}:vol2")  # a record without a portal is not excluded by one


def test_json_forms() -> None:
    as_list = parse_desired(f'["{T}:a", {{"target": "{T}:b", "portals": ["10.0.0.1", "10.0.0.2"], "lun": 2}}]')
    assert [str(e) for e in as_list] == [f"{T}:a", f"{T}:b 10.0.0.1:3260 lun=2", f"{T}:b 10.0.0.2:3260 lun=2"]
    wrapped = parse_desired(f'{{"desired": [{{"target": "{T}:c", "volume_id": "pvc-3", "luns": [1, 2]}}]}}')
    assert wrapped == (DesiredEntry(f"{T}:c", None, frozenset({1, 2}), None, "pvc-3"),)
    assert parse_desired("[]") == () and parse_desired("") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{T}:a 10.0.0.1 10.0.0.2\n", "desired.txt:1: a second portal"),
        (f"\n{T}:a colour=red\n", "desired.txt:2: unknown field 'colour'"),
        (f"{T}:a lun=x\n", "desired.txt:1: LUNs must be whole numbers"),
        (f"{T}:a lun=70000\n", "desired.txt:1: LUNs are 0-65535"),
        (f"{T}:a [::1\n", "desired.txt:1: invalid portal"),
        (f"{T}:a iface=a/b\n", "desired.txt:1: invalid iface name"),
        ('[{"target": "x",\n "extra": 1}]', "desired.txt: entry 0: unknown keys ['extra']"),
        ('[{"target": 3}]', "desired.txt: entry 0: an entry needs a target name"),
        ("[1]", "desired.txt: entry 0: expected a target name or an object, got int"),
        ('{"other": []}', "exactly one key, 'desired'"),
        ('[\n"a",\n]', "desired.txt:3: not valid JSON"),
    ],
)
def test_errors_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_desired(text, "desired.txt")
    assert message in str(exc.value)


def test_load_desired_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text(f"{T}:a\n")
    assert load_desired(path) == (DesiredEntry(f"{T}:a"),)
    with pytest.raises(UsageError, match=f"--desired {tmp_path / 'nope'}: No such file"):
        load_desired(tmp_path / "nope")


@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_is_a_usage_error(text: str) -> None:
    try:
        entries = parse_desired(text, "fuzz")
    except UsageError as exc:
        assert str(exc).startswith("fuzz")
        return
    assert all(isinstance(e, DesiredEntry) and e.target for e in entries)


@settings(max_examples=examples(200), deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12))  # fmt: skip
def test_any_json_parses_or_is_a_usage_error(doc: object) -> None:
    import json

    try:
        parse_desired(json.dumps([doc]), "fuzz.json")
    except UsageError as exc:
        assert str(exc).startswith("fuzz.json")
