"""The processor contract: what a pipeline runs on each micro-batch.

A processor writes its outputs on the connection it is given, inside the batch's
transaction; the worker then moves the offsets in that same transaction. So a
processor whose effects are only writes on that connection is **exactly-once**.
A processor with effects elsewhere (an HTTP call, a file) must make them idempotent
and declare ``delivery = "at-least-once"``.

Rules a processor keeps:
- ``process`` may run more than once for the same records (after a rollback, or
  when the worker bisects a failing batch): keep state in PostgreSQL, not in memory.
- Raise :class:`~headwater.errors.RetryableError` for transient failures (the batch
  is retried with backoff); any other exception marks the batch as containing a bad
  record: the worker bisects it and dead-letters the record that fails alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

from headwater.log.base import Conn, LogRecord

Delivery = Literal["exactly-once", "at-least-once"]


class Processor(ABC):
    """Base class of pipeline processors."""

    delivery: ClassVar[Delivery] = "exactly-once"

    def setup(self, conn: Conn) -> None:  # noqa: B027 - optional hook
        """Create what the processor writes to (idempotent). Runs once per worker."""

    @abstractmethod
    def process(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        """Apply ``records`` (in offset order per partition) using ``conn``."""

    def position(self, record: LogRecord) -> str | None:
        """The source position a record carries (its ``position`` header by default).

        The last applied record's position per partition is the pipeline's watermark.
        """
        return record.headers.get("position")
