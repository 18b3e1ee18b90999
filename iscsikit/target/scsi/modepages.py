"""Mode parameters (SPC-4 7.5, SBC-3 6.5): MODE SENSE(6/10) data and MODE SELECT(6/10).

Pages: 0x01 read-write error recovery, 0x08 caching (WCE changeable), 0x0A control
(D_SENSE and SWP changeable), 0x0A/0x01 control extension, 0x1C informational exceptions.
Changes are per logical unit, not saved (saved values: SAVING PARAMETERS NOT SUPPORTED), and
reset to defaults by LOGICAL UNIT RESET.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from iscsikit.target.scsi import sense

__all__ = ["ModePages"]

PC_CURRENT, PC_CHANGEABLE, PC_DEFAULT, PC_SAVED = 0, 1, 2, 3
ALL_PAGES = 0x3F


@dataclass(frozen=True, slots=True)
class _Page:
    code: int
    subpage: int
    default: bytes  # page parameters after the 2- or 4-byte page header
    changeable: bytes  # same length: bits MODE SELECT may change

    def header(self, body_len: int) -> bytes:
        if self.subpage:
            return bytes([0x40 | self.code, self.subpage]) + struct.pack(">H", body_len)
        return bytes([self.code, body_len])


_ERROR_RECOVERY = _Page(0x01, 0, bytes([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]), bytes(10))  # AWRE
_CACHING = _Page(
    0x08,
    0,
    bytes([0x04, 0, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x14, 0, 0, 0, 0, 0, 0]),
    bytes([0x04]) + bytes(17),  # WCE
)
_CONTROL = _Page(
    0x0A,
    0,
    # GLTSD; QAM 1 (unrestricted reordering); TAS; busy timeout unlimited (0xFFFF)
    bytes([0x02, 0x10, 0x00, 0x40, 0, 0, 0xFF, 0xFF, 0, 0]),
    bytes([0x04, 0, 0x08, 0, 0, 0, 0, 0, 0, 0]),  # D_SENSE, SWP
)
_CONTROL_EXT = _Page(0x0A, 0x01, bytes([0x00, 0x00, 0x00]) + bytes(25), bytes(28))
_INFO_EXCEPTIONS = _Page(0x1C, 0, bytes([0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0]), bytes(10))  # DEXCPT

_PAGES: tuple[_Page, ...] = (_ERROR_RECOVERY, _CACHING, _CONTROL, _CONTROL_EXT, _INFO_EXCEPTIONS)


class ModePages:
    """Current mode parameters of one logical unit."""

    def __init__(self, *, write_cache: bool = True) -> None:
        self._write_cache_default = write_cache
        self._current: dict[tuple[int, int], bytearray] = {}
        self.reset()

    def reset(self) -> None:
        self._current = {(p.code, p.subpage): bytearray(self._default(p)) for p in _PAGES}
        self._refresh()

    def _refresh(self) -> None:
        # Read on every command: plain attributes, recomputed only when a page changes.
        self.wce = bool(self._current[(0x08, 0)][0] & 0x04)
        self.d_sense = bool(self._current[(0x0A, 0)][0] & 0x04)
        self.swp = bool(self._current[(0x0A, 0)][2] & 0x08)

    def _default(self, page: _Page) -> bytes:
        if page is _CACHING and not self._write_cache_default:
            return bytes([page.default[0] & ~0x04]) + page.default[1:]
        return page.default

    #: the bits the rest of the disk looks at (see _refresh)
    wce: bool
    d_sense: bool
    swp: bool

    # -- MODE SENSE

    def _page_bytes(self, page: _Page, pc: int) -> bytes:
        if pc == PC_CHANGEABLE:
            body = page.changeable
        elif pc == PC_DEFAULT:
            body = self._default(page)
        else:
            body = bytes(self._current[(page.code, page.subpage)])
        return page.header(len(body)) + body

    def pages(self, code: int, subpage: int, pc: int) -> bytes:
        """The pages MODE SENSE asked for; raises INVALID FIELD IN CDB for unknown ones."""
        if pc == PC_SAVED:
            raise sense.SAVING_PARAMS_NOT_SUPPORTED.error(field=2, bit=7)
        if code == ALL_PAGES:
            if subpage not in (0x00, 0xFF):
                raise sense.INVALID_FIELD_IN_CDB.error(field=3)
            chosen = [p for p in _PAGES if subpage == 0xFF or p.subpage == 0]
        elif subpage == 0xFF:
            chosen = [p for p in _PAGES if p.code == code]
        else:
            chosen = [p for p in _PAGES if p.code == code and p.subpage == subpage]
        if not chosen:
            raise sense.INVALID_FIELD_IN_CDB.error(field=2, bit=5)
        return b"".join(self._page_bytes(p, pc) for p in chosen)

    def sense_data(
        self,
        cdb: bytes,
        *,
        ten: bool,
        num_blocks: int,
        block_size: int,
        write_protected: bool,
    ) -> bytes:
        """The whole MODE SENSE(6)/(10) parameter data (before allocation-length truncation)."""
        dbd = bool(cdb[1] & 0x08)
        llbaa = ten and bool(cdb[1] & 0x10)
        pc = cdb[2] >> 6
        pages = self.pages(cdb[2] & 0x3F, cdb[3], pc)
        dsp = (0x80 if write_protected else 0) | 0x10  # WP, DPOFUA
        if dbd:
            desc = b""
        elif llbaa:
            desc = struct.pack(">QII", num_blocks, 0, block_size)
        else:
            desc = struct.pack(">II", min(num_blocks, 0xFFFFFFFF), block_size & 0xFFFFFF)
        if ten:
            length = 6 + len(desc) + len(pages)
            header = struct.pack(">HBBBBH", length, 0, dsp, 1 if llbaa and desc else 0, 0, len(desc))
        else:
            length = 3 + len(desc) + len(pages)
            header = bytes([min(length, 255), 0, dsp, len(desc)])
        return header + desc + pages

    # -- MODE SELECT

    def select(self, cdb: bytes, data: bytes, *, ten: bool) -> bool:
        """Apply MODE SELECT parameter data; True if a current value changed.

        Everything is validated before anything changes, so a bad page leaves no partial change.
        """
        if cdb[1] & 0x01:  # SP: save pages
            raise sense.SAVING_PARAMS_NOT_SUPPORTED.error(field=1, bit=0)
        if not data:
            return False
        hdr = 8 if ten else 4
        if len(data) < hdr:
            raise sense.PARAM_LIST_LENGTH_ERROR.error()
        desc_len = struct.unpack_from(">H", data, 6)[0] if ten else data[3]
        if desc_len not in (0, 8, 16):
            raise sense.INVALID_FIELD_IN_PARAM_LIST.error(field=6 if ten else 3, in_cdb=False)
        pos = hdr + desc_len
        if pos > len(data):
            raise sense.PARAM_LIST_LENGTH_ERROR.error()
        updates: list[tuple[tuple[int, int], bytes]] = []
        while pos < len(data):
            start = pos
            if data[pos] & 0x40:  # SPF: sub-page format
                if pos + 4 > len(data):
                    raise sense.PARAM_LIST_LENGTH_ERROR.error()
                key = (data[pos] & 0x3F, data[pos + 1])
                body_len = struct.unpack_from(">H", data, pos + 2)[0]
                pos += 4
            else:
                if pos + 2 > len(data):
                    raise sense.PARAM_LIST_LENGTH_ERROR.error()
                key = (data[pos] & 0x3F, 0)
                body_len = data[pos + 1]
                pos += 2
            page = next((p for p in _PAGES if (p.code, p.subpage) == key), None)
            if page is None or body_len != len(page.default):
                raise sense.INVALID_FIELD_IN_PARAM_LIST.error(field=start, in_cdb=False)
            body = data[pos : pos + body_len]
            if len(body) != body_len:
                raise sense.PARAM_LIST_LENGTH_ERROR.error()
            current = self._current[key]
            for i, (new, mask) in enumerate(zip(body, page.changeable, strict=True)):
                if (new ^ current[i]) & ~mask & 0xFF:
                    raise sense.INVALID_FIELD_IN_PARAM_LIST.error(field=pos + i, in_cdb=False)
            updates.append((key, body))
            pos += body_len
        changed = False
        for key, body in updates:
            if self._current[key] != body:
                self._current[key][:] = body
                changed = True
        self._refresh()
        return changed
