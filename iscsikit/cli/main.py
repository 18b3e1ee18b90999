"""Placeholder entry point; replaced by the typer app in the CLI commit."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("iscsikit CLI is being built")
