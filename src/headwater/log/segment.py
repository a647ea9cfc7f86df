"""Segments: the unit the ``postgres`` log stores, like a Kafka record batch.

An append writes one row per partition it touches, holding all of that partition's
records of the append framed back to back. Per-row costs of PostgreSQL (tuple
header, index entry, WAL record) are then paid per segment, not per record.

A record's frame (big-endian)::

    int32 offset_delta   offset - segment base offset (gaps after compaction)
    int64 ts_ms
    int32 key_len        -1: no key
    int32 value_len      -1: tombstone
    int32 headers_len    -1: no headers (else UTF-8 JSON object of str → str)
    key, value, headers bytes
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import orjson

from headwater.jsoncodec import dumps
from headwater.log.base import LogRecord, Record

_FRAME = struct.Struct("!iqiii")
_HEAD = _FRAME.size
_NO_HEADERS: dict[str, str] = {}  # shared, never mutated


class SegmentFramer:
    """Frames records into one segment per partition as they are assigned."""

    __slots__ = ("_frames", "_last_h", "_last_hdr", "_max_ts", "counts", "default_ts")

    def __init__(self, default_ts: int) -> None:
        self.default_ts = default_ts
        self.counts: dict[int, int] = {}
        self._frames: dict[int, list[bytes]] = {}
        self._max_ts: dict[int, int] = {}
        self._last_h: object = None
        self._last_hdr: bytes | None = None

    def add(self, partition: int, r: Record, delta: int | None = None) -> tuple[int, int]:
        """Frame ``r`` into ``partition``'s segment; returns (partition, index).

        ``delta`` is the record's offset minus the segment's base: its index unless
        given (compaction rewrites segments with gaps)."""
        idx = self.counts.get(partition, 0)
        self.counts[partition] = idx + 1
        frames = self._frames.get(partition)
        if frames is None:
            frames = self._frames[partition] = []
            self._max_ts[partition] = 0
        key, value = r.key, r.value
        ts = r.timestamp_ms or self.default_ts
        if ts > self._max_ts[partition]:
            self._max_ts[partition] = ts
        h = r.headers
        if not h:
            hdr = None
        elif h is self._last_h:  # records of one source transaction share their headers
            hdr = self._last_hdr
        else:
            hdr = dumps(h)
            self._last_h, self._last_hdr = h, hdr
        frames.append(
            _FRAME.pack(
                idx if delta is None else delta,
                ts,
                -1 if key is None else len(key),
                -1 if value is None else len(value),
                -1 if hdr is None else len(hdr),
            )
        )
        if key is not None:
            frames.append(key)
        if value is not None:
            frames.append(value)
        if hdr is not None:
            frames.append(hdr)
        return partition, idx

    def segments(self, bases: dict[int, int]) -> list[tuple[int, int, int, int, int, bytes]]:
        """Rows (partition, base, last, count, max_ts, payload) at the reserved bases."""
        return [
            (p, bases[p], bases[p] + n - 1, n, self._max_ts[p], self.payload(p))
            for p, n in sorted(self.counts.items())
        ]

    def payload(self, partition: int) -> bytes:
        """The framed records of ``partition``'s segment."""
        return b"".join(self._frames.get(partition, ()))


def decode_segment(
    topic: str,
    partition: int,
    base: int,
    payload: bytes,
    from_offset: int = 0,
    limit: int | None = None,
) -> list[LogRecord]:
    """Up to ``limit`` records of a segment at or after ``from_offset``, in offset order.

    Records before ``from_offset`` are stepped over without being decoded, and decoding
    stops at ``limit``: a reader taking a segment in several batches pays for each
    record once. Consecutive records with equal headers share one (read-only) headers
    mapping."""
    out: list[LogRecord] = []
    append = out.append
    unpack = _FRAME.unpack_from
    loads = orjson.loads  # headers map str to str: no big integers to guard against
    pos, end = 0, len(payload)
    want = -1 if limit is None else limit
    last_raw: bytes = b""
    last_headers: dict[str, str] = _NO_HEADERS
    while pos < end and want != 0:
        delta, ts, klen, vlen, hlen = unpack(payload, pos)
        pos += _HEAD
        if base + delta < from_offset:
            # -1 marks an absent part: step over each present part's bytes.
            pos += klen + vlen + hlen + (klen < 0) + (vlen < 0) + (hlen < 0)
            continue
        if klen >= 0:
            key: bytes | None = payload[pos : pos + klen]
            pos += klen
        else:
            key = None
        if vlen >= 0:
            value: bytes | None = payload[pos : pos + vlen]
            pos += vlen
        else:
            value = None
        if hlen >= 0:
            raw = payload[pos : pos + hlen]
            if raw != last_raw:  # consecutive records often share headers: parse once
                last_headers, last_raw = loads(raw), raw
            headers = last_headers
            pos += hlen
        else:
            headers = _NO_HEADERS
        append(LogRecord(topic, partition, base + delta, key, value, headers, ts))
        want -= 1
    return out


def reencode(base: int, records: Sequence[LogRecord]) -> bytes:
    """A segment payload holding ``records`` at their offsets (used by compaction)."""
    framer = SegmentFramer(0)
    for r in records:
        framer.add(0, Record(r.key, r.value, r.headers, r.timestamp_ms), r.offset - base)
    return framer.payload(0)
