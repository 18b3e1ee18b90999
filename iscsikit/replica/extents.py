"""Byte extents ``(start, length)``: the pure arithmetic of a rebuild, shared by the controller
(relay rebuild) and a pulling replica (``iscsikit.replica.pull``).

    >>> merge([(0, 4), (2, 4), (10, 1)])
    [(0, 6), (10, 1)]
    >>> holes([(2, 2)], 0, 8)
    [(0, 2), (4, 4)]
"""

from __future__ import annotations

#: Checksums are compared per 64 KiB: the unit a returning replica copies when it differs.
GRANULE = 64 << 10
Extents = list[tuple[int, int]]


def merge(extents: Extents) -> Extents:
    """Sorted, non-overlapping union of (start, length) extents."""
    out: Extents = []
    for s, n in sorted(e for e in extents if e[1] > 0):
        if out and s <= out[-1][0] + out[-1][1]:
            ps, pn = out[-1]
            out[-1] = (ps, max(ps + pn, s + n) - ps)
        else:
            out.append((s, n))
    return out


def chunked(extents: Extents, chunk: int) -> Extents:
    """Extents cut at multiples of ``chunk``, so each piece lies in one chunk."""
    out: Extents = []
    for s, n in extents:
        pos, end = s, s + n
        while pos < end:
            stop = min(end, (pos // chunk + 1) * chunk)
            out.append((pos, stop - pos))
            pos = stop
    return out


def holes(extents: Extents, start: int, end: int) -> Extents:
    """The gaps of sorted ``extents`` within [start, end)."""
    out: Extents = []
    pos = start
    for s, n in extents:
        if s > pos:
            out.append((pos, min(s, end) - pos))
        pos = max(pos, s + n)
        if pos >= end:
            break
    if pos < end:
        out.append((pos, end - pos))
    return [(s, n) for s, n in out if n > 0]


def intersect(a: Extents, b: Extents) -> Extents:
    out: Extents = []
    for s1, n1 in a:
        for s2, n2 in b:
            s, e = max(s1, s2), min(s1 + n1, s2 + n2)
            if s < e:
                out.append((s, e - s))
    return merge(out)


def differing_runs(start: int, length: int, granule: int, a: list[int], b: list[int]) -> Extents:
    """Runs of granules whose checksums differ, as byte extents."""
    runs: Extents = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x == y:
            continue
        s = start + i * granule
        n = min(granule, start + length - s)
        if runs and runs[-1][0] + runs[-1][1] == s:
            runs[-1] = (runs[-1][0], runs[-1][1] + n)
        else:
            runs.append((s, n))
    return runs


def pieces(extents: Extents, size: int) -> Extents:
    """Extents split into pieces of at most ``size`` bytes (one READ each)."""
    return [(pos, min(size, s + n - pos)) for s, n in extents for pos in range(s, s + n, size)]


def spans(extents: Extents, window: int) -> list[tuple[int, int, int]]:
    """For each ``window``-aligned window that sorted ``extents`` touch: ``(start, length, covered)``,
    the span from the first to the last byte they cover in it, and how many bytes they cover.

    One PULL per span: holes between extents ride along (cheap), round trips are per window.

        >>> spans([(0, 1), (2, 1), (5, 2)], 4)
        [(0, 3, 2), (5, 2, 2)]
    """
    out: list[tuple[int, int, int]] = []
    for s, n in chunked(extents, window):
        if out and out[-1][0] // window == s // window:
            ps, _, covered = out[-1]
            out[-1] = (ps, s + n - ps, covered + n)
        else:
            out.append((s, n, n))
    return out
