"""record.py: iscsiadm 2.1.8's record grammar, its two readers, and exact rewriting.

Expected texts come from the real binary (../shared/fixtures/iscsiadm-2.1.8 and the
verbatim captures in reference/open-iscsi-format.md sections 2 and 6).
"""

from __future__ import annotations

import json

import pytest

from iscsikit.db import record as record_module
from iscsikit.db import schema
from iscsikit.db.record import (
    apply_settings,
    canonical_value,
    format_record,
    idbm_values,
    parse_record,
    show_settings,
    validate_setting,
)
from iscsikit.db.schema import RecordKind
from iscsikit.errors import InvalidSettingError, RecordParseError
from tests.unit.db.support import FIXTURES, OLDSTYLE_RECORD, SHOW_T1_MASKED, T1_RECORD

NODE = RecordKind.NODE


@pytest.fixture(autouse=True)
def _cold_caches() -> None:
    """record.py memoises per process (lines, entries, renderings, templates): these tests start
    cold, so each checks the computation itself rather than what an earlier test left cached."""
    for cache in (
        record_module._LINE_CACHES,
        record_module._BAD_LINES,
        record_module._JSON_PLANS,
        record_module._ENTRY_CACHE,
        record_module._RENDER_CACHE,
        record_module._TEMPLATES,
        record_module._FRAGMENT_CACHE,
        record_module._FRAGMENT_TEMPLATES,
    ):
        cache.clear()


def _show_text_to_dict(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.partition(" = ")
        out[key] = value
    return out


# ---- files written by the real iscsiadm are read and rewritten byte for byte -----------------


@pytest.mark.parametrize(
    ("name", "kind", "hint"),
    [
        ("db-node-record-from-sendtargets.txt", NODE, "iscsikit-res1"),
        ("db-node-record-with-iscsid-conf-merged.txt", NODE, "default"),
        ("db-st_config-after-discovery.txt", RecordKind.SENDTARGETS, None),
    ],
)
def test_real_records_parse_cleanly_and_format_back_identically(name: str, kind: RecordKind, hint: str | None) -> None:
    text = (FIXTURES / name).read_text()
    rec = parse_record(text, name, kind, iface_hint=hint)
    assert rec.issues == []
    assert rec.version == "2.1.8"
    assert format_record(kind, rec.values()) == text


@pytest.mark.parametrize("text", [T1_RECORD, OLDSTYLE_RECORD])
def test_reference_records_round_trip(text: str) -> None:
    rec = parse_record(text, "f", NODE)
    assert rec.ok
    assert rec.format() == text


def test_show_matches_what_iscsiadm_printed_for_the_same_file() -> None:
    rec = parse_record(T1_RECORD, "nodes/t1/192.0.2.11,3260,1/default", NODE, iface_hint="default")
    assert rec.settings() == _show_text_to_dict(SHOW_T1_MASKED)
    assert list(rec.settings()) == list(_show_text_to_dict(SHOW_T1_MASKED))
    shown = rec.settings(show_secrets=True)
    assert shown["node.session.auth.password"] == "s3cret pass#1"
    assert shown["node.session.auth.password_in"] == "<empty>"  # empty secrets are never starred
    assert "node.session.auth.password_length" not in shown


def test_iface_show_uses_the_iface_order_and_hides_nothing_but_lengths() -> None:
    text = (
        "# BEGIN RECORD 2.1.8\niface.iscsi_ifacename = res0\niface.transport_name = tcp\n"
        "iface.prefix_len = 0\n# END RECORD\n"
    )
    settings = show_settings(RecordKind.IFACE, parse_record(text, "ifaces/res0", RecordKind.IFACE).entries, "res0")
    keys = list(settings)
    assert keys[:6] == [
        "iface.iscsi_ifacename",
        "iface.net_ifacename",
        "iface.ipaddress",
        "iface.prefix_len",
        "iface.hwaddress",
        "iface.transport_name",
    ]
    assert settings["iface.bootproto"] == "<empty>"
    assert "iface.ipv6_autocfg" not in settings


# ---- the reader rules of section 2.1, line by line -------------------------------------------


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("node.startup = automatic", "automatic"),
        ("node.startup =automatic", "automatic"),
        ("node.startup\t=\tautomatic   ", "automatic"),
        ("   node.startup = automatic", "automatic"),
        ("node.startup==automatic", "automatic"),  # iscsiadm skips one char, then wants '='
        ("node.startup == automatic", "= automatic"),
    ],
)
def test_lines_iscsiadm_accepts(line: str, value: str) -> None:
    rec = parse_record(line + "\n", "f", NODE)
    assert rec.raw("node.startup") == value
    assert [i for i in rec.issues if i.key != "node.startup"] == []


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("node.startup=automatic", "no '=' separator"),
        ("node.startup= automatic", "no '=' separator"),
        ("node.startup", "has no '= value'"),
        ("node.startup = ", "has an empty value"),
        ("node.startup x automatic", "no '=' separator"),
    ],
)
def test_lines_iscsiadm_ignores_are_reported_with_their_line(line: str, fragment: str) -> None:
    rec = parse_record("# BEGIN RECORD 2.1.8\n" + line + "\n", "nodes/x", NODE)
    assert rec.raw("node.startup") is None
    assert [i.line for i in rec.issues] == [2]
    assert fragment in rec.issues[0].message
    assert str(rec.issues[0]).startswith("nodes/x:2: ")


def test_values_keep_hashes_and_equals_signs() -> None:
    rec = parse_record("node.session.auth.password = a=b #c\n", "f", NODE)
    assert rec.raw("node.session.auth.password") == "a=b #c"


def test_duplicate_key_last_one_wins_with_a_warning() -> None:
    rec = parse_record("node.startup = manual\nnode.startup = automatic\n", "f", NODE)
    assert rec.value("node.startup") == "automatic"
    assert rec.line_of("node.startup") == 2
    assert [(i.line, i.severity) for i in rec.issues] == [(2, "warning")]


