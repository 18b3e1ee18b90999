"""Fuzz open-iscsi DB record parsing (iscsikit/db/record.py): ``parse_record`` and its friends.

The input's first byte picks the record kind and the iface name that selects the key set;
bit 7 switches to :func:`validate_setting` (the check of a value a user wants written). The rest
is the file's bytes (or, for ``validate_setting``, a key index and the value).

Invariants:

* ``parse_record`` never raises, whatever the bytes; every issue names the file and a line that
  exists; every key's line is a real line;
* the fast paths (regex, line cache) agree with the line-by-line emulation of iscsiadm's reader;
* ``settings_json()`` is ``json.dumps(settings())``, masked and not; masked output never shows a
  secret the record holds;
* what iscsikit writes for the values read (:meth:`Record.format`) reads back to the same values
  (but for what iscsiadm's reader itself changes: blanks around a value are stripped, an empty
  value, which the file omits, reads back as the default) and writes the same file again
  (iscsiadm reading its own output);
* ``validate_setting`` raises only ``InvalidSettingError``; a value it accepts survives the round
  trip through the file unchanged, with no issue.
"""

from __future__ import annotations

import json
import sys

from fuzz._common import allocation_limit, fuzz_main, instrument

with instrument("iscsikit.db", "iscsikit.errors"):
    from iscsikit.db import record as record_module
    from iscsikit.db import schema
    from iscsikit.db.record import Record, format_record, idbm_values, parse_record, validate_setting
    from iscsikit.db.schema import C_SPACE, MASK, RecordKind
    from iscsikit.errors import InvalidSettingError

KINDS = list(RecordKind)
HINTS = ("default", "iscsikit-res1", "be2-ipv6", "")
PATH = "/etc/iscsi/nodes/iqn.2026-11.test:fuzz/10.0.0.1,3260,1/default"


def _exact(text: str, kind: RecordKind, hint: str) -> Record:
    rec = Record(kind, PATH, hint)
    record_module._parse_exact(text, rec)
    record_module._validate(rec)
    rec.issues.sort(key=lambda i: i.line)
    return rec


def _check_parse(kind: RecordKind, hint: str, raw: bytes) -> None:
    rec = parse_record(raw, PATH, kind, iface_hint=hint)
    text = raw.decode("utf-8", "surrogateescape")
    nlines = text.count("\n") + 1
    for issue in rec.issues:
        assert issue.path == PATH and 1 <= issue.line <= nlines, issue
        assert str(issue).startswith(f"{PATH}:{issue.line}: ")
        assert issue.severity in ("error", "warning")
        json.dumps(issue.to_json())
    for key in rec.entries:
        assert 1 <= (rec.line_of(key) or 0) <= nlines, key
    slow = _exact(text, kind, hint)
    assert rec.entries == slow.entries, "the fast parser and the exact one read different entries"
    assert [(i.line, i.severity, i.message) for i in rec.issues] == [
        (i.line, i.severity, i.message) for i in slow.issues
    ], "the fast parser and the exact one report different issues"
    values = rec.values()
    assert values == slow.values()
    for show in (False, True):
        shown = rec.settings(show)
        assert rec.settings_json(show) == json.dumps(shown)
        assert shown == slow.settings(show)
    masked = rec.settings(False)
    for key, value in rec.settings(True).items():
        spec = schema.all_keys(kind).get(key)
        if spec is not None and spec.masked and value not in ("", schema.EMPTY):
            assert masked[key] == MASK, f"{key} is shown unmasked"
    written = rec.format()
    again = parse_record(written, PATH, kind, iface_hint=hint)
    defaults = idbm_values(kind, {}, hint)[0]
    for key, value in again.values().items():
        # What iscsiadm's reader does to any value: blanks around it are stripped (a value cut to
        # its C field's size can end in one), and an empty value, which the file omits, reads
        # back as the default.
        held = values[key].strip(C_SPACE) or defaults[key]
        assert value in (values[key], held), f"{key}: {values[key]!r} reads back as {value!r}"
    rewritten = again.format()
    third = parse_record(rewritten, PATH, kind, iface_hint=hint)
    assert third.values() == again.values() and third.format() == rewritten, "format() is not stable"


def _check_setting(kind: RecordKind, hint: str, raw: bytes) -> None:
    keys = list(schema.all_keys(kind).by_name) if raw else []
    if not keys:
        return
    key = keys[raw[0] % len(keys)]
    value = raw[1:].decode("utf-8", "surrogateescape")
    ipv6 = schema.name_is_ipv6(hint)
    try:
        key, canonical = validate_setting(kind, key, value, ipv6=ipv6)
    except InvalidSettingError as e:
        json.dumps(e.to_json())
        return
    values, _ = idbm_values(kind, {}, hint)
    values[key] = canonical
    text = format_record(kind, values)
    rec = parse_record(text, PATH, kind, iface_hint=hint)
    assert [i for i in rec.issues if i.key == key] == [], f"{key} = {canonical!r} was accepted but reads back badly"
    assert rec.value(key) == canonical, f"{key} = {canonical!r} reads back as {rec.value(key)!r}"


def check(data: bytes) -> None:
    if not data:
        return
    config, raw = data[0], data[1:]
    kind = KINDS[config & 3]
    hint = HINTS[(config >> 2) & 3]
    with allocation_limit(200 * len(data) + (4 << 20), "record parser"):
        if config & 0x80:
            _check_setting(kind, hint, raw)
        else:
            _check_parse(kind, hint, raw)


def main() -> None:
    fuzz_main(check)


if __name__ == "__main__":
    main()
    sys.exit(0)
