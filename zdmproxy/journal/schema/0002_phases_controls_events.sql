-- Version 2: phases (expand now, contract later), the control plane (pause, cancel, throttle,
-- asked for by any process and obeyed by the one running the migration), and the event log
-- (so an HTTP event stream resumes after a reconnect or a daemon restart and misses nothing).

-- The last phase a migration completed: NULL (none yet), 'expand' (expanded; contract pending:
-- the state is then 'paused'), 'contract' (everything ran), 'rollback' (the expand was undone).
ALTER TABLE zdmproxy.migrations
    ADD COLUMN phase text CHECK (phase IN ('expand', 'contract', 'rollback')),
    -- What an operator asked of the run; the running process reads it between steps and between
    -- backfill batches and clears it when obeyed. NULL: nothing asked.
    ADD COLUMN control text CHECK (control IN ('pause', 'cancel')),
    -- Live backfill knobs set by an operator (batch_rows, sleep_ms, health limits...), merged over
    -- the policy's by the running process before every batch.
    ADD COLUMN throttle jsonb NOT NULL DEFAULT '{}';

-- Backfill progress beside the checkpoint, for status and the HTTP API without asking the runner.
ALTER TABLE zdmproxy.checkpoints
    ADD COLUMN rows_total_estimate bigint,
    ADD COLUMN batch_rows int,
    ADD COLUMN throttled_by text;  -- the health signal pausing it now ("replica lag 48 MB > 16 MB")

-- Every engine event of every run, in order: the id is the SSE Last-Event-ID.
CREATE TABLE zdmproxy.events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration_id text NOT NULL REFERENCES zdmproxy.migrations (id) ON DELETE CASCADE,
    run          int NOT NULL,
    step_index   int NOT NULL,  -- -1 for the migration as a whole
    kind         text NOT NULL,
    message      text NOT NULL,
    fields       jsonb NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX events_migration_idx ON zdmproxy.events (migration_id, id);