def test_last_line_without_newline_is_ignored_like_iscsiadm() -> None:
    rec = parse_record("node.startup = manual\nnode.conn[0].startup = automatic", "f", NODE)
    assert rec.raw("node.conn[0].startup") is None
    assert rec.issues[0].line == 2 and "no newline" in rec.issues[0].message


def test_overlong_line_and_nul_bytes() -> None:
    long_line = "node.session.auth.username = " + "u" * 3000
    rec = parse_record(f"{long_line}\nnode.name = a\x00b\n", "f", NODE)
    assert rec.raw("node.session.auth.username") is None
    assert rec.raw("node.name") is None
    assert [i.line for i in rec.issues] == [1, 2]


def test_unknown_key_and_bad_enum_are_errors_iscsiadm_listing_would_die_on() -> None:
    rec = parse_record(
        "node.name = iqn.2026-11.test:a\nnode.session.futurekey = 1\nnode.startup = Automatic\n", "f", NODE
    )
    assert not rec.ok
    assert [(i.line, i.severity, i.key) for i in rec.issues] == [
        (2, "error", "node.session.futurekey"),
        (3, "error", "node.startup"),
    ]
    assert "manual, automatic, onboot" in rec.issues[1].message
    # usr/idbm.c (the writer) drops the unknown key and keeps the default for the bad enum.
    values = rec.values()
    assert "node.session.futurekey" not in values
    assert values["node.startup"] == "manual"
    assert len(rec.rewrite_warnings()) == 2
    # and the display keeps what was written, so the user sees it
    assert rec.settings()["node.startup"] == "Automatic"
    assert rec.settings()["node.session.futurekey"] == "1"


def test_ipv6_key_in_a_record_named_without_ipv6_is_an_error() -> None:
    """iscsiadm 2.1.8 writes this itself for an IPv6 iface not named *ipv6*, then cannot list it."""
    rec = parse_record("iface.dup_addr_detect_cnt = 0\n", "nodes/t/a,3260,1/offload0", NODE, iface_hint="offload0")
    assert not rec.ok and "contains 'ipv6'" in rec.issues[0].message
    rec6 = parse_record("iface.dup_addr_detect_cnt = 0\n", "f", NODE, iface_hint="offload-ipv6")
    assert rec6.ok


@pytest.mark.parametrize(
    ("key", "raw", "stored", "shown"),
    [
        ("node.session.cmds_max", "12abc", "12", "12"),
        ("node.session.cmds_max", "70000", "70000", "4464"),  # int in usr/idbm.c, uint16 in libopeniscsiusr
        ("node.session.initial_cmdsn", "-1", "-1", "4294967295"),
        ("node.session.xmit_thread_priority", "-20", "-20", "-20"),
        ("node.conn[0].timeo.login_timeout", "4294967296", "0", "4294967296"),
        ("iface.tos", "-1", "255", "255"),
        ("iface.iface_num", "-1", "-1", "4294967295"),
        ("node.conn[0].timeo.login_timeout", "abc", "0", "0"),
        ("node.conn[0].timeo.login_timeout", "+15", "15", "15"),
        ("node.conn[0].timeo.login_timeout", "99999999999999999999999", "-1", "-1"),
    ],
)
def test_integers_follow_strtoul_into_each_readers_c_field(key: str, raw: str, stored: str, shown: str) -> None:
    rec = parse_record(f"{key} = {raw}\n", "f", NODE)
    assert rec.value(key) == stored
    assert rec.settings()[key] == shown


def test_chap_algs_list_semantics() -> None:
    rec = parse_record("node.session.auth.chap_algs = SHA256 MD5,MD5,FOO\n", "f", NODE)
    assert rec.value("node.session.auth.chap_algs") == "SHA256,MD5"
    assert rec.issues[0].severity == "warning"
    empty = parse_record("node.session.auth.chap_algs = FOO\n", "f", NODE)
    assert empty.value("node.session.auth.chap_algs") == ""
    assert "node.session.auth.chap_algs" not in empty.format()  # empty values are not written
    assert empty.settings()["node.session.auth.chap_algs"] == "<empty>"


def test_strings_are_truncated_to_their_c_field() -> None:
    rec = parse_record("iface.net_ifacename = " + "e" * 20 + "\n", "f", NODE)
    assert rec.value("iface.net_ifacename") == "e" * 15  # IFNAMSIZ 16
    assert rec.issues[0].severity == "warning"


def test_crlf_files_are_read_like_iscsiadm_does() -> None:
    rec = parse_record("node.startup = automatic\r\nnode.tpgt = 3\r\n", "f", NODE)
    assert rec.value("node.startup") == "automatic" and rec.value("node.tpgt") == "3"


def test_format_omits_empty_strings_and_hidden_keys_and_orders_like_idbm() -> None:
    values = idbm_values(NODE, {"node.name": "iqn.2026-11.test:a", "node.session.auth.password": "pw"}, "default")[0]
    text = format_record(NODE, values)
    lines = text.splitlines()
    assert lines[0] == "# BEGIN RECORD 2.1.8" and lines[-1] == "# END RECORD" and text.endswith("\n")
    assert "node.session.auth.password = pw" in lines
    assert not any("password_length" in line for line in lines)
    assert not any(line.endswith(" = ") for line in lines)
    assert lines.index("node.session.auth.authmethod = None") < lines.index("node.session.auth.password = pw")


def test_ipv6_iface_address_switches_the_written_key_set() -> None:
    values = idbm_values(NODE, {}, "default")[0]
    values["iface.ipaddress"] = "2001:db8::99"
    text = format_record(NODE, values)
    assert "iface.hop_limit = 0" in text and "iface.tos = 0" not in text
    values["iface.bootproto"] = "dhcp"
    assert "iface.tos = 0" in format_record(NODE, values)


