"""--control PATH: a stale socket is replaced; anything else at PATH is refused and left as it was."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from iscsikit.errors import UsageError
from iscsikit.target.control import ControlServer


def _start(path: Path) -> None:
    async def go() -> None:
        srv = ControlServer(Any, path)  # type: ignore[arg-type]  # start() never touches the server
        await srv.start()
        await srv.stop()

    asyncio.run(go())


def test_a_regular_file_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "precious.conf"
    path.write_text("keep me\n")
    with pytest.raises(UsageError, match=f"{path} is not a socket"):
        _start(path)
    assert path.read_text() == "keep me\n"


def test_a_symlink_is_refused_even_to_a_socket(tmp_path: Path) -> None:
    sock_path = tmp_path / "real.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(sock_path))  # a stale socket: nobody listens
    victim = tmp_path / "victim"
    victim.write_text("x")
    for target in (sock_path, victim):
        link = tmp_path / f"link-to-{target.name}"
        link.symlink_to(target)
        with pytest.raises(UsageError, match=f"{link} is a symlink"):
            _start(link)
        assert link.is_symlink() and target.exists()


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        _start(tmp_path)


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
    old = os.lstat(path).st_ino
    _start(path)  # binds a new socket there (and removes it on stop)
    assert not path.exists() or os.lstat(path).st_ino != old
