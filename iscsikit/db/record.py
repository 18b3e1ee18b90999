"""One record file: parse it as iscsiadm 2.1.8 does, show it, write it back byte for byte.

Pure functions, no filesystem access::

    >>> rec = parse_record("# BEGIN RECORD 2.1.8\\nnode.name = iqn.2026-11.test:a\\n"
    ...                    "node.startup = Automatic\\n# END RECORD\\n", "t/default", RecordKind.NODE)
    >>> [str(i) for i in rec.issues]
    ["t/default:3: node.startup = 'Automatic' is not one of manual, automatic, onboot (iscsiadm 2.1.8 ..."]
    >>> rec.settings()["node.name"], rec.value("node.startup")
    ('iqn.2026-11.test:a', 'manual')

Three views of the same file:

* :attr:`Record.entries` -- the raw ``key = value`` pairs as written (last one wins), in
  file order, unknown keys included, with their line numbers (:meth:`Record.line_of`).
* :meth:`Record.values` -- what ``usr/idbm.c`` holds after reading it: defaults filled in,
  integers through ``strtoul``, bad enums replaced by the default, unknown keys dropped.
  This is what iscsiadm writes back on ``-o update``, and what :func:`format_record` writes.
* :meth:`Record.settings` -- what ``iscsiadm -o show`` prints: every key, ``<empty>`` for
  empty strings, ``********`` for secrets unless asked.

Every line iscsiadm would ignore or refuse becomes an :class:`Issue` naming the file and
line; ``error`` issues are those that make iscsiadm 2.1.8's listing fail.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, cast

from iscsikit.db import schema
from iscsikit.db.schema import (
    C_SPACE,
    EMPTY,
    MASK,
    CType,
    KeySet,
    KeySpec,
    RecordKind,
    c_int,
    c_truncate,
    chap_algs_normalize,
)
from iscsikit.errors import InvalidSettingError, RecordParseError

Severity = Literal["error", "warning"]

_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_PLAIN_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
# A well-formed line, for the fast path; anything else goes through the exact C emulation.
_FAST_LINE_RE: Final = re.compile(r"([^ \t\n\x0b\x0c\r=#][^ \t\n\x0b\x0c\r=]*) = ([^ \t\n\x0b\x0c\r].*)")
# The fast parser's checks: a line of at most 511 characters fits iscsiadm's 2047-byte buffer
# even in 4-byte UTF-8 (longer ones are measured exactly); keys have no blank or '='; values
# are not empty and not surrounded by blanks (keys and values are joined with \x01 to check).
_FAST_MAX_LINE: Final = 511
_KEY_BREAKERS: Final = (" ", "\t", "=", "\x0b", "\x0c", "\r")
_VALUE_EDGES: Final = ("\x01\x01", *(f"\x01{c}" for c in " \t\x0b\x0c\r"), *(f"{c}\x01" for c in " \t\x0b\x0c\r"))


@dataclass(frozen=True, slots=True)
class Issue:
    """A line iscsiadm would not take as written: where, what, and how bad.

    ``error``: iscsiadm 2.1.8's listing (``-m node``, ``-o show``, ``-m iface``) fails on it.
    ``warning``: iscsiadm silently ignores the line or changes the value.
    """

    path: str
    line: int
    message: str
    severity: Severity = "error"
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"

    def to_error(self) -> RecordParseError:
        return RecordParseError(self.path, self.line, self.message)

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "severity": self.severity, "message": self.message}


@dataclass(slots=True)
class Record:
    """A parsed record file. Build one with :func:`parse_record`; :func:`format_record` writes one."""

    kind: RecordKind
    path: str
    #: The iface name that decides the key set iscsiadm's reader expects: the iface file or
    #: directory name ("default" for an old-style node record).
    iface_hint: str = "default"
    entries: dict[str, str] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    version: str | None = None
    _lines: dict[str, int] = field(default_factory=dict, repr=False)
    _text: str | None = field(default=None, repr=False)  # kept by the fast path for line numbers
    _values: dict[str, str] | None = field(default=None, repr=False)
    _value_warnings: list[str] = field(default_factory=list, repr=False)
    # filled while validating node and iface records: what -o show prints for each entry
    _shown: dict[str, str] | None = field(default=None, repr=False)
    _secrets: dict[str, str] | None = field(default=None, repr=False)
    _extra: dict[str, str] | None = field(default=None, repr=False)
    _infos: list[_LineInfo] | None = field(default=None, repr=False)  # from the line cache
    # every key = value in file order, duplicates included (exact parser only): usr/idbm.c
    # applies them one by one, and a bad enum after a good one keeps the good one
    _occurrences: list[tuple[str, str, int]] = field(default_factory=list, repr=False)

    # ---- raw access --------------------------------------------------------------------

    def raw(self, key: str) -> str | None:
        """The value as written in the file, or None if the key is absent."""
        return self.entries.get(key)

    def line_of(self, key: str) -> int | None:
        """The line the (winning) value of ``key`` came from."""
        if self._text is not None:
            self._lines = _line_numbers(self._text)
            self._text = None
        return self._lines.get(key)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def ok(self) -> bool:
        """True when iscsiadm 2.1.8 would list this record (no ``error`` issues)."""
        return not any(i.severity == "error" for i in self.issues)

    def unknown_keys(self) -> list[str]:
        keys = schema.all_keys(self.kind)
        return [k for k in self.entries if k not in keys]

    # ---- usr/idbm.c view ---------------------------------------------------------------

    def values(self) -> dict[str, str]:
        """Every key with the value iscsiadm holds after reading the file (see module doc)."""
        if self._values is None:
            if len(self._occurrences) > len(self.entries):
                sequence = [(k, v) for k, v, _ in self._occurrences]
                self._values, self._value_warnings = idbm_values(self.kind, sequence, self.iface_hint)
            else:
                self._values, self._value_warnings = idbm_values(self.kind, self.entries, self.iface_hint)
        return dict(self._values)

    def some_values(self, keys: Iterable[str]) -> dict[str, str]:
        """Only these keys as :meth:`values` would give them (cheaper when few are needed)."""
        if self._values is not None:
            return {k: self._values[k] for k in keys}
        wanted = set(keys)
        if len(self._occurrences) > len(self.entries):
            pairs: Iterable[tuple[str, str]] = [(k, v) for k, v, _ in self._occurrences if k in wanted]
        else:
            pairs = [(k, v) for k, v in self.entries.items() if k in wanted]
        values = idbm_values(self.kind, pairs, self.iface_hint)[0]
        return {k: values[k] for k in wanted}

    def value(self, key: str) -> str:
        """One value as iscsiadm holds it (``KeyError`` for a key the record kind lacks)."""
        if self._values is None:
            self.values()
        assert self._values is not None
        return self._values[key]

    def rewrite_warnings(self) -> list[str]:
        """What iscsiadm (and iscsikit) would drop or change when this record is rewritten."""
        if self._values is None:
            self.values()
        return list(self._value_warnings)

    # ---- iscsiadm -o show view ---------------------------------------------------------

    @property
    def show_ipv6(self) -> bool:
        return schema.name_is_ipv6(self.iface_hint)

    def settings(self, show_secrets: bool = False) -> dict[str, str]:
        """Every key as ``iscsiadm -o show`` prints it, in its order; unknown keys last."""
        if self._shown is None and self._infos is not None:
            infos = self._infos
            self._shown = dict(cast("list[tuple[str, str]]", list(filter(None, map(_shown_of, infos)))))
            self._secrets = dict(cast("list[tuple[str, str]]", list(filter(None, map(_secret_of, infos)))))
        if self._shown is None:
            return show_settings(self.kind, self.entries, self.iface_hint, show_secrets)
        _, template = _template(self.kind, schema.name_is_ipv6(self.iface_hint))
        out = dict(template)
        out["iface.iscsi_ifacename"] = self.iface_hint or EMPTY
        if self.kind is RecordKind.IFACE:
            out["iface.transport_name"] = EMPTY  # a stored iface starts without one
        out.update(self._shown)
        if show_secrets and self._secrets:
            out.update(self._secrets)
        if self._extra:
            out.update(self._extra)
        return out

    def settings_json(self, show_secrets: bool = False) -> str:
        """``json.dumps(self.settings(show_secrets))``, built from memoised fragments (the
        C encoder takes longer than everything else in a 10,000-record ``node show``)."""
        keys, defaults = _template(self.kind, schema.name_is_ipv6(self.iface_hint))
        index, template = _fragments(keys, defaults)
        infos = self._infos
        if infos is not None:  # from the line cache: C-level calls only
            signature = tuple(map(_key_of, infos))
            plan = _JSON_PLANS.get((id(keys), signature))
            if plan is None:
                plan = _json_plan(keys, template, signature, self.kind)
                if len(_JSON_PLANS) < 10_000:
                    _JSON_PLANS[(id(keys), signature)] = plan
            texts = list(map(_clear_text_of if show_secrets else _masked_text_of, infos))
            texts.extend(template)
            texts.append(_cached_pair("iface.iscsi_ifacename", self.iface_hint or EMPTY))
            texts.append(_cached_pair("iface.transport_name", EMPTY))
            return "{" + ", ".join(plan(texts)) + "}"
        if self._shown is None:
            self.settings()
        shown = self._shown
        if shown is None:
            return json.dumps(self.settings(show_secrets))
        frags = list(template)
        put = {"iface.iscsi_ifacename": self.iface_hint or EMPTY}
        if self.kind is RecordKind.IFACE:
            put["iface.transport_name"] = EMPTY
        put.update(shown)
        if show_secrets and self._secrets:
            put.update(self._secrets)
        cache = _FRAGMENT_CACHE
        for key, value in put.items():
            frag = cache.get((key, value))
            if frag is None:
                frag = f"{json.dumps(key)}: {json.dumps(value)}"
                if len(cache) < 200_000:
                    cache[(key, value)] = frag
            frags[index[key]] = frag
        if self._extra:
            frags.extend(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in self._extra.items() if k not in index)
        return "{" + ", ".join(frags) + "}"

    def format(self) -> str:
        """The file iscsiadm 2.1.8 would write for this record."""
        return format_record(self.kind, self.values())


# --------------------------------------------------------------------------------------
# Parsing


def _cstrip(text: str) -> str:
    return text.strip(C_SPACE)


def parse_record(
    text: str | bytes,
    path: str,
    kind: RecordKind,
    *,
    iface_hint: str | None = None,
) -> Record:
    """Parse a record file exactly as iscsiadm 2.1.8's readers do, noting every deviation.

    ``iface_hint`` is the iface name that picks the key set (node: the iface file name, or
    None for an old-style record; iface: the file name). Never raises for bad input.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if iface_hint is None:
        iface_hint = "default"
    rec = Record(kind, path, iface_hint)
    if _parse_cached(text, rec):
        return rec
    if not _parse_fast(text, rec):
        rec.entries = {}
        rec._text = None
        rec.version = None
        _parse_exact(text, rec)
    _validate(rec)
    if rec.issues:
        rec.issues.sort(key=lambda i: i.line)
    return rec


