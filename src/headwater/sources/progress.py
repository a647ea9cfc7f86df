"""Progress of an initial snapshot, reported as log lines while it runs.

A source runs as a child process of ``headwater up``, whose terminal several children
share, so progress is a log line (at most one per ``every_s``) rather than a redrawn
bar: table, rows so far, share of the estimated total, rate and time left. The same
figures are kept in the source's state, so ``headwater status`` shows them too.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("headwater.sources")


class SnapshotProgress:
    """Counts one table's snapshot rows and logs progress now and then.

    ``estimate`` is the table's estimated row count (catalog statistics; None or 0 when
    unknown); ``done`` the rows a crashed earlier attempt had already read.
    """

    def __init__(
        self,
        source: str,
        table: str,
        estimate: int | None,
        done: int = 0,
        every_s: float = 2.0,
    ) -> None:
        self.source, self.table = source, table
        self.estimate = estimate if estimate and estimate > 0 else None
        self.rows = done
        self.every_s = every_s
        self._start = self._last = time.monotonic()
        self._start_rows = done

    def advance(self, rows: int) -> None:
        """Add ``rows`` read; log a line if ``every_s`` has passed since the last one."""
        self.rows += rows
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            log.info("%s", self.line(now))

    def finish(self) -> None:
        """Log the table's final count."""
        elapsed = time.monotonic() - self._start
        log.info(
            "source %s: snapshot of %s done: %s rows in %.1f s",
            self.source,
            self.table,
            f"{self.rows:,}",
            elapsed,
        )

    def fraction(self) -> float | None:
        """Rows read over the estimate (capped at 0.99 until finished; None: unknown)."""
        if self.estimate is None:
            return None
        return min(0.99, self.rows / self.estimate)

    def line(self, now: float | None = None) -> str:
        """The progress line as it would be logged now."""
        elapsed = max(1e-9, (now or time.monotonic()) - self._start)
        rate = (self.rows - self._start_rows) / elapsed
        text = f"source {self.source}: snapshot of {self.table}: {self.rows:,} rows"
        frac = self.fraction()
        if frac is not None and self.estimate is not None:
            text += f" of ~{self.estimate:,} ({frac:.0%})"
            if rate > 0:
                left = max(0.0, (self.estimate - self.rows) / rate)
                text += f", {rate:,.0f} rows/s, ~{left:,.0f} s left"
        elif rate > 0:
            text += f", {rate:,.0f} rows/s"
        return text
