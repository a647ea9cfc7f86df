"""PostgreSQL binary COPY encoding, built directly (no per-row driver calls)."""

from __future__ import annotations

import struct
from collections.abc import Iterable

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
_SEGMENT_ROW = struct.Struct("!hiiiqiqiiiqi")  # 6 fields up to the payload length
_LEN = struct.Struct("!i")
_NULL = _LEN.pack(-1)


def encode_segment_rows(rows: Iterable[tuple[int, int, int, int, int, bytes]]) -> bytes:
    """COPY stream for segment rows:
    (partition int4, base_offset int8, last_offset int8, record_count int4,
    max_ts_ms int8, payload bytea)."""
    out = [SIGNATURE]
    for partition, base, last, count, max_ts, payload in rows:
        out.append(
            _SEGMENT_ROW.pack(6, 4, partition, 8, base, 8, last, 4, count, 8, max_ts, len(payload))
        )
        out.append(payload)
    out.append(TRAILER)
    return b"".join(out)


_ROW = struct.Struct("!hiiiqiq")


def encode_rows(
    rows: Iterable[tuple[int, int, int, bytes | None, bytes | None, bytes | None]],
) -> bytes:
    """COPY stream of one row per record (partition int4, offset int8, ts_ms int8,
    key bytea, value bytea, headers jsonb as bytes) — the benchmark's baseline."""
    out = [SIGNATURE]
    append = out.append
    for partition, offset, ts, key, value, headers in rows:
        append(_ROW.pack(6, 4, partition, 8, offset, 8, ts))
        for col in (key, value):
            if col is None:
                append(_NULL)
            else:
                append(_LEN.pack(len(col)))
                append(col)
        if headers is None:
            append(_NULL)
        else:
            append(_LEN.pack(len(headers) + 1))
            append(b"\x01" + headers)
    append(TRAILER)
    return b"".join(out)
