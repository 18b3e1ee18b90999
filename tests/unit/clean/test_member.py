"""restore's member check (iscsikit/clean/member.py): one test per rule, each with what passes and what not."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iscsikit.clean.member import ConfigMemberError, UnsafeMemberError, check_member
from tests.support.profiles import examples

T = "iqn.2026-11.org.example:disk1"
NODE_DIR = f"/etc/iscsi/nodes/{T}/10.0.0.1,3260,1"
LINK = f"{T},10.0.0.1,3260,1,default"


def refused(name: str, kind: str = "file", mode: int = 0o600, linkname: str = "", **kw: bool) -> str:
    with pytest.raises(UnsafeMemberError) as exc:
        check_member(name, kind, mode, linkname, **kw)
    assert exc.value.member == name and repr(name) in str(exc.value)  # the message names the member
    return exc.value.reason


def test_what_clean_backs_up_passes_unchanged() -> None:
    for name, kind, mode in [
        ("db/nodes/", "dir", 0o700),
        (f"db/nodes/{T}/", "dir", 0o700),
        (f"db/nodes/{T}/10.0.0.1,3260,1/", "dir", 0o700),
        (f"db/nodes/{T}/10.0.0.1,3260,1/default", "file", 0o600),
        (f"db/nodes/{T}/10.0.0.2,3260", "file", 0o600),  # old style
        ("db/send_targets/10.0.0.1,3260/st_config", "file", 0o600),
        ("db/isns/10.0.0.5,3205/isns_config", "file", 0o600),
        ("db/ifaces/eth1-iface", "file", 0o600),
        ("db/slp/", "dir", 0o700),
    ]:
        m = check_member(name, kind, mode)
        assert (m.area, m.relpath, m.kind, m.mode, m.stripped) == ("db", name[3:].rstrip("/"), kind, mode, 0)


def test_names_must_be_safe_components_under_db_or_state() -> None:
    assert "not under db/" in refused("etc/passwd")
    assert "not under db/" in refused("/db/nodes/x")
    assert "unsafe path" in refused("db/nodes/../../etc/passwd")
    assert "unsafe path" in refused("db/nodes//x")
    assert "unsafe path" in refused("db/nodes/./x")
    assert "unsafe path" in refused("db/nodes/a\nb")
    assert "unsafe path" in refused("db/")


def test_only_directories_files_and_symlinks() -> None:
    for kind in ("hard link", "FIFO", "character device", "block device"):
        assert "only directories, regular files and symlinks" in refused(f"db/nodes/{T}/x", kind)


def test_only_the_record_directories() -> None:
    assert "not a record directory" in refused("db/.iscsikit-tmp/x")
    assert "not a record directory" in refused("db/etc-passwd")
    assert "not a record directory" in refused("db/iscsid.conf.d/x")
    assert "must be a directory" in refused("db/nodes", "file")


def test_no_deeper_than_iscsiadms_layout() -> None:
    check_member(f"db/nodes/{T}/10.0.0.1,3260,1/default", "file", 0o600)
    assert "deeper than" in refused(f"db/nodes/{T}/10.0.0.1,3260,1/default/x")
    assert "deeper than" in refused(f"db/send_targets/10.0.0.1,3260/{LINK}/evil")
    assert "deeper than" in refused(f"db/static/{LINK}/default")
    assert "deeper than" in refused("db/ifaces/a/b")
    assert "deeper than" in refused("db/slp/x")


def test_config_files_only_with_the_flag() -> None:
    for name in ("iscsid.conf", "initiatorname.iscsi"):
        with pytest.raises(ConfigMemberError, match="--include-config") as exc:
            check_member(f"db/{name}", "file", 0o644)
        assert exc.value.exit_code == 2
        m = check_member(f"db/{name}", "file", 0o644, include_config=True)
        assert (m.area, m.relpath, m.mode) == ("config", name, 0o644)
        assert "regular file at the DB root" in refused(f"db/{name}", "link", linkname="/tmp/x", include_config=True)
    assert "not a record directory" in refused("db/x/iscsid.conf")


def test_links_only_of_iscsiadms_form() -> None:
    for name in (f"db/static/{LINK}", f"db/fw/{LINK}", f"db/isns/{LINK}",
                 f"db/send_targets/10.0.0.9,3260/{LINK}", f"db/isns/10.0.0.9,3205/{LINK}"):  # fmt: skip
        m = check_member(name, "link", 0o777, NODE_DIR)
        assert (m.kind, m.linkname, m.link_root) == ("link", NODE_DIR, "/etc/iscsi")
    # where iscsiadm keeps none
    assert "where iscsiadm keeps none" in refused(f"db/nodes/{T}/x", "link", linkname=NODE_DIR)
    assert "where iscsiadm keeps none" in refused(f"db/send_targets/{LINK}", "link", linkname=NODE_DIR)
    assert "where iscsiadm keeps none" in refused(f"db/send_targets/junk/{LINK}", "link", linkname=NODE_DIR)
    assert "where iscsiadm keeps none" in refused(f"db/ifaces/{LINK}", "link", linkname=NODE_DIR)
    # a name that is not TARGET,ADDR,PORT,TPGT,IFACE
    assert "not named" in refused("db/static/evil", "link", linkname=NODE_DIR)
    assert "not named" in refused(f"db/static/{T},10.0.0.1,3260,x,default", "link", linkname=NODE_DIR)
    assert "safe name" in refused("db/static/..,10.0.0.1,3260,1,default", "link", linkname="/etc/iscsi/nodes/../x")
    # a target that merely contains /nodes/ (the attack of issue 13), or any other node
    sends = f"db/send_targets/10.0.0.9,3260/{LINK}"
    assert "not to <DB root>" in refused(sends, "link", linkname="/tmp/evil/nodes/x")
    assert "not to <DB root>" in refused(sends, "link", linkname=f"/etc/iscsi/nodes/{T}/10.0.0.2,3260,1")
    assert "not to <DB root>" in refused(sends, "link", linkname=f"/etc/iscsi/nodes/{T}")
    assert "not to <DB root>" in refused(sends, "link", linkname=f"/nodes/{T}/10.0.0.1,3260,1")
    # not absolute or not normalised
    assert "absolute, normalised" in refused(sends, "link", linkname=f"../../nodes/{T}/10.0.0.1,3260,1")
    assert "absolute, normalised" in refused(sends, "link", linkname=f"/tmp/../etc/iscsi/nodes/{T}/10.0.0.1,3260,1")
    assert "absolute, normalised" in refused(sends, "link", linkname=f"/etc//iscsi/nodes/{T}/10.0.0.1,3260,1")
    assert "absolute, normalised" in refused(sends, "link", linkname=f"//etc/iscsi/nodes/{T}/10.0.0.1,3260,1")
    assert "absolute, normalised" in refused(sends, "link", linkname=f"/etc/./iscsi/nodes/{T}/10.0.0.1,3260,1")
    assert "absolute, normalised" in refused(sends, "link", linkname=NODE_DIR + "/")


def test_unsafe_mode_bits_are_stripped() -> None:
    name = f"db/nodes/{T}/10.0.0.1,3260,1/default"
    for mode, kept, stripped in [
        (0o4755, 0o755, 0o4000),
        (0o2755, 0o755, 0o2000),
        (0o1777, 0o775, 0o1002),
        (0o666, 0o664, 0o002),
        (0o6777, 0o775, 0o6002),
        (0o600, 0o600, 0),
    ]:
        m = check_member(name, "file", mode)
        assert (m.mode, m.stripped) == (kept, stripped), oct(mode)
        d = check_member(f"db/nodes/{T}/", "dir", mode)
        assert (d.mode, d.stripped) == (kept, stripped)
    assert check_member("db/iscsid.conf", "file", 0o4777, include_config=True).mode == 0o775


def test_attachment_records() -> None:
    m = check_member("state/attachments/pvc-1.json", "file", 0o4777)
    assert (m.area, m.relpath, m.mode) == ("attachment", "pvc-1", 0o600)
    assert "regular file" in refused("state/attachments/pvc-1.json", "link", linkname="/etc/shadow")
    assert "regular file" in refused("state/attachments/pvc-1.json", "dir")
    assert "<volume id>.json" in refused("state/attachments/pvc-1.txt")
    assert "<volume id>.json" in refused("state/attachments/.pvc-1.json")
    assert "unsafe volume id" in refused("state/attachments/a/b.json")
    assert "unsafe volume id" in refused("state/attachments/a\nb.json")


_text = st.text(alphabet="ab./,:-0123456789\n", max_size=40)


@settings(max_examples=examples(300), deadline=None)
@given(
    name=st.one_of(st.builds(lambda a: "db/" + a, _text), st.builds(lambda a: "state/attachments/" + a, _text), _text),
    kind=st.sampled_from(["dir", "file", "link", "hard link"]),
    mode=st.integers(0, 0o7777),
    linkname=_text,
)
@example(name="db/send_targets/1,2/t,1,2,3,i", kind="link", mode=0o777, linkname="/x/nodes/t/1,2,3/..")
def test_whatever_passes_is_inside_and_safe(name: str, kind: str, mode: int, linkname: str) -> None:
    try:
        m = check_member(name, kind, mode, linkname)
    except UnsafeMemberError:
        return
    parts = m.relpath.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts
    assert m.mode & 0o7002 == 0
    if m.kind == "link":
        assert m.linkname.startswith(m.link_root + "/nodes/") and ".." not in m.linkname.split("/")