# ---- the line cache: most lines of 10,000 records are the same few hundred lines --------
#
# Per key set (kind + IPv4/IPv6), each distinct line maps to what it contributes: its
# (key, value) pair, its (key, shown value) for -o show, its (key, secret) when masked, and
# its problem. A record whose lines are all known is then parsed with C-level map/filter/dict
# calls only. Lines that are not plain "key = value", comments or blank are never cached (the
# record takes the exact path), so the result is the same as _parse_fast + _validate.

_Pair = tuple[str, str] | tuple[()]
_Frag = tuple[int, str] | tuple[()]
# (key, value), (key, shown), (key, secret), flag, (position, JSON fragment), (position, clear fragment)
# ... and three more for the JSON of -o show: the key ("" for comments), its fragment (masked),
# and its fragment with secrets shown
_LineInfo = tuple[_Pair, _Pair, _Pair, str, _Frag, _Frag, str, str, str]
_NOT_FAST: Final = ((), (), (), "x", (), (), "", "", "")
_LINE_CACHES: dict[int, dict[str, _LineInfo]] = {}
_BAD_LINES: dict[int, set[str]] = {}
_LINE_CACHE_LIMIT: Final = 400_000
_kv = operator.itemgetter(0)
_shown_of = operator.itemgetter(1)
_secret_of = operator.itemgetter(2)
_flag_of = operator.itemgetter(3)
_key_of = operator.itemgetter(6)
_masked_text_of = operator.itemgetter(7)
_clear_text_of = operator.itemgetter(8)
# (key set, keys of the lines in file order) -> positions that put fragments in -o show order
_Plan = Callable[[list[str]], tuple[str, ...]]
_JSON_PLANS: dict[tuple[int, tuple[str, ...]], _Plan] = {}


