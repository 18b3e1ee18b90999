"""``acl list|add|remove`` on a running server's control socket, over real loopback sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from iscsikit.target.backends import MemoryBackend
from iscsikit.target.control import ControlError, ControlServer, ControlUsageError, request
from iscsikit.target.proto import AuthConfig, ChapCredentials, InitiatorConnection, PortalInfo, TargetInfo
from iscsikit.target.proto.initiator import LoginFailed
from iscsikit.target.proto.session import InitiatorAcl
from iscsikit.target.scsi import LogicalUnit, LuIdentity, LunMap
from iscsikit.target.server import TargetRuntime, TargetServer

from .proto.aclient import Client

T = "iqn.2026-11.org.example:acl"
T2 = "iqn.2026-11.org.example:acl2"
H1 = "iqn.2026-11.org.example:h1"
H2 = "iqn.2026-11.org.example:h2"
SECRET = b"h2-own-secret-0001"
MUTUAL = b"acl-mutual-secret-02"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, *infos: TargetInfo) -> AsyncIterator[tuple[TargetServer, Path]]:
    runtimes = [
        TargetRuntime(info, LunMap({1: LogicalUnit(MemoryBackend(1 << 20), identity=LuIdentity.from_name(info.name))}))
        for info in infos or (TargetInfo(T),)
    ]
    server = TargetServer(runtimes, [PortalInfo("127.0.0.1", 0, 1)])
    await server.start()
    path = tmp_path / "ctl.sock"
    ctl = ControlServer(server, path)
    await ctl.start()
    try:
        yield server, path
    finally:
        await server.stop()
        await ctl.stop()


async def ctl(path: Path, command: str, **args: Any) -> Any:
    return await asyncio.to_thread(request, path, command, args)


async def login(server: TargetServer, name: str, **kw: Any) -> Client:
    ini = InitiatorConnection(name, target=kw.pop("target", T), **kw)
    return await Client.connect("127.0.0.1", server.portals[0].port, ini)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_add_with_own_chap_list_masks_and_login_follows(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (server, path):
            listed = await ctl(path, "acl list")
            assert listed == {"target": T, "open": True, "target_chap": False, "acls": []}
            anyone = await login(server, H1)  # open target: any name gets in
            added = await ctl(path, "acl add", initiator=H2, chap_user="h2", chap_secret_b64=b64(SECRET),
                              mutual_user="acl", mutual_secret_b64=b64(MUTUAL))  # fmt: skip
            assert added["sessions_closed"] == 1  # H1 is not on the new list
            assert await anyone.closed_by_target()
            raw = await asyncio.to_thread(_raw_request, path, {"command": "acl list", "args": {}})
            assert SECRET.decode() not in raw and MUTUAL.decode() not in raw
            listed = json.loads(raw)["result"]
            assert listed["open"] is False
            assert listed["acls"] == [{"initiator": H2, "chap_user": "h2", "chap_secret": "********",
                                       "mutual_user": "acl", "mutual_secret": "********", "sessions": 0}]  # fmt: skip
            with pytest.raises(LoginFailed) as exc:
                await login(server, H1)
            assert exc.value.status == 0x0202
            with pytest.raises(LoginFailed) as exc:
                await login(server, H2)  # without its CHAP
            assert exc.value.status == 0x0201
            c = await login(server, H2, chap=("h2", SECRET), mutual=("acl", MUTUAL))
            assert (await ctl(path, "acl list"))["acls"][0]["sessions"] == 1
            await c.close()

    run(main())


def _raw_request(path: Path, req: dict[str, Any]) -> str:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            buf += s.recv(65536)
    return buf.decode()


def test_remove_closes_that_initiators_sessions_only(tmp_path: Path) -> None:
    async def main() -> None:
        info = TargetInfo(T, acls={H1: InitiatorAcl(H1), H2: InitiatorAcl(H2)})
        async with serving(tmp_path, info) as (server, path):
            c1 = await login(server, H1)
            c2 = await login(server, H2)
            removed = await ctl(path, "acl remove", initiator=H1)
            assert removed == {"target": T, "removed": H1, "sessions_closed": 1}
            assert await c1.closed_by_target()
            rsp, _ = await c2.read(1, 0, 1)  # the other initiator goes on working
            assert rsp.status in (0, 2)
            with pytest.raises(LoginFailed) as exc:
                await login(server, H1)
            assert exc.value.status == 0x0202
            # Removing the last entry leaves an empty list: nobody, never "open".
            await ctl(path, "acl remove", initiator=H2)
            assert await c2.closed_by_target()
            listed = await ctl(path, "acl list")
            assert listed["open"] is False and listed["acls"] == []
            with pytest.raises(LoginFailed):
                await login(server, H2)
            await c1.close()
            await c2.close()

    run(main())


def test_sendtargets_follows_run_time_changes(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, TargetInfo(T, acls={})) as (server, path):

            async def listed(name: str) -> bool:
                c = await Client.connect("127.0.0.1", server.portals[0].port, InitiatorConnection(name))
                await c.send(c.ini.text([("SendTargets", "All")])[1])
                text = bytes((await c.pdu()).data)  # type: ignore[attr-defined]
                await c.close()
                return T.encode() in text

            assert not await listed(H1)
            await ctl(path, "acl add", initiator=H1)
            assert await listed(H1) and not await listed(H2)

    run(main())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"initiator": H2, "chap_user": "u", "chap_secret_b64": b64(SECRET), "mutual_user": "m",
          "mutual_secret_b64": b64(SECRET)}, "must differ"),
        ({"initiator": H2, "chap_user": "u", "chap_secret_b64": b64(b"short")}, "at least 12"),
        ({"initiator": H2, "mutual_user": "m", "mutual_secret_b64": b64(MUTUAL)}, "mutual CHAP needs"),
        ({"initiator": H2, "chap_secret_b64": b64(SECRET)}, "needs a chap user"),
        ({"initiator": H2, "chap_user": "u", "chap_secret_b64": "!!"}, "not valid base64"),
        ({"initiator": "not-an-iqn"}, "invalid initiator"),
        ({"initiator": H1}, "already has an ACL"),
        ({"initiator": H2, "target": "iqn.2026-11.org.example:nope"}, "no such target"),
        # The target's own CHAP secret may not become this initiator's mutual (target) secret.
        ({"initiator": H2, "chap_user": "u", "chap_secret_b64": b64(SECRET), "mutual_user": "m",
          "mutual_secret_b64": b64(b"target-level-secret")}, "also an initiator's CHAP secret"),
    ],
)  # fmt: skip
def test_bad_add_is_a_usage_error_and_changes_nothing(tmp_path: Path, args: dict[str, Any], message: str) -> None:
    async def main() -> None:
        auth = AuthConfig(ChapCredentials("tgt", b"target-level-secret"))
        async with serving(tmp_path, TargetInfo(T, acls={H1: InitiatorAcl(H1)}, auth=auth)) as (_server, path):
            with pytest.raises(ControlUsageError, match=message) as exc:
                await ctl(path, "acl add", **args)
            assert exc.value.exit_code == 2
            assert SECRET.decode() not in str(exc.value)
            assert [a["initiator"] for a in (await ctl(path, "acl list"))["acls"]] == [H1]

    run(main())


def test_which_target(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, TargetInfo(T), TargetInfo(T2, acls={})) as (_server, path):
            with pytest.raises(ControlUsageError, match="say which with --target"):
                await ctl(path, "acl list")
            await ctl(path, "acl add", target=T2, initiator=H1)
            assert (await ctl(path, "acl list", target=T2))["acls"][0]["initiator"] == H1
            assert (await ctl(path, "acl list", target=T))["open"] is True
            with pytest.raises(ControlUsageError, match="has no ACL on"):
                await ctl(path, "acl remove", target=T, initiator=H1)
            with pytest.raises(ControlError, match="unknown command"):
                await ctl(path, "acl frobnicate")

    run(main())
