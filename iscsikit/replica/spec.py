"""The ``replicated:`` LUN spec: registered with the target's backend registry on import.

Spec syntax (``iscsikit target serve --lun 1=SPEC``)::

    replicated:tcp://HOST:PORT,tcp://HOST:PORT[,...][,size=SIZE][,min_replicas=M][,timeout=SECONDS]
               [,flush_timeout=SECONDS][,start_timeout=SECONDS][,auto_rebuild=yes|no]
               [,force_start=yes|no][,block_size=512|4096][,rebuild_pull=yes|no]
               [,secret_file=PATH][,tls_cert=PATH,tls_key=PATH,tls_ca=PATH]

``size`` is optional (taken from the replicas) and, when given, must match them.
``force_start=yes`` starts even when members of the newest epoch are unreachable: unsafe, it
may serve data older than acknowledged writes (see docs/replication.md). ``rebuild_pull=no``
makes every rebuild copy through the controller (relay) instead of replica to replica.
``secret_file`` names the file with the secret shared with the replica servers (their
``--secret-file``); ``tls_*`` connect with TLS: this side's certificate and key, and the CA that
signed the replicas' certificates (read when the LUN is built; the secret is never logged).

This module is imported by :mod:`iscsikit.target.backends`, so it must stay light: the
controller itself is imported only when a replicated LUN is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from iscsikit.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from iscsikit.replica.auth import Credentials
    from iscsikit.replica.controller import ReplicatedBackend

OPTIONS = frozenset(
    {"path", "size", "min_replicas", "timeout", "flush_timeout", "start_timeout", "auto_rebuild",
     "force_start", "block_size", "rebuild_pull", "secret_file", "tls_cert", "tls_key", "tls_ca"}
)  # fmt: skip


def _seconds(options: Mapping[str, str], key: str, default: float, where: str) -> float:
    if key not in options:
        return default
    try:
        value = float(options[key].removesuffix("s"))
    except ValueError:
        raise ConfigError(f"{where}: {key}={options[key]!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise ConfigError(f"{where}: {key}={options[key]} must be between 0 and 3600 seconds")
    return value


def _bool(options: Mapping[str, str], key: str, default: bool, where: str) -> bool:
    if key not in options:
        return default
    low = options[key].strip().lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f"{where}: {key}={options[key]!r} is not a boolean (yes/no)")


def check_replica_address(text: str, where: str) -> str:
    """``tcp://HOST:PORT``, checked; a ConfigError (exit 2) names ``where``."""
    from iscsikit.errors import ReplicaError
    from iscsikit.replica.client import parse_address

    if not text.startswith("tcp://"):
        raise ConfigError(f"{where}: replica address {text!r} must be tcp://HOST:PORT")
    try:
        parse_address(text)
    except (ReplicaError, UsageError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return text


def replicated_backend(options: Mapping[str, str], where: str) -> ReplicatedBackend:
    """Build (not open) a :class:`ReplicatedBackend` from spec options; ConfigError names ``where``."""
    from iscsikit.replica.client import DEFAULT_FLUSH_TIMEOUT, DEFAULT_TIMEOUT
    from iscsikit.replica.controller import ReplicatedBackend
    from iscsikit.units import parse_size

    addresses = [a.strip() for a in options.get("path", "").split(",") if a.strip()]
    if not addresses:
        raise ConfigError(f"{where}: a replicated LUN needs replica addresses: replicated:tcp://HOST:PORT,...")
    for a in addresses:
        check_replica_address(a, where)
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"{where}: a replica address is listed twice")
    try:
        size = parse_size(options["size"], f"{where}: size") if "size" in options else None
        block = parse_size(options.get("block_size", "512"), f"{where}: block_size")
    except UsageError as exc:
        raise ConfigError(exc.message) from None
    if block not in (512, 1024, 2048, 4096):
        raise ConfigError(f"{where}: block_size must be 512, 1024, 2048 or 4096, not {block}")
    if size is not None and (size <= 0 or size % block):
        raise ConfigError(f"{where}: size {options['size']} must be a positive multiple of {block} bytes")
    try:
        min_replicas = int(options.get("min_replicas", "1"))
    except ValueError:
        raise ConfigError(f"{where}: min_replicas={options['min_replicas']!r} is not a number") from None
    if not 1 <= min_replicas <= len(addresses):
        raise ConfigError(f"{where}: min_replicas={min_replicas} must be between 1 and {len(addresses)}")
    return ReplicatedBackend(
        addresses,
        size=size,
        min_replicas=min_replicas,
        timeout=_seconds(options, "timeout", DEFAULT_TIMEOUT, where),
        flush_timeout=_seconds(options, "flush_timeout", DEFAULT_FLUSH_TIMEOUT, where),
        start_timeout=_seconds(options, "start_timeout", 30.0, where),
        auto_rebuild=_bool(options, "auto_rebuild", True, where),
        force_start=_bool(options, "force_start", False, where),
        rebuild_pull=_bool(options, "rebuild_pull", True, where),
        block_size=block,
        credentials=credentials(options, where),
    )


def credentials(options: Mapping[str, str], where: str) -> Credentials | None:
    """The ``secret_file`` and ``tls_*`` options as connection credentials (None without either)."""
    from iscsikit.replica.auth import Credentials, client_tls, read_secret_file, tls_files

    secret = read_secret_file(options["secret_file"], f"{where}: secret_file") if options.get("secret_file") else None
    files = tls_files(options.get("tls_cert"), options.get("tls_key"), options.get("tls_ca"), where)
    tls = client_tls(*files, where=where) if files else None
    return Credentials(secret, tls) if secret is not None or tls is not None else None


def register() -> None:
    """Register the ``replicated`` backend kind and the ``replica ...`` control commands."""
    from iscsikit.replica.admin import register_commands
    from iscsikit.target.backends import register_backend

    register_backend("replicated", replicated_backend, OPTIONS)
    register_commands()
