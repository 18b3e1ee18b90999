"""iscsikit's own configuration: ``/etc/iscsikit/config.toml`` (or ``--config`` / ``ISCSIKIT_CONFIG``).

The file is optional; every key has a default. It is read and edited with tomlkit so the
comments and order a user wrote survive ``iscsikit config set``. Keys are dotted paths
into the TOML document (``timeouts.login``); each has a type checked on load and on set,
and an error names the file and the key.

Example::

    >>> cfg = Config.from_text('host = "ns"\\n[timeouts]\\nlogin = 30\\n')
    >>> cfg.get("host"), cfg.get("timeouts.login"), cfg.get("timeouts.device")
    ('ns', 30, 60.0)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iscsikit.errors import ConfigError, IscsikitError

if TYPE_CHECKING:
    import tomlkit.toml_document

DEFAULT_CONFIG_PATH = Path("/etc/iscsikit/config.toml")


def _check_host(value: Any) -> str:
    from iscsikit.runner import HostMode

    return str(HostMode.parse(str(value)))


def _path_or_empty(value: Any) -> str:
    text = str(value)
    if text and not os.path.isabs(text):
        raise ValueError(f"must be an absolute path, got {text!r}")
    return text


def _positive_number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds")
    number = float(value)
    if number <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return number


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    default: Any
    check: Callable[[Any], Any]
    help: str


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("db_root", "", _path_or_empty, "open-iscsi DB root; empty: detect"),
        Setting("sysfs_root", "/sys", _path_or_empty, "where sysfs is mounted (containers, tests)"),
        Setting("proc_root", "/proc", _path_or_empty, "the host's /proc (for --host ns)"),
        Setting("host", "local", _check_host, "where commands run: local, ns, chroot:DIR"),
        Setting("state_dir", "/var/lib/iscsikit", _path_or_empty, "connector state, clean backups"),
        Setting("lock_dir", "/run/lock/iscsi", _path_or_empty, "iscsiadm's lock directory"),
        Setting("timeouts.iscsiadm", 120.0, _positive_number, "seconds one iscsiadm call may take"),
        Setting("timeouts.login", 120.0, _positive_number, "seconds a login may take"),
        Setting("timeouts.device", 60.0, _positive_number, "seconds to wait for a block device after login"),
        Setting("timeouts.lock", 30.0, _positive_number, "seconds to wait for iscsiadm's DB lock"),
    )
}


class Config:
    """The config document plus defaults. ``path`` is None for a config built from text."""

    def __init__(self, doc: tomlkit.toml_document.TOMLDocument | None, path: Path | None) -> None:
        self._doc = doc
        self.path = path

    # ---- loading --------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None = None, *, must_exist: bool = True) -> Config:
        """Load ``path`` (must exist unless ``must_exist`` is False), or the default file if present."""
        explicit = path is not None and must_exist
        path = path if path is not None else DEFAULT_CONFIG_PATH
        try:
            text = path.read_text()
        except FileNotFoundError:
            if explicit:
                raise ConfigError(f"config file {path} does not exist") from None
            return cls(None, path)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        return cls.from_text(text, path)

    @classmethod
    def from_text(cls, text: str, path: Path | None = None) -> Config:
        import tomlkit
        import tomlkit.exceptions

        where = str(path) if path else "<config>"
        try:
            doc = tomlkit.parse(text)
        except tomlkit.exceptions.ParseError as exc:
            raise ConfigError(f"{where}:{exc.line}:{exc.col}: {exc}") from None
        config = cls(doc, path)
        for key, value in config._flatten(doc):
            setting = SETTINGS.get(key)
            if setting is None:
                raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(SETTINGS)}")
            try:
                setting.check(value)
            except (ValueError, TypeError, IscsikitError) as exc:
                raise ConfigError(f"{where}: {key} = {value!r}: {exc}") from None
        return config

    @staticmethod
    def _flatten(table: Any, prefix: str = "") -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for key, value in table.items():
            full = f"{prefix}{key}"
            if isinstance(value, dict):
                out.extend(Config._flatten(value, f"{full}."))
            else:
                out.append((full, value.unwrap() if hasattr(value, "unwrap") else value))
        return out

    # ---- reading --------------------------------------------------------------------

    def _lookup(self, key: str) -> tuple[bool, Any]:
        node: Any = self._doc
        if node is None:
            return False, None
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node.unwrap() if hasattr(node, "unwrap") else node

    def get(self, key: str) -> Any:
        """The value of ``key``: from the file when set there, else the default."""
        setting = SETTINGS.get(key)
        if setting is None:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(SETTINGS)}")
        found, value = self._lookup(key)
        return setting.check(value) if found else setting.default

    def source(self, key: str) -> str:
        return "file" if self._lookup(key)[0] else "default"

    def effective(self) -> list[dict[str, Any]]:
        """Every setting with its value, where it came from, and what it means."""
        return [{"key": k, "value": self.get(k), "source": self.source(k), "help": s.help} for k, s in SETTINGS.items()]

    # ---- editing --------------------------------------------------------------------

    def set(self, key: str, value_text: str) -> Any:
        """Set ``key`` from its text form (validated), keep comments; returns the stored value."""
        import tomlkit

        setting = SETTINGS.get(key)
        if setting is None:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(SETTINGS)}")
        try:
            value = setting.check(value_text)
        except (ValueError, TypeError, IscsikitError) as exc:
            raise ConfigError(f"{key} = {value_text!r}: {exc}") from None
        if isinstance(setting.default, float) and value == int(value):
            value = int(value)
        if self._doc is None:
            self._doc = tomlkit.document()
            self._doc.add(tomlkit.comment("iscsikit configuration; `iscsikit config show` lists every key"))
        node: Any = self._doc
        *parents, leaf = key.split(".")
        for part in parents:
            if part not in node:
                node[part] = tomlkit.table()
            node = node[part]
        node[leaf] = value
        return value

    def dumps(self) -> str:
        import tomlkit

        return "" if self._doc is None else tomlkit.dumps(self._doc)

    def save(self) -> None:
        """Write atomically (temp file, fsync, rename) next to the target path."""
        if self.path is None:
            raise ConfigError("this config has no file to save to")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(self.dumps())
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
