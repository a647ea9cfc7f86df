"""Built-in processors that configuration may name.

Configuration can only pick from this table: an untrusted config file never imports
or runs arbitrary code. Custom processors are used through the Python API.
"""

from __future__ import annotations

from collections.abc import Callable

from headwater.config.knowledge import KnowledgePipeline
from headwater.config.model import PipelineConfig, ReplicaPipeline, TableSinkPipeline
from headwater.config.profiles import ProfilesPipeline
from headwater.engine.processor import Processor


def _table(cfg: PipelineConfig) -> Processor:
    from headwater.sinks.table import TableSink

    assert isinstance(cfg, TableSinkPipeline)
    return TableSink(cfg.table, cfg.mode)


def _replica(cfg: PipelineConfig) -> Processor:
    from headwater.sinks.replica import ReplicaSink

    assert isinstance(cfg, ReplicaPipeline)
    return ReplicaSink(cfg.schema_, cfg.table)


def _profiles(cfg: PipelineConfig) -> Processor:
    from headwater.profiles.processor import ProfilesProcessor

    assert isinstance(cfg, ProfilesPipeline)
    return ProfilesProcessor(cfg.profiles, cfg.input)


def _knowledge(cfg: PipelineConfig) -> Processor:
    from headwater.knowledge.processor import KnowledgeProcessor

    assert isinstance(cfg, KnowledgePipeline)
    return KnowledgeProcessor(cfg)


BUILTIN: dict[str, Callable[[PipelineConfig], Processor]] = {
    "table": _table,
    "replica": _replica,
    "profiles": _profiles,
    "knowledge": _knowledge,
}


def build_processor(cfg: PipelineConfig) -> Processor:
    """The processor a pipeline's configuration names."""
    return BUILTIN[cfg.processor](cfg)
