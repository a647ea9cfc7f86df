"""Encode log records as PostgreSQL binary COPY data, without per-row driver calls.

Building the buffer directly is about 1.5x faster than ``Copy.write_row`` (FACTS.md).
Columns: partition int4, offset int8, ts_ms int8, key bytea, value bytea, headers jsonb.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headwater.log.base import Record

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
_ROW = struct.Struct("!hiiiqiq")  # 6 fields; int4 partition; int8 offset; int8 ts
_LEN = struct.Struct("!i")
_NULL = _LEN.pack(-1)


def encode_rows(
    rows: Iterable[tuple[int, int, int, bytes | None, bytes | None, Mapping[str, str] | None]],
) -> bytes:
    """One complete binary COPY stream (signature, tuples, trailer)."""
    out = [SIGNATURE]
    append = out.append
    row_pack = _ROW.pack
    len_pack = _LEN.pack
    for partition, offset, ts, key, value, headers in rows:
        append(row_pack(6, 4, partition, 8, offset, 8, ts))
        if key is None:
            append(_NULL)
        else:
            append(len_pack(len(key)))
            append(key)
        if value is None:
            append(_NULL)
        else:
            append(len_pack(len(value)))
            append(value)
        if headers:
            doc = b"\x01" + json.dumps(headers, separators=(",", ":")).encode()
            append(len_pack(len(doc)))
            append(doc)
        else:
            append(_NULL)
    append(TRAILER)
    return b"".join(out)


def encode_records(
    records: Sequence[Record], placed: Sequence[tuple[int, int]], default_ts: int
) -> bytes:
    """Binary COPY stream of ``records`` at their ``(partition, offset)``: one pass,
    no intermediate rows (the append hot path)."""
    out = [SIGNATURE]
    append = out.append
    row_pack = _ROW.pack
    len_pack = _LEN.pack
    dumps = json.dumps
    for r, (partition, offset) in zip(records, placed, strict=True):
        append(row_pack(6, 4, partition, 8, offset, 8, r.timestamp_ms or default_ts))
        key = r.key
        if key is None:
            append(_NULL)
        else:
            append(len_pack(len(key)))
            append(key)
        value = r.value
        if value is None:
            append(_NULL)
        else:
            append(len_pack(len(value)))
            append(value)
        if r.headers:
            doc = b"\x01" + dumps(r.headers, separators=(",", ":")).encode()
            append(len_pack(len(doc)))
            append(doc)
        else:
            append(_NULL)
    append(TRAILER)
    return b"".join(out)
