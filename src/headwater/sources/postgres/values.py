"""Text-format PostgreSQL values → JSON values, chosen by type OID.

The source reads values in the server's text format (pgoutput sends them so, and the
snapshot reads them with ``COPY ... TO STDOUT``), with the session settings of
:data:`SESSION_OPTIONS`, so both paths see byte-identical input and produce the same
JSON. Mapping (Debezium-like, lossless):

- int2/int4/int8/oid → int; float4/float8 → float (``NaN``/``Infinity`` → string);
  numeric and money → string (no precision lost);
- bool → bool; text, varchar, char, name, uuid, date, time, interval, inet, … → string;
- timestamp → ``"2024-01-02T03:04:05.123456"``; timestamptz → the same in UTC with
  ``Z`` (``infinity`` stays a string);
- json/jsonb → the parsed value; bytea → base64 string;
- arrays of any of these → (nested) lists, NULL elements → None;
- enums, domains and any unknown OID → string (arrays of them → lists of strings,
  when the array's OID is made known with :meth:`ValueDecoder.register_type`).

Errors: a value that does not parse as its type raises ValueError (the caller wraps
it with the table and column).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

from headwater.jsoncodec import loads

Converter = Callable[[bytes], Any]

SESSION_OPTIONS = (
    "-c datestyle=ISO,YMD -c timezone=UTC -c intervalstyle=iso_8601 "
    "-c bytea_output=hex -c extra_float_digits=1"
)
"""Settings for every source session (replication and snapshot) so text output is
the same on both paths and timestamptz arrives in UTC."""


def _text(v: bytes) -> str:
    return v.decode()


def _bool(v: bytes) -> bool:
    return v == b"t"


def _float(v: bytes) -> float | str:
    f = float(v)
    if f != f or f in (float("inf"), float("-inf")):
        return v.decode()
    return f


def _timestamp(v: bytes) -> str:
    s = v.decode()
    if s[0].isdigit() and not s.endswith(" BC"):
        return s.replace(" ", "T", 1)
    return s


def _timestamptz(v: bytes) -> str:
    s = v.decode()
    if s[0].isdigit() and not s.endswith(" BC"):
        s = s.replace(" ", "T", 1)
        if s.endswith("+00"):
            s = s[:-3] + "Z"
    return s


def _bytea(v: bytes) -> str:
    if v[:2] == b"\\x":
        raw = binascii.unhexlify(v[2:])
    else:  # escape format (bytea_output=escape); decode through Python's escapes
        raw = v.decode("unicode_escape").encode("latin-1")
    return binascii.b2a_base64(raw, newline=False).decode()


SCALARS: dict[int, Converter] = {
    16: _bool,
    17: _bytea,
    18: _text,
    19: _text,
    20: int,
    21: int,
    23: int,
    25: _text,
    26: int,
    114: loads,
    700: _float,
    701: _float,
    790: _text,  # money: string, exact
    1042: _text,
    1043: _text,
    1082: _text,  # date: ISO already
    1083: _text,
    1114: _timestamp,
    1184: _timestamptz,
    1186: _text,
    1266: _text,
    1700: _text,  # numeric: string, exact
    2950: _text,
    3802: loads,
}

ARRAYS: dict[int, int] = {
    1000: 16,
    1001: 17,
    1002: 18,
    1003: 19,
    1005: 21,
    1007: 23,
    1009: 25,
    1014: 1042,
    1015: 1043,
    1016: 20,
    1021: 700,
    1022: 701,
    1028: 26,
    1115: 1114,
    1182: 1082,
    1183: 1083,
    1185: 1184,
    1187: 1186,
    1231: 1700,
    1270: 1266,
    199: 114,
    2951: 2950,
    3807: 3802,
    791: 790,
}
"""Array type OID → element type OID for the built-in types above."""


def parse_array(text: str) -> list[Any]:
    """Parse an array literal (``{1,NULL,"a b"}``, nested ``{{1},{2}}``, optional
    ``[0:1]=`` bounds) into nested lists of element strings and None.

    Raises:
        ValueError: not a well-formed array literal.
    """
    if text.startswith("["):
        text = text[text.index("=") + 1 :]
    if not text.startswith("{"):
        raise ValueError(f"not an array literal: {text[:40]!r}")
    try:
        out, end = _parse_level(text, 0)
    except IndexError:
        raise ValueError(f"unterminated array literal: {text[:40]!r}") from None
    if end != len(text):
        raise ValueError(f"trailing characters in array literal: {text[:40]!r}")
    return out


def _parse_level(s: str, i: int) -> tuple[list[Any], int]:
    i += 1  # '{'
    out: list[Any] = []
    if s[i] == "}":
        return out, i + 1
    while True:
        c = s[i]
        if c == "{":
            sub, i = _parse_level(s, i)
            out.append(sub)
        elif c == '"':
            i += 1
            parts = []
            start = i
            while True:
                c = s[i]
                if c == '"':
                    break
                if c == "\\":
                    parts.append(s[start:i])
                    start = i + 1
                    i += 2
                    continue
                i += 1
            parts.append(s[start:i])
            out.append("".join(parts))
            i += 1
        else:
            j = i
            while s[j] not in ",}":
                j += 1
            token = s[i:j].strip()
            out.append(None if token == "NULL" else token)
            i = j
        c = s[i]
        if c == ",":
            i += 1
        elif c == "}":
            return out, i + 1
        else:
            raise ValueError(f"unexpected {c!r} in array literal at {i}")


def _array_of(elem: Converter) -> Converter:
    def convert(v: bytes) -> list[Any]:
        return _map(parse_array(v.decode()), elem)

    return convert


def _map(items: list[Any], elem: Converter) -> list[Any]:
    return [
        None if x is None else _map(x, elem) if isinstance(x, list) else elem(x.encode())
        for x in items
    ]


class ValueDecoder:
    """Converter lookup by type OID, with user-defined types learnt as they appear.

    Not thread-safe. Unknown OIDs (enums, domains, extension types) decode as text.
    """

    def __init__(self) -> None:
        self._conv: dict[int, Converter] = dict(SCALARS)
        for arr, elem in ARRAYS.items():
            self._conv[arr] = _array_of(SCALARS[elem])

    def register_type(self, oid: int, name: str, elem_oid: int = 0) -> None:
        """Make a non-built-in type known (from a pgoutput Type message or pg_type).

        An array type (``elem_oid`` set, or a name starting with ``_``) decodes to a
        list of its element type's values; anything else decodes as text.
        """
        if oid in SCALARS or oid in ARRAYS:
            return
        if elem_oid or name.startswith("_"):
            self._conv[oid] = _array_of(self._conv.get(elem_oid, _text))
        else:
            self._conv[oid] = _text

    def converter(self, oid: int) -> Converter:
        """The converter for ``oid`` (text for unknown types)."""
        return self._conv.get(oid, _text)


__all__ = ["ARRAYS", "SCALARS", "SESSION_OPTIONS", "Converter", "ValueDecoder", "parse_array"]
