"""A pure decoder of PostgreSQL's ``pgoutput`` logical replication messages.

Covers protocol version 1, and version 2 with ``streaming`` off (the messages are
then identical). Input is the payload of one XLogData message; output is one of the
message classes below. Tuple values stay as the raw text-format bytes the server
sent (``None`` for SQL NULL, :data:`UNCHANGED` for an unchanged TOASTed value);
:mod:`headwater.sources.postgres.values` turns them into JSON values.

Guarantees: no I/O, no state; every field of the documented message formats is
decoded. Errors: :class:`DecodeError` (a :class:`~headwater.errors.SourceError`) for
an unknown message type or a truncated/garbled message.

Speed: fixed-size fields are read with precompiled :mod:`struct` unpackers and
values are sliced, never copied byte by byte; an INSERT of 10 columns decodes in
about 3.5 µs on CPython 3.11 (2 shared cores; converting values and the envelope
cost more, see the source docs).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from headwater.errors import SourceError

PG_EPOCH_US: Final = 946_684_800_000_000
"""Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC)."""


class DecodeError(SourceError):
    """A replication message could not be decoded."""


class _Unchanged:
    """An unchanged TOASTed value: the server did not send it (tuple kind ``'u'``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

TupleValue = bytes | None | _Unchanged
"""One column of a tuple: raw text bytes, NULL, or UNCHANGED."""

_I8 = struct.Struct(">b").unpack_from
_I16 = struct.Struct(">h").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U32 = struct.Struct(">I").unpack_from
_BEGIN = struct.Struct(">QqI").unpack_from
_COMMIT = struct.Struct(">bQQq").unpack_from
_RELHDR = struct.Struct(">I").unpack_from
_COLTAIL = struct.Struct(">Ii").unpack_from
_Q = struct.Struct(">Q").unpack_from
_TRUNC = struct.Struct(">ib").unpack_from


@dataclass(slots=True)
class Begin:
    final_lsn: int
    """LSN of the transaction's commit record."""
    commit_ts_us: int
    """Commit time, microseconds since the Unix epoch."""
    xid: int


@dataclass(slots=True)
class Commit:
    flags: int
    commit_lsn: int
    """LSN of the commit record (equals :attr:`Begin.final_lsn`)."""
    end_lsn: int
    """LSN just past the commit record: the position to confirm to the slot."""
    commit_ts_us: int


@dataclass(slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    typmod: int
    is_key: bool
    """Part of the replica identity (with REPLICA IDENTITY FULL: every column)."""


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str
    """``d`` default (primary key), ``n`` nothing, ``f`` full, ``i`` index."""
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Type:
    oid: int
    namespace: str
    name: str


@dataclass(slots=True)
class Insert:
    relid: int
    new: list[TupleValue]


@dataclass(slots=True)
class Update:
    relid: int
    old_kind: str | None
    """``K`` (old key columns only), ``O`` (whole old row) or None (not sent)."""
    old: list[TupleValue] | None
    new: list[TupleValue]


@dataclass(slots=True)
class Delete:
    relid: int
    old_kind: str
    """``K`` (key columns; the others are NULL) or ``O`` (whole old row)."""
    old: list[TupleValue]


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage
)


def decode(buf: bytes) -> Message:
    """Decode one pgoutput message.

    Raises:
        DecodeError: unknown message type, or the message is truncated or garbled.
    """
    try:
        fn = _DISPATCH[buf[0]]
    except (KeyError, IndexError):
        tag = chr(buf[0]) if buf else "<empty>"
        raise DecodeError(f"unknown pgoutput message type {tag!r}") from None
    try:
        return fn(buf)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"garbled pgoutput {chr(buf[0])!r} message: {exc}") from None


