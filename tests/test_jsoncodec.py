"""The hot-path JSON codec keeps what the standard library keeps."""

from __future__ import annotations

import json

import pytest

from headwater.jsoncodec import JSONDecodeError, dumps, loads
from headwater.log.base import Record
from headwater.log.segment import SegmentFramer, decode_segment


def test_big_integers_keep_every_digit() -> None:
    big = 123456789012345678901234567890
    assert loads(b'{"a": 123456789012345678901234567890}') == {"a": big}
    assert loads(dumps({"a": big, "b": [2**64 - 1]})) == {"a": big, "b": [2**64 - 1]}
    # 19 digits, below int64: orjson alone would answer a float
    for edge in (-(2**63) - 1, 2**64, -(2**64)):
        assert loads(b"[%d]" % edge) == [edge] and isinstance(loads(b"%d" % edge), int)
    assert loads("1e20") == 1e20 and loads(b'"12345678901234567890"') == "12345678901234567890"


def test_output_matches_compact_stdlib_and_nan_is_null() -> None:
    obj = {"s": "zürich ✓", "n": [1, 2.5, None, True], "o": {"k": "v"}}
    assert dumps(obj) == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    assert dumps({"x": float("nan")}) == b'{"x":null}'
    assert dumps({"x": float("inf"), "big": 2**70}) == b'{"x":null,"big":%d}' % 2**70
    assert dumps({1: "a"}) == b'{"1":"a"}'


@pytest.mark.parametrize("bad", [b"{", b"\xff\xfe", b'{"a": 123456789012345678901234567890', b""])
def test_bad_input_raises_the_stdlib_error(bad: bytes) -> None:
    with pytest.raises(JSONDecodeError):
        loads(bad)


def test_decode_segment_from_offset_and_limit() -> None:
    framer = SegmentFramer(1)
    for i in range(10):
        framer.add(0, Record(None if i % 3 else b"k", b"v%d" % i, {"p": str(i)} if i % 2 else {}))
    payload = framer.payload(0)
    recs = decode_segment("t", 0, 100, payload, from_offset=104, limit=3)
    assert [(r.offset, r.value, r.headers) for r in recs] == [
        (104, b"v4", {}),
        (105, b"v5", {"p": "5"}),
        (106, b"v6", {}),
    ]
    assert recs[0].key is None and recs[2].key == b"k"
    assert [r.offset for r in decode_segment("t", 0, 100, payload, 108)] == [108, 109]
    assert decode_segment("t", 0, 100, payload, 0, 0) == []
