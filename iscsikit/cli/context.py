"""The global options of one CLI invocation, resolved once and shared by every command.

Precedence for each setting: command-line flag, then environment variable (typer reads
both), then the config file, then the built-in default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from iscsikit.errors import UsageError

if TYPE_CHECKING:
    from iscsikit.config import Config
    from iscsikit.runner import Runner


@dataclass
class AppContext:
    """What a command needs to know about how it was invoked."""

    json: bool = False
    dry_run: bool = False
    verbose: int = 0
    quiet: bool = False
    config_path: Path | None = None
    db_root_flag: Path | None = None
    sysfs_root_flag: Path | None = None
    host_flag: str | None = None
    #: Where each global option came from: ``flag`` or ``env`` (absent: not given).
    sources: dict[str, str] = field(default_factory=dict)
    _runner: Runner | None = field(default=None, repr=False)

    @classmethod
    def of(cls, ctx: typer.Context) -> AppContext:
        """The AppContext of this invocation (created by the root callback)."""
        root = ctx.find_root()
        obj = root.obj
        if not isinstance(obj, AppContext):
            obj = cls()
            root.obj = obj
        return obj

    def control_socket(self, control: Path | None, *, may_be_missing: bool = False) -> Path:
        """The target's control socket: --control, $ISCSIKIT_TARGET_CONTROL or the default.

        One given by the user that is not there (or is not a socket) is a usage error naming
        it, unless ``may_be_missing`` (waiting for a target that is starting); the default
        path missing means no target runs, which the request itself reports.
        """
        import os
        import stat

        from iscsikit.target.config import DEFAULT_CONTROL

        env = os.environ.get("ISCSIKIT_TARGET_CONTROL")
        path = control or Path(env or str(DEFAULT_CONTROL))
        # typer fills --control from the variable too: tell the two apart for the message
        from_env = env is not None and (control is None or str(control) == env)
        given = f"ISCSIKIT_TARGET_CONTROL={path}" if from_env else (f"--control {path}" if control else "")
        if not given or may_be_missing:
            return path
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise UsageError(
                f"{given}: no control socket ({exc.strerror}); give the --control of a running `iscsikit target serve`"
            ) from None
        if not stat.S_ISSOCK(mode):
            raise UsageError(f"{given}: not a socket; give the --control of a running `iscsikit target serve`")
        return path

    @cached_property
    def config(self) -> Config:
        from iscsikit.config import Config

        path = self.config_path
        if path is not None and not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise UsageError(
                f"{self.given_as('config', path)}: {what}; create it with `iscsikit config set KEY VALUE`, "
                "or leave it out for the defaults"
            )
        return Config.load(path)

    def effective(self) -> list[dict[str, Any]]:
        """Every setting as this run uses it: the config's rows with the global options given as a
        flag or in the environment laid over them (``source``: default, file, env or flag)."""
        given = {"db_root": self.db_root_flag, "sysfs_root": self.sysfs_root_flag, "host": self.host_flag}
        rows = self.config.effective()
        for row in rows:
            value = given.get(row["key"])
            if value is not None:
                row.update(value=str(value), source=self.sources.get(row["key"], "flag"))
        return rows

    def given_as(self, key: str, value: object) -> str:
        """How a user wrote a setting, for an error: ``--db-root X``, ``ISCSIKIT_DB_ROOT=X`` or the file's key."""
        source = self.sources.get(key)
        if source == "flag":
            return f"--{key.replace('_', '-')} {value}"
        if source == "env":
            return f"ISCSIKIT_{key.upper()}={value}"
        return f"{key} = {str(value)!r} in {self.config.path}"

    def _existing_dir(self, key: str, path: Path, fix: str) -> Path:
        """``path`` if it is a directory; else a UsageError naming where it was given (a typo in
        a root must not look like an empty database or a host without sessions)."""
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise UsageError(f"{self.given_as(key, path)}: {what}; {fix}")
        return path

    @property
    def db_root(self) -> Path | None:
        """The DB root chosen by flag/env/config (an existing directory); None means: detect it."""
        root = self.db_root_flag
        if root is None:
            configured = self.config.get("db_root")
            root = Path(configured) if configured else None
        if root is None:
            return None
        return self._existing_dir(
            "db_root", root, "give open-iscsi's DB directory (e.g. /etc/iscsi), or leave it out to detect it"
        )

    @property
    def sysfs_root(self) -> Path:
        root = self.sysfs_root_flag if self.sysfs_root_flag is not None else Path(self.config.get("sysfs_root"))
        return self._existing_dir("sysfs_root", root, "give where sysfs is mounted (default /sys)")

    @property
    def proc_root(self) -> Path:
        return Path(self.config.get("proc_root"))

    @property
    def host(self) -> str:
        return self.host_flag if self.host_flag is not None else str(self.config.get("host"))

    @property
    def state_dir(self) -> Path:
        return Path(self.config.get("state_dir"))

    @property
    def lock_dir(self) -> Path:
        return Path(self.config.get("lock_dir"))

    def timeout(self, name: str) -> float:
        """A configured timeout in seconds: ``iscsiadm``, ``login``, ``device`` or ``lock``."""
        return float(self.config.get(f"timeouts.{name}"))

    def runner(self) -> Runner:
        """The Runner for this invocation (host mode, dry-run, timeouts from config)."""
        if self._runner is None:
            from iscsikit.runner import Runner

            self._runner = Runner(
                self.host,
                proc_root=str(self.proc_root),
                dry_run=self.dry_run,
                default_timeout=self.timeout("iscsiadm"),
            )
        return self._runner
