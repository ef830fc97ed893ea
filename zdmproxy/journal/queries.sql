-- Every query the journal sends, in one place. Blocks start with "-- name: <name>".
-- Advisory lock keys are hashtextextended('zdmproxy/...', 0): 64 bits, per database.

-- name: journal_exists
SELECT to_regclass('zdmproxy.schema_version') IS NOT NULL;

-- name: schema_exists
SELECT to_regnamespace('zdmproxy') IS NOT NULL;

-- name: create_schema
CREATE SCHEMA zdmproxy;

-- name: journal_version
SELECT coalesce(max(version), 0) FROM zdmproxy.schema_version;

-- name: record_journal_version
INSERT INTO zdmproxy.schema_version (version, zdmproxy_version) VALUES ($1, $2);

-- name: try_lock
-- Never pg_advisory_lock(): a backend blocked in it holds a snapshot, and a CREATE INDEX
-- CONCURRENTLY run by the holder would wait for that snapshot forever. Waiters poll this instead.
SELECT pg_try_advisory_lock(hashtextextended($1, 0));

-- name: unlock
SELECT pg_advisory_unlock(hashtextextended($1, 0));

-- name: lock_holder
-- Who holds the advisory lock $1 (pg_locks splits the 64-bit key into classid and objid).
SELECT l.pid, a.application_name, a.client_addr::text AS client_addr,
       EXTRACT(EPOCH FROM clock_timestamp() - a.backend_start)::float8 AS age_s
  FROM pg_locks l
  LEFT JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid::int8 = (hashtextextended($1, 0) >> 32) & 4294967295
   AND l.objid::int8 = hashtextextended($1, 0) & 4294967295;

-- name: ping
SELECT 1;

-- name: migration
SELECT id, checksum, sql, state, version, source, error, runs, owner_pid, application_name,
       client_host, client_pid, zdmproxy_version, created_at, started_at, finished_at,
       EXTRACT(EPOCH FROM finished_at - started_at)::float8 AS duration_s,
       clock_timestamp() AS read_at, phase
  FROM zdmproxy.migrations
 WHERE id = $1;

-- name: insert_migration
-- ON CONFLICT: two processes recording the same id at once; the loser reads the winner's row.
INSERT INTO zdmproxy.migrations (id, checksum, sql, version, source)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: insert_steps
INSERT INTO zdmproxy.steps (migration_id, index, sql, phase, kind, transactional, spec)
SELECT $1, s.index, s.sql, s.phase, s.kind, s.transactional, s.spec
  FROM jsonb_to_recordset($2::jsonb)
       AS s(index int, sql text, phase text, kind text, transactional boolean, spec jsonb);

-- name: delete_steps_from
DELETE FROM zdmproxy.steps WHERE migration_id = $1 AND index >= $2;

-- name: amend_migration
UPDATE zdmproxy.migrations
   SET checksum = $2, sql = $3, updated_at = clock_timestamp()
 WHERE id = $1;

-- name: steps
SELECT index, sql, phase, kind, transactional, spec::text AS spec, state, outcome, error,
       started_at, finished_at, EXTRACT(EPOCH FROM finished_at - started_at)::float8 AS duration_s
  FROM zdmproxy.steps
 WHERE migration_id = $1
 ORDER BY index;

-- name: migration_started
-- Run on the step session right after it took the run lock: a new run (runs is its fencing
-- token: every later write of this run checks it), owner_pid the backend holding the lock.
UPDATE zdmproxy.migrations
   SET state = 'running', owner_pid = pg_backend_pid(), runs = runs + 1,
       started_at = clock_timestamp(), finished_at = NULL, error = NULL,
       application_name = $2, client_host = $3, client_pid = $4, zdmproxy_version = $5,
       updated_at = clock_timestamp()
 WHERE id = $1
RETURNING runs;

-- name: migration_reclaimed
-- A run that lost its step session takes the lock again: only if no other run began since.
UPDATE zdmproxy.migrations
   SET owner_pid = pg_backend_pid(), updated_at = clock_timestamp()
 WHERE id = $1 AND runs = $2 AND state = 'running'
RETURNING runs;

-- name: migration_finished
UPDATE zdmproxy.migrations
   SET state = $2, error = $3::jsonb, finished_at = clock_timestamp(), updated_at = clock_timestamp()
 WHERE id = $1 AND runs = $4;

