"""Sizes as users write them: ``1073741824``, ``512M``, ``1G``, ``1GiB``, ``100MB``.

Single letters and ``KiB``-style suffixes are binary (as ``truncate -s`` reads them);
``KB``/``MB``/``GB``/``TB`` are decimal::

    >>> parse_size("1G") == parse_size("1GiB") == 1 << 30
    True
    >>> parse_size("100MB")
    100000000
    >>> format_size(3 << 29)
    '1.5 GiB'
"""

from __future__ import annotations

import re

from iscsikit.errors import UsageError

_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DECIMAL = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_UNITS_DESC = (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes for a size string; UsageError naming ``what`` for anything else."""
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"{what} must not be negative, got {text}")
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"{what} {text!r} is not a size; write e.g. 1073741824, 512M, 1G or 1GiB")
    number, suffix = int(m.group(1)), m.group(2).lower()
    if suffix.endswith("ib") and suffix[:-2] in _BINARY and suffix[:-2]:
        return number * _BINARY[suffix[:-2]]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix == "b":
        return number
    raise UsageError(f"{what} {text!r} has an unknown unit {m.group(2)!r}; use K, M, G, T (binary) or KB, MB, GB")


def format_size(n: int) -> str:
    """Human-readable binary size: ``512 B``, ``4 KiB``, ``1.5 GiB``."""
    for unit, factor in _UNITS_DESC:
        if n >= factor:
            value = n / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"
