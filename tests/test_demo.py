"""``headwater demo``: the walk-through against the real stack (two embedded PostgreSQL
servers, CDC, the files source, MiniLM, the API), the data dir's safety, bad options."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from headwater.demo.app import DemoOptions, run
from headwater.demo.data import FEATURED
from headwater.demo.stack import MARKER, DemoPaths, reset_data_dir
from headwater.demo.walkthrough import DELAY_MINUTES
from headwater.errors import ConfigError
from headwater.storage.embedded import EmbeddedPostgres
from headwater.testing import free_port


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (other than this one)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd}")
    return found


@pytest.mark.timeout(420)
def test_walkthrough_answers_follow_source_changes_and_nothing_is_left_running(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "demo"
    out = io.StringIO()
    result = run(
        DemoOptions(data_dir=data_dir, port=free_port(), rate=2.0, once=True),
        Console(file=out, width=120),
    )
    by_question: dict[str, list[str]] = {}
    for a in result.answers:
        assert not a.stale, a
        by_question.setdefault(a.question, []).append(a.text)
    loyalty = next(t for q, t in by_question.items() if "loyalty" in q)
    assert FEATURED.tier in loyalty[0] and str(FEATURED.points) in loyalty[0]
    flight_before, flight_after = by_question[
        f"What is the status of my flight {FEATURED.flight_no}?"
    ]
    assert "on time" in flight_before and f"{DELAY_MINUTES} minutes late" not in flight_before
    assert f"delayed, {DELAY_MINUTES} minutes late" in flight_after
    assert set(re.findall(r"HW\d{3}", flight_after)) == {FEATURED.flight_no}
    bag_before, bag_after = by_question["How heavy can my cabin bag be?"]
    assert "8 kg" in bag_before and "10 kg" not in bag_before
    assert "10 kg" in bag_after
    assert result.delay_commit_to_answer_ms is not None
    assert 0 < result.delay_commit_to_answer_ms < 20_000
    assert result.policy_save_to_answer_ms is not None
    assert 0 < result.policy_save_to_answer_ms < 20_000
    text = out.getvalue()
    assert "source commit → answer" in text and "stopped" in text
    # everything it started is gone: workers, sources, both PostgreSQL servers
    paths = DemoPaths(data_dir.resolve())
    assert not EmbeddedPostgres(paths.sources).is_running()
    assert not EmbeddedPostgres(paths.state_postgres).is_running()
    assert _processes_mentioning(str(paths.root)) == []
    print(
        f"commit→answer {result.delay_commit_to_answer_ms:.0f} ms,"
        f" file saved→answer {result.policy_save_to_answer_ms:.0f} ms"
    )


def test_reset_deletes_only_a_demo_data_dir(tmp_path: Path) -> None:
    own = DemoPaths(tmp_path / "own")
    reset_data_dir(own)
    (own.policies / "old.md").write_text("from an earlier run")
    reset_data_dir(own)
    assert own.marker.exists() and not (own.policies / "old.md").exists()

    foreign = DemoPaths(tmp_path / "project")
    foreign.root.mkdir()
    (foreign.root / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=f"not a demo data dir \\(no {MARKER} file\\)"):
        reset_data_dir(foreign)
    assert (foreign.root / "notes.txt").read_text() == "keep me"


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headwater", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},  # one line per message
    )


def test_cli_rejects_bad_options_with_a_clear_message(tmp_path: Path) -> None:
    res = _demo("--rate", "-1")
    assert res.returncode == 2
    assert "Invalid value for '--rate'" in res.stderr and "greater than or equal to 0" in res.stderr

    res = _demo("--port", "70000")
    assert res.returncode == 2 and "Invalid value for '--port'" in res.stderr

    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("keep me")
    res = _demo("--data-dir", str(project), "--port", str(free_port()), "--once")
    assert res.returncode == 2, res.stderr
    assert "not a demo data dir" in res.stderr
    assert (project / "notes.txt").read_text() == "keep me"