-- name: step_started
-- Returns the state the step had: 'running' means an earlier run began it and never recorded its
-- end. No row: the step is done already, or another run owns the migration now (run $3 fenced).
WITH before AS (
    SELECT s.state
      FROM zdmproxy.steps s JOIN zdmproxy.migrations m ON m.id = s.migration_id
     WHERE s.migration_id = $1 AND s.index = $2 AND m.runs = $3 AND s.state <> 'succeeded'
       FOR UPDATE OF s
)
UPDATE zdmproxy.steps s
   SET state = 'running', started_at = clock_timestamp(), finished_at = NULL, outcome = NULL, error = NULL
  FROM before
 WHERE s.migration_id = $1 AND s.index = $2
RETURNING before.state;

-- name: step_done
-- Inside a transactional step's own transaction, just before its COMMIT, on the step session
-- that holds the run lock: the step and the row saying it is done commit together.
UPDATE zdmproxy.steps
   SET state = 'succeeded', outcome = 'succeeded', error = NULL, finished_at = clock_timestamp()
 WHERE migration_id = $1 AND index = $2;

-- name: step_succeeded
-- After a non-transactional step, from the journal connection: only while run $3 owns it.
UPDATE zdmproxy.steps s
   SET state = 'succeeded', outcome = 'succeeded', error = NULL, finished_at = clock_timestamp()
  FROM zdmproxy.migrations m
 WHERE s.migration_id = $1 AND s.index = $2 AND m.id = s.migration_id AND m.runs = $3;

-- name: step_failed
-- Never over a step that committed, and only while run $5 owns the migration.
UPDATE zdmproxy.steps s
   SET state = 'failed', outcome = $3, error = $4::jsonb, finished_at = clock_timestamp()
  FROM zdmproxy.migrations m
 WHERE s.migration_id = $1 AND s.index = $2 AND s.state <> 'succeeded'
   AND m.id = s.migration_id AND m.runs = $5;

-- name: step_state
SELECT state FROM zdmproxy.steps WHERE migration_id = $1 AND index = $2;

-- name: insert_attempt
INSERT INTO zdmproxy.attempts (migration_id, step_index, run, number, started_at, ended_at, outcome,
                               sqlstate, message, lock_timeout_ms, queued_behind_us, blockers, step_sql)
VALUES ($1, $2, $3, $4, to_timestamp($5), to_timestamp($6), $7, $8, $9, $10, $11, $12::jsonb,
        coalesce((SELECT s.sql FROM zdmproxy.steps s WHERE s.migration_id = $1 AND s.index = $2), ''));

-- name: attempts
SELECT step_index, run, number, started_at, ended_at, outcome, sqlstate, message, lock_timeout_ms,
       queued_behind_us, blockers::text AS blockers
  FROM zdmproxy.attempts
 WHERE migration_id = $1
 ORDER BY id;

-- name: versioned_migrations
-- Migrations recorded from a folder (apply DIR): their file versions, for the order checks; and
-- those recorded under one of the ids $1 however they came (apply FILE --id V2__x: version null).
SELECT id, version, checksum, state, source
  FROM zdmproxy.migrations
 WHERE version IS NOT NULL OR id = ANY($1::text[]);

-- name: history
SELECT m.id, m.state, m.version, m.runs, m.client_host, m.application_name, m.error::text AS error,
       m.created_at, m.started_at, m.finished_at,
       EXTRACT(EPOCH FROM m.finished_at - m.started_at)::float8 AS duration_s,
       (SELECT count(*) FROM zdmproxy.steps s WHERE s.migration_id = m.id)::int AS steps,
       (SELECT count(*) FROM zdmproxy.steps s
         WHERE s.migration_id = m.id AND s.state = 'succeeded')::int AS steps_done,
       (SELECT count(*) FROM zdmproxy.attempts a WHERE a.migration_id = m.id)::int AS attempts
  FROM zdmproxy.migrations m
 ORDER BY m.created_at DESC, m.id
 LIMIT $1;

-- name: checkpoint
-- position is {"after": [last key done], "upper": [key the backfill stops at]} (journal/ledger.py).
SELECT position::text AS position, rows_done, rows_total_estimate, batch_rows, throttled_by
  FROM zdmproxy.checkpoints
 WHERE migration_id = $1 AND step_index = $2;