def test_discovery_records_show_through_idbm_print() -> None:
    text = (FIXTURES / "db-st_config-after-discovery.txt").read_text()
    text = text.replace("authmethod = None", "authmethod = CHAP\ndiscovery.sendtargets.auth.password = pw")
    rec = parse_record(text, "st_config", RecordKind.SENDTARGETS)
    assert rec.settings()["discovery.sendtargets.auth.password"] == "********"
    assert rec.settings()["discovery.sendtargets.auth.username"] == "<empty>"
    assert rec.settings(True)["discovery.sendtargets.auth.password"] == "pw"


def test_isns_record_uses_sendtargets_key_names() -> None:
    text = (
        "# BEGIN RECORD 2.1.8\ndiscovery.startup = manual\ndiscovery.type = isns\n"
        "discovery.sendtargets.address = 192.0.2.25\ndiscovery.sendtargets.port = 3205\n"
        "discovery.isns.use_discoveryd = No\ndiscovery.isns.discoveryd_poll_inval = -1\n# END RECORD\n"
    )
    rec = parse_record(text, "isns_config", RecordKind.ISNS)
    assert rec.ok and rec.format() == text


# ---- values given by users -------------------------------------------------------------------


def test_validate_setting_names_the_choices_and_hints_at_case() -> None:
    with pytest.raises(InvalidSettingError, match=r"manual, automatic, onboot \(did you mean 'automatic'"):
        validate_setting(NODE, "node.startup", "Automatic")
    assert validate_setting(NODE, "node.startup", "onboot") == ("node.startup", "onboot")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("node.session.futurekey", "1", "unknown key"),
        ("node.sesion.cmds_max", "1", "did you mean node.session.cmds_max"),
        ("node.tpgt", "5", "identifies the record"),
        ("node.conn[0].address", "10.0.0.1", "identifies the record"),
        ("node.session.auth.password_length", "5", "computes it"),
        ("node.session.auth.password", "********", "display mask"),
        ("node.session.auth.password", "a\nb", "newline"),
        ("node.session.auth.username", " padded", "blanks"),
        ("node.session.auth.username", "u" * 256, "longer than 255"),
        ("node.session.auth.username", "a\ud800b", "lone UTF-16 surrogate"),  # from JSON, say
        ("node.session.cmds_max", "12abc", "integer"),
        ("node.session.cmds_max", "99999999999", "integer from"),
        ("node.session.auth.chap_algs", "MD5,MD4", "comma-separated"),
        ("node.session.auth.chap_algs", "MD5,MD5", "twice"),
        ("iface.ipv6_autocfg", "x", "IPv6 key set"),
        ("node.transport_name", "", "read back 'tcp'"),
    ],
)
def test_values_iscsiadm_would_refuse_or_mangle_are_rejected(key: str, value: str, fragment: str) -> None:
    with pytest.raises(InvalidSettingError, match=fragment):
        validate_setting(NODE, key, value)


def test_canonical_values() -> None:
    spec = schema.NODE_ALL.by_name
    assert canonical_value(spec["node.session.cmds_max"], "+064") == "64"
    assert canonical_value(spec["node.session.auth.chap_algs"], "SHA256, MD5") == "SHA256,MD5"
    assert validate_setting(NODE, "node.transport_name", "iser") == ("iface.transport_name", "iser")
    assert canonical_value(spec["node.session.auth.username"], "") == ""  # clearing is allowed


def test_a_lone_surrogate_in_a_str_is_measured_not_a_crash() -> None:
    # Only a str from a caller can hold one (a file's undecodable bytes are U+DC80..U+DCFF); it
    # counts as the 3 bytes surrogatepass gives it, so 86 of them overflow a 255-byte value.
    rec = parse_record("node.name = a\ud800\nnode.session.auth.username = " + "\ud800" * 86 + "\n", "x", NODE)
    assert [(i.line, i.severity) for i in rec.issues] == [(2, "error")]
    assert "longer than 255 bytes" in rec.issues[0].message
    assert rec.values()["node.name"] == "a\ud800"


def test_non_utf8_bytes_survive_a_rewrite() -> None:
    rec = parse_record(b"node.name = \xff\xfe\n", "x", NODE)  # not UTF-8: kept byte for byte
    assert rec.format().encode("utf-8", "surrogateescape").count(b"\xff\xfe") == 1


# ---- the record's smaller views, each pinned to what a caller gets ----------------------------


def test_an_issue_names_its_file_and_line_in_every_form() -> None:
    rec = parse_record("node.name = a\nnode.startup = Bogus\n", "nodes/t/x", NODE)
    (issue,) = rec.issues
    assert str(issue) == f"nodes/t/x:2: {issue.message}"
    assert issue.to_json() == {"path": "nodes/t/x", "line": 2, "severity": "error", "message": issue.message}
    error = issue.to_error()
    assert isinstance(error, RecordParseError)
    assert (error.path, error.line) == ("nodes/t/x", 2) and issue.message in str(error)
    assert rec.errors == [issue] and not rec.ok


def test_unknown_keys_and_the_ipv6_key_set_hint() -> None:
    rec = parse_record("node.name = a\nnode.session.futurekey = 1\nx.y = 2\n", "f", NODE, iface_hint="e-ipv6")
    assert rec.unknown_keys() == ["node.session.futurekey", "x.y"]
    assert rec.show_ipv6 and not parse_record("", "f", NODE).show_ipv6


