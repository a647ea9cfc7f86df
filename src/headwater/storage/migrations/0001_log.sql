-- The log kept in PostgreSQL: topics, partitions, records, consumer offsets.
CREATE SCHEMA IF NOT EXISTS headwater_log;

CREATE TABLE headwater.topics (
    id              serial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    partitions      integer NOT NULL CHECK (partitions > 0),
    compacted       boolean NOT NULL DEFAULT false,
    retention_ms    bigint,
    retention_bytes bigint,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per partition. next_offset is the high watermark; appenders lock the row
-- until they commit, so offsets become visible in order and readers see no gaps.
CREATE TABLE headwater.log_partitions (
    topic_id     integer NOT NULL REFERENCES headwater.topics (id) ON DELETE CASCADE,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL DEFAULT 0,
    start_offset bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (topic_id, partition)
);

-- Offsets per consumer group, committed in the same transaction as the sink writes.
-- Used for both log backends (with Kafka, partitions are sought to these on assignment).
-- position: the source position (LSN, binlog pos, ...) of the last applied record.
CREATE TABLE headwater.consumer_offsets (
    group_name  text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL DEFAULT 0,
    position    text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, topic, partition)
);

-- Counters per pipeline and partition, updated inside each batch's transaction, so they
-- are exact across crashes; one worker owns a partition at a time, so no contention.
CREATE TABLE headwater.pipeline_stats (
    pipeline      text NOT NULL,
    partition     integer NOT NULL,
    events        bigint NOT NULL DEFAULT 0,
    dead_letters  bigint NOT NULL DEFAULT 0,
    last_batch_at timestamptz,
    PRIMARY KEY (pipeline, partition)
);
