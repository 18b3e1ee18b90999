"""Initiator ACLs of a running target, through its control socket (``iscsikit target acl``).

Three control commands, registered on every control socket:

* ``acl list`` ``{"target"?}`` -> ``{"target", "open", "target_chap", "acls": [entry...]}`` where
  an entry is ``{"initiator", "chap_user", "chap_secret", "mutual_user", "mutual_secret",
  "sessions"}``; secrets are always ``********`` (or null when there is none).
* ``acl add`` ``{"target"?, "initiator", "chap_user"?, "chap_secret_b64"?, "mutual_user"?,
  "mutual_secret_b64"?}``: the secrets travel base64-encoded over the (mode 0600) Unix socket,
  never on a command line.
* ``acl remove`` ``{"target"?, "initiator"}``.

``target`` may be left out when the process serves one target. After every change the
sessions the target no longer admits are closed, as LIO does when a node ACL is deleted: their
tasks are aborted and the initiator has to log in again (and is refused). Removing the last
entry leaves an empty list, which admits nobody: a target never becomes open at run time.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from iscsikit.errors import ConfigError, UsageError
from iscsikit.runner import MASK
from iscsikit.target.proto.chap import ChapCredentials
from iscsikit.target.proto.session import AuthConfig, InitiatorAcl

if TYPE_CHECKING:
    from iscsikit.target.server import TargetRuntime, TargetServer

__all__ = ["entry_json", "register_commands", "resolve_target"]

log = logging.getLogger("iscsikit.target.acl")


def resolve_target(names: list[str], wanted: str | None) -> str:
    """The target a command is for: ``wanted``, or the only one; UsageError otherwise."""
    if wanted:
        if wanted not in names:
            raise UsageError(f"--target {wanted}: no such target here (serving: {', '.join(names) or 'none'})")
        return wanted
    if len(names) == 1:
        return names[0]
    raise UsageError(f"this target process serves {len(names)} targets ({', '.join(names)}); say which with --target")


def _initiator(args: dict[str, Any]) -> str:
    initiator = args.get("initiator")
    if not isinstance(initiator, str) or not initiator:
        raise UsageError("an initiator name is needed")
    return initiator


def _runtime(server: TargetServer, args: dict[str, Any]) -> TargetRuntime:
    wanted = args.get("target")
    if wanted is not None and not isinstance(wanted, str):
        raise UsageError("target must be a string")
    return server.targets[resolve_target(list(server.targets), wanted)]


def _sessions(server: TargetServer, target: str, initiator: str) -> list[Any]:
    return [
        c
        for c in server.connections
        if c.session is not None
        and not c.session.discovery
        and c.session.target_name == target
        and c.session.initiator_name == initiator
    ]


def entry_json(acl: InitiatorAcl, sessions: int = 0) -> dict[str, Any]:
    """One ACL entry for ``acl list``: user names shown, secrets masked."""
    chap = acl.auth.chap if acl.auth is not None else None
    mutual = acl.auth.mutual if acl.auth is not None else None
    return {
        "initiator": acl.initiator,
        "chap_user": chap.user if chap else None,
        "chap_secret": MASK if chap else None,
        "mutual_user": mutual.user if mutual else None,
        "mutual_secret": MASK if mutual else None,
        "sessions": sessions,
    }


async def acl_list(server: TargetServer, args: dict[str, Any]) -> Any:
    runtime = _runtime(server, args)
    info = runtime.info
    entries = [entry_json(a, len(_sessions(server, info.name, a.initiator))) for a in (info.acls or {}).values()]
    return {"target": info.name, "open": info.acls is None, "target_chap": info.auth.chap is not None,
            "acls": entries}  # fmt: skip


def _secret(args: dict[str, Any], key: str) -> bytes:
    value = args.get(key)
    if not isinstance(value, str):
        raise UsageError(f"{key} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{key} is not valid base64") from None


def _credentials(args: dict[str, Any], prefix: str) -> ChapCredentials | None:
    user = args.get(f"{prefix}_user")
    if user is None:
        if args.get(f"{prefix}_secret_b64") is not None:
            raise UsageError(f"a {prefix} secret needs a {prefix} user")
        return None
    if not isinstance(user, str):
        raise UsageError(f"{prefix}_user must be a string")
    try:
        return ChapCredentials(user, _secret(args, f"{prefix}_secret_b64"))
    except ValueError as exc:
        raise ConfigError(f"--{prefix}-user {user}: {exc}") from None


async def acl_add(server: TargetServer, args: dict[str, Any]) -> Any:
    from iscsikit.target.config import acl_entry, check_secret_roles

    runtime = _runtime(server, args)
    info = runtime.info
    initiator = _initiator(args)
    where = f"acl add {initiator}"
    entry = acl_entry(initiator, where=where, chap=_credentials(args, "chap"), mutual=_credentials(args, "mutual"))
    acls = dict(info.acls or {})
    if entry.initiator in acls:
        raise UsageError(f"{entry.initiator} already has an ACL on {info.name}; remove it first to change it")
    acls[entry.initiator] = entry
    check_secret_roles(_auths(server, (where, entry.auth)))
    runtime.info = replace(info, acls=acls)
    server.refresh_directory()
    closed = _enforce(server, runtime, "the ACL changed")
    log.info("ACL of %s: added %s%s", info.name, entry.initiator, " with own CHAP" if entry.auth else "")
    return {"target": info.name, "added": entry_json(entry), "sessions_closed": closed}


async def acl_remove(server: TargetServer, args: dict[str, Any]) -> Any:
    runtime = _runtime(server, args)
    info = runtime.info
    initiator = _initiator(args)
    if info.acls is None or initiator not in info.acls:
        raise UsageError(f"{initiator} has no ACL on {info.name}")
    acls = {k: v for k, v in info.acls.items() if k != initiator}
    runtime.info = replace(info, acls=acls)
    server.refresh_directory()
    closed = _enforce(server, runtime, "its ACL was removed")
    log.info("ACL of %s: removed %s (%d session(s) closed)", info.name, initiator, closed)
    return {"target": info.name, "removed": initiator, "sessions_closed": closed}


def _auths(server: TargetServer, extra: tuple[str, AuthConfig | None]) -> list[tuple[str, AuthConfig]]:
    """Every CHAP setting this process uses, plus ``extra``: for :func:`check_secret_roles`."""
    out = [("discovery", server.options.discovery_auth)]
    for name, runtime in server.targets.items():
        out.append((f"target {name}", runtime.info.auth))
        for a in (runtime.info.acls or {}).values():
            if a.auth is not None:
                out.append((f"target {name} acl {a.initiator}", a.auth))
    if extra[1] is not None:
        out.append((extra[0], extra[1]))
    return out


def _enforce(server: TargetServer, runtime: TargetRuntime, why: str) -> int:
    """Close the sessions of ``runtime``'s target whose initiator is no longer admitted."""
    info = runtime.info
    closed = 0
    for c in server.connections:
        s = c.session
        if s is None or s.discovery or s.target_name != info.name or info.allows(s.initiator_name):
            continue
        log.info("closing session tsih=%d of %s on %s: %s", s.tsih, s.initiator_name, info.name, why)
        c.conn.abort_all()
        if c.runtime is not None and c.nexus is not None:
            c.runtime.luns.nexus_lost(c.nexus)
        c.close()
        closed += 1
    return closed


def register_commands() -> None:
    from iscsikit.target.control import register_command

    register_command("acl list", acl_list)
    register_command("acl add", acl_add)
    register_command("acl remove", acl_remove)