def test_duplicates_apply_one_by_one_like_iscsiadm() -> None:
    """usr/idbm.c keeps a good value when a later line for the key is bad; libopeniscsiusr stops at
    the first bad one, even when a later line is fine: both are reported where they are."""
    text = "node.startup = automatic\nnode.startup = Bogus\nnode.tpgt = 1\nnode.tpgt = 2\n"
    rec = parse_record(text, "f", NODE)
    assert rec.some_values(["node.startup", "node.tpgt"]) == {"node.startup": "automatic", "node.tpgt": "2"}
    assert rec.value("node.startup") == "automatic" and rec.values()["node.tpgt"] == "2"
    assert rec.some_values(["node.startup"]) == {"node.startup": "automatic"}  # now from the full view
    assert [(i.line, i.severity) for i in rec.issues] == [(2, "warning"), (2, "error"), (4, "warning")]
    earlier_bad = parse_record("node.startup = Bogus\nnode.startup = automatic\n", "f", NODE)
    assert [(i.line, i.severity) for i in earlier_bad.issues] == [(1, "error"), (2, "warning")]
    assert "'Bogus' is not one of manual, automatic, onboot" in earlier_bad.issues[0].message
    assert earlier_bad.some_values(["node.startup"]) == {"node.startup": "automatic"}
    plain = parse_record("node.startup = automatic\nnode.tpgt = 3\n", "f", NODE)
    assert plain.some_values(["node.tpgt"]) == {"node.tpgt": "3"}


def test_a_hidden_length_in_a_file_is_read_but_never_shown() -> None:
    rec = parse_record("node.session.auth.password_length = 5\nnode.name = a\n", "f", NODE)
    assert rec.ok and rec.value("node.session.auth.password_length") == "5"
    assert "node.session.auth.password_length" not in rec.settings(show_secrets=True)
    assert json.loads(rec.settings_json(True)) == rec.settings(True)


def test_a_key_longer_than_iscsiadms_buffer_is_an_error_naming_the_limit() -> None:
    key = "node." + "k" * 123  # 128 bytes
    rec = parse_record(f"node.name = a\n{key} = 1\n", "f", NODE)
    assert [(i.line, i.severity, i.key, i.message) for i in rec.issues] == [
        (2, "error", key, "the key is longer than 127 bytes")
    ]
    fits = parse_record(f"{key[:-1]} = 1\n", "f", NODE)
    assert "unknown key" in fits.issues[0].message


@pytest.mark.parametrize("kind", [RecordKind.SENDTARGETS, RecordKind.ISNS])
def test_discovery_records_give_the_same_json_as_their_settings(kind: RecordKind) -> None:
    rec = parse_record("discovery.sendtargets.auth.password = pw\nx.unknown = 1\n", "st", kind)
    for show in (False, True):
        assert rec.settings_json(show) == json.dumps(rec.settings(show))
    assert json.loads(rec.settings_json(False))["discovery.sendtargets.auth.password"] == "********"
    assert rec.settings()["x.unknown"] == "1"


def test_show_settings_renders_each_value_as_iscsiadm_prints_it() -> None:
    entries = {
        "iface.net_ifacename": "eth-show-7",
        "iface.zzz": "1",
        "node.session.auth.password_length": "3",
        "node.session.auth.chap_algs": "FOO",  # nothing valid: read as empty
    }
    for _ in range(2):  # the second call is served from the render cache
        node = show_settings(NODE, entries, "default")
        assert node["iface.net_ifacename"] == "eth-show-7" and node["iface.iscsi_ifacename"] == "default"
        assert node["node.session.auth.chap_algs"] == "<empty>"
        assert list(node)[-1] == "iface.zzz" and node["iface.zzz"] == "1"
        assert "node.session.auth.password_length" not in node
        assert node["iface.transport_name"] == "tcp"
        assert "iface.ipv6_autocfg" not in node
    iface = show_settings(RecordKind.IFACE, {"iface.net_ifacename": "eth-show-8"}, "")
    assert iface["iface.iscsi_ifacename"] == "<empty>" and iface["iface.transport_name"] == "<empty>"
    assert iface["iface.net_ifacename"] == "eth-show-8"
    ipv6 = show_settings(RecordKind.IFACE, {"iface.ipv6_autocfg": "nd"}, "x-ipv6")
    assert ipv6["iface.ipv6_autocfg"] == "nd" and ipv6["iface.iscsi_ifacename"] == "x-ipv6"
    assert "iface.bootproto" not in ipv6
    secret = {"node.session.auth.password": "pw-show-9", "node.session.auth.username": "user-show-9"}
    masked = show_settings(NODE, secret, "default")
    assert masked["node.session.auth.password"] == "********"
    assert masked["node.session.auth.username"] == "user-show-9"  # only secrets are masked
    assert show_settings(NODE, secret, "default", True)["node.session.auth.password"] == "pw-show-9"


def test_apply_settings_puts_them_in_order() -> None:
    values = {"a": "1"}
    apply_settings(values, [("b", "2"), ("a", "3"), ("b", "4")])
    assert values == {"a": "3", "b": "4"}


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("zzz.qqq", "cannot set zzz.qqq = '1': unknown key for a node record"),
        ("node.conn", "cannot set node.conn = '1': unknown key for a node record"),  # only a weak likeness
        ("node.startupp", "cannot set node.startupp = '1': unknown key for a node record (did you mean node.startup?)"),
    ],
)
def test_an_unknown_key_suggests_only_a_close_match(key: str, message: str) -> None:
    with pytest.raises(InvalidSettingError) as info:
        validate_setting(NODE, key, "1")
    assert str(info.value) == message


def test_rewrite_warnings_and_some_values_on_a_fresh_record() -> None:
    rec = parse_record("node.startup = Bogus\n", "f", NODE)
    assert rec.rewrite_warnings() == ["node.startup: 'Bogus' is not one of manual, automatic, onboot; kept 'manual'"]
    iface = parse_record("iface.net_ifacename = eth-sv-1\n", "ifaces/sv-ipv6", RecordKind.IFACE, iface_hint="sv-ipv6")
    assert iface.some_values(["iface.iscsi_ifacename", "iface.net_ifacename"]) == {
        "iface.iscsi_ifacename": "sv-ipv6",
        "iface.net_ifacename": "eth-sv-1",
    }