def format_lsn(lsn: int) -> str:
    """``0x16B3748`` → ``'0/16B3748'`` (PostgreSQL's notation)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """``'0/16B3748'`` → ``0x16B3748``. Raises ValueError on anything else."""
    hi, sep, lo = text.partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(hi, 16) << 32) | int(lo, 16)


# -- message decoders ---------------------------------------------------------------------


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[list[TupleValue], int]:
    (n,) = _I16(buf, pos)
    pos += 2
    out: list[TupleValue] = []
    app = out.append
    for _ in range(n):
        kind = buf[pos]
        if kind == 116 or kind == 98:  # 't' text, 'b' binary
            (ln,) = _I32(buf, pos + 1)
            pos += 5
            end = pos + ln
            if end > len(buf):
                raise ValueError("value runs past the end of the message")
            app(buf[pos:end])
            pos = end
        elif kind == 110:  # 'n'
            app(None)
            pos += 1
        elif kind == 117:  # 'u'
            app(UNCHANGED)
            pos += 1
        else:
            raise ValueError(f"unknown tuple value kind {chr(kind)!r}")
    return out, pos


def _begin(buf: bytes) -> Begin:
    lsn, ts, xid = _BEGIN(buf, 1)
    return Begin(lsn, ts + PG_EPOCH_US, xid)


def _commit(buf: bytes) -> Commit:
    flags, lsn, end, ts = _COMMIT(buf, 1)
    return Commit(flags, lsn, end, ts + PG_EPOCH_US)


def _origin(buf: bytes) -> Origin:
    (lsn,) = _Q(buf, 1)
    name, _ = _string(buf, 9)
    return Origin(lsn, name)


def _relation(buf: bytes) -> Relation:
    (relid,) = _RELHDR(buf, 1)
    namespace, pos = _string(buf, 5)
    name, pos = _string(buf, pos)
    ident = chr(buf[pos])
    (ncols,) = _I16(buf, pos + 1)
    pos += 3
    cols = []
    for _ in range(ncols):
        flags = buf[pos]
        cname, pos = _string(buf, pos + 1)
        oid, typmod = _COLTAIL(buf, pos)
        pos += 8
        cols.append(Column(cname, oid, typmod, bool(flags & 1)))
    return Relation(relid, namespace, name, ident, tuple(cols))


def _type(buf: bytes) -> Type:
    (oid,) = _U32(buf, 1)
    namespace, pos = _string(buf, 5)
    name, _ = _string(buf, pos)
    return Type(oid, namespace, name)


def _insert(buf: bytes) -> Insert:
    (relid,) = _U32(buf, 1)
    if buf[5] != 78:  # 'N'
        raise ValueError("INSERT without a new tuple")
    new, _ = _tuple(buf, 6)
    return Insert(relid, new)


def _update(buf: bytes) -> Update:
    (relid,) = _U32(buf, 1)
    kind = buf[5]
    old_kind: str | None = None
    old: list[TupleValue] | None = None
    pos = 6
    if kind == 75 or kind == 79:  # 'K', 'O'
        old_kind = chr(kind)
        old, pos = _tuple(buf, 6)
        kind = buf[pos]
        pos += 1
    if kind != 78:
        raise ValueError("UPDATE without a new tuple")
    new, _ = _tuple(buf, pos)
    return Update(relid, old_kind, old, new)


def _delete(buf: bytes) -> Delete:
    (relid,) = _U32(buf, 1)
    kind = buf[5]
    if kind != 75 and kind != 79:
        raise ValueError("DELETE without an old tuple")
    old, _ = _tuple(buf, 6)
    return Delete(relid, chr(kind), old)


def _truncate(buf: bytes) -> Truncate:
    n, opts = _TRUNC(buf, 1)
    relids = struct.unpack_from(f">{n}I", buf, 6)
    return Truncate(tuple(relids), bool(opts & 1), bool(opts & 2))


def _message(buf: bytes) -> LogicalMessage:
    flags = buf[1]
    (lsn,) = _Q(buf, 2)
    prefix, pos = _string(buf, 10)
    (ln,) = _I32(buf, pos)
    content = buf[pos + 4 : pos + 4 + ln]
    if len(content) != ln:
        raise ValueError("message content truncated")
    return LogicalMessage(bool(flags & 1), lsn, prefix, content)


_DISPATCH: dict[int, Callable[[bytes], Message]] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
}

__all__ = [
    "PG_EPOCH_US",
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "DecodeError",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Message",
    "Origin",
    "Relation",
    "Truncate",
    "TupleValue",
    "Type",
    "Update",
    "decode",
    "format_lsn",
    "parse_lsn",
]