# json.dumps(str) is this C function behind a Python wrapper; called directly it is several times faster
_json_str = json.encoder.encode_basestring_ascii


def _json_pair(key: str, value: str) -> str:
    return f"{_json_str(key)}: {_json_str(value)}"


def _line_info(line: str, keys: KeySet, index: Mapping[str, int]) -> _LineInfo:
    """What one line contributes (``flag``: "" fine, "p" has a problem, "x" not fast)."""
    if not line:
        return ((), (), (), "", (), (), "", "", "")
    # Before the comment test: a comment with a NUL byte or over the line limit is reported too.
    if len(line) > _FAST_MAX_LINE or "\x00" in line or "\x01" in line:
        return _NOT_FAST
    if line[0] == "#":
        return ((), (), (), "", (), (), "", "", "")
    key, sep, value = line.partition(" = ")
    if (
        not sep
        or not key
        or not value
        or any(c in key for c in _KEY_BREAKERS)
        or value[0] in C_SPACE
        or value[-1] in C_SPACE
    ):
        return _NOT_FAST
    spec = keys.by_name.get(key)
    if spec is None:
        return _NOT_FAST  # unknown keys: rare, handled (and reported) by the exact path
    problem, display, secret = _entry_info(spec, value)
    shown: _Pair = () if display is None else (key, display)
    clear: _Pair = () if secret is None else (key, secret)
    frag: _Frag = () if display is None else (index[key], _json_pair(key, display))
    clear_frag: _Frag = () if secret is None else (index[key], _json_pair(key, secret))
    masked_text = frag[1] if frag else ""
    clear_text = clear_frag[1] if clear_frag else masked_text
    flag = "p" if problem is not None else ""
    return ((key, value), shown, clear, flag, frag, clear_frag, key, masked_text, clear_text)