_ALGS = "MD5, SHA1, SHA256, SHA3-256"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("node.session.auth.password", "a\nb", "'a\\nb': it contains a newline or another control character"),
        (
            "node.session.auth.username",
            " padded",
            "' padded': iscsiadm strips leading and trailing blanks, so it would not survive",
        ),
        (
            "node.startup",
            "Automatic",
            "'Automatic': valid choices are manual, automatic, onboot (did you mean 'automatic'? values are"
            " case-sensitive)",
        ),
        ("node.startup", "bogus", "'bogus': valid choices are manual, automatic, onboot"),
        (
            "node.session.auth.chap_algs",
            "MD5,MD4",
            f"'MD5,MD4': give a comma-separated list of {_ALGS} in order of preference",
        ),
        ("node.session.auth.chap_algs", "", f"'': give a comma-separated list of {_ALGS} in order of preference"),
        ("node.session.auth.chap_algs", "MD5,MD5", "'MD5,MD5': an algorithm is listed twice"),
        ("node.session.cmds_max", "12abc", "'12abc': it must be an integer from -2147483648 to 2147483647"),
        ("node.session.cmds_max", "2147483648", "'2147483648': it must be an integer from -2147483648 to 2147483647"),
        (
            "node.session.auth.password",
            "********",
            "'********': that is the display mask, not a secret; give the real value",
        ),
        (
            "node.session.auth.username",
            "a\ud800b",
            "'a\\ud800b': it holds a lone UTF-16 surrogate: not text, it cannot be written",
        ),
        ("node.session.auth.username", "u" * 256, f"'{'u' * 256}': it is longer than 255 bytes, iscsiadm's limit"),
    ],
)
def test_a_refused_value_names_the_key_the_value_and_the_rule(key: str, value: str, message: str) -> None:
    with pytest.raises(InvalidSettingError) as info:
        validate_setting(NODE, key, value)
    assert str(info.value) == f"cannot set {key} = {message}"


@pytest.mark.parametrize(
    ("key", "value", "canonical"),
    [
        ("node.session.cmds_max", "-2147483648", "-2147483648"),  # both ends of a C int are fine
        ("node.session.cmds_max", "2147483647", "2147483647"),
        ("node.session.auth.username", "user\xa0", "user\xa0"),  # only C's blanks are stripped by iscsiadm
    ],
)
def test_values_at_the_edges_are_taken(key: str, value: str, canonical: str) -> None:
    assert validate_setting(NODE, key, value) == (key, canonical)


def test_show_settings_has_only_the_records_keys() -> None:
    for kind, hint in ((RecordKind.IFACE, "sk-1"), (RecordKind.IFACE, ""), (NODE, "default")):
        shown = show_settings(kind, {"iface.net_ifacename": "eth-sk-1"}, hint)
        assert [k for k in shown if not k.startswith(("iface.", "node."))] == []


# ---- each diagnosis in full: where, how bad, what (mutation testing, issue 14) ----------------

_LONG = "the line is longer than 2046 bytes; iscsiadm cannot read it"
_NUL = "the line contains a NUL byte; iscsiadm ignores it"
_NO_NEWLINE = "the last line has no newline; iscsiadm ignores it"
_USER = "node.session.auth.username = "


@pytest.mark.parametrize(
    ("text", "issues", "raw"),
    [
        # a NUL byte drops its line only: the lines after it are read
        ("node.name = a\x00b\nnode.startup = automatic\n", [(1, "warning", _NUL)], {"node.startup": "automatic"}),
        ("node.startup = manual\nnode.tpgt = 3", [(2, "warning", _NO_NEWLINE)], {"node.startup": "manual"}),
        # only C's blanks make a last line blank: U+00A0 is two bytes iscsiadm does not skip
        ("node.startup = manual\n\xa0", [(2, "warning", _NO_NEWLINE)], {"node.startup": "manual"}),
        ("node.startup = manual\n \t", [], {"node.startup": "manual"}),
        # 2046 bytes fit iscsiadm's buffer (the value is then too long, a different fault); 2047 do not
        (
            _USER + "u" * (2046 - len(_USER)) + "\nnode.startup = automatic\n",
            [(1, "error", f"node.session.auth.username = {'u' * 2017!r} is longer than 255 bytes, which overflows")],
            {"node.startup": "automatic", "node.session.auth.username": "u" * 2017},
        ),
        (
            _USER + "u" * (2047 - len(_USER)) + "\nnode.startup = automatic\n",
            [(1, "error", _LONG)],
            {"node.startup": "automatic", "node.session.auth.username": None},
        ),
        # only C's blanks are stripped around a value (the exact parser: the first line is indented)
        (" node.name = iqn.2026-11.test:a\xa0\n", [], {"node.name": "iqn.2026-11.test:a\xa0"}),
    ],
)
def test_the_exact_parser_names_each_fault_its_line_and_severity(
    text: str, issues: list[tuple[int, str, str]], raw: dict[str, str | None]
) -> None:
    rec = parse_record(text, "nodes/t/x", NODE)
    assert len(rec.issues) == len(issues)
    for issue, (line, severity, message) in zip(rec.issues, issues, strict=True):
        assert (issue.line, issue.severity) == (line, severity) and issue.message.startswith(message)
    assert all(str(i).startswith(f"nodes/t/x:{i.line}: ") and i.path == "nodes/t/x" for i in rec.issues)
    assert {k: rec.raw(k) for k in raw} == raw


def test_the_version_is_read_from_a_begin_line_on_line_one_only() -> None:
    # the indented line sends both files through the exact parser
    later = parse_record("# written by hand, not iscsiadm\n# BEGIN RECORD 2.1.8\n node.tpgt = 1\n", "f", NODE)
    assert later.version is None and later.raw("node.tpgt") == "1"
    first = parse_record("# BEGIN RECORD 2.1.8 \n node.tpgt = 1\n", "f", NODE)
    assert first.version == "2.1.8"


