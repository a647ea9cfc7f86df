"""Snapshot progress lines."""

from __future__ import annotations

from headwater.sources.progress import SnapshotProgress


def test_snapshot_progress_line_shows_share_rate_and_time_left() -> None:
    p = SnapshotProgress("crm", "public.items", estimate=1000, done=100, every_s=3600)
    p.advance(150)
    line = p.line(p._start + 10)
    assert line.startswith("source crm: snapshot of public.items: 250 rows of ~1,000 (25%)")
    assert "15 rows/s" in line and "~50 s left" in line
    unknown = SnapshotProgress("crm", "t", estimate=0)
    assert unknown.fraction() is None and "of ~" not in unknown.line()