def _parse_cached(text: str, rec: Record) -> bool:
    if not text or text[-1] != "\n":
        return False
    keys, defaults = _template(rec.kind, schema.name_is_ipv6(rec.iface_hint))
    cache = _LINE_CACHES.get(id(keys))
    if cache is None:
        cache = _LINE_CACHES[id(keys)] = {}
        _BAD_LINES[id(keys)] = set()
    lines = text.split("\n")
    lines.pop()
    found = list(map(cache.get, lines))
    if None in found:
        bad = _BAD_LINES[id(keys)]
        index = _fragments(keys, defaults)[0]
        i = -1
        while True:  # visit only the lines not seen before (list.index is a C-level search)
            try:
                i = found.index(None, i + 1)
            except ValueError:
                break
            line = lines[i]
            if line in bad:
                return False
            hit = found[i] = _line_info(line, keys, index)
            if hit[3]:  # not plain, or something to report: the exact path says what and where
                if len(bad) < _LINE_CACHE_LIMIT:
                    bad.add(line)
                return False
            if len(cache) < _LINE_CACHE_LIMIT:
                cache[line] = hit
    infos = cast("list[_LineInfo]", found)
    pairs: list[tuple[str, str]] = list(filter(None, map(_kv, infos)))
    entries = dict(pairs)
    if len(entries) != len(pairs):
        return False  # duplicates
    rec.entries = entries
    rec._text = text
    if rec.kind is RecordKind.NODE or rec.kind is RecordKind.IFACE:
        rec._infos = infos  # -o show values and JSON fragments, extracted when asked for
    if lines[0].startswith("# BEGIN RECORD "):
        rec.version = lines[0][15:].strip(C_SPACE) or None
    return True


def _parse_fast(text: str, rec: Record) -> bool:
    """Well-formed files (every line ``key = value``, a ``#`` comment or blank) in a few C-level
    passes; anything else (or a duplicate key) goes to the exact parser, which diagnoses it."""
    if not text:
        return True
    if text[-1] != "\n" or "\x00" in text or "\x01" in text:
        return False
    lines = text.split("\n")
    lines.pop()
    if max(map(len, lines)) > _FAST_MAX_LINE:
        return False  # an unusually long line: the exact parser measures it in bytes
    parts = [line.partition(" = ") for line in lines if line and line[0] != "#"]
    if not parts:
        rec._text = text
        return True
    keys, seps, values = zip(*parts, strict=True)
    if "" in seps:
        return False  # a line without " = "
    joined = "\x01".join(keys)
    if not all(keys) or any(c in joined for c in _KEY_BREAKERS):
        return False  # blanks or '=' in a key: iscsiadm reads such a line differently
    joined = "\x01" + "\x01".join(values) + "\x01"
    if any(edge in joined for edge in _VALUE_EDGES):
        return False  # an empty value, or blanks around one (iscsiadm strips them)
    entries = dict(zip(keys, values, strict=True))
    if len(entries) != len(keys):
        return False  # duplicates: the exact parser reports them
    rec.entries = entries
    rec._text = text
    if lines[0].startswith("# BEGIN RECORD "):
        rec.version = lines[0][15:].strip(C_SPACE) or None
    return True


def _line_numbers(text: str) -> dict[str, int]:
    """Key -> line number for a file the fast path parsed (computed only when asked)."""
    out: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), 1):
        m = _FAST_LINE_RE.fullmatch(line)
        if m is not None:
            out[m.group(1)] = number
    return out


def _parse_exact(text: str, rec: Record) -> None:
    """usr/idbm.c ``idbm_recinfo_config`` line by line, with a diagnosis for every skip."""
    path = rec.path
    issues = rec.issues
    chunks = text.split("\n")
    last = len(chunks) - 1
    for index, line in enumerate(chunks):
        number = index + 1
        if index == last:
            if line.strip(C_SPACE):
                issues.append(Issue(path, number, "the last line has no newline; iscsiadm ignores it", "warning"))
            break
        if "\x00" in line:
            issues.append(Issue(path, number, "the line contains a NUL byte; iscsiadm ignores it", "warning"))
            continue
        if len(schema.c_bytes(line)) > schema.MAX_LINE_BYTES:
            issues.append(
                Issue(
                    path,
                    number,
                    f"the line is longer than {schema.MAX_LINE_BYTES} bytes; iscsiadm cannot read it",
                    "error",
                )
            )
            continue
        s = _cstrip(line)
        if not s:
            continue
        if s[0] == "#":
            if number == 1 and s.startswith("# BEGIN RECORD"):
                rec.version = _cstrip(s[14:]) or None
            continue
        i, n = 0, len(s)
        while i < n and s[i] not in C_SPACE and s[i] != "=":
            i += 1
        key = s[:i]
        if i == n:
            issues.append(Issue(path, number, f"{key!r} has no '= value'; iscsiadm ignores the line", "warning"))
            continue
        j = i + 1  # iscsiadm skips the character that ended the name, whatever it was
        while j < n and s[j] in C_SPACE:
            j += 1
        if j >= n or s[j] != "=":
            why = (
                "write 'key = value' with a space before '='"
                if s[i] == "="
                else "the key is followed by something other than '='"
            )
            issues.append(
                Issue(path, number, f"no '=' separator after {key!r} ({why}); iscsiadm ignores the line", "warning")
            )
            continue
        j += 1
        while j < n and s[j] in C_SPACE:
            j += 1
        if j >= n:
            issues.append(Issue(path, number, f"{key!r} has an empty value; iscsiadm ignores the line", "warning"))
            continue
        value = s[j:]
        if key in rec.entries:
            issues.append(
                Issue(
                    path,
                    number,
                    f"{key} is set again (first on line {rec._lines[key]}); the last value wins",
                    "warning",
                    key,
                )
            )
        rec.entries[key] = value
        rec._lines[key] = number
        rec._occurrences.append((key, value, number))