-- name: checkpoint_moved
-- Inside a backfill batch's own transaction, just before its COMMIT, on the step session that
-- holds the run lock: the batch's rows and the key they end at commit together.
INSERT INTO zdmproxy.checkpoints (migration_id, step_index, position, rows_done, rows_total_estimate,
                                  batch_rows, throttled_by)
VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)
ON CONFLICT (migration_id, step_index)
DO UPDATE SET position = excluded.position, rows_done = excluded.rows_done,
              rows_total_estimate = excluded.rows_total_estimate, batch_rows = excluded.batch_rows,
              throttled_by = excluded.throttled_by, updated_at = clock_timestamp();

-- name: controls
SELECT control, throttle::text AS throttle FROM zdmproxy.migrations WHERE id = $1;

-- name: insert_event
-- An engine event of the migration's current run (journal/events.py); the id is the SSE id.
INSERT INTO zdmproxy.events (migration_id, run, step_index, kind, message, fields, at)
SELECT id, runs, $2, $3, $4, $5::jsonb, to_timestamp($6)
  FROM zdmproxy.migrations
 WHERE id = $1;

-- name: events_after
-- The events of a migration after the one with id $2 (an SSE client's Last-Event-ID), in order.
SELECT id, run, step_index, kind, message, fields::text AS fields, at
  FROM zdmproxy.events
 WHERE migration_id = $1 AND id > $2
 ORDER BY id
 LIMIT $3;

-- name: request_control
-- An operator asks a migration that has not finished to pause or to cancel; the process running
-- it obeys between steps (or at once, for a cancel of a step it runs itself). No row: finished.
UPDATE zdmproxy.migrations
   SET control = $2, updated_at = clock_timestamp()
 WHERE id = $1 AND state IN ('queued', 'running')
RETURNING state;

-- name: resume_migration
-- Clears a pause or cancel request and makes a stopped migration runnable again. No row: it has
-- succeeded (nothing to resume) or does not exist.
UPDATE zdmproxy.migrations
   SET control = NULL,
       state = CASE WHEN state IN ('paused', 'cancelled', 'failed') THEN 'queued' ELSE state END,
       updated_at = clock_timestamp()
 WHERE id = $1 AND state <> 'succeeded'
RETURNING state;

-- name: set_throttle
-- Live backfill knobs merged over the ones set before; a null value removes a knob.
UPDATE zdmproxy.migrations
   SET throttle = jsonb_strip_nulls(throttle || $2::jsonb), updated_at = clock_timestamp()
 WHERE id = $1
RETURNING throttle::text AS throttle;

-- name: migration_stopped_as_asked
-- The running process obeyed an operator's pause or cancel: the state says so and the request
-- is cleared, in one statement, only while run $4 owns the migration.
UPDATE zdmproxy.migrations
   SET state = $2, error = $3::jsonb, control = NULL,
       finished_at = clock_timestamp(), updated_at = clock_timestamp()
 WHERE id = $1 AND runs = $4;

-- name: control_plane
SELECT phase, control, throttle::text AS throttle FROM zdmproxy.migrations WHERE id = $1;

-- name: backfill_progress
-- Where each backfill step of a migration got to, and how fast (rows since the step started).
SELECT c.step_index, c.rows_done, c.rows_total_estimate, c.batch_rows, c.throttled_by,
       c.updated_at, EXTRACT(EPOCH FROM c.updated_at - s.started_at)::float8 AS elapsed_s
  FROM zdmproxy.checkpoints c
  JOIN zdmproxy.steps s ON s.migration_id = c.migration_id AND s.index = c.step_index
 WHERE c.migration_id = $1
 ORDER BY c.step_index;

-- name: migration_phase_finished
-- A run that completed a phase: 'paused' after an expand run (the contract is for later),
-- 'succeeded' after the contract, 'cancelled' after a rollback; only while run $4 owns it.
UPDATE zdmproxy.migrations
   SET state = $2, phase = $3, error = NULL, finished_at = clock_timestamp(), updated_at = clock_timestamp()
 WHERE id = $1 AND runs = $4;

-- name: steps_rolled_back
-- After a rollback undid the expand: every step is to run again from the start (and any backfill
-- from its first row), as if the migration had never run.
WITH reset AS (
    UPDATE zdmproxy.steps
       SET state = 'pending', outcome = NULL, error = NULL, started_at = NULL, finished_at = NULL
     WHERE migration_id = $1
)
DELETE FROM zdmproxy.checkpoints WHERE migration_id = $1;
