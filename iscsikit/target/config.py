"""Configuration of ``iscsikit target serve``: a TOML file and/or flags, validated into plain data.

A config file (its settings may also sit under a ``[target]`` table of the main
``/etc/iscsikit/config.toml``)::

    portals = ["10.0.0.5:3260", "[::1]:3260"]        # ADDR:PORT[,TPGT]; default 127.0.0.1:3260
    control = "/run/iscsikit/target.sock"
    insecure_open = false                            # true: serve targets with no CHAP/ACL off loopback

    [limits]                                         # all optional; these are the defaults
    max_recv_data_segment_length = 262144
    first_burst_length = 262144
    max_burst_length = 1048576
    queue_depth = 128                                # commands per session, immediate ones too
    header_digest = ["None", "CRC32C"]               # what we accept ("CRC32C" alone: require it)
    data_digest = ["None", "CRC32C"]
    nop_interval = 5
    max_transfer_length = 8388608                    # bytes per command (Block Limits VPD); over it:
                                                     # CHECK CONDITION, INVALID FIELD IN CDB
    write_buffer_budget = 536870912                  # bytes of write data held by the whole process;
                                                     # over it writes get TASK SET FULL
    login_timeout = 15                               # seconds from connect to logged in
    idle_timeout = 60                                # seconds a discovery session may stay silent
    data_timeout = 30                                # seconds commands may wait for Data-Out
    max_connections = 4096                           # whole process
    max_connections_per_address = 256                # per source address
    max_sessions_per_target = 1024
    max_sessions_per_address = 256                   # Normal and discovery, per source address

    [discovery]                                      # CHAP for SendTargets sessions (optional)
    chap_user = "disc"
    chap_secret_file = "/etc/iscsikit/discovery.secret"

    [[targets]]
    iqn = "iqn.2026-11.org.example:disk1"
    allow = ["iqn.1993-08.org.debian:01:host1"]     # ACL entries without own CHAP; no ACL = everyone
    chap_user = "user1"
    chap_secret_env = "DISK1_SECRET"                 # secrets come from files or env, never inline
    mutual_user = "target1"
    mutual_secret_file = "/etc/iscsikit/disk1-mutual.secret"

    [[targets.acls]]                                 # an ACL entry with its own CHAP (LIO's node ACL)
    initiator = "iqn.1993-08.org.debian:01:host2"
    chap_user = "host2"
    chap_secret_file = "/etc/iscsikit/host2.secret"
    mutual_user = "disk1-for-host2"                  # optional: the target proves itself too
    mutual_secret_file = "/etc/iscsikit/host2-mutual.secret"

    [targets.luns]
    1 = "file:/srv/disk1.img,size=10G"

    [targets.luns.2]                                 # the long form of one LUN
    spec = "memory:size=1G"
    read_only = true
    identity = "0f8c1f6e-4a2b-4a47-9d4e-3f3c6f1b9f10"   # fixed NAA/serial (default: derived or stored)

LUN specs are the backend registry's (:mod:`iscsikit.target.backends`): ``file:PATH[,size=]``,
``memory:size=``, ``replicated:tcp://H:P,...``; a new kind registers there and works here.
Every error names the file and the setting (``serve.toml: targets[0].luns.1: ...``).

Access: a target with no ACL (no ``allow``, no ``acls``) admits every initiator name; with an
ACL only the listed names. An ACL entry with its own CHAP must log in with it; one without
uses the target's CHAP if any. :func:`check_exposure` refuses a non-loopback portal unless every
target has CHAP or an ACL, or ``insecure_open`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from iscsikit.errors import ConfigError, InvalidNameError
from iscsikit.names import is_loopback
from iscsikit.target.limits import ServerLimits
from iscsikit.target.proto.chap import ALGORITHMS, MIN_SECRET_LEN, ChapCredentials
from iscsikit.target.proto.keys import TargetLimits
from iscsikit.target.proto.session import AuthConfig, InitiatorAcl, PortalInfo

__all__ = [
    "DEFAULT_CONTROL",
    "DEFAULT_PORTAL",
    "LunConfig",
    "ServeConfig",
    "TargetConfig",
    "check_exposure",
    "check_secret_roles",
    "is_loopback",
    "load_config",
    "merge_flags",
    "parse_lun_arg",
    "parse_portal",
    "read_secret",
]

DEFAULT_CONTROL = Path("/run/iscsikit/target.sock")
#: Where ``target serve`` listens unless told otherwise: reachable from this host only.
DEFAULT_PORTAL = "127.0.0.1:3260"
_ALG_BY_NAME = {name.upper(): num for num, (_h, name) in ALGORITHMS.items()}
_ALG_BY_NAME.update({"SHA-1": 6, "SHA-256": 7, "SHA3_256": 8})


@dataclass(frozen=True, slots=True)
class LunConfig:
    lun: int
    spec: str
    read_only: bool = False
    identity: str | None = None
    where: str = ""


@dataclass(frozen=True, slots=True)
class TargetConfig:
    iqn: str
    luns: tuple[LunConfig, ...] = ()
    alias: str = ""
    #: The access list; None (no ``allow``/``acls``) admits every initiator name.
    acls: tuple[InitiatorAcl, ...] | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    portals: tuple[PortalInfo, ...] = (PortalInfo("127.0.0.1", 3260, 1),)
    targets: tuple[TargetConfig, ...] = ()
    limits: TargetLimits = field(default_factory=TargetLimits)
    discovery_auth: AuthConfig = field(default_factory=AuthConfig)
    control: Path | None = DEFAULT_CONTROL
    nop_interval: float = 5.0
    shutdown_timeout: float = 30.0
    state_dir: Path | None = None
    #: Serve targets without CHAP or ACL on non-loopback portals (warned at start and each login).
    insecure_open: bool = False
    #: The server-side part of [limits]: connections, sessions, timeouts, the write budget.
    server_limits: ServerLimits = field(default_factory=ServerLimits)


# -- small parsers ---------------------------------------------------------------------------


def parse_portal(text: str, where: str = "portal") -> PortalInfo:
    """``ADDR:PORT[,TPGT]`` (IPv6 in brackets) with TPGT 1 by default."""
    from iscsikit.names import Portal

    try:
        p = Portal.parse(str(text))
    except InvalidNameError as exc:
        raise ConfigError(f"{where}: {exc.reason} in {text!r}") from None
    tpgt = 1 if p.tpgt is None else p.tpgt
    if not 0 <= tpgt <= 65535:
        raise ConfigError(f"{where}: portal group tag {tpgt} is outside 0..65535")
    return PortalInfo(p.address, p.port, tpgt)


def parse_lun_arg(text: str, where: str = "--lun") -> LunConfig:
    """``N=SPEC`` from the command line."""
    number, sep, spec = text.partition("=")
    if not sep or not number.strip().isdigit() or not spec.strip():
        raise ConfigError(f"{where}: {text!r} is not N=SPEC (e.g. 1=file:/srv/disk.img,size=1G)")
    return _lun(int(number), spec.strip(), where=f"{where} {number.strip()}")


def _lun(number: int, spec: str, *, where: str, read_only: bool = False, identity: str | None = None) -> LunConfig:
    if not 0 <= number <= 16383:
        raise ConfigError(f"{where}: LUN {number} is outside 0..16383")
    from iscsikit.target.backends import parse_backend_spec

    parse_backend_spec(spec, where=where)  # syntax now; the backend is built when serving
    return LunConfig(number, spec, read_only, identity, where)


def read_secret(*, file: str | Path | None = None, env: str | None = None, where: str) -> bytes:
    """A CHAP secret from a file (trailing newline dropped) or an environment variable."""
    if file is not None and env is not None:
        raise ConfigError(f"{where}: give the secret as a file or an environment variable, not both")
    if file is not None:
        path = Path(file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read secret file {path}: {exc.strerror}") from None
        secret = data.rstrip(b"\r\n")
    elif env is not None:
        if env not in os.environ:
            raise ConfigError(f"{where}: environment variable {env} is not set")
        secret = os.environ[env].encode()
    else:
        raise ConfigError(f"{where}: a secret is needed (…_secret_file or …_secret_env)")
    if len(secret) < MIN_SECRET_LEN:
        raise ConfigError(f"{where}: the CHAP secret is {len(secret)} bytes; at least {MIN_SECRET_LEN} are required")
    return secret


def _credentials(table: Mapping[str, Any], prefix: str, where: str) -> ChapCredentials | None:
    user = table.get(f"{prefix}_user")
    file = table.get(f"{prefix}_secret_file")
    env = table.get(f"{prefix}_secret_env")
    if f"{prefix}_secret" in table:
        raise ConfigError(f"{where}.{prefix}_secret: secrets are never written inline; use {prefix}_secret_file or "
                          f"{prefix}_secret_env")  # fmt: skip
    if user is None:
        if file is not None or env is not None:
            raise ConfigError(f"{where}: {prefix}_user is missing")
        return None
    if not isinstance(user, str) or not user:
        raise ConfigError(f"{where}.{prefix}_user: must be a non-empty string")
    secret = read_secret(file=file, env=env, where=f"{where}.{prefix}_secret")
    return ChapCredentials(user, secret)


def _algorithms(value: Any, where: str) -> tuple[int, ...]:
    if value is None:
        return (7, 8, 6, 5)
    if not isinstance(value, list) or not value:
        raise ConfigError(f'{where}: chap_algorithms must be a list like ["SHA256", "MD5"]')
    out = []
    for item in value:
        num = _ALG_BY_NAME.get(str(item).upper())
        if num is None:
            raise ConfigError(f"{where}: unknown CHAP algorithm {item!r}; known: MD5, SHA1, SHA256, SHA3-256")
        out.append(num)
    return tuple(out)


def auth_from_table(table: Mapping[str, Any], where: str) -> AuthConfig:
    chap = _credentials(table, "chap", where)
    mutual = _credentials(table, "mutual", where)
    if mutual is not None and chap is None:
        raise ConfigError(f"{where}: mutual CHAP needs chap_user/chap_secret_* too")
    try:
        return AuthConfig(chap, mutual, _algorithms(table.get("chap_algorithms"), f"{where}.chap_algorithms"))
    except ValueError as exc:  # e.g. the two secrets of mutual CHAP are the same
        raise ConfigError(f"{where}: {exc}") from None


def check_secret_roles(auths: Sequence[tuple[str, AuthConfig]]) -> None:
    """No secret may prove an initiator in one place and the target in another (RFC 7143 12.1.3).

    ``auths``: (where, settings) for discovery, each target and each ACL entry with own CHAP.
    The error names both places, never the secret.
    """
    initiator: dict[bytes, str] = {}
    for where, auth in auths:
        if auth.chap is not None:
            initiator.setdefault(auth.chap.secret, where)
    for where, auth in auths:
        if auth.mutual is not None and auth.mutual.secret in initiator:
            raise ConfigError(
                f"{where}: the mutual (target) secret is also an initiator's CHAP secret at "
                f"{initiator[auth.mutual.secret]}; use different secrets"
            )


def check_exposure(cfg: ServeConfig) -> list[str]:
    """Refuse to serve an unprotected target beyond loopback; returns warnings to log.

    Every target is served on every portal: with a non-loopback portal each target needs CHAP
    or an ACL, unless ``insecure_open``. Raises ConfigError (one line: the portal, the target,
    the fix).
    """
    exposed = [p for p in cfg.portals if not is_loopback(p.address)]
    if not exposed:
        return []
    portal = exposed[0].target_address().rsplit(",", 1)[0]
    warnings = []
    for t in cfg.targets:
        if t.acls is None and t.auth.chap is None:
            if not cfg.insecure_open:
                raise ConfigError(
                    f"portal {portal} is not loopback and target {t.iqn} has neither CHAP nor an ACL: add "
                    f"--chap-user/--chap-secret-file or --allow INITIATOR_IQN (chap_user or acls/allow in the "
                    f"config), listen on 127.0.0.1, or pass --insecure-open (insecure_open = true) to let anyone "
                    f"who reaches the port in"
                )
            warnings.append(
                f"insecure-open: target {t.iqn} admits every initiator, without CHAP, on {portal} (and any "
                f"other portal): anyone who reaches the port can read and write it"
            )
        elif t.auth.chap is None:
            weak = [a.initiator for a in t.acls or () if a.auth is None]
            if weak:
                warnings.append(
                    f"target {t.iqn} admits {', '.join(weak)} on {portal} by initiator name alone (no CHAP); "
                    f"a name is easy to claim"
                )
    return warnings


# -- the file ---------------------------------------------------------------------------------

_TOP_KEYS = {
    "portals", "portal", "control", "limits", "discovery", "targets", "state_dir", "shutdown_timeout", "insecure_open",
}  # fmt: skip
_ACL_KEYS = {
    "initiator", "chap_user", "chap_secret_file", "chap_secret_env", "mutual_user", "mutual_secret_file",
    "mutual_secret_env",
}  # fmt: skip
_TARGET_KEYS = {
    "iqn", "alias", "allow", "acls", "luns", "chap_user", "chap_secret_file", "chap_secret_env", "mutual_user",
    "mutual_secret_file", "mutual_secret_env", "chap_algorithms",
}  # fmt: skip
#: [limits] keys that are ServerLimits fields (numbers of seconds, connections, sessions, bytes).
_SERVER_LIMIT_KEYS = (
    "login_timeout", "idle_timeout", "data_timeout", "max_connections", "max_connections_per_address",
    "max_sessions_per_target", "max_sessions_per_address", "write_buffer_budget",
)  # fmt: skip
_LIMIT_KEYS = {
    "max_recv_data_segment_length", "first_burst_length", "max_burst_length", "max_outstanding_r2t",
    "queue_depth", "header_digest", "data_digest", "immediate_data", "initial_r2t", "nop_interval",
    "default_time2wait", "default_time2retain", "max_transfer_length",
    *_SERVER_LIMIT_KEYS,
}  # fmt: skip


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for prefix in ("chap", "mutual"):
        if f"{prefix}_secret" in table:
            raise ConfigError(
                f"{where}.{prefix}_secret: secrets are never written inline; use {prefix}_secret_file or "
                f"{prefix}_secret_env"
            )
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {value!r} is not an integer")
    return value


def load_config(path: Path) -> ServeConfig:
    """Read and validate a target config file."""
    import tomlkit
    from tomlkit.exceptions import ParseError, TOMLKitError

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = tomlkit.parse(text).unwrap()
    except ParseError as exc:
        raise ConfigError(f"{path}:{exc.line}: {exc}") from None
    except TOMLKitError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if "target" in doc and isinstance(doc["target"], dict):
        doc = doc["target"]
    return config_from_mapping(doc, where=str(path))


def config_from_mapping(doc: Mapping[str, Any], where: str = "config") -> ServeConfig:
    _check_keys(doc, _TOP_KEYS, where)
    portals_raw = doc.get("portals", doc.get("portal", [DEFAULT_PORTAL]))
    if isinstance(portals_raw, str):
        portals_raw = [portals_raw]
    if not isinstance(portals_raw, list) or not portals_raw:
        raise ConfigError(f'{where}: portals must be a list of "ADDR:PORT[,TPGT]"')
    portals = tuple(parse_portal(p, f"{where}: portals[{i}]") for i, p in enumerate(portals_raw))
    limits, nop, server_limits = _limits(doc.get("limits", {}), f"{where}: limits")
    discovery = doc.get("discovery", {})
    if not isinstance(discovery, dict):
        raise ConfigError(f"{where}: [discovery] must be a table")
    _check_keys(discovery, {k for k in _TARGET_KEYS if k.startswith(("chap", "mutual"))}, f"{where}: discovery")
    targets_raw = doc.get("targets", [])
    if not isinstance(targets_raw, list):
        raise ConfigError(f"{where}: targets must be an array of tables ([[targets]])")
    targets = tuple(_target(t, f"{where}: targets[{i}]") for i, t in enumerate(targets_raw))
    names = [t.iqn for t in targets]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{where}: target {sorted(dup)[0]} is defined twice")
    control = doc.get("control", str(DEFAULT_CONTROL))
    shutdown = doc.get("shutdown_timeout", 30)
    if not isinstance(shutdown, int | float) or shutdown <= 0:
        raise ConfigError(f"{where}: shutdown_timeout must be a positive number of seconds")
    insecure_open = doc.get("insecure_open", False)
    if not isinstance(insecure_open, bool):
        raise ConfigError(f"{where}: insecure_open must be true or false")
    discovery_auth = auth_from_table(discovery, f"{where}: discovery")
    check_secret_roles([(f"{where}: discovery", discovery_auth), *_auths(targets, where)])
    return ServeConfig(
        portals=portals,
        targets=targets,
        limits=limits,
        discovery_auth=discovery_auth,
        control=Path(control) if control else None,
        nop_interval=nop,
        shutdown_timeout=float(shutdown),
        state_dir=Path(doc["state_dir"]) if doc.get("state_dir") else None,
        insecure_open=insecure_open,
        server_limits=server_limits,
    )


def _auths(targets: Sequence[TargetConfig], where: str) -> list[tuple[str, AuthConfig]]:
    out = []
    for i, t in enumerate(targets):
        out.append((f"{where}: targets[{i}] ({t.iqn})", t.auth))
        out += [(f"{where}: targets[{i}] acl {a.initiator}", a.auth) for a in t.acls or () if a.auth is not None]
    return out


def _limits(table: Any, where: str) -> tuple[TargetLimits, float, ServerLimits]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    _check_keys(table, _LIMIT_KEYS, where)
    kwargs: dict[str, Any] = {}
    for key in ("max_recv_data_segment_length", "first_burst_length", "max_burst_length", "max_outstanding_r2t",
                "queue_depth", "default_time2wait", "default_time2retain", "max_transfer_length"):  # fmt: skip
        if key in table:
            kwargs[key] = _int(table[key], f"{where}.{key}")
    for key in ("immediate_data", "initial_r2t"):
        if key in table:
            if not isinstance(table[key], bool):
                raise ConfigError(f"{where}.{key}: must be true or false")
            kwargs[key] = table[key]
    for key in ("header_digest", "data_digest"):
        if key in table:
            value = table[key]
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not values or any(v not in ("None", "CRC32C") for v in values):
                raise ConfigError(f'{where}.{key}: must be a list of "None" and/or "CRC32C"')
            kwargs[key + "s"] = tuple(values)
    nop = table.get("nop_interval", 5)
    if not isinstance(nop, int | float) or nop < 0:
        raise ConfigError(f"{where}.nop_interval: must be >= 0 seconds (0 disables pings)")
    server: dict[str, Any] = {}
    for key in _SERVER_LIMIT_KEYS:
        if key in table:
            value = table[key]
            seconds = key.endswith("_timeout")
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (not seconds and not isinstance(value, int))
            ):
                raise ConfigError(
                    f"{where}.{key}: {value!r} is not {'a number of seconds' if seconds else 'an integer'}"
                )
            if value <= 0:
                raise ConfigError(f"{where}.{key}: must be positive, got {value}")
            server[key] = float(value) if seconds else value
    try:
        return TargetLimits(**kwargs), float(nop), ServerLimits(**server)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_target_name(name: str, where: str) -> str:
    from iscsikit.names import validate_iscsi_name

    try:
        return validate_iscsi_name(name, "target")
    except InvalidNameError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def check_initiator_name(name: Any, where: str) -> str:
    from iscsikit.names import validate_iscsi_name

    if not isinstance(name, str):
        raise ConfigError(f"{where}: must be an initiator name string")
    try:
        return validate_iscsi_name(name, "initiator")
    except InvalidNameError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def acl_entry(
    initiator: str,
    *,
    where: str,
    chap: ChapCredentials | None = None,
    mutual: ChapCredentials | None = None,
    algorithms: tuple[int, ...] = (7, 8, 6, 5),
) -> InitiatorAcl:
    """One validated ACL entry (config, flags and ``target acl add`` all build them here)."""
    name = check_initiator_name(initiator, where)
    if mutual is not None and chap is None:
        raise ConfigError(f"{where}: mutual CHAP needs the initiator's CHAP user and secret too")
    try:
        return InitiatorAcl(name, AuthConfig(chap, mutual, algorithms) if chap is not None else None)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _acls(table: Mapping[str, Any], where: str) -> tuple[InitiatorAcl, ...] | None:
    entries: list[InitiatorAcl] = []
    allow = table.get("allow")
    if allow is not None:
        if not isinstance(allow, list):
            raise ConfigError(f"{where}.allow: must be a list of initiator names")
        entries += [acl_entry(a, where=f"{where}.allow[{i}]") for i, a in enumerate(allow)]
    raw = table.get("acls")
    if raw is not None:
        if not isinstance(raw, list):
            raise ConfigError(f"{where}.acls: must be an array of tables ([[targets.acls]])")
        for i, item in enumerate(raw):
            aw = f"{where}.acls[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{aw}: must be a table with initiator = ...")
            _check_keys(item, _ACL_KEYS, aw)
            if "initiator" not in item:
                raise ConfigError(f"{aw}: initiator is missing")
            chap = _credentials(item, "chap", aw)
            mutual = _credentials(item, "mutual", aw)
            entries.append(acl_entry(item["initiator"], where=aw, chap=chap, mutual=mutual))
    if allow is None and raw is None:
        return None
    seen: set[str] = set()
    for e in entries:
        if e.initiator in seen:
            raise ConfigError(f"{where}: initiator {e.initiator} is in the ACL twice (allow and acls together count)")
        seen.add(e.initiator)
    return tuple(entries)


def _target(table: Any, where: str) -> TargetConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    _check_keys(table, _TARGET_KEYS, where)
    if "iqn" not in table:
        raise ConfigError(f"{where}: iqn is missing")
    iqn = check_target_name(str(table["iqn"]), f"{where}.iqn")
    luns_raw = table.get("luns", {})
    if not isinstance(luns_raw, dict):
        raise ConfigError(f'{where}.luns: must be a table like {{ 1 = "file:/srv/disk.img" }}')
    luns = []
    for key, value in luns_raw.items():
        lw = f"{where}.luns.{key}"
        if not str(key).isdigit():
            raise ConfigError(f"{lw}: LUN numbers are integers")
        if isinstance(value, str):
            luns.append(_lun(int(key), value, where=lw))
        elif isinstance(value, dict):
            _check_keys(value, {"spec", "read_only", "identity"}, lw)
            if not isinstance(value.get("spec"), str):
                raise ConfigError(f"{lw}: spec is missing")
            read_only = value.get("read_only", False)
            if not isinstance(read_only, bool):
                raise ConfigError(f"{lw}.read_only: must be true or false")
            ident = value.get("identity")
            luns.append(_lun(int(key), value["spec"], where=lw, read_only=read_only, identity=ident))
        else:
            raise ConfigError(f"{lw}: must be a spec string or a table")
    return TargetConfig(
        iqn=iqn,
        luns=tuple(sorted(luns, key=lambda lc: lc.lun)),
        alias=str(table.get("alias", "")),
        acls=_acls(table, where),
        auth=auth_from_table(table, where),
    )


def merge_flags(
    base: ServeConfig,
    *,
    portals: Sequence[str] = (),
    iqn: str | None = None,
    luns: Sequence[str] = (),
    allow: Sequence[str] = (),
    chap_user: str | None = None,
    chap_secret_file: Path | None = None,
    mutual_user: str | None = None,
    mutual_secret_file: Path | None = None,
    control: Path | None = None,
    header_digest: str | None = None,
    data_digest: str | None = None,
    discovery_chap_user: str | None = None,
    discovery_chap_secret_file: Path | None = None,
    discovery_mutual_user: str | None = None,
    discovery_mutual_secret_file: Path | None = None,
    insecure_open: bool = False,
) -> ServeConfig:
    """Apply ``target serve`` flags on top of a config (flags win).

    ``--portal`` replaces the portals; ``--iqn`` selects (or creates) the target that ``--lun``,
    ``--allow`` and ``--chap-*`` apply to; with one target in the file, it is the default.
    ``--allow`` adds ACL entries without own CHAP; ``--discovery-*`` set discovery CHAP.
    """
    cfg = merge_discovery_flags(
        base,
        chap_user=discovery_chap_user,
        chap_secret_file=discovery_chap_secret_file,
        mutual_user=discovery_mutual_user,
        mutual_secret_file=discovery_mutual_secret_file,
    )
    if insecure_open:
        cfg = replace(cfg, insecure_open=True)
    if portals:
        cfg = replace(cfg, portals=tuple(parse_portal(p, "--portal") for p in portals))
    if control is not None:
        cfg = replace(cfg, control=control)
    digests = {"none": ("None",), "crc32c": ("CRC32C",), "any": ("None", "CRC32C")}
    for flag, value, attr in (("--header-digest", header_digest, "header_digests"),
                              ("--data-digest", data_digest, "data_digests")):  # fmt: skip
        if value is not None:
            if value.lower() not in digests:
                raise ConfigError(f"{flag} {value!r}: choose none, crc32c or any")
            chosen = digests[value.lower()]
            limits = (
                replace(cfg.limits, header_digests=chosen)
                if attr == "header_digests"
                else replace(cfg.limits, data_digests=chosen)
            )
            cfg = replace(cfg, limits=limits)
    targeted = bool(luns or allow or chap_user or mutual_user or chap_secret_file or mutual_secret_file)
    if iqn is None and not targeted:
        return cfg
    targets = list(cfg.targets)
    if iqn is None:
        if len(targets) != 1:
            raise ConfigError("--lun/--allow/--chap-* need --iqn to say which target they are for")
        iqn = targets[0].iqn
    iqn = check_target_name(iqn, "--iqn")
    index = next((i for i, t in enumerate(targets) if t.iqn == iqn), None)
    target = targets[index] if index is not None else TargetConfig(iqn)
    if luns:
        new = {lc.lun: lc for lc in target.luns}
        for text in luns:
            lc = parse_lun_arg(text)
            new[lc.lun] = lc
        target = replace(target, luns=tuple(sorted(new.values(), key=lambda lc: lc.lun)))
    if allow:
        acls = list(target.acls or ())
        known = {a.initiator for a in acls}
        for name in allow:
            if name not in known:
                acls.append(acl_entry(name, where=f"--allow {name}"))
                known.add(name)
        target = replace(target, acls=tuple(acls))
    if chap_user is not None or chap_secret_file is not None:
        if chap_user is None:
            raise ConfigError("--chap-secret-file needs --chap-user")
        auth = _flag_auth(
            chap_user, chap_secret_file, mutual_user, mutual_secret_file, "", "ISCSIKIT_CHAP_SECRET",
            "ISCSIKIT_MUTUAL_SECRET", target.auth,
        )  # fmt: skip
        target = replace(target, auth=auth)
    elif mutual_user is not None:
        raise ConfigError("--mutual-user needs --chap-user (mutual CHAP is on top of one-way CHAP)")
    if index is None:
        targets.append(target)
    else:
        targets[index] = target
    cfg = replace(cfg, targets=tuple(targets))
    check_secret_roles([("discovery", cfg.discovery_auth), *_auths(cfg.targets, "config")])
    return cfg


def _flag_auth(
    user: str,
    secret_file: Path | None,
    mutual_user: str | None,
    mutual_secret_file: Path | None,
    prefix: str,
    env: str,
    mutual_env: str,
    old: AuthConfig,
) -> AuthConfig:
    secret = read_secret(file=secret_file, env=env if secret_file is None else None,
                         where=f"--{prefix}chap-secret-file")  # fmt: skip
    mutual = old.mutual
    if mutual_user is not None:
        msecret = read_secret(file=mutual_secret_file, env=mutual_env if mutual_secret_file is None else None,
                              where=f"--{prefix}mutual-secret-file")  # fmt: skip
        mutual = ChapCredentials(mutual_user, msecret)
    try:
        return AuthConfig(ChapCredentials(user, secret), mutual, old.algorithms)
    except ValueError as exc:
        raise ConfigError(f"--{prefix}mutual-user: {exc}") from None


def merge_discovery_flags(
    cfg: ServeConfig,
    *,
    chap_user: str | None = None,
    chap_secret_file: Path | None = None,
    mutual_user: str | None = None,
    mutual_secret_file: Path | None = None,
) -> ServeConfig:
    """``--discovery-chap-user/-secret-file`` and ``--discovery-mutual-*`` (SendTargets sessions)."""
    if chap_user is None and chap_secret_file is None:
        if mutual_user is not None or mutual_secret_file is not None:
            raise ConfigError("--discovery-mutual-user needs --discovery-chap-user (mutual is on top of one-way)")
        return cfg
    if chap_user is None:
        raise ConfigError("--discovery-chap-secret-file needs --discovery-chap-user")
    if mutual_secret_file is not None and mutual_user is None:
        raise ConfigError("--discovery-mutual-secret-file needs --discovery-mutual-user")
    auth = _flag_auth(
        chap_user, chap_secret_file, mutual_user, mutual_secret_file, "discovery-",
        "ISCSIKIT_DISCOVERY_CHAP_SECRET", "ISCSIKIT_DISCOVERY_MUTUAL_SECRET", cfg.discovery_auth,
    )  # fmt: skip
    return replace(cfg, discovery_auth=auth)