# (variant, key, value) -> (problem or None, value as -o show prints it (masked), clear secret or None)
_EntryInfo = tuple[tuple[Severity, str] | None, str | None, str | None]
_ENTRY_CACHE: dict[tuple[int, str, str], _EntryInfo] = {}


def _entry_info(spec: KeySpec, value: str) -> _EntryInfo:
    problem = _check_stored(spec, value)
    if spec.hidden:
        return problem, None, None
    shown = _lib_value(spec, value)[0] or EMPTY
    if spec.masked and shown != EMPTY:
        return problem, MASK, shown
    return problem, shown, None


def _validate(rec: Record) -> None:
    """Check every entry against the key set iscsiadm 2.1.8's strict reader expects; for node
    and iface records also note what ``-o show`` prints for it (one pass, memoised: 10,000
    records repeat the same values)."""
    kind = rec.kind
    keys = schema.show_keys(kind, schema.name_is_ipv6(rec.iface_hint))
    variant = id(keys)
    cache = _ENTRY_CACHE
    path = rec.path
    shows = kind is RecordKind.NODE or kind is RecordKind.IFACE
    shown: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for key, value in rec.entries.items():
        info = cache.get((variant, key, value))
        if info is None:
            spec = keys.by_name.get(key)
            if spec is None:
                _unknown_key(rec, key, value)
                continue
            info = _entry_info(spec, value)
            if len(cache) < 200_000:
                cache[(variant, key, value)] = info
        problem, display, secret = info
        if display is not None:
            shown[key] = display
            if secret is not None:
                secrets[key] = secret
        if problem is not None:
            rec.issues.append(Issue(path, rec.line_of(key) or 1, f"{key} = {value!r} {problem[1]}", problem[0], key))
    if shows:
        rec._shown = shown
        rec._secrets = secrets
    if len(rec._occurrences) > len(rec.entries):
        # libopeniscsiusr applies duplicates one by one and stops at the first bad value, even
        # when a later line for the same key would have been fine
        for key, value, line in rec._occurrences:
            spec = keys.by_name.get(key)
            if spec is None or rec._lines.get(key) == line:
                continue
            problem = _check_stored(spec, value)
            if problem is not None and problem[0] == "error":
                rec.issues.append(Issue(path, line, f"{key} = {value!r} {problem[1]}", "error", key))


def _unknown_key(rec: Record, key: str, value: str) -> None:
    kind = rec.kind
    if rec.kind is RecordKind.NODE or rec.kind is RecordKind.IFACE:
        if rec._extra is None:
            rec._extra = {}
        rec._extra[key] = value
    line = rec.line_of(key) or 1
    path = rec.path
    if len(schema.c_bytes(key)) > schema.MAX_KEY_BYTES:
        rec.issues.append(Issue(path, line, f"the key is longer than {schema.MAX_KEY_BYTES} bytes", "error", key))
    elif key in schema.all_keys(kind) and kind in (RecordKind.NODE, RecordKind.IFACE):
        key_set = "IPv4" if schema.name_is_ipv6(rec.iface_hint) else "IPv6"
        msg = (
            f"{key} is an {key_set} iface key, but iscsiadm 2.1.8 reads this record with the "
            f"other key set (chosen by whether the iface name {rec.iface_hint!r} contains 'ipv6'); "
            "it refuses to list it"
        )
        rec.issues.append(Issue(path, line, msg, "error", key))
    else:
        msg = f"unknown key {key!r}; iscsiadm 2.1.8 refuses to list the records ('Unknown parameter name')"
        rec.issues.append(Issue(path, line, msg, "error", key))


