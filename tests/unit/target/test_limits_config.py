"""[limits] settings of the bounds: parsed into TargetLimits/ServerLimits, bad values named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iscsikit.errors import ConfigError
from iscsikit.target.config import ServeConfig, load_config
from iscsikit.target.limits import ServerLimits
from iscsikit.target.server import server_from_config


def test_limits_are_read(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(
        "[limits]\nmax_transfer_length = 2097152\nwrite_buffer_budget = 134217728\nlogin_timeout = 2.5\n"
        "idle_timeout = 30\ndata_timeout = 7\nmax_connections = 100\nmax_connections_per_address = 10\n"
        "max_sessions_per_target = 50\nmax_sessions_per_address = 5\n"
        '[[targets]]\niqn = "iqn.2026-11.org.example:a"\nluns = { 1 = "memory:size=8M" }\n'
    )
    cfg = load_config(path)
    assert cfg.limits.max_transfer_length == 2 << 20
    assert cfg.server_limits == ServerLimits(2.5, 30.0, 7.0, 100, 10, 50, 5, 128 << 20)
    server = server_from_config(cfg)
    assert server.budget.limit == 128 << 20
    (runtime,) = server.targets.values()
    assert runtime.luns[1].max_transfer_blocks == (2 << 20) // 512  # what the Block Limits VPD says


def test_defaults() -> None:
    cfg = ServeConfig()
    assert cfg.limits.max_transfer_length == 8 << 20
    assert cfg.server_limits.login_timeout == 15 and cfg.server_limits.write_buffer_budget == 512 << 20


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_transfer_length = 100", "max_transfer_length must be 4096..1073741824"),
        ("login_timeout = 0", "limits.login_timeout: must be positive"),
        ("login_timeout = \"soon\"", "limits.login_timeout: 'soon' is not a number of seconds"),
        ("max_connections = 2.5", "limits.max_connections: 2.5 is not an integer"),
        ("max_sessions_per_address = true", "limits.max_sessions_per_address"),
        ("write_buffer_budget = -1", "limits.write_buffer_budget: must be positive"),
        ("max_conections = 5", "unknown setting(s) max_conections"),
    ],
)  # fmt: skip
def test_bad_limits_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(f"[limits]\n{text}\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        load_config(path)
    assert "serve.toml" in str(exc.value)