@pytest.mark.parametrize(
    ("key", "hint", "key_set"),
    [
        ("iface.dup_addr_detect_cnt", "offload0", "IPv6"),  # IPv6-only key, read with the IPv4 set
        ("iface.tos", "offload-ipv6", "IPv4"),  # IPv4-only key, read with the IPv6 set
    ],
)
def test_a_key_of_the_other_iface_key_set_is_an_error_saying_which(key: str, hint: str, key_set: str) -> None:
    for kind, first in ((NODE, "node.name = a"), (RecordKind.IFACE, "iface.net_ifacename = e0")):
        rec = parse_record(f"{first}\n{key} = 1\n", "p", kind, iface_hint=hint)
        assert [(i.path, i.line, i.severity, i.key, i.message) for i in rec.issues] == [
            (
                "p",
                2,
                "error",
                key,
                f"{key} is an {key_set} iface key, but iscsiadm 2.1.8 reads this record with the other key set "
                f"(chosen by whether the iface name {hint!r} contains 'ipv6'); it refuses to list it",
            )
        ]


def test_a_too_long_key_names_the_file() -> None:
    key = "node." + "k" * 123
    (issue,) = parse_record(f"{key} = 1\n", "nodes/t/y", NODE).issues
    assert str(issue) == "nodes/t/y:1: the key is longer than 127 bytes"


def test_an_unknown_key_of_an_iface_record_is_shown_last() -> None:
    rec = parse_record("iface.net_ifacename = eth1\niface.zzz = 1\n", "ifaces/i1", RecordKind.IFACE, iface_hint="i1")
    assert [i.key for i in rec.errors] == ["iface.zzz"]
    for show in (False, True):
        shown = rec.settings(show)
        assert list(shown)[-1] == "iface.zzz" and shown["iface.zzz"] == "1"
        assert shown["iface.iscsi_ifacename"] == "i1" and shown["iface.net_ifacename"] == "eth1"
        assert json.loads(rec.settings_json(show)) == shown


def test_settings_json_masks_secrets_unless_asked() -> None:
    text = "node.name = a\nnode.session.auth.password = pw-j-1\n"
    for rec in (parse_record(text, "f", NODE), parse_record(" " + text, "f", NODE)):  # line cache, exact parser
        assert json.loads(rec.settings_json())["node.session.auth.password"] == "********"
        assert json.loads(rec.settings_json(True))["node.session.auth.password"] == "pw-j-1"
        assert rec.settings()["node.session.auth.password"] == "********"


def test_a_record_built_from_entries_shows_its_iface_name() -> None:
    rec = record_module.Record(NODE, "f", "e-ipv6", entries={"iface.ipv6_autocfg": "nd"})
    shown = rec.settings()
    assert shown["iface.iscsi_ifacename"] == "e-ipv6" and shown["iface.ipv6_autocfg"] == "nd"
    assert "iface.tos" not in shown
    assert json.loads(rec.settings_json()) == shown


def _refusal(kind: RecordKind, key: str, value: str, **kw: bool) -> InvalidSettingError:
    with pytest.raises(InvalidSettingError) as info:
        validate_setting(kind, key, value, **kw)
    assert (info.value.key, info.value.value) == (key, value)
    return info.value


@pytest.mark.parametrize(
    ("kind", "key", "value", "ipv6", "reason"),
    [
        (NODE, "iface.ipv6_autocfg", "nd", False, "it belongs to the IPv6 key set, which this record does not use"),
        (NODE, "iface.tos", "1", True, "it belongs to the IPv4 key set, which this record does not use"),
        (RecordKind.IFACE, "iface.tos", "1", True, "it belongs to the IPv4 key set, which this record does not use"),
        (
            NODE,
            "node.session.auth.password_length",
            "5",
            False,
            "iscsiadm computes it from the password; it cannot be set",
        ),
        (
            RecordKind.IFACE,
            "iface.iscsi_ifacename",
            "other",
            False,
            "it identifies the record and cannot be changed (delete and create it instead)",
        ),
        (
            NODE,
            "node.tpgt",
            "5",
            False,
            "it identifies the record and cannot be changed (delete and create it instead)",
        ),
        (
            NODE,
            "iface.transport_name",
            "",
            False,
            "it cannot be empty: iscsiadm omits empty values, so it would read back 'tcp'",
        ),
    ],
)
def test_a_refused_setting_carries_the_key_the_value_and_the_reason(
    kind: RecordKind, key: str, value: str, ipv6: bool, reason: str
) -> None:
    err = _refusal(kind, key, value, ipv6=ipv6)
    assert err.reason == reason and str(err) == f"cannot set {key} = {value!r}: {reason}"


def test_settings_of_the_key_set_in_use_are_taken() -> None:
    assert validate_setting(NODE, "iface.ipv6_autocfg", "nd", ipv6=True) == ("iface.ipv6_autocfg", "nd")
    assert validate_setting(RecordKind.IFACE, "iface.ipv6_autocfg", "nd", ipv6=True) == ("iface.ipv6_autocfg", "nd")
    assert validate_setting(NODE, "iface.tos", "1") == ("iface.tos", "1")
    # a node record names its iface: it may be pointed at another one (only an iface record's own name is fixed)
    assert validate_setting(NODE, "iface.iscsi_ifacename", "other") == ("iface.iscsi_ifacename", "other")
    assert validate_setting(NODE, "node.session.auth.username", "u" * 255)[1] == "u" * 255
    assert validate_setting(NODE, "iface.net_ifacename", "e" * 15)[1] == "e" * 15  # IFNAMSIZ 16
    _refusal(NODE, "iface.net_ifacename", "e" * 16)


