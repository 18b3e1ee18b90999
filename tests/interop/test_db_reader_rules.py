"""Hand-edited and mutated records, read by iscsikit and by the real iscsiadm 2.1.8.

For every file: iscsikit says a record is ``ok`` exactly when ``iscsiadm -m node -o show``
accepts it, and then shows the same values; and when iscsiadm rewrites it (``-o update``),
the bytes are what iscsikit's writer produces for the same update.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from iscsikit.db.database import Database
from iscsikit.db.layout import NodeRef
from iscsikit.db.record import format_record, parse_record
from iscsikit.db.schema import RecordKind
from iscsikit.errors import DatabaseError
from tests.support.profiles import examples
from tests.support.sandbox import IscsiadmSandbox
from tests.support.tiers import require, require_root
from tests.unit.db.iscsiadm_harness import iscsiadm, parse_show, private_sandbox, reset
from tests.unit.db.support import OLDSTYLE_RECORD, T1_RECORD

TARGET = "iqn.2026-11.org.iscsikit.research:t1"
REL = f"nodes/{TARGET}/192.0.2.11,3260,1/default"


@pytest.fixture(scope="module")
def sandbox(request: pytest.FixtureRequest) -> Iterator[IscsiadmSandbox]:
    require_root(request)
    require(request, "iscsiadm", "nsenter")
    with private_sandbox() as sbx:
        yield sbx


def _check(sandbox: IscsiadmSandbox, text: str) -> None:
    reset(sandbox)
    path = sandbox.db / REL
    path.parent.mkdir(parents=True)
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    rec = parse_record(text, str(path), RecordKind.NODE, iface_hint="default")
    shown = iscsiadm(sandbox, None, "-m", "node", "-o", "show", "-S")
    if rec.ok:
        assert shown.returncode == 0, f"iscsikit says ok, iscsiadm refused: {shown.stderr}"
        assert parse_show(shown.stdout) == [rec.settings(show_secrets=True)]
    else:
        assert shown.returncode != 0, f"iscsikit reported {rec.errors}, iscsiadm listed it"
    # what iscsiadm's writer makes of it on -o update, and what iscsikit's makes of it
    dry = Database(sandbox.db, lock_dir=sandbox.lock_dir, link_root="/etc/iscsi", dry_run=True)
    try:
        dry.update(NodeRef(TARGET, "192.0.2.11", 3260, 1), {"node.session.nr_sessions": "3"})
        refused = None
    except DatabaseError as exc:
        refused = exc
    before = path.read_bytes()
    updated = iscsiadm(
        sandbox, None, "-m", "node", "-T", TARGET, "-p", "192.0.2.11:3260", "-o", "update",
        "-n", "node.session.nr_sessions", "-v", "3",
    )  # fmt: skip
    if refused is not None:
        # the contents name another record: iscsiadm does not rewrite this file (it writes
        # elsewhere, or matches nothing); iscsikit refuses rather than create a second record
        assert path.read_bytes() == before, f"iscsikit refused ({refused}) but iscsiadm rewrote the file"
    elif updated.returncode == 0:
        values = rec.values()
        values["node.session.nr_sessions"] = "3"
        assert path.read_text(errors="surrogateescape") == format_record(RecordKind.NODE, values)


CASES = {
    "verbatim": T1_RECORD,
    "old style": OLDSTYLE_RECORD,
    "no spaces around =": T1_RECORD.replace("node.startup = automatic", "node.startup=automatic"),
    "tabs and trailing blanks": T1_RECORD.replace("node.startup = automatic", "\tnode.startup\t=\tautomatic  \t"),
    "key =value": T1_RECORD.replace("node.tpgt = 1", "node.tpgt =1"),
    "key == value": T1_RECORD.replace("node.startup = automatic", "node.startup==automatic"),
    "hash in value": T1_RECORD.replace("s3cret pass#1", "a=b #c"),
    "duplicate key": T1_RECORD.replace("# END RECORD", "node.startup = onboot\n# END RECORD"),
    "bad then good duplicate": T1_RECORD.replace(
        "# END RECORD", "node.startup = Onboot\nnode.startup = onboot\n# END RECORD"
    ),
    "good then bad duplicate": T1_RECORD.replace(
        "# END RECORD", "node.startup = onboot\nnode.startup = Onboot\n# END RECORD"
    ),
    "no final newline": T1_RECORD.rstrip("\n").replace("# END RECORD", "node.conn[0].startup = automatic"),
    "unknown key": T1_RECORD.replace("# END RECORD", "node.session.futurekey = 1\n# END RECORD"),
    "enum case": T1_RECORD.replace("node.startup = automatic", "node.startup = Automatic"),
    "bool case": T1_RECORD.replace("node.leading_login = No", "node.leading_login = no"),
    "integer junk": T1_RECORD.replace("node.session.cmds_max = 128", "node.session.cmds_max = 12abc"),
    "integer overflow": T1_RECORD.replace("node.session.cmds_max = 128", "node.session.cmds_max = 70000"),
    "negative unsigned": T1_RECORD.replace("node.session.initial_cmdsn = 0", "node.session.initial_cmdsn = -1"),
    "chap algs junk": T1_RECORD.replace("SHA3-256,SHA256,SHA1,MD5", "SHA1 FOO,SHA1 MD5"),
    "ipv6 key in ipv4 record": T1_RECORD.replace("iface.tos = 0", "iface.hop_limit = 0"),
    "crlf": T1_RECORD.replace("\n", "\r\n"),
    "comments and blank lines": T1_RECORD.replace("node.tpgt = 1\n", "node.tpgt = 1\n\n   # a comment\n"),
    "empty file": "",
}


@pytest.mark.parametrize("name", list(CASES))
def test_hand_edited_records(sandbox: IscsiadmSandbox, name: str) -> None:
    _check(sandbox, CASES[name])


_LINES = T1_RECORD.splitlines()
_edits = st.sampled_from(
    [
        lambda line: line.replace(" = ", "="),
        lambda line: line.replace(" = ", " =\t"),
        lambda line: "  " + line + " \t",
        lambda line: line.swapcase(),
        lambda line: line + "x",
        lambda line: line.replace("= ", "= 0"),
        lambda line: "",
        lambda line: "# " + line,
        lambda line: line + "\nnode.session.unknown = 1",
        lambda line: line + "\n" + line.replace("= ", "= 9"),
        lambda line: line.replace(" = ", " = -"),
    ]
)


@settings(
    max_examples=examples(80),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(edits=st.lists(st.tuples(st.integers(0, len(_LINES) - 1), _edits), max_size=4), newline=st.booleans())
def test_mutated_records_agree_with_iscsiadm(sandbox: IscsiadmSandbox, edits: list, newline: bool) -> None:  # type: ignore[type-arg]
    lines = list(_LINES)
    for index, edit in edits:
        lines[index] = edit(lines[index])
    _check(sandbox, "\n".join(lines) + ("\n" if newline else ""))
