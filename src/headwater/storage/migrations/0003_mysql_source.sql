-- MySQL/MariaDB CDC sources: the binlog position each source has made durable in the
-- log, written in the same transaction as the append (postgres log backend), and the
-- progress of the initial snapshot, so a crash resumes instead of starting over.
CREATE TABLE headwater.mysql_source_state (
    source        text PRIMARY KEY,
    -- Where streaming resumes: the first binlog event not yet in the log. Before the
    -- snapshot is done this is the snapshot's position (streaming starts there).
    binlog_file   text NOT NULL,
    binlog_pos    bigint NOT NULL,
    -- MariaDB GTID (domain-server-seq) of the last transaction in the log, if any.
    gtid          text,
    snapshot_done boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per captured table while the snapshot runs: the last primary key read
-- (JSON array, null before the first chunk) and whether the table is finished.
CREATE TABLE headwater.mysql_snapshot_progress (
    source    text NOT NULL REFERENCES headwater.mysql_source_state (source) ON DELETE CASCADE,
    db        text NOT NULL,
    tbl       text NOT NULL,
    last_key  jsonb,
    rows_read bigint NOT NULL DEFAULT 0,
    done      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (source, db, tbl)
);
