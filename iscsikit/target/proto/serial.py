"""RFC 1982 serial number arithmetic for 32-bit CmdSN/StatSN/DataSN (RFC 7143 4.2.2.1)."""

from __future__ import annotations

__all__ = ["sn_add", "sn_between", "sn_lt", "sn_lte"]

_MOD = 1 << 32
_HALF = 1 << 31


def sn_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & 0xFFFFFFFF


def sn_lt(a: int, b: int) -> bool:
    """``a < b`` in serial arithmetic (undefined when they are exactly 2**31 apart: False)."""
    return a != b and ((b - a) % _MOD) < _HALF


def sn_lte(a: int, b: int) -> bool:
    """``a <= b`` in serial arithmetic."""
    return a == b or sn_lt(a, b)


def sn_between(low: int, value: int, high: int) -> bool:
    """``low <= value <= high`` in serial arithmetic (the CmdSN window check)."""
    return ((value - low) % _MOD) <= ((high - low) % _MOD) and ((high - low) % _MOD) < _HALF
