-- Version 1 of the journal: what zdmproxy remembers in the target database.
-- Applied by zdmproxy itself (journal/schema.py), in one transaction, under the journal's own lock,
-- after creating schema zdmproxy unless an administrator created it for the migration role.

CREATE TABLE zdmproxy.schema_version (
    version          int PRIMARY KEY,
    applied_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    zdmproxy_version text NOT NULL
);

-- One row per migration id. sql is the script as submitted; checksum is sha256 of its statements
-- as parsed (journal/checksum.py), so whitespace and comments between statements do not count.
CREATE TABLE zdmproxy.migrations (
    id               text PRIMARY KEY CHECK (id <> ''),
    checksum         text NOT NULL,
    sql              text NOT NULL,
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
    version          text,        -- from the file name, for migrations applied from a folder
    source           text,        -- the file it came from
    error            jsonb,       -- {code, message, exit_code, sqlstate} of the last failure
    runs             int NOT NULL DEFAULT 0,  -- how many times a process took it up
    owner_pid        int,         -- backend holding the run lock (pg_locks shows whether it still does)
    application_name text,
    client_host      text,
    client_pid       int,
    zdmproxy_version text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX migrations_version_idx ON zdmproxy.migrations (version) WHERE version IS NOT NULL;

-- The plan, frozen when the migration was first recorded: a resumed run executes these steps,
-- not a fresh plan. spec holds everything the engine needs (locks, kind, transactional...).
CREATE TABLE zdmproxy.steps (
    migration_id  text NOT NULL REFERENCES zdmproxy.migrations (id) ON DELETE CASCADE,
    index         int NOT NULL CHECK (index >= 0),
    sql           text NOT NULL,
    phase         text NOT NULL,
    kind          text NOT NULL,
    transactional boolean NOT NULL,
    spec          jsonb NOT NULL,
    -- 'running' on a transactional step only says an attempt began: its own transaction
    -- sets 'succeeded', so a crash leaves it rolled back. On a non-transactional step it is
    -- the recorded intent, resolved after a crash by looking at the catalog.
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    outcome       text,
    error         jsonb,
    started_at    timestamptz,
    finished_at   timestamptz,
    PRIMARY KEY (migration_id, index)
);

CREATE TABLE zdmproxy.attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration_id     text NOT NULL,
    step_index       int NOT NULL,
    run              int NOT NULL,  -- migrations.runs when it was made
    number           int NOT NULL,  -- 1-based within the run
    started_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    outcome          text,
    sqlstate         text,
    message          text,
    lock_timeout_ms  float8,
    queued_behind_us int NOT NULL DEFAULT 0,
    blockers         jsonb NOT NULL DEFAULT '[]',
    step_sql         text NOT NULL,  -- the step as it was then: a corrected migration keeps its history
    FOREIGN KEY (migration_id) REFERENCES zdmproxy.migrations (id) ON DELETE CASCADE
);
CREATE INDEX attempts_step_idx ON zdmproxy.attempts (migration_id, step_index);

-- Where a batched backfill got to (the planner's backfill engine writes these).
CREATE TABLE zdmproxy.checkpoints (
    migration_id text NOT NULL,
    step_index   int NOT NULL,
    position     jsonb NOT NULL,
    rows_done    bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (migration_id, step_index),
    FOREIGN KEY (migration_id, step_index) REFERENCES zdmproxy.steps (migration_id, index) ON DELETE CASCADE
);
