"""Column values as JSON: the same value decodes to the same JSON from a snapshot
(pymysql) and from the binlog (mysql-replication).

Mapping: integers and floats stay numbers; DECIMAL becomes a string without exponent
(``"12.50"``, scale kept); DATETIME/TIMESTAMP an ISO-8601 string (``T`` separator,
TIMESTAMP in UTC); DATE ``YYYY-MM-DD``; TIME ``[-]HH:MM:SS[.ffffff]``; binary strings
and BLOBs base64; SET a comma-separated string; JSON columns the JSON text; NULL null.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from typing import Any


def json_safe(value: Any) -> Any:
    """Convert one column value into a JSON-serialisable value (see the module doc)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _timedelta(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return ",".join(sorted(str(v) for v in value))
    if isinstance(value, (dict, list)):
        # MySQL's binary JSON type, parsed by mysql-replication: render as JSON text.
        return json.dumps(_json_text(value), separators=(",", ":"), ensure_ascii=False)
    return str(value)


def row_json(row: dict[str, Any]) -> dict[str, Any]:
    """A row with every value JSON-safe."""
    return {k: json_safe(v) for k, v in row.items()}


def _timedelta(td: dt.timedelta) -> str:
    sign = "-" if td < dt.timedelta(0) else ""
    td = abs(td)
    hours, rem = divmod(td.days * 86400 + td.seconds, 3600)
    minutes, seconds = divmod(rem, 60)
    out = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{out}.{td.microseconds:06d}" if td.microseconds else out


def _json_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {_key(k): _json_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_text(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _key(k: Any) -> str:
    return k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
