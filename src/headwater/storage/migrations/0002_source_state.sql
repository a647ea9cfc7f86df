-- Durable state of CDC sources (one row per configured source).
-- snapshot_done: the initial snapshot has been fully appended to the log.
-- snapshot_progress: per table, how far the snapshot got ({"public.t": {"done": bool,
--   "last_key": [text, ...], "rows": n}}), so a crashed snapshot resumes chunk-wise.
-- position: the last source position (LSN, binlog position) whose events are durable
--   in the log; written in the same transaction as the append on the postgres log.
-- state: kind-specific facts (slot name, slot creation LSN, schema versions, ...).
CREATE TABLE headwater.source_state (
    source            text PRIMARY KEY,
    kind              text NOT NULL,
    snapshot_done     boolean NOT NULL DEFAULT false,
    snapshot_progress jsonb NOT NULL DEFAULT '{}',
    position          text,
    state             jsonb NOT NULL DEFAULT '{}',
    updated_at        timestamptz NOT NULL DEFAULT now()
);
