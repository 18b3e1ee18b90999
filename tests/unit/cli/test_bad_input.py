"""The bad-input matrix: every command, given a wrong input, exits 2 with one line that names it.

Each row is one command line run as a user would (a real process, its real stderr) against a
sandbox: an empty DB root, an empty sysfs, an empty config file, a regular file and a directory
to pass where the other is expected, and a path that does not exist. Every row must

* exit 2 (a usage or config error, CLI.md), print nothing on stdout,
* print exactly one line on stderr, ``iscsikit: error: ...``, naming the input (the flag or the
  argument as the user wrote it) and the fix,
* change nothing: the sandbox tree (names, types, sizes, modes, contents) is the same after.

A new command gets rows here; ``test_every_command_has_a_row`` fails until it does.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

IQN = "iqn.2026-01.io.iscsikit.test:t1"


@dataclass(frozen=True)
class Row:
    argv: tuple[str, ...]  # after the sandbox's global options; {missing}, {file}, {dir}, {db} expanded
    names: str  # the input, as the error must name it
    fix: str = ""  # a word of the fix the error must give, where there is an obvious one
    globals_: bool = True  # False: give no sandbox global options (the row is about them)
    env: tuple[tuple[str, str], ...] = ()  # ISCSIKIT_* variables for the row (expanded too)

    @property
    def id(self) -> str:
        return " ".join(self.argv)[:80]


def R(*argv: str, names: str, fix: str = "", globals_: bool = True, env: dict[str, str] | None = None) -> Row:
    return Row(tuple(argv), names, fix, globals_, tuple((env or {}).items()))


ROWS: list[Row] = [
    # global options: missing paths, wrong types, bad names
    R("--db-root", "{missing}", "node", "list", names="--db-root {missing}", fix="leave it out", globals_=False),
    R("--db-root", "{file}", "node", "list", names="--db-root {file}", fix="not a directory", globals_=False),
    R("node", "list", names="ISCSIKIT_DB_ROOT={missing}", globals_=False, env={"ISCSIKIT_DB_ROOT": "{missing}"}),
    R("--config", "{badroot}", "node", "list", names="db_root = '{missing}' in {badroot}", globals_=False),
    R("--sysfs-root", "{missing}", "session", "list", names="--sysfs-root {missing}", globals_=False),
    R("--sysfs-root", "{missing}", "device", "list", names="--sysfs-root {missing}", globals_=False),
    R("--config", "{missing}", "config", "show", names="--config {missing}", fix="config set", globals_=False),
    R("--config", "{dir}", "config", "show", names="--config {dir}", globals_=False),
    R("--config", "{badtoml}", "config", "show", names="{badtoml}", globals_=False),
    R("--host", "nowhere", "node", "list", names="--host", fix="chroot:DIR"),
    R("--bogus", "node", "list", names="--bogus", fix="--help"),
    R("nodes", names="nodes", fix="--help"),
    # config
    R("config", "get", "no.such.key", names="no.such.key", fix="known keys"),
    R("config", "set", "no.such.key", "1", names="no.such.key", fix="known keys"),
    R("config", "set", "timeouts.login", "soon", names="timeouts.login"),
    R("config", "set", "timeouts.login", "0", names="timeouts.login", fix="greater than 0"),
    R("config", "set", "db_root", "relative/dir", names="db_root", fix="absolute"),
    R("config", "set", "host", "nowhere", names="host"),
    R("config", "get", names="key", fix="--help"),
    R("config", "show", "--bogus", names="--bogus", fix="--help"),
    # doctor
    R("doctor", "--fix", "--bogus", names="--bogus"),
    # node records
    R("node", "new", "not an iqn", "--portal", "127.0.0.1", names="not an iqn"),
    R("node", "new", IQN, "--portal", "127.0.0.1:99999", names="127.0.0.1:99999"),
    R("node", "new", IQN, "--portal", "127.0.0.1", "--value-file", "{missing}", names="KEY=PATH"),
    R(
        "node",
        "new",
        IQN,
        "--portal",
        "127.0.0.1",
        "--value-file",
        "node.session.auth.password={missing}",
        names="{missing}",
    ),
    R("node", "new", IQN, names="--portal", fix="--help"),
    R("node", "new", IQN, "--portal", "127.0.0.1", "--value-file", "node.session.auth.password={dir}", names="{dir}"),
    R("node", "list", "--portal", "127.0.0.1:port", names="127.0.0.1:port"),
    R("node", "show", "--portal", "127.0.0.1:0", names="127.0.0.1:0"),
    R("node", "set", IQN, "novalue", names="novalue"),
    R("node", "delete", "--all", "--portal", "x:y:z:1", names="x:y:z:1"),
    # discovery records
    R("discovery", "list", "--type", "bogus", names="bogus"),
    R("discovery", "show", "127.0.0.1", "--type", "bogus", names="bogus"),
    R("discovery", "new", "127.0.0.1:99999", names="127.0.0.1:99999"),
    R("discovery", "set", "127.0.0.1", "novalue", names="novalue"),
    R("discovery", "delete", "127.0.0.1:port", names="127.0.0.1:port"),
    # iface records
    R("iface", "list", "--bogus", names="--bogus"),
    R("iface", "new", "bad/name", names="bad/name"),
    R("iface", "show", "bad/name", names="bad/name"),
    R("iface", "set", "bad/name", "iface.mtu=1500", names="bad/name"),
    R("iface", "delete", "bad/name", names="bad/name"),
    # initiator
    R("discover", "127.0.0.1:port", names="127.0.0.1:port"),
    R("discover", "127.0.0.1", "--type", "bogus", names="bogus"),
    R("discover", "127.0.0.1", "--chap-user", "u", "--chap-secret-file", "{dir}", names="{dir}"),
    R("discover", "127.0.0.1", "--chap-user", "u", "--chap-secret-file", "{missing}", names="{missing}"),
    R("login", "not an iqn", names="not an iqn"),
    R("login", IQN, "--portal", "127.0.0.1:port", names="127.0.0.1:port"),
    R("login", IQN, "--timeout", "soon", names="--timeout"),
    R("logout", "--sid", "abc", names="--sid"),
    R("logout", "a/b", names="a/b"),
    # sessions and devices
    R("session", "show", "abc", names="SID", fix="--help"),
    R("session", "rescan", "--lun", "x", names="--lun"),
    R("session", "list", "--target", "a/b", names="a/b"),
    R("device", "list", "--target", "a/b", names="a/b"),
    # clean and restore
    R("clean", "--desired", "{missing}", names="{missing}"),
    R("clean", "--desired", "{dir}", names="{dir}"),
    R("clean", "--older-than", "soon", names="--older-than"),
    R("clean", "--probe-timeout", "-1", names="--probe-timeout"),
    R("clean", "--portal", "127.0.0.1:port", names="127.0.0.1:port"),
    R("clean", "--yes", "--backup", "{missing}/sub/b.tar", names="{missing}"),
    R("restore", "{missing}", names="{missing}"),
    R("restore", "{dir}", names="{dir}"),
    R("restore", "{file}", names="{file}"),
    # the target
    R("target", "serve", "--iqn", IQN, "--lun", "1=file:{missing}/x.img", names="--lun 1", fix="create it"),
    R("target", "serve", "--iqn", IQN, "--lun", "1=file:{missing}", names="--lun 1", fix="size="),
    R(
        "target",
        "serve",
        "--portal",
        "0.0.0.0:3260",
        "--insecure-open",
        "--iqn",
        IQN,
        "--lun",
        "1=file:{missing}/x.img",
        names="--lun 1",
    ),
    R("target", "serve", "--iqn", IQN, "--lun", "1=file:{dir}", names="--lun 1", fix="file"),
    R("target", "serve", "--iqn", IQN, "--lun", "1=bogus:x", names="--lun 1", fix="known"),
    R("target", "serve", "--iqn", IQN, "--lun", "1=memory:size=big", names="--lun 1"),
    R("target", "serve", "--iqn", IQN, "--lun", "1=memory:size=1000", names="--lun 1", fix="multiple"),
    R("target", "serve", "--iqn", IQN, "--lun", "x=memory:size=1M", names="--lun", fix="N=SPEC"),
    R("target", "serve", "--iqn", "not an iqn", "--lun", "1=memory:size=1M", names="not an iqn"),
    R("target", "serve", "--iqn", IQN, "--lun", "1=memory:size=1M", "--portal", "127.0.0.1:99999", names="99999"),
    R(
        "target",
        "serve",
        "--iqn",
        IQN,
        "--lun",
        "1=memory:size=1M",
        "--chap-user",
        "u",
        "--chap-secret-file",
        "{missing}",
        names="{missing}",
    ),
    R("target", "serve", "--iqn", IQN, "--lun", "1=replicated:tcp://127.0.0.1", names="--lun 1"),
    R("target", "serve", "--iqn", IQN, "--lun", "1=replicated:udp://127.0.0.1:9,size=1M", names="--lun 1"),
    R("target", "serve", "--iqn", IQN, "--lun", "1=memory:size=1M,colour=red", names="colour"),
    R(
        "target",
        "serve",
        "--iqn",
        IQN,
        "--lun",
        "1=memory:size=1M",
        "--chap-user",
        "u",
        "--chap-secret-file",
        "{dir}",
        names="{dir}",
    ),
    R("target", "serve", "--iqn", IQN, "--lun", "1=memory:size=1M", "--allow", "not an iqn", names="not an iqn"),
    R("target", "serve", "--config", "{dir}", names="{dir}"),
    R("target", "serve", "--config", "{missing}", names="{missing}"),
    R("target", "serve", "--config", "{badtoml}", names="{badtoml}"),
    R("target", "serve", "--iqn", IQN, "--lun", "1=memory:size=1M", "--loop", "bogus", names="--loop"),
    R("target", "serve", "--iqn", IQN, "--lun", "1=memory:size=1M", "--header-digest", "md5", names="md5"),
    R("target", "serve", "--lun", "1=memory:size=1M", names="--iqn"),
    R("target", "status", "--control", "{missing}", names="{missing}"),
    R("target", "status", "--control", "{file}", names="--control {file}", fix="not a socket"),
    R("target", "status", names="ISCSIKIT_TARGET_CONTROL={missing}/control.sock", fix="--control"),
    R("target", "status", "--wait", "soon", names="--wait"),
    R("target", "acl", "list", "--control", "{missing}", names="{missing}"),
    R("target", "acl", "add", "not an iqn", "--control", "{missing}", names="not an iqn"),
    R("target", "acl", "remove", "not an iqn", "--control", "{missing}", names="not an iqn"),
    # replicas
    R("replica", "serve", "{file}/sub", "--size", "1M", "--listen", "127.0.0.1:9", names="{file}"),
    R("replica", "serve", "{dir}", "--size", "big", "--listen", "127.0.0.1:9", names="--size"),
    R("replica", "serve", "{dir}", "--size", "1M", "--listen", "127.0.0.1:port", names="--listen"),
    R("replica", "serve", "{file}", "--size", "1M", "--listen", "127.0.0.1:9", names="{file}"),
    R(
        "replica",
        "serve",
        "{dir}",
        "--size",
        "1M",
        "--listen",
        "127.0.0.1:9",
        "--secret-file",
        "{missing}",
        names="{missing}",
    ),
    R("replica", "serve", "{dir}", "--size", "1M", "--io-threads", "0", names="--io-threads"),
    R("replica", "serve", "{dir}", "--size", "1M", "--listen", "127.0.0.1:9", "--secret-file", "{dir}", names="{dir}"),
    R("replica", "serve", "{dir}", "--size", "1M", "--listen", "127.0.0.1:9", "--tls-cert", "{missing}", names="--tls"),
    R("replica", "secret", "--output", "{missing}/sub/secret", names="{missing}"),
    R("replica", "info", "{missing}", names="{missing}"),
    R("replica", "info", "{file}", names="{file}"),
    R("replica", "status", "--control", "{missing}", names="{missing}"),
    R("replica", "add", "not-an-address", "--control", "{missing}", names="not-an-address"),
    R("replica", "add", "tcp://127.0.0.1:1", "--lun", "x", "--control", "{missing}", names="--lun"),
    R("replica", "remove", "not-an-address", "--control", "{missing}", names="not-an-address"),
    # the demo: nothing may start before its inputs are checked
    R("demo", "--size", "big", names="--size"),
    R("demo", "--replicas", "1", names="--replicas"),
    R("demo", "--workdir", "{file}", names="{file}"),
    R("demo", "--events", "{missing}/sub/events.jsonl", names="{missing}"),
]


def _tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under root: type, mode, content hash (files) or link target."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            if p.is_symlink():
                out[str(p)] = ("link", st.st_mode, os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir", st.st_mode, "")
            else:
                out[str(p)] = ("file", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "db"
    for sub in ("nodes", "send_targets", "ifaces", "isns", "static", "fw", "slp"):
        (db / sub).mkdir(parents=True)
    (tmp_path / "sys").mkdir()
    # state and lock directories inside the sandbox, so that writing them shows in its tree; the
    # lock directory and file are there as on any host where iscsiadm ran once (taking the lock and letting
    # it go leaves it as it was)
    (tmp_path / "config.toml").write_text(f'state_dir = "{tmp_path / "state"}"\nlock_dir = "{tmp_path / "lock"}"\n')
    (tmp_path / "lock").mkdir(mode=0o700)
    (tmp_path / "lock" / "lock").touch(mode=0o600)  # iscsiadm's lock file; lock.write is the held lock
    (tmp_path / "afile").write_text("not what was expected\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "bad.toml").write_text("this is = = not toml\n")
    (tmp_path / "badroot.toml").write_text(f'db_root = "{tmp_path / "missing"}"\n')
    return {
        "tmp": str(tmp_path),
        "db": str(db),
        "sys": str(tmp_path / "sys"),
        "config": str(tmp_path / "config.toml"),
        "missing": str(tmp_path / "missing"),
        "file": str(tmp_path / "afile"),
        "dir": str(tmp_path / "adir"),
        "badtoml": str(tmp_path / "bad.toml"),
        "badroot": str(tmp_path / "badroot.toml"),
    }


def _expand(text: str, sb: dict[str, str]) -> str:
    return text.format(**sb)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(row: Row, sandbox: dict[str, str]) -> None:
    argv = [_expand(a, sandbox) for a in row.argv]
    if row.globals_:
        argv = ["--db-root", sandbox["db"], "--sysfs-root", sandbox["sys"], "--config", sandbox["config"], *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISCSIKIT_")}
    env["ISCSIKIT_TARGET_CONTROL"] = sandbox["missing"] + "/control.sock"
    env.update({k: _expand(v, sandbox) for k, v in row.env})
    before = _tree(Path(sandbox["tmp"]))
    res = subprocess.run(
        [sys.executable, "-m", "iscsikit", *argv],
        capture_output=True,
        text=True,
        cwd=sandbox["tmp"],
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    lines = res.stderr.splitlines()
    shown = f"argv={argv}\nrc={res.returncode}\nstdout={res.stdout!r}\nstderr={res.stderr!r}"
    assert res.returncode == 2, shown
    assert len(lines) == 1 and lines[0].startswith("iscsikit: error: "), shown
    assert _expand(row.names, sandbox) in lines[0], shown
    assert row.fix in lines[0], shown
    assert res.stdout == "", shown
    assert _tree(Path(sandbox["tmp"])) == before, shown


def _leaf_commands() -> set[str]:
    from iscsikit.cli.main import COMMANDS, build_command

    leaves: set[str] = set()

    def walk(cmd: object, path: list[str]) -> None:
        sub = getattr(cmd, "commands", None)
        if sub:
            for name, child in sub.items():
                walk(child, [*path, name])
        else:
            leaves.add(" ".join(path))

    for name in COMMANDS:
        walk(build_command(name), [name])
    return leaves


def test_every_command_has_a_row() -> None:
    covered = set()
    leaves = _leaf_commands()
    for row in ROWS:
        words = [a for a in row.argv if not a.startswith("-")]
        for n in (3, 2, 1):
            if " ".join(words[:n]) in leaves:
                covered.add(" ".join(words[:n]))
                break
    assert leaves - covered == set(), "commands without a bad-input row in ROWS"


@pytest.mark.parametrize("row", [ROWS[0], ROWS[-1]], ids=[ROWS[0].id, ROWS[-1].id])
def test_with_json_the_error_is_one_document_on_stdout(row: Row, sandbox: dict[str, str]) -> None:
    import json

    argv = ["--json", *(_expand(a, sandbox) for a in row.argv)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISCSIKIT_")}
    res = subprocess.run(
        [sys.executable, "-m", "iscsikit", *argv], capture_output=True, text=True, cwd=sandbox["tmp"], env=env,
        stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2 and res.stderr == "", res
    error = json.loads(res.stdout)["error"]
    assert error["code"] == 2 and _expand(row.names, sandbox) in error["message"]