def _check_stored(spec: KeySpec, value: str) -> tuple[Severity, str] | None:
    """How iscsiadm treats a value read from a file; None if it takes it as is."""
    nbytes = len(schema.c_bytes(value))
    if nbytes > schema.MAX_VALUE_BYTES:
        return "error", f"is longer than {schema.MAX_VALUE_BYTES} bytes, which overflows iscsiadm's buffer"
    lib = spec.lib
    if lib is CType.ENUM or lib is CType.BOOL:
        if value not in spec.choices:
            return "error", (
                f"is not one of {', '.join(spec.choices)} (iscsiadm 2.1.8 refuses to list the records; "
                "values are case-sensitive)"
            )
        return None
    if lib is CType.LIST:
        canonical, warnings = chap_algs_normalize(value)
        if warnings:
            return "warning", "; ".join(warnings) + f" (iscsiadm reads {canonical or '<empty>'!r})"
        return None
    if lib is CType.STR:
        if spec.size and nbytes >= spec.size:
            return "warning", f"is longer than {spec.size - 1} bytes; iscsiadm truncates it"
        return None
    # integers
    if not _PLAIN_INT_RE.fullmatch(value):
        return "warning", f"is not a plain integer; iscsiadm reads it as {c_int(spec.idbm, value)}"
    number = int(value)
    lo, hi = schema.int_range(spec.idbm)
    if not lo <= number <= hi:
        return "warning", f"is out of range {lo}..{hi}; iscsiadm stores {c_int(spec.idbm, value)}"
    return None


# --------------------------------------------------------------------------------------
# The usr/idbm.c view (what is written back)


def read_defaults(kind: RecordKind, iface_hint: str) -> dict[str, str]:
    """What usr/idbm.c holds before it reads a file of this kind."""
    values = schema.all_keys(kind).defaults()
    if kind is RecordKind.IFACE:
        # __iface_conf_read starts from a zeroed iface that only has its name.
        values["iface.iscsi_ifacename"] = iface_hint
        values["iface.transport_name"] = ""
    elif kind is RecordKind.ISNS:
        values["discovery.type"] = "isns"
    return values


def _read_set(kind: RecordKind, iface_hint: str) -> KeySet:
    if kind is RecordKind.NODE:
        # idbm_node_setup_defaults names the iface "default" before the file is read, so a
        # node record is always read with the IPv4 key set.
        return schema.NODE_FILE_V4
    if kind is RecordKind.IFACE:
        return schema.file_keys(kind, schema.name_is_ipv6(iface_hint))
    return schema.file_keys(kind, False)


def coerce_idbm(spec: KeySpec, raw: str, current: str) -> tuple[str, str | None]:
    """The value usr/idbm.c stores for ``raw`` (and a warning if it is not ``raw``)."""
    ctype = spec.idbm
    if ctype is CType.STR:
        value = c_truncate(raw, spec.size) if spec.size else raw
        return value, None if value == raw else f"{spec.name}: truncated to {spec.size - 1} bytes"
    if ctype is CType.ENUM:
        if raw in spec.choices:
            return raw, None
        return current, f"{spec.name}: {raw!r} is not one of {', '.join(spec.choices)}; kept {current!r}"
    if ctype is CType.LIST:
        value, warnings = chap_algs_normalize(raw)
        return value, (f"{spec.name}: " + "; ".join(warnings)) if warnings else None
    value = str(c_int(ctype, raw))
    return value, None if value == raw else f"{spec.name}: {raw!r} is stored as {value}"


def idbm_values(
    kind: RecordKind, entries: Mapping[str, str] | Iterable[tuple[str, str]], iface_hint: str
) -> tuple[dict[str, str], list[str]]:
    """Defaults overlaid with ``entries`` (a mapping, or pairs in file order) as usr/idbm.c
    reads them; plus what it changed."""
    values = read_defaults(kind, iface_hint)
    read_set = _read_set(kind, iface_hint)
    warnings: list[str] = []
    pairs = entries.items() if isinstance(entries, Mapping) else entries
    for key, raw in pairs:
        spec = read_set.get(key)
        if spec is None:
            warnings.append(f"{key}: unknown to iscsiadm 2.1.8 here; dropped")
            continue
        value, warning = coerce_idbm(spec, raw, values[key])
        values[key] = value
        if warning:
            warnings.append(warning)
    return values, warnings


def record_ipv6(kind: RecordKind, values: Mapping[str, str]) -> bool:
    """Whether usr/idbm.c writes the IPv6 iface key set for these values."""
    if kind not in (RecordKind.NODE, RecordKind.IFACE):
        return False
    return schema.iface_is_ipv6(
        values.get("iface.ipaddress", ""), values.get("iface.bootproto", ""), values.get("iface.iscsi_ifacename", "")
    )


def format_record(kind: RecordKind, values: Mapping[str, str]) -> str:
    """The exact file iscsiadm 2.1.8 writes for these values (``idbm_print`` to a file).

    ``values`` must hold every key of the record kind (as :meth:`Record.values` returns).
    """
    keys = schema.file_keys(kind, record_ipv6(kind, values))
    out = [schema.BEGIN_RECORD]
    for spec in keys.keys:
        if spec.hidden:
            continue
        value = values[spec.name]
        if value:
            out.append(f"{spec.name} = {value}")
    out.append(schema.END_RECORD)
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# The -o show view


