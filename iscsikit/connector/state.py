"""Attachment records on disk: one JSON file per volume, replaced atomically.

``<state_dir>/attachments/<volume_id>.json``, mode 0600, written as a temp file in the same
directory, fsynced, renamed over the old one, and the directory fsynced: after a crash at
any point the file is either the old record or the new one, never half of either. No
secrets are stored (see :meth:`VolumeSpec.to_dict`).

The later ``clean`` command reads the same store (:meth:`StateStore.all`) to find stale
attachments.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from iscsikit.connector.spec import Attachment
from iscsikit.errors import IscsikitError, UsageError
from iscsikit.names import check_path_component

log = logging.getLogger("iscsikit.connector")

FORMAT_VERSION = 1


class StateError(IscsikitError):
    """An attachment record cannot be read or written; names the file."""


class StateStore:
    """Attachment records under ``state_dir`` (see module docstring)."""

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / "attachments"

    def path(self, volume_id: str) -> Path:
        check_path_component(volume_id, "volume id")
        return self.dir / f"{volume_id}.json"

    def load(self, volume_id: str) -> Attachment | None:
        path = self.path(volume_id)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read attachment record {path}: {exc.strerror}") from None
        return self._parse(path, text)

    @staticmethod
    def _parse(path: Path, text: str) -> Attachment:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise StateError(f"{path}: not an iscsikit attachment record (format {FORMAT_VERSION})")
        try:
            return Attachment.from_dict(data["attachment"])
        except (KeyError, TypeError, ValueError, UsageError) as exc:
            raise StateError(f"{path}: bad attachment record: {exc}") from None

    def save(self, attachment: Attachment) -> None:
        path = self.path(attachment.volume_id)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        payload = json.dumps({"format": FORMAT_VERSION, "attachment": attachment.to_dict()}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{attachment.volume_id}.", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "w") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._fsync_dir()

    def delete(self, volume_id: str) -> None:
        try:
            os.unlink(self.path(volume_id))
        except FileNotFoundError:
            return
        self._fsync_dir()

    def all(self) -> list[Attachment]:
        """Every readable record; unreadable ones are logged and skipped (see :meth:`problems`)."""
        out = []
        for path in self._files():
            try:
                out.append(self._parse(path, path.read_text()))
            except (OSError, StateError) as exc:
                log.warning("skipping attachment record %s: %s", path, exc)
        return out

    def problems(self) -> list[str]:
        """Messages for records that cannot be read (for doctor/clean)."""
        out = []
        for path in self._files():
            try:
                self._parse(path, path.read_text())
            except (OSError, StateError) as exc:
                out.append(str(exc))
        return out

    def _files(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        return [self.dir / n for n in names if n.endswith(".json") and not n.startswith(".")]

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
