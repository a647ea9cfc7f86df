"""The configuration model: frozen pydantic models, unknown keys are errors.

Secrets (DSNs, passwords) are ``SecretStr`` and are never printed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from headwater.config.knowledge import FilesSourceConfig, KnowledgeConfig, KnowledgePipeline
from headwater.config.profiles import FactTable, MappedTable, ProfilesConfig, ProfilesPipeline
from headwater.config.serving import ServingConfig

NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,62}$"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class ProjectConfig(_Model):
    name: str = Field("headwater", pattern=NAME_PATTERN)
    data_dir: Path = Path(".headwater")


class KafkaConfig(_Model):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "headwater"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    replication_factor: int = Field(1, ge=1)
    session_timeout_ms: int = Field(10_000, ge=1000)
    """How fast a dead worker's partitions move to others. Some brokers (tansu) hold a
    group join for half of this, so it also bounds start-up."""
    heartbeat_interval_ms: int = Field(2_000, ge=100)


class StorageConfig(_Model):
    postgres: SecretStr = SecretStr("embedded")
    """"embedded" (PostgreSQL 18 + pgvector from the wheel) or a DSN of PostgreSQL 15+."""
    log: Literal["postgres", "kafka"] = "postgres"
    kafka: KafkaConfig = KafkaConfig()

    @field_validator("postgres")
    @classmethod
    def _dsn_or_embedded(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if raw != "embedded" and not raw.startswith(("postgresql://", "postgres://")):
            raise ValueError('expected "embedded" or a DSN starting with postgresql://')
        return v

    @property
    def embedded(self) -> bool:
        return self.postgres.get_secret_value() == "embedded"


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    enabled: bool = True


class WorkerConfig(_Model):
    """Defaults for every pipeline's worker processes."""

    processes: int = Field(1, ge=1, le=64)
    batch_max_events: int = Field(1000, ge=1, le=100_000)
    batch_max_ms: int = Field(10, ge=0, le=60_000)
    """How long a batch waits for more records after its first; small, because a
    record's freshness pays for it and a backlog fills batches without waiting."""
    retry_initial_ms: int = Field(100, ge=1)
    retry_max_ms: int = Field(10_000, ge=1)
    maintenance_interval_s: float = Field(30.0, gt=0)