def _lib_value(spec: KeySpec, raw: str) -> tuple[str, bool]:
    """(value libopeniscsiusr prints, whether it accepted it)."""
    lib = spec.lib
    if lib is CType.STR:
        return (c_truncate(raw, spec.size) if spec.size else raw), True
    if lib is CType.ENUM or lib is CType.BOOL:
        return raw, raw in spec.choices
    if lib is CType.LIST:
        return chap_algs_normalize(raw)[0], True
    return str(c_int(lib, raw)), True


_RENDER_CACHE: dict[tuple[int, str, str, bool], str] = {}
_TEMPLATES: dict[tuple[RecordKind, bool], tuple[KeySet, dict[str, str]]] = {}


def _rendered(spec: KeySpec, raw: str, show_secrets: bool) -> str:
    """One value as ``-o show`` prints it."""
    value = _lib_value(spec, raw)[0]
    return EMPTY if not value else (MASK if spec.masked and not show_secrets else value)


def _template(kind: RecordKind, ipv6: bool) -> tuple[KeySet, dict[str, str]]:
    """The show keys of a record kind with their defaults already rendered (defaults hold no secret)."""
    hit = _TEMPLATES.get((kind, ipv6))
    if hit is None:
        keys = schema.show_keys(kind, ipv6)
        defaults = read_defaults(kind, "")
        hit = (keys, {k.name: defaults[k.name] or EMPTY for k in keys.keys if not k.hidden})
        _TEMPLATES[(kind, ipv6)] = hit
    return hit


_FRAGMENT_CACHE: dict[tuple[str, str], str] = {}
_FRAGMENT_TEMPLATES: dict[int, tuple[dict[str, int], list[str]]] = {}


def _fragments(keys: KeySet, template: Mapping[str, str]) -> tuple[dict[str, int], list[str]]:
    """For a key set: key -> position in the show order, and each default's JSON fragment."""
    hit = _FRAGMENT_TEMPLATES.get(id(keys))
    if hit is None:
        index = {k: i for i, k in enumerate(template)}
        hit = (index, [_json_pair(k, v) for k, v in template.items()])
        _FRAGMENT_TEMPLATES[id(keys)] = hit
    return hit


def _json_plan(keys: KeySet, template: list[str], signature: tuple[str, ...], kind: RecordKind) -> _Plan:
    """Where each -o show key's fragment is in [line fragments..., defaults..., ifacename, transport]."""
    show_order = [k.name for k in keys.keys if not k.hidden]
    from_line = {key: i for i, key in enumerate(signature) if key}
    base = len(signature)
    hint_slot = base + len(template)
    positions = []
    for i, key in enumerate(show_order):
        if key in from_line:
            positions.append(from_line[key])
        elif key == "iface.iscsi_ifacename":
            positions.append(hint_slot)
        elif key == "iface.transport_name" and kind is RecordKind.IFACE:
            positions.append(hint_slot + 1)
        else:
            positions.append(base + i)
    return cast("_Plan", operator.itemgetter(*positions))


def _cached_pair(key: str, value: str) -> str:
    frag = _FRAGMENT_CACHE.get((key, value))
    if frag is None:
        frag = _json_pair(key, value)
        if len(_FRAGMENT_CACHE) < 200_000:
            _FRAGMENT_CACHE[(key, value)] = frag
    return frag


def show_settings(
    kind: RecordKind, entries: Mapping[str, str], iface_hint: str, show_secrets: bool = False
) -> dict[str, str]:
    """What ``iscsiadm -o show`` prints for a file with these entries, as an ordered dict.

    Node and iface records follow libopeniscsiusr (key set by iface name); discovery
    records follow usr/idbm.c (``idbm_print``). Values iscsiadm would refuse are shown as
    written; unknown keys follow the known ones.
    """
    if kind in (RecordKind.NODE, RecordKind.IFACE):
        keys, template = _template(kind, schema.name_is_ipv6(iface_hint))
        out = dict(template)
        out["iface.iscsi_ifacename"] = iface_hint or EMPTY
        if kind is RecordKind.IFACE:
            out["iface.transport_name"] = EMPTY  # a stored iface starts without one
        extra: dict[str, str] | None = None
        by_name = keys.by_name
        variant = id(keys)
        cache = _RENDER_CACHE  # memoised: 10,000 records repeat the same values
        for key, raw in entries.items():
            value = cache.get((variant, key, raw, show_secrets))
            if value is not None:
                out[key] = value
                continue
            spec = by_name.get(key)
            if spec is None:
                if extra is None:
                    extra = {}
                extra[key] = raw
            elif not spec.hidden:
                value = out[key] = _rendered(spec, raw, show_secrets)
                if len(cache) < 200_000:
                    cache[(variant, key, raw, show_secrets)] = value
        if extra:
            out.update(extra)
        return out
    values, _ = idbm_values(kind, entries, iface_hint)
    file_keys = schema.file_keys(kind, False)
    shown = {k.name: values[k.name] for k in file_keys.keys if not k.hidden}
    shown.update({k: v for k, v in entries.items() if k not in file_keys})
    return render_for_display(kind, shown, show_secrets)


