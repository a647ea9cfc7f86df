"""PostgreSQL binary COPY encoding, built directly (no per-row driver calls)."""

from __future__ import annotations

import struct
from collections.abc import Iterable

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
LEN = struct.Struct("!i")
"""A field's length prefix."""
NULL = LEN.pack(-1)
"""The length prefix of a NULL field."""
_SEGMENT_ROW = struct.Struct("!hiiiqiqiiiqi")  # 6 fields up to the payload length


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