def _three_ways(text: str) -> list[record_module.Record]:
    """The same file through each reader: the line cache (cold, then warm), the fast parser (a
    line the cache refuses: an unknown key), the exact parser (an indented line)."""
    lines = text.split("\n")
    fast = "\n".join([*lines[:-2], "node.session.futurekey = 1", *lines[-2:]])
    exact = fast.replace("\nnode.tpgt = 1\n", "\n node.tpgt = 1\n")
    return [parse_record(t, "nodes/t1/x/default", NODE) for t in (text, text, fast, exact)]


def test_every_reader_gives_the_version_lines_issues_and_views_of_a_real_record() -> None:
    cached, warm, fast, exact = _three_ways(T1_RECORD)
    numbered = {line.partition(" = ")[0]: n for n, line in enumerate(T1_RECORD.split("\n"), 1) if " = " in line}
    unknown_line = len(T1_RECORD.split("\n")) - 1
    for rec in (cached, warm, fast, exact):
        assert rec.version == "2.1.8"
        assert {k: rec.line_of(k) for k in numbered} == numbered
        assert rec.entries == {**cached.entries, **({"node.session.futurekey": "1"} if rec in (fast, exact) else {})}
        assert rec.values() == cached.values() and rec.format() == T1_RECORD
        shown = rec.settings()
        assert json.loads(rec.settings_json()) == shown and json.loads(rec.settings_json(True)) == rec.settings(True)
        assert shown["node.session.auth.password"] == "********"
        assert rec.settings(True)["node.session.auth.password"] == "s3cret pass#1"
    assert cached.issues == [] and warm.issues == []
    for rec in (fast, exact):
        assert [(i.line, i.severity, i.key) for i in rec.issues] == [(unknown_line, "error", "node.session.futurekey")]
        assert rec.settings()["node.session.futurekey"] == "1"


_CMDS = "node.session.cmds_max"


@pytest.mark.parametrize(
    ("line", "issue", "rewrite"),
    [
        (
            "node.startup = Bogus",
            (
                "error",
                "node.startup = 'Bogus' is not one of manual, automatic, onboot (iscsiadm 2.1.8 refuses to list the "
                "records; values are case-sensitive)",
            ),
            "node.startup: 'Bogus' is not one of manual, automatic, onboot; kept 'manual'",
        ),
        (
            "node.session.auth.chap_algs = SHA256 MD5,MD5,FOO",
            (
                "warning",
                "node.session.auth.chap_algs = 'SHA256 MD5,MD5,FOO' repeated CHAP algorithm 'MD5' ignored; "
                "unknown CHAP algorithm 'FOO' ignored (iscsiadm reads 'SHA256,MD5')",
            ),
            "node.session.auth.chap_algs: repeated CHAP algorithm 'MD5' ignored; unknown CHAP algorithm 'FOO' ignored",
        ),
        (
            "node.session.auth.chap_algs = FOO",
            (
                "warning",
                "node.session.auth.chap_algs = 'FOO' unknown CHAP algorithm 'FOO' ignored (iscsiadm reads '<empty>')",
            ),
            "node.session.auth.chap_algs: unknown CHAP algorithm 'FOO' ignored",
        ),
        ("node.session.auth.chap_algs = SHA256,MD5", None, None),
        (
            "iface.net_ifacename = " + "e" * 16,  # IFNAMSIZ 16 keeps 15
            ("warning", f"iface.net_ifacename = {'e' * 16!r} is longer than 15 bytes; iscsiadm truncates it"),
            "iface.net_ifacename: truncated to 15 bytes",
        ),
        ("iface.net_ifacename = " + "e" * 15, None, None),
        (
            f"{_CMDS} = 12abc",
            ("warning", f"{_CMDS} = '12abc' is not a plain integer; iscsiadm reads it as 12"),
            f"{_CMDS}: '12abc' is stored as 12",
        ),
        (
            f"{_CMDS} = 2147483648",
            ("warning", f"{_CMDS} = '2147483648' is out of range -2147483648..2147483647; iscsiadm stores -2147483648"),
            f"{_CMDS}: '2147483648' is stored as -2147483648",
        ),
        (f"{_CMDS} = 2147483647", None, None),
        (f"{_CMDS} = -2147483648", None, None),
        ("node.session.auth.username = " + "u" * 255, None, None),  # fits iscsiadm's value buffer
        (
            "node.session.auth.username = " + "u" * 256,
            (
                "error",
                f"node.session.auth.username = {'u' * 256!r} is longer than 255 bytes, "
                "which overflows iscsiadm's buffer",
            ),
            "node.session.auth.username: truncated to 255 bytes",
        ),
    ],
)
def test_each_value_iscsiadm_changes_or_refuses_is_reported_and_rewritten_as_it_does(
    line: str, issue: tuple[str, str] | None, rewrite: str | None
) -> None:
    for text in (f"node.name = a\n{line}\n", f" node.name = a\n{line}\n"):  # the fast and the exact parser
        rec = parse_record(text, "f", NODE)
        assert [(i.line, i.severity, i.message) for i in rec.issues] == ([] if issue is None else [(2, *issue)])
        assert rec.rewrite_warnings() == ([] if rewrite is None else [rewrite])


def test_a_node_records_iface_name_picks_the_written_key_set_when_it_has_no_address() -> None:
    values = idbm_values(NODE, {}, "default")[0]
    values["iface.iscsi_ifacename"] = "offload-ipv6"
    text = format_record(NODE, values)
    assert "iface.tos = 0" not in text and "iface.hop_limit = 0" in text
    values["iface.iscsi_ifacename"] = "offload0"
    assert "iface.tos = 0" in format_record(NODE, values)


def test_record_ipv6_reads_what_is_there() -> None:
    ipv6 = record_module.record_ipv6
    assert ipv6(NODE, {}) is False and ipv6(RecordKind.IFACE, {"iface.iscsi_ifacename": "x-ipv6"}) is True
    assert ipv6(NODE, {"iface.ipaddress": "2001:db8::1"}) is True
    assert ipv6(NODE, {"iface.ipaddress": "2001:db8::1", "iface.bootproto": "dhcp"}) is False
    assert ipv6(RecordKind.SENDTARGETS, {"iface.iscsi_ifacename": "x-ipv6"}) is False  # no iface keys at all


