"""The target's control socket: one JSON request per line on a Unix socket, one JSON answer.

Request ``{"command": "status", "args": {...}}``; answer ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"name": ..., "message": ..., "usage": bool}}`` (``usage``: bad input,
the CLI exits 2). Built in: ``status``, ``ping`` and the ``acl`` commands (:mod:`.acl`).
Other parts of iscsikit add commands without touching this file::

    from iscsikit.target.control import register_command

    async def replica_add(server, args):            # e.g. the replicated backend
        ...
        return {"added": args["address"]}

    register_command("replica add", replica_add)

Handlers registered on a server instance (``server.control_handlers``) win over the global
registry. The socket is created mode 0600 (it can change the running target).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iscsikit.errors import IscsikitError, UsageError

if TYPE_CHECKING:
    from iscsikit.target.server import TargetServer

__all__ = ["ControlError", "ControlServer", "ControlUsageError", "register_command", "request"]

log = logging.getLogger("iscsikit.target.control")

Handler = Callable[["TargetServer", dict[str, Any]], Awaitable[Any]]
_COMMANDS: dict[str, Handler] = {}
MAX_REQUEST = 1 << 20


class ControlError(IscsikitError):
    """The control socket could not be reached, or the target refused the request."""


def register_command(name: str, handler: Handler) -> None:
    """Make ``name`` a control command for every server in this process."""
    _COMMANDS[name] = handler


async def _status(server: TargetServer, args: dict[str, Any]) -> Any:
    return server.status()


async def _ping(server: TargetServer, args: dict[str, Any]) -> Any:
    return {"pong": True}


register_command("status", _status)
register_command("ping", _ping)


class ControlServer:
    """Serves the control socket of one :class:`TargetServer`."""

    def __init__(self, server: TargetServer, path: Path) -> None:
        from iscsikit.target.acl import register_commands

        register_commands()
        self.server = server
        self.path = path
        self._srv: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _stale_socket(self.path):
            if _alive(self.path):
                raise ControlError(f"{self.path}: another target is already using this control socket")
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._srv = await asyncio.start_unix_server(self._client, path=str(self.path))
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._srv is not None:
            self._srv.close()
            await self._srv.wait_closed()
            self._srv = None
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):  # only ever our socket
                self.path.unlink()
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    writer.write(_answer_error("RequestTooLarge", "request line too long"))
                    return
                writer.write(await self._handle(line))
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    async def _handle(self, line: bytes) -> bytes:
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("command"), str):
                raise ValueError('a request is {"command": NAME, "args": {...}}')
            args = req.get("args") or {}
            if not isinstance(args, dict):
                raise ValueError("args must be an object")
        except ValueError as exc:
            return _answer_error("BadRequest", str(exc))
        name = req["command"]
        handler = self.server.control_handlers.get(name) or _COMMANDS.get(name)
        if handler is None:
            known = sorted(set(_COMMANDS) | set(self.server.control_handlers))
            return _answer_error("UnknownCommand", f"unknown command {name!r}; known: {', '.join(known)}")
        try:
            result = await handler(self.server, args)
        except IscsikitError as exc:
            return _answer_error(type(exc).__name__, exc.message, usage=exc.exit_code == 2)
        except Exception as exc:  # a handler bug must not take the target down
            log.exception("control command %s failed", name)
            return _answer_error(type(exc).__name__, str(exc))
        return json.dumps({"ok": True, "result": result}, default=str).encode() + b"\n"


def _answer_error(name: str, message: str, *, usage: bool = False) -> bytes:
    error = {"name": name, "message": message, "usage": usage}
    return json.dumps({"ok": False, "error": error}).encode() + b"\n"


def _stale_socket(path: Path) -> bool:
    """True if a socket is at ``path`` (it may be removed once nothing answers on it).

    Anything else there (a file, a directory, a symlink even to a socket) is refused and
    left untouched: ``--control`` must not become a way to delete an arbitrary file.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISSOCK(st.st_mode):
        return True
    what = "a symlink" if stat.S_ISLNK(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode) else "not a socket"
    raise UsageError(
        f"control socket path {path} is {what}; refusing to replace it (remove it yourself or choose another --control)"
    )


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


class ControlUsageError(ControlError):
    """The target refused the request as bad input (a name, a value): the CLI exits 2."""

    exit_code = 2


class NotListeningError(ControlError):
    """No target listens on the control socket (yet: a starting target opens it once it serves)."""


def request(
    path: Path, command: str, args: dict[str, Any] | None = None, *, timeout: float = 10.0, wait: float = 0.0
) -> Any:
    """Send one control request (blocking client); returns ``result`` or raises ControlError.

    ``wait``: keep retrying for up to that many seconds while nothing listens on ``path``
    (a target still starting); any other error is raised at once.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            return _request_once(path, command, args, timeout)
        except NotListeningError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _request_once(path: Path, command: str, args: dict[str, Any] | None, timeout: float) -> Any:
    payload = json.dumps({"command": command, "args": args or {}}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(payload)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > 64 << 20:
                    raise ControlError(f"{path}: answer too large")
        except FileNotFoundError:
            raise NotListeningError(f"{path}: no control socket (is `iscsikit target serve` running?)") from None
        except ConnectionRefusedError:
            raise NotListeningError(f"{path}: nothing listens on the control socket (stale socket file?)") from None
        except TimeoutError:
            raise ControlError(f"{path}: the target did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"{path}: {exc.strerror or exc}") from None
    try:
        answer = json.loads(buf)
    except ValueError:
        raise ControlError(f"{path}: malformed answer from the target") from None
    if not answer.get("ok"):
        err = answer.get("error") or {}
        cls = ControlUsageError if err.get("usage") else ControlError
        raise cls(f"{command}: {err.get('name', 'Error')}: {err.get('message', '')}")
    return answer.get("result")
