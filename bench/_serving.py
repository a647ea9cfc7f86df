"""Serving bench helpers: a knowledge base built from a folder by the real files source
and knowledge pipeline (in this process), on a throwaway embedded PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import embedded_database
from headwater.config.loader import load_settings
from headwater.config.model import Settings
from headwater.engine.runtime import Runtime, bootstrap
from headwater.engine.worker import Worker, WorkerOptions
from headwater.knowledge.embedder import default_embedder
from headwater.knowledge.processor import KnowledgeProcessor
from headwater.serving.ask import AskService
from headwater.sources.files.source import FileSource


@dataclass
class Stack:
    settings: Settings
    rt: Runtime
    config: Path
    folder: Path
    source: FileSource
    worker: Worker
    embedder: Any

    def write(self, docs: dict[str, str]) -> None:
        for name, text in docs.items():
            (self.folder / name).write_text(text)

    def sync(self) -> None:
        """Publish the folder's changes and apply them to the knowledge base."""
        self.source.reconcile()
        self.worker.stop_event.clear()
        self.worker.run(until_idle=True)

    def service(self, **cache: Any) -> AskService:
        """An AskService whose ``[serving.cache]`` is overridden by ``cache``."""
        s = self.settings
        serving = s.serving.model_copy(update={"cache": s.serving.cache.model_copy(update=cache)})
        rt = Runtime(s.model_copy(update={"serving": serving}), self.rt.dsn, self.rt.log)
        return AskService(rt, embedder=self.embedder)


@contextlib.contextmanager
def kb_stack(docs: dict[str, str], toml: str = "") -> Iterator[Stack]:
    """A knowledge base of ``docs``; ``toml`` is appended to the generated config."""
    with embedded_database("serving") as dsn, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        cfg = Path(tmp) / "headwater.toml"
        cfg.write_text(
            f'[storage]\npostgres = "{dsn}"\n'
            f'[[sources]]\nkind = "files"\nname = "docs"\npath = "{folder}"\n' + toml
        )
        settings = load_settings(cfg)
        rt = bootstrap(settings, start=False)
        embedder = default_embedder()
        src_cfg: Any = next(s for s in settings.sources if s.kind == "files")
        source = FileSource(src_cfg, rt.log, rt.dsn)
        source.load()
        p: Any = next(p for p in settings.all_pipelines() if p.processor == "knowledge")
        worker = Worker(
            pipeline=p.name,
            topic=p.input,
            processor=KnowledgeProcessor(p, embedder),
            log=rt.log,
            dsn=rt.dsn,
            options=WorkerOptions(batch_max_events=64, batch_max_ms=5),
        )
        stack = Stack(settings, rt, cfg, folder, source, worker, embedder)
        stack.write(docs)
        stack.sync()
        try:
            yield stack
        finally:
            rt.close()
