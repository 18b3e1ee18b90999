"""Stable LU identity: persisted next to the backing file, derived from names, never half-written."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from iscsikit.errors import ConfigError
from iscsikit.target.scsi import LuIdentity, identity_path_for


def test_load_or_create_is_stable(tmp_path: Path) -> None:
    path = identity_path_for(tmp_path / "disk.img")
    assert path.name == "disk.img.id"
    first = LuIdentity.load_or_create(path)
    again = LuIdentity.load_or_create(path)
    assert first == again
    doc = json.loads(path.read_text())
    assert doc["uuid"] == str(first.uuid) and doc["naa"] == first.naa.hex() and doc["serial"] == first.serial
    assert [p.name for p in tmp_path.iterdir()] == ["disk.img.id"]  # no temp files left


def test_an_existing_file_is_never_replaced_by_create(tmp_path: Path) -> None:
    path = tmp_path / "x.id"
    theirs = LuIdentity(uuid.uuid4())
    theirs.save(path)
    with pytest.raises(FileExistsError):
        LuIdentity(uuid.uuid4()).save(path, replace=False)
    assert LuIdentity.load(path) == theirs


@pytest.mark.parametrize("content", ["", "{", '{"uuid": "nope"}', "[]", '{"other": 1}'])
def test_corrupt_identity_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.id"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"bad\.id"):
        LuIdentity.load_or_create(path)


def test_identity_formats() -> None:
    ident = LuIdentity.from_name("iqn.2026-11.org.example:disk/1")
    assert ident == LuIdentity.from_name("iqn.2026-11.org.example:disk/1")
    assert ident != LuIdentity.from_name("iqn.2026-11.org.example:disk/2")
    assert len(ident.naa) == 16 and ident.naa[0] >> 4 == 6
    assert ident.wwn == "naa." + ident.naa.hex()
    assert len(ident.serial) == 32 and ident.serial.isalnum()
    assert LuIdentity.parse(str(ident.uuid)) == ident
    with pytest.raises(ConfigError, match="lun 3"):
        LuIdentity.parse("zzz", where="lun 3")