def render_for_display(kind: RecordKind, values: Mapping[str, str], show_secrets: bool) -> dict[str, str]:
    """``<empty>`` for empty values, ``********`` for set secrets unless ``show_secrets``."""
    masked = _MASKED
    out: dict[str, str] = {}
    for key, value in values.items():
        if not value:
            out[key] = EMPTY
        elif not show_secrets and key in masked:
            out[key] = MASK
        else:
            out[key] = value
    return out


_MASKED: Final = frozenset(
    k.name for ks in (schema.NODE_ALL, schema.IFACE_ALL, schema.SENDTARGETS, schema.ISNS) for k in ks.keys if k.masked
)


# --------------------------------------------------------------------------------------
# Values given by a user (validated on write)


def _settable_keys(kind: RecordKind, ipv6: bool) -> KeySet:
    return schema.file_keys(kind, ipv6)


def validate_setting(kind: RecordKind, key: str, value: str, *, ipv6: bool = False) -> tuple[str, str]:
    """Check one ``key = value`` a user wants written; return the (key, canonical value).

    Refuses what iscsiadm refuses (unknown and read-only keys, enum values not spelled
    exactly) and what would not survive a round trip through the file (newlines, control
    characters, surrounding blanks, values longer than the C field, the ``********`` mask).
    Raises :class:`~iscsikit.errors.InvalidSettingError` naming the valid choices.
    """
    if kind is RecordKind.NODE and key == "node.transport_name":
        key = "iface.transport_name"  # the svn-780 alias iscsiadm still accepts
    keys = _settable_keys(kind, ipv6)
    spec = keys.get(key)
    if spec is None:
        other = schema.all_keys(kind).get(key)
        if other is not None:
            raise InvalidSettingError(
                key,
                value,
                "it belongs to the " + ("IPv4" if ipv6 else "IPv6") + " key set, which this record does not use",
            )
        raise InvalidSettingError(key, value, f"unknown key for a {kind.value} record{_suggest(key, keys)}")
    if spec.hidden:
        raise InvalidSettingError(key, value, "iscsiadm computes it from the password; it cannot be set")
    if spec.read_only or (kind is RecordKind.IFACE and key == "iface.iscsi_ifacename"):
        raise InvalidSettingError(
            key, value, "it identifies the record and cannot be changed (delete and create it instead)"
        )
    return key, canonical_value(spec, value)


def canonical_value(spec: KeySpec, value: str) -> str:
    """``value`` checked against ``spec`` and spelled as iscsiadm writes it."""
    key = spec.name
    if _CONTROL_RE.search(value):
        raise InvalidSettingError(key, value, "it contains a newline or another control character")
    if value != value.strip(C_SPACE):
        raise InvalidSettingError(key, value, "iscsiadm strips leading and trailing blanks, so it would not survive")
    ctype = spec.idbm
    if ctype is CType.ENUM:
        if value in spec.choices:
            return value
        hint = [c for c in spec.choices if c.lower() == value.lower()]
        extra = f" (did you mean {hint[0]!r}? values are case-sensitive)" if hint else ""
        raise InvalidSettingError(key, value, f"valid choices are {', '.join(spec.choices)}{extra}")
    if ctype is CType.LIST:
        names = [t for t in re.split(r"[,\s]+", value) if t]
        bad = [t for t in names if t not in schema.CHAP_ALGS]
        if bad or not names:
            raise InvalidSettingError(
                key, value, f"give a comma-separated list of {', '.join(schema.CHAP_ALGS)} in order of preference"
            )
        if len(set(names)) != len(names):
            raise InvalidSettingError(key, value, "an algorithm is listed twice")
        return ",".join(names)
    if ctype.is_int:
        if not _PLAIN_INT_RE.fullmatch(value):
            raise InvalidSettingError(key, value, f"it must be {spec.describe()}")
        number = int(value)
        lo, hi = schema.int_range(ctype)
        if not lo <= number <= hi:
            raise InvalidSettingError(key, value, f"it must be {spec.describe()}")
        return str(number)
    if not value and spec.default:
        raise InvalidSettingError(
            key, value, f"it cannot be empty: iscsiadm omits empty values, so it would read back {spec.default!r}"
        )
    if spec.masked and value == MASK:
        raise InvalidSettingError(key, value, "that is the display mask, not a secret; give the real value")
    if schema.has_lone_surrogate(value):
        raise InvalidSettingError(key, value, "it holds a lone UTF-16 surrogate: not text, it cannot be written")
    if len(schema.c_bytes(value)) > spec.max_bytes:
        raise InvalidSettingError(key, value, f"it is longer than {spec.max_bytes} bytes, iscsiadm's limit")
    return value


def _suggest(key: str, keys: KeySet) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(keys.by_name), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def apply_settings(values: dict[str, str], settings: Iterable[tuple[str, str]]) -> None:
    """Put already-validated settings into a values dict (password lengths are derived)."""
    for key, value in settings:
        values[key] = value