def test_an_iface_named_for_ipv6_is_read_and_rewritten_with_the_ipv6_keys() -> None:
    text = "iface.iscsi_ifacename = x-ipv6\niface.ipv6_autocfg = nd\n"
    rec = parse_record(text, "ifaces/x-ipv6", RecordKind.IFACE, iface_hint="x-ipv6")
    assert rec.ok and rec.values()["iface.ipv6_autocfg"] == "nd" and rec.rewrite_warnings() == []
    assert "iface.ipv6_autocfg = nd" in rec.format()
    v4 = parse_record(text, "ifaces/x0", RecordKind.IFACE, iface_hint="x0")
    assert "iface.ipv6_autocfg: unknown to iscsiadm 2.1.8 here; dropped" in v4.rewrite_warnings()


_FUTURE = "node.session.futurekey = 1\n"  # a line the line cache refuses: the fast parser's turn


@pytest.mark.parametrize(
    ("text", "entries", "issues"),
    [
        # no newline at the end, even when the second character is one
        ("#\nnode.startup = manual", {}, [(2, "warning")]),
        ("node.name = a\n\n" + _FUTURE, {"node.name": "a"}, [(3, "error")]),  # a blank line
        ("#node.startup = automatic\n" + _FUTURE, {}, [(2, "error")]),  # a comment, however it reads
        ("node.name = a\n = x\n" + _FUTURE, {"node.name": "a"}, [(2, "warning"), (3, "error")]),  # no key
        ("node.startup =  automatic\n" + _FUTURE, {"node.startup": "automatic"}, [(2, "error")]),  # blanks stripped
        ("node.startup = automatic\t\n" + _FUTURE, {"node.startup": "automatic"}, [(2, "error")]),
    ],
)
def test_lines_the_fast_parser_must_not_take_as_they_look(
    text: str, entries: dict[str, str], issues: list[tuple[int, str]]
) -> None:
    rec = parse_record(text, "f", NODE)
    assert {k: v for k, v in rec.entries.items() if k != "node.session.futurekey"} == entries
    assert [(i.line, i.severity) for i in rec.issues] == issues


def test_the_fast_parser_keeps_the_versions_other_bytes() -> None:
    rec = parse_record("# BEGIN RECORD 2.1.8\xa0\n" + _FUTURE, "f", NODE)  # only C's blanks are stripped
    assert rec.version == "2.1.8\xa0"


def test_a_bad_earlier_duplicate_is_an_error_after_any_good_line() -> None:
    rec = parse_record("node.tpgt = 1\nnode.startup = Bogus\nnode.startup = automatic\n", "nodes/d", NODE)
    assert [(i.path, i.line, i.severity, i.key) for i in rec.issues] == [
        ("nodes/d", 2, "error", "node.startup"),
        ("nodes/d", 3, "warning", "node.startup"),
    ]
    assert rec.issues[0].message.startswith("node.startup = 'Bogus' is not one of manual, automatic, onboot")


def test_a_value_seen_in_one_key_set_is_still_checked_in_the_other() -> None:
    """The memo of checked values is per key set: iface.tos is fine for an IPv4 iface, an error for an IPv6 one."""
    text = "iface.tos = 1\n" + _FUTURE  # past the line cache (kept per key set too)
    assert [i.key for i in parse_record(text, "f", NODE, iface_hint="e0").errors] == ["node.session.futurekey"]
    rec = parse_record(text, "f", NODE, iface_hint="e-ipv6")
    assert [(i.line, i.key) for i in rec.errors] == [(1, "iface.tos"), (2, "node.session.futurekey")]
    assert "IPv4 iface key" in rec.errors[0].message


@pytest.mark.parametrize(
    ("text", "entries", "issues"),
    [
        ("#\nnode.name = a\n", {"node.name": "a"}, []),  # one-character lines
        ("x\nnode.name = a\n", {"node.name": "a"}, [(1, "warning")]),
        ("node.name =  iqn.2026-11.test:a\n", {"node.name": "iqn.2026-11.test:a"}, []),  # blanks are stripped
        ("node.name = iqn.2026-11.test:a \n", {"node.name": "iqn.2026-11.test:a"}, []),
        ("node.name = iqn.2026-11.test:a\t\n", {"node.name": "iqn.2026-11.test:a"}, []),
    ],
)
def test_lines_the_line_cache_must_not_take_as_they_look(
    text: str, entries: dict[str, str], issues: list[tuple[int, str]]
) -> None:
    for _ in range(2):  # cold, then from the cache
        rec = parse_record(text, "f", NODE)
        assert rec.entries == entries and [(i.line, i.severity) for i in rec.issues] == issues


def test_the_line_cache_keeps_the_versions_other_bytes() -> None:
    rec = parse_record("# BEGIN RECORD 2.1.8\xa0\nnode.name = a\n", "f", NODE)
    assert rec.version == "2.1.8\xa0"


@pytest.mark.parametrize("kind", [RecordKind.SENDTARGETS, RecordKind.ISNS])
def test_a_clean_discovery_record_shows_only_its_own_keys(kind: RecordKind) -> None:
    text = "# BEGIN RECORD 2.1.8\ndiscovery.sendtargets.address = 192.0.2.25\n# END RECORD\n"
    for _ in range(2):  # cold, then from the line cache
        rec = parse_record(text, "st", kind)
        shown = rec.settings()
        assert rec.ok and not [k for k in shown if k.startswith("iface.")]
        assert list(shown.items()) == list(show_settings(kind, rec.entries, "default").items())
        assert shown["discovery.sendtargets.address"] == "192.0.2.25"
        assert rec.settings_json() == json.dumps(shown)
