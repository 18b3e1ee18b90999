"""request(wait=...): retry while a starting target's control socket is not there yet; nothing else."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from iscsikit.target.control import ControlError, NotListeningError, request


def test_without_wait_a_missing_socket_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(NotListeningError, match="no control socket"):
        request(tmp_path / "ctl.sock", "status")


def test_wait_picks_up_a_socket_that_opens_later_and_error_answers_are_not_retried(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    answers = [{"ok": True, "result": {"targets": []}}, {"ok": False, "error": {"name": "Nope", "message": "no"}}]

    def serve_later() -> None:
        time.sleep(0.3)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
            srv.bind(str(path))
            srv.listen()
            for answer in answers:
                conn, _ = srv.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(json.dumps(answer).encode() + b"\n")

    t = threading.Thread(target=serve_later)
    t.start()
    assert request(path, "status", wait=30) == {"targets": []}
    with pytest.raises(ControlError, match="Nope"):
        request(path, "status", wait=30)
    t.join(10)
