"""Control-socket commands of a running target for its replicated LUNs.

``replica status``, ``replica add`` and ``replica remove`` (args: ``address``, and ``target``
/ ``lun`` when the target serves more than one replicated LUN). Registered by
:func:`iscsikit.replica.spec.register` when the target loads its backends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iscsikit.errors import UsageError

if TYPE_CHECKING:
    from iscsikit.replica.controller import ReplicatedBackend
    from iscsikit.target.server import TargetServer


def replicated_luns(server: TargetServer) -> list[tuple[str, int, ReplicatedBackend]]:
    from iscsikit.replica.controller import ReplicatedBackend

    out = []
    for iqn, runtime in server.targets.items():
        for lun, lu in runtime.luns.items():
            if isinstance(lu.backend, ReplicatedBackend):
                out.append((iqn, lun, lu.backend))
    return out


def pick(server: TargetServer, args: dict[str, Any]) -> tuple[str, int, ReplicatedBackend]:
    """The one replicated LUN the request means; UsageError saying what to add when ambiguous."""
    found = replicated_luns(server)
    if args.get("target") is not None:
        found = [f for f in found if f[0] == args["target"]]
    if args.get("lun") is not None:
        found = [f for f in found if f[1] == int(args["lun"])]
    if not found:
        raise UsageError("no replicated LUN matches (see `iscsikit replica status`)")
    if len(found) > 1:
        listing = ", ".join(f"{iqn} LUN {lun}" for iqn, lun, _ in found)
        raise UsageError(f"several replicated LUNs ({listing}); choose one with --target and --lun")
    return found[0]


def _address(args: dict[str, Any]) -> str:
    from iscsikit.replica.client import parse_address

    address = str(args.get("address") or "")
    if not address.startswith("tcp://"):
        address = "tcp://" + address
    parse_address(address)
    return address


async def status(server: TargetServer, args: dict[str, Any]) -> Any:
    return [
        {"target": iqn, "lun": lun, **backend.describe(), "events": list(backend.events)[-20:]}
        for iqn, lun, backend in replicated_luns(server)
    ]


async def add(server: TargetServer, args: dict[str, Any]) -> Any:
    iqn, lun, backend = pick(server, args)
    replica = await backend.add_replica(_address(args))
    return {"target": iqn, "lun": lun, **replica.to_json()}


async def remove(server: TargetServer, args: dict[str, Any]) -> Any:
    iqn, lun, backend = pick(server, args)
    address = _address(args)
    await backend.remove_replica(address)
    return {"target": iqn, "lun": lun, "removed": address}


def register_commands() -> None:
    from iscsikit.target.control import register_command

    register_command("replica status", status)
    register_command("replica add", add)
    register_command("replica remove", remove)
