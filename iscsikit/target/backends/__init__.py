"""Storage behind LUNs, and the registry that maps LUN specs to backend classes.

Specs as users write them (``--lun 1=file:/srv/disk.img,size=1G``)::

    file:PATH[,size=SIZE][,thin=yes|no][,block_size=512|4096]
    memory:size=SIZE[,thin=yes|no][,block_size=512|4096]

>>> kind, options = parse_backend_spec("file:/srv/disk.img,size=1G")
>>> kind, options
('file', {'path': '/srv/disk.img', 'size': '1G'})
>>> open_backend("memory", {"size": "64M"}).size
67108864

The config parser owns the surrounding syntax (LUN numbers, TOML tables); this module owns the
backend kinds and their options. New kinds (the replicated controller) register with
:func:`register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from iscsikit.errors import ConfigError, UsageError
from iscsikit.target.backend import Backend, BackendError
from iscsikit.target.backends.file import FileBackend
from iscsikit.target.backends.memory import MemoryBackend

__all__ = [
    "Backend",
    "BackendError",
    "FileBackend",
    "MemoryBackend",
    "backend_from_spec",
    "backend_kinds",
    "open_backend",
    "parse_backend_spec",
    "register_backend",
]

Factory = Callable[[Mapping[str, str], str], Backend]
_REGISTRY: dict[str, tuple[Factory, frozenset[str]]] = {}


def register_backend(kind: str, factory: Factory, options: set[str] | frozenset[str]) -> None:
    """Make ``kind:...`` specs build backends with ``factory(options, where)``."""
    _REGISTRY[kind] = (factory, frozenset(options))


def backend_kinds() -> list[str]:
    return sorted(_REGISTRY)


def _bool(value: str, key: str, where: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f"{where}: {key}={value!r} is not a boolean (yes/no)")


def _size(value: str, key: str, where: str) -> int:
    from iscsikit.units import parse_size

    try:
        return parse_size(value, f"{where}: {key}")
    except UsageError as exc:
        raise ConfigError(exc.message) from None


def _block_size(options: Mapping[str, str], where: str) -> int:
    if "block_size" not in options:
        return 512
    value = _size(options["block_size"], "block_size", where)
    if value not in (512, 1024, 2048, 4096):
        raise ConfigError(f"{where}: block_size must be 512, 1024, 2048 or 4096, not {value}")
    return value


def _checked_size(options: Mapping[str, str], where: str, block: int, required: bool) -> int | None:
    if "size" not in options:
        if required:
            raise ConfigError(f"{where}: size= is required (e.g. size=1G)")
        return None
    size = _size(options["size"], "size", where)
    if size <= 0 or size % block:
        raise ConfigError(f"{where}: size {options['size']} must be a positive multiple of {block} bytes")
    return size


def _file(options: Mapping[str, str], where: str) -> Backend:
    path = options.get("path", "")
    if not path:
        raise ConfigError(f"{where}: file backend needs a path (file:/path/to/disk.img)")
    if "\x00" in path:
        raise ConfigError(f"{where}: path contains a NUL byte")
    block = _block_size(options, where)
    size = _checked_size(options, where, block, required=False)
    _check_backing_path(Path(path), size, where)
    return FileBackend(
        Path(path),
        size=size,
        block_size=block,
        thin=_bool(options.get("thin", "yes"), "thin", where),
    )


def _check_backing_path(path: Path, size: int | None, where: str) -> None:
    """What can be told before anything is opened or written (an identity file beside it,
    a listening socket): a missing directory, a directory given as the file, a new file
    without a size. Opening it later still reports what only the open can tell."""
    if path.is_dir():
        raise ConfigError(f"{where}: {path} is a directory; give the path of a file or block device")
    if path.exists():
        return
    if not path.parent.is_dir():
        raise ConfigError(f"{where}: directory {path.parent} does not exist; create it or choose another path")
    if size is None:
        raise ConfigError(f"{where}: {path} does not exist; add size=SIZE (e.g. size=1G) to create it")


def _memory(options: Mapping[str, str], where: str) -> Backend:
    block = _block_size(options, where)
    size = _checked_size(options, where, block, required=True)
    assert size is not None
    return MemoryBackend(size, block_size=block, thin=_bool(options.get("thin", "yes"), "thin", where))


register_backend("file", _file, {"path", "size", "thin", "block_size"})
register_backend("memory", _memory, {"size", "thin", "block_size"})

# The replicated controller registers its kind itself (light module; the controller loads lazily).
from iscsikit.replica.spec import register as _register_replicated  # noqa: E402

_register_replicated()


def open_backend(kind: str, options: Mapping[str, str], *, where: str = "backend") -> Backend:
    """Build a backend of ``kind`` from string options; :class:`ConfigError` names ``where``.

    The backend is not opened yet (``await backend.open()``, or let the LU open it).
    """
    entry = _REGISTRY.get(kind)
    if entry is None:
        raise ConfigError(f"{where}: unknown backend {kind!r}; known: {', '.join(backend_kinds())}")
    factory, allowed = entry
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(unknown)} for a {kind} backend; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return factory(options, where)


def parse_backend_spec(spec: str, *, where: str = "backend") -> tuple[str, dict[str, str]]:
    """Split ``kind:[PATH,]key=value,...`` into the kind and an option dict (``path`` for PATH)."""
    kind, sep, rest = spec.partition(":")
    kind = kind.strip()
    if not sep or not kind:
        raise ConfigError(f"{where}: {spec!r} is not a backend spec; write e.g. file:/srv/disk.img,size=1G")
    options: dict[str, str] = {}
    for i, item in enumerate(rest.split(",") if rest else []):
        key, eq, value = item.partition("=")
        if not eq:
            if item and (i == 0 or list(options) == ["path"]):
                # Leading positional items form the path; several (replicated:tcp://a,tcp://b) are
                # kept comma-joined for the kind to split.
                options["path"] = f"{options['path']},{item}" if "path" in options else item
                continue
            raise ConfigError(f"{where}: {item!r} in {spec!r} is not key=value")
        key = key.strip()
        if not key or key in options:
            raise ConfigError(f"{where}: empty or repeated option {key!r} in {spec!r}")
        options[key] = value.strip()
    return kind, options


def backend_from_spec(spec: str, *, where: str = "backend") -> Backend:
    kind, options = parse_backend_spec(spec, where=where)
    return open_backend(kind, options, where=where)
