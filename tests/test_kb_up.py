"""The knowledge base under ``headwater up`` (real PostgreSQL, real model in the worker
process): the index follows the folder exactly, live and across stops and SIGKILLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from headwater.log.postgres import PostgresLog
from headwater.storage.embedded import EmbeddedPostgres

from .conftest import new_database, query
from .kb_helpers import actual_index, cache_size, expected_index


def _config(tmp_path: Path, dsn: str, docs: Path) -> Path:
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n[server]\nenabled = false\n'
        f'[[sources]]\nname = "docs"\nkind = "files"\npath = "{docs}"\nmax_bytes = 4096\n'
    )
    return cfg


def _up(cfg: Path) -> subprocess.Popen[bytes]:
    # its own process group, so the test can SIGKILL the supervisor and its children
    with (cfg.parent / "up.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "headwater", "up", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _log_tail(up: subprocess.Popen[bytes]) -> str:
    path = Path(str(up.args[-1])).parent / "up.log"  # type: ignore[index]
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _stop(up: subprocess.Popen[bytes]) -> None:
    up.send_signal(signal.SIGTERM)
    assert up.wait(60) == 0


def _wait(what: str, done: Callable[[], bool], up: subprocess.Popen[bytes], timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not done():
        assert up.poll() is None, f"headwater up exited with {up.returncode}: {_log_tail(up)}"
        assert time.monotonic() < deadline, (
            f"timed out waiting for: {what}\n{done!r}\n{_log_tail(up)}"
        )
        time.sleep(0.1)


class _InSync:
    """True when the index equals the folder; its repr shows the difference."""

    def __init__(self, dsn: str, docs: Path) -> None:
        self.dsn, self.docs, self.diff = dsn, docs, ""

    def __call__(self) -> bool:
        got, want = actual_index(self.dsn), expected_index(self.docs, "docs")
        self.diff = "\n".join(
            f"{d}: indexed {got.get(d)} expected {want.get(d)}"
            for d in sorted(set(got) | set(want))
            if got.get(d) != want.get(d)
        )
        return got == want

    def __repr__(self) -> str:
        return self.diff


def _in_sync(dsn: str, docs: Path) -> _InSync:
    return _InSync(dsn, docs)


def _handbook(part2: str = "Refunds are paid within 30 days.") -> str:
    parts = [
        f"## Part {i}\n\n" + (part2 if i == 2 else f"Part {i} explains topic {i}. " * 30)
        for i in range(4)
    ]
    return "# Handbook\n\n" + "\n\n".join(parts) + "\n"


def test_index_follows_the_folder_live_and_across_a_stop(tmp_path: Path, dsn: str) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "handbook.md").write_text(_handbook())
    (docs / "cat.txt").write_text("The office cat is named Mittens.\n")
    (docs / "sub" / "page.html").write_text(
        "<html><body><nav>menu</nav><h1>Parking</h1><p>Visitors park on level 2.</p></body></html>"
    )
    # bad files: each goes to the dead-letter topic with its reason
    (docs / "blob.txt").write_bytes(b"\x00\x01\x02 binary")
    (docs / "latin.txt").write_bytes(b"caf\xe9")
    (docs / "empty.md").write_text("")
    (docs / "big.txt").write_text("x" * 5000)
    cfg = _config(tmp_path, dsn, docs)
    up = _up(cfg)
    try:
        _wait("initial scan indexed", _in_sync(dsn, docs), up)
        assert len(actual_index(dsn)) == 3
        log = PostgresLog(dsn)
        dead = {r.headers["path"]: r.headers["error"] for r in log.read("kb-docs.dlq", 0, 0, 100)}
        assert set(dead) == {"blob.txt", "latin.txt", "empty.md", "big.txt"}
        assert "binary" in dead["blob.txt"] and "undecodable" in dead["latin.txt"]
        assert "empty" in dead["empty.md"] and "oversized: 5000 bytes" in dead["big.txt"]

        # edit one paragraph: only the changed chunk is embedded, stale chunks are gone
        before, cached = actual_index(dsn)["docs:handbook.md"][1], cache_size(dsn)
        (docs / "handbook.md").write_text(_handbook("Refunds are paid within 14 days."))
        _wait("edit indexed", _in_sync(dsn, docs), up)
        after = actual_index(dsn)["docs:handbook.md"][1]
        assert len(before) >= 4 and len(before - after) == 1 and len(after - before) == 1
        assert cache_size(dsn) == cached + 1

        # add, delete, rename (a rename embeds nothing: same text, cached vectors)
        (docs / "new.md").write_text("# Holidays\n\nThe office closes on 24 December.\n")
        (docs / "cat.txt").unlink()
        (docs / "sub" / "page.html").rename(docs / "parking.html")
        _wait("add/delete/rename indexed", _in_sync(dsn, docs), up)
        assert cache_size(dsn) == cached + 2
        assert set(actual_index(dsn)) == {
            "docs:handbook.md",
            "docs:new.md",
            "docs:parking.html",
        }
        # a touch is no event
        ends = [p.end_offset for p in log.partitions("docs.files")]
        os.utime(docs / "new.md", (time.time() + 5, time.time() + 5))
        time.sleep(1.5)
        assert [p.end_offset for p in log.partitions("docs.files")] == ends
        # a bad file does not stop the pipeline: the fixed file is indexed
        (docs / "latin.txt").write_text("café au lait\n")
        _wait("fixed file indexed", _in_sync(dsn, docs), up)
        _stop(up)

        # changes while stopped are picked up at start
        (docs / "new.md").write_text("# Holidays\n\nThe office closes on 31 December.\n")
        (docs / "latin.txt").unlink()
        (docs / "later.txt").write_text("Written while Headwater was stopped.\n")
        up = _up(cfg)
        _wait("changes made while stopped indexed", _in_sync(dsn, docs), up)
        texts = query(dsn, "SELECT text FROM headwater_kb.chunks WHERE doc_id = 'docs:new.md'")
        assert texts == [("The office closes on 31 December.",)]
    finally:
        if up.poll() is None:
            _stop(up)


def test_sigkill_during_bulk_ingestion_leaves_an_exact_index(tmp_path: Path, dsn: str) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(120):
        body = "\n\n".join(
            f"Document {i} paragraph {p} about subject {i * 7 + p}." for p in range(4)
        )
        (docs / f"doc{i:03d}.md").write_text(f"# Doc {i}\n\n{body}\n")
    cfg = _config(tmp_path, dsn, docs)
    up = _up(cfg)
    try:
        _wait(
            "bulk ingestion under way",
            lambda: query(dsn, "SELECT count(*) FROM headwater_kb.documents")[0][0] >= 10,
            up,
        )
        os.killpg(up.pid, signal.SIGKILL)
        up.wait(10)
        partial = query(dsn, "SELECT count(*) FROM headwater_kb.documents")[0][0]
        assert partial < 120, "killed too late to test anything"
        (docs / "doc000.md").write_text("# Doc 0\n\nRewritten after the crash.\n")
        up = _up(cfg)
        _wait("index exact after restart", _in_sync(dsn, docs), up, timeout=120)
        dupes = query(
            dsn,
            "SELECT doc_id, ordinal, count(*) FROM headwater_kb.chunks"
            " GROUP BY 1, 2 HAVING count(*) > 1",
        )
        assert dupes == []
        assert query(dsn, "SELECT count(*) FROM headwater_kb.documents") == [(120,)]
    finally:
        if up.poll() is None:
            _stop(up)


def test_captured_rows_feed_the_knowledge_base(
    tmp_path: Path, dsn: str, pg_server: EmbeddedPostgres
) -> None:
    source = new_database(pg_server, "src")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE policies (id int PRIMARY KEY, title text, body text)")
        conn.execute(
            "INSERT INTO policies VALUES (1, 'Travel', 'Economy class for short flights.'),"
            " (2, 'Expenses', 'Receipts are needed above 25 euros.')"
        )
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n[server]\nenabled = false\n'
        f'[[sources]]\nname = "crm"\nkind = "postgres"\ndsn = "{source}"\n'
        'tables = ["public.policies"]\nreplicate = false\n'
        '[[knowledge.tables]]\nsource = "crm"\ntable = "public.policies"\n'
        'template = "{title}\\n\\n{body}"\ntitle = "title"\n'
    )

    def texts() -> dict[str, str]:
        rows = query(
            dsn,
            "SELECT d.title, string_agg(c.text, ' ' ORDER BY c.ordinal)"
            " FROM headwater_kb.documents d JOIN headwater_kb.chunks c USING (doc_id)"
            " GROUP BY d.title",
        )
        return {t: " ".join(x.split()) for t, x in rows}

    up = _up(cfg)
    try:
        _wait("snapshot rows indexed", lambda: len(texts()) == 2, up)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("UPDATE policies SET body = 'Business class above 8 hours.' WHERE id = 1")
            conn.execute("DELETE FROM policies WHERE id = 2")
        _wait(
            "update and delete indexed",
            lambda: texts() == {"Travel": "Travel Business class above 8 hours."},
            up,
        )
        (doc_id,) = query(dsn, "SELECT doc_id FROM headwater_kb.documents")[0]
        assert doc_id == 'crm.policies:{"id":1}'
    finally:
        if up.poll() is None:
            _stop(up)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = 'headwater_crm'"
            )
