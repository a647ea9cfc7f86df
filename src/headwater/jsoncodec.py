"""JSON for the hot paths (change events, log headers, replica merges).

``orjson`` (compiled) does the work; the standard library takes over where orjson
would differ from it: integers beyond 64 bits (orjson refuses to write them and reads
them as floats, losing digits) and dicts with non-string keys. Output is compact
(``,`` and ``:`` with no spaces) and UTF-8, not ASCII-escaped, like
``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)``; NaN and infinities
are written as ``null`` by both paths (PostgreSQL's ``jsonb`` refuses ``NaN``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

JSONDecodeError = json.JSONDecodeError
"""What :func:`loads` raises on bad input (orjson's error is a subclass)."""

# orjson reads integers outside [-2**63, 2**64) as floats. Any such integer has 19 or
# more digits; a run of 19 digits is found by mapping digits to "0" and searching for
# 19 zeros, C-speed both (about 7x cheaper than a regular expression here).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
_std_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(obj: Any) -> bytes:
    """``obj`` as compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: int beyond 64 bits, non-str key, ...
        return _std_encode(_finite(obj)).encode()


def dumps_str(obj: Any) -> str:
    """``obj`` as compact JSON text (for a ``%s::jsonb`` query parameter)."""
    return dumps(obj).decode()


def loads(data: bytes | str) -> Any:
    """Parse JSON; integers of any size keep every digit.

    Raises:
        JSONDecodeError: not JSON, or not UTF-8.
    """
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_RUN not in raw.translate(_DIGITS_TO_ZERO):
        return orjson.loads(raw)
    try:
        return json.loads(raw.decode())
    except UnicodeDecodeError as exc:
        raise JSONDecodeError(f"not UTF-8: {exc}", "", 0) from None


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None (what orjson writes for them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