class TopicConfig(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    partitions: int = Field(3, ge=1, le=1024)
    compacted: bool = False
    retention_ms: int | None = Field(None, ge=1)
    retention_bytes: int | None = Field(None, ge=1)


class _PipelineBase(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    input: str = Field(pattern=NAME_PATTERN)
    processes: int | None = Field(None, ge=1, le=64)
    batch_max_events: int | None = Field(None, ge=1, le=100_000)
    batch_max_ms: int | None = Field(None, ge=0, le=60_000)


class TableSinkPipeline(_PipelineBase):
    """Copies the records of a topic into a PostgreSQL table, exactly once."""

    processor: Literal["table"]
    table: str
    mode: Literal["append", "upsert"] = "append"

    @field_validator("table")
    @classmethod
    def _qualified_identifier(cls, v: str) -> str:
        parts = v.split(".")
        if len(parts) > 2 or not all(_IDENT.match(p) for p in parts):
            raise ValueError("expected a table name like events or myschema.events")
        return v


class ReplicaPipeline(_PipelineBase):
    """Merges a captured table's CDC topic, in order, into a replica table
    ``<schema>.<table>`` in Headwater's PostgreSQL, exactly once."""

    processor: Literal["replica"]
    schema_: str = Field(alias="schema")
    table: str

    @field_validator("schema_", "table")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError("expected an identifier like crm or customers")
        return v


SERVING_TOPICS = tuple(
    TopicConfig.model_construct(
        name=n, partitions=3, compacted=False, retention_ms=None, retention_bytes=None
    )
    for n in ("conversations", "feedback")
)
"""Topics the API appends to (every answer, every rating); created at bootstrap."""

PipelineConfig = Annotated[
    TableSinkPipeline | ReplicaPipeline | ProfilesPipeline | KnowledgePipeline,
    Field(discriminator="processor"),
]


class _SourceBase(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    tables: tuple[str, ...] = Field(min_length=1)
    topic_prefix: str | None = Field(None, pattern=NAME_PATTERN)
    """Topics are ``<topic_prefix>.<schema or db>.<table>``; default: the source name."""
    partitions: int = Field(3, ge=1, le=1024)
    replicate: bool = True
    """Keep a replica table ``<name>.<table>`` of every captured table."""

    @property
    def prefix(self) -> str:
        return self.topic_prefix or self.name

    def table_refs(self) -> list[tuple[str, str]]:
        """``(schema or database, table)`` of each captured table."""
        return [
            (t.split(".", 1)[0], t.split(".", 1)[1]) if "." in t else ("public", t)
            for t in self.tables
        ]

    def topic_of(self, schema: str, table: str) -> str:
        return f"{self.prefix}.{schema}.{table}"


class PostgresSourceConfig(_SourceBase):
    """Logical replication (pgoutput) from a PostgreSQL 10+ database."""

    kind: Literal["postgres"]
    dsn: SecretStr

    @field_validator("dsn")
    @classmethod
    def _pg_dsn(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a DSN starting with postgresql://")
        return v


class MySQLSourceConfig(_SourceBase):
    """Row-based binlog from MySQL 8 / MariaDB 10.5+."""

    kind: Literal["mysql"]
    dsn: SecretStr
    server_id: int | None = Field(None, ge=1, le=4_294_967_295)

    @field_validator("dsn")
    @classmethod
    def _mysql_dsn(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith(("mysql://", "mariadb://")):
            raise ValueError("expected a DSN like mysql://user:password@host:3306")
        return v

    @field_validator("tables")
    @classmethod
    def _db_qualified(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in v if t.count(".") != 1]
        if bad:
            raise ValueError(f"tables must be written db.table: {', '.join(bad)}")
        return v


CDCSourceConfig = PostgresSourceConfig | MySQLSourceConfig
SourceConfig = Annotated[
    PostgresSourceConfig | MySQLSourceConfig | FilesSourceConfig, Field(discriminator="kind")
]


def _profiles_tables(cfg: ProfilesConfig) -> list[MappedTable | FactTable]:
    return [*cfg.tables, *cfg.facts]


class Settings(_Model):
    """The whole of headwater.toml. ``config_path`` is set by the loader."""

    project: ProjectConfig = ProjectConfig()
    storage: StorageConfig = StorageConfig()
    server: ServerConfig = ServerConfig()
    worker: WorkerConfig = WorkerConfig()
    sources: tuple[SourceConfig, ...] = ()
    topics: tuple[TopicConfig, ...] = ()
    pipelines: tuple[PipelineConfig, ...] = ()
    serving: ServingConfig = ServingConfig()
    profiles: ProfilesConfig | None = None
    knowledge: KnowledgeConfig = KnowledgeConfig()
    config_path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _names_unique(self) -> Settings:
        for what, names in (
            ("sources", [s.name for s in self.sources]),
            ("topics", [t.name for t in self.topics]),
            ("pipelines", [p.name for p in self.pipelines]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what}: duplicate name(s) {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _replicas_unambiguous(self) -> Settings:
        for src in self.cdc_sources():
            names = [t for _, t in src.table_refs()]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if src.replicate and dupes:
                raise ValueError(
                    f"sources.{src.name}: tables {', '.join(dupes)} exist in several schemas;"
                    " their replicas would collide: set replicate = false and add replica"
                    " pipelines by hand"
                )
        return self

    @model_validator(mode="after")
    def _profiles_topics(self) -> Settings:
        if self.profiles is not None:
            for t in _profiles_tables(self.profiles):
                self._profiles_topic(t)
        return self

    def cdc_sources(self) -> tuple[PostgresSourceConfig | MySQLSourceConfig, ...]:
        """The sources that capture database tables."""
        return tuple(s for s in self.sources if not isinstance(s, FilesSourceConfig))

    @model_validator(mode="after")
    def _knowledge_tables_captured(self) -> Settings:
        for i, t in enumerate(self.knowledge.tables):
            src = next((s for s in self.cdc_sources() if s.name == t.source), None)
            if src is None:
                valid = ", ".join(s.name for s in self.cdc_sources()) or "(none)"
                raise ValueError(
                    f"knowledge.tables[{i}].source: {t.source!r} is not a database source;"
                    f" valid: {valid}"
                )
            if t.table not in src.tables and f"public.{t.table}" not in src.tables:
                raise ValueError(
                    f"knowledge.tables[{i}].table: {t.table!r} is not captured by"
                    f" {t.source}; add it to sources.{t.source}.tables"
                )
        return self

    def all_topics(self) -> tuple[TopicConfig, ...]:
        """Configured topics, those of the sources' captured tables and of file sources."""
        files = [
            TopicConfig.model_construct(
                name=src.topic,
                partitions=src.partitions,
                compacted=False,
                retention_ms=None,
                retention_bytes=None,
            )
            for src in self.sources
            if isinstance(src, FilesSourceConfig)
        ]
        derived = [
            TopicConfig.model_construct(
                name=src.topic_of(schema, table),
                partitions=src.partitions,
                compacted=False,
                retention_ms=None,
                retention_bytes=None,
            )
            for src in self.cdc_sources()
            for schema, table in src.table_refs()
        ]
        named = {t.name for t in self.topics}
        serving = [t for t in SERVING_TOPICS if t.name not in named]  # answers, ratings
        return (*self.topics, *derived, *files, *serving)

    def all_pipelines(self) -> tuple[PipelineConfig, ...]:
        """Configured pipelines, one replica pipeline per captured table, and one
        knowledge pipeline per file source and per ``[knowledge]`` table template."""
        derived: list[PipelineConfig] = self._knowledge_pipelines()
        for src in self.cdc_sources():
            if not src.replicate:
                continue
            for schema, table in src.table_refs():
                name = re.sub(r"[^a-z0-9_.-]", "_", f"{src.name}-replica-{table}".lower())[:63]
                derived.append(
                    ReplicaPipeline.model_construct(
                        name=name,
                        input=src.topic_of(schema, table),
                        processes=None,
                        batch_max_events=None,
                        batch_max_ms=None,
                        processor="replica",
                        schema_=re.sub(r"[^A-Za-z0-9_]", "_", src.name),
                        table=table,
                    )
                )
        return (*self.pipelines, *derived, *self.profiles_pipelines())

    def profiles_pipelines(self) -> tuple[ProfilesPipeline, ...]:
        """One ``profiles`` pipeline per distinct topic of ``[profiles]`` tables."""
        if self.profiles is None:
            return ()
        cfg = self.profiles
        cfg = cfg.model_copy(
            update={
                "tables": tuple(
                    t.model_copy(
                        update={"topic": t.topic or self.topic_of_table(t.source, t.table)}
                    )
                    for t in cfg.tables
                ),
                "facts": tuple(
                    f.model_copy(
                        update={"topic": f.topic or self.topic_of_table(f.source, f.table)}
                    )
                    for f in cfg.facts
                ),
            }
        )
        topics = dict.fromkeys(self._profiles_topic(t) for t in _profiles_tables(cfg))
        return tuple(
            ProfilesPipeline(
                processor="profiles",
                name=re.sub(r"[^a-z0-9_.-]", "_", f"profiles-{topic}".lower())[:63],
                input=topic,
                profiles=cfg,
            )
            for topic in topics
        )

    def _profiles_topic(self, t: MappedTable | FactTable) -> str:
        return t.topic or self.topic_of_table(t.source, t.table)

    def topic_of_table(self, source: str, table: str) -> str:
        """The CDC topic of ``table`` (``schema.table`` or ``table``) of ``source``.

        Raises:
            ValueError: no such source or captured table.
        """
        for src in self.cdc_sources():
            if src.name != source:
                continue
            for schema, name in src.table_refs():
                if table in (name, f"{schema}.{name}"):
                    return src.topic_of(schema, name)
            raise ValueError(f"source {source!r} does not capture table {table!r}")
        raise ValueError(f"no source named {source!r}; set topic = ... or add the source")

    def _knowledge_pipelines(self) -> list[PipelineConfig]:
        kn = self.knowledge
        out: list[PipelineConfig] = []
        for src in self.sources:
            if isinstance(src, FilesSourceConfig) and src.knowledge:
                out.append(
                    KnowledgePipeline(
                        name=f"kb-{src.name}"[:63],
                        input=src.topic,
                        batch_max_events=64,
                        batch_max_ms=0,  # a backlog fills batches; a lone edit goes at once
                        processor="knowledge",
                        source=src.name,
                        chunking=kn.chunking,
                        embedder=kn.embedder,
                    )
                )
        for t in kn.tables:
            src = next(s for s in self.cdc_sources() if s.name == t.source)
            schema, _, table = t.table.rpartition(".")
            name = re.sub(r"[^a-z0-9_.-]", "_", f"kb-{src.name}-{table}".lower())[:63]
            out.append(
                KnowledgePipeline(
                    name=name,
                    input=src.topic_of(schema or "public", table),
                    batch_max_events=256,
                    batch_max_ms=0,
                    processor="knowledge",
                    source=f"{src.name}.{table}",
                    format="rows",
                    template=t.template,
                    title=t.title,
                    chunking=kn.chunking,
                    embedder=kn.embedder,
                )
            )
        return out

    @property
    def data_dir(self) -> Path:
        """The data directory, relative paths taken from the config file's folder."""
        d = self.project.data_dir
        if not d.is_absolute() and self.config_path is not None:
            d = self.config_path.parent / d
        return d.resolve()

    def topic(self, name: str) -> TopicConfig | None:
        return next((t for t in self.all_topics() if t.name == name), None)
