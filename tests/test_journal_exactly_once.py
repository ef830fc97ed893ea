"""The journal's promise on real servers: every step applied exactly once, whatever stops a run.

Runs are stopped the ways deploys are stopped: a failing step fixed afterwards, SIGTERM, kill -9
at random moments and at the worst ones (during a CONCURRENTLY build, during COMMIT), and a
connection lost during COMMIT, both before and after the server committed. What must hold
afterwards is counted in the database: rows of DML steps, DDL commands executed (an event
trigger logs every one), columns, and index validity.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import asyncpg
import pytest
from helpers import ITEMS, finish, idle_blocker, run_cli, start_cli, wait_for_session, zdmproxy
from proxy import AnswerCutter, command_complete, simple_query

from zdmproxy.journal.steps import checksum
from zdmproxy.sql.parse import parse_script

SETUP = (
    ITEMS
    + """
CREATE TABLE ledger (step int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE ddl_log (tag text NOT NULL, query text NOT NULL);
CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql
    AS $$ BEGIN INSERT INTO ddl_log VALUES (tg_tag, current_query()); END $$;
CREATE EVENT TRIGGER log_ddl ON ddl_command_start EXECUTE FUNCTION log_ddl();
-- A COMMIT that takes a while: the deferred trigger runs at COMMIT, so a test can act "during" it.
CREATE TABLE slow_commit (step int NOT NULL);
CREATE FUNCTION sleep_at_commit() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN PERFORM pg_sleep(current_setting('test.commit_sleep', true)::float8); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER sleep_at_commit AFTER INSERT ON slow_commit
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sleep_at_commit();
"""
)

MIGRATION = """
ALTER TABLE items ADD COLUMN note text;
INSERT INTO ledger (step) VALUES (2);
CREATE INDEX CONCURRENTLY items_note_idx ON items (note);
INSERT INTO slow_commit (step) VALUES (4);
ALTER TABLE items ADD COLUMN extra int;
"""
OUR_DDL = ("ALTER TABLE", "CREATE INDEX")


async def setup(dsn: str, commit_sleep_s: float = 0.0) -> asyncpg.Connection:
    admin = await asyncpg.connect(dsn)
    await admin.execute(SETUP)
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(f"ALTER DATABASE \"{database}\" SET test.commit_sleep = '{commit_sleep_s}'")
    return admin


async def final_state(admin: asyncpg.Connection) -> dict[str, object]:
    """What an uninterrupted run of MIGRATION leaves behind, in the terms that matter."""
    return {
        "columns": await admin.fetchval(
            "SELECT array_agg(attname::text ORDER BY attname) FROM pg_attribute"
            " WHERE attrelid = 'items'::regclass AND attnum > 0 AND NOT attisdropped"
        ),
        "ledger": await admin.fetchval("SELECT array_agg(step ORDER BY step) FROM ledger"),
        "slow_commit": await admin.fetchval("SELECT array_agg(step ORDER BY step) FROM slow_commit"),
        "indexes": await admin.fetchval(
            "SELECT array_agg(c.relname::text || ':' || ix.indisvalid ORDER BY c.relname)"
            " FROM pg_index ix JOIN pg_class c ON c.oid = ix.indexrelid WHERE ix.indrelid = 'items'::regclass"
        ),
        "our_ddl": await admin.fetchval(
            # the journal's own tables are created by zdmproxy too, in a script naming its schema
            "SELECT count(*) FROM ddl_log WHERE tag = ANY($1::text[]) AND query NOT LIKE '%zdmproxy.%'",
            list(OUR_DDL),
        ),
    }


EXPECTED = {
    "columns": ["a", "extra", "id", "n", "note"],
    "ledger": [2],
    "slow_commit": [4],
    "indexes": ["items_note_idx:true", "items_pkey:true"],
    "our_ddl": 3,  # ADD COLUMN note, CREATE INDEX, ADD COLUMN extra: each executed exactly once
}


async def apply(
    dsn: str, tmp_path: Path, sql: str = MIGRATION, *options: str, id: str = "m1"
) -> tuple[int, str]:
    result = await run_cli("apply", "--dsn", dsn, "--id", id, *options, sql=sql, tmp_path=tmp_path)
    return result.code, result.stderr


async def test_second_apply_executes_nothing_and_changed_sql_is_a_conflict(dsn: str, tmp_path: Path) -> None:
    admin = await setup(dsn)
    try:
        code, stderr = await apply(dsn, tmp_path)
        assert code == 0, stderr
        assert await final_state(admin) == EXPECTED
        commands = await admin.fetchval("SELECT count(*) FROM ddl_log")

        code, stderr = await apply(dsn, tmp_path)
        assert code == 0, stderr
        assert "already applied" in stderr and "nothing ran" in stderr
        assert await admin.fetchval("SELECT count(*) FROM ddl_log") == commands  # no DDL at all
        assert await final_state(admin) == EXPECTED

        changed = MIGRATION + "ALTER TABLE items ADD COLUMN more int;\n"
        code, stderr = await apply(dsn, tmp_path, changed)
        assert code == 3, stderr
        assert checksum(parse_script(MIGRATION)) in stderr and checksum(parse_script(changed)) in stderr
        assert "new migration with its own id" in stderr
        assert await final_state(admin) == EXPECTED
    finally:
        await admin.close()


async def test_a_failed_step_fixed_afterwards_resumes_where_it_stopped(dsn: str, tmp_path: Path) -> None:
    broken = MIGRATION.replace(
        "ALTER TABLE items ADD COLUMN extra int", "ALTER TABLE nosuch ADD COLUMN extra int"
    )
    admin = await setup(dsn)
    try:
        code, stderr = await apply(dsn, tmp_path, broken)
        assert code == 1, stderr
        assert "4 of 5 step(s) applied" in stderr and "resumes at step 5" in stderr
        # Changing a step that is already applied is refused: the database has the old one.
        rewritten = broken.replace("VALUES (2)", "VALUES (22)")
        code, stderr = await apply(dsn, tmp_path, rewritten)
        assert code == 3 and "step 2" in stderr and "already applied" in stderr, stderr

        code, stderr = await apply(dsn, tmp_path)  # the fixed file
        assert code == 0, stderr
        assert "all 5 step(s) applied (4 of them by an earlier run)" in stderr
        assert await final_state(admin) == EXPECTED
    finally:
        await admin.close()


async def test_sigterm_then_rerun_applies_each_step_once(dsn: str, tmp_path: Path) -> None:
    admin = await setup(dsn, commit_sleep_s=0.5)
    blocker: asyncpg.Connection | None = None
    proc = await start_cli("apply", "--dsn", dsn, "--id", "m1", sql=MIGRATION, tmp_path=tmp_path)
    try:
        # While step 4 sleeps in its COMMIT, a reader opens a transaction on items: step 5 waits for it.
        await _wait_for(
            admin, "SELECT pid FROM pg_stat_activity WHERE query = 'COMMIT' AND wait_event = 'PgSleep'"
        )
        blocker = await idle_blocker(dsn, "items")
        await wait_for_session(admin, "zdmproxy:m1:step5")
        proc.send_signal(signal.SIGTERM)
        result = await finish(proc, timeout=30)
        assert result.code == 5, result.stderr
        assert "4 of 5 step(s) applied" in result.stderr
        assert await admin.fetchval("SELECT state FROM zdmproxy.migrations WHERE id = 'm1'") == "cancelled"
        await blocker.close()
        code, stderr = await apply(dsn, tmp_path)
        assert code == 0, stderr
        assert "(4 of them by an earlier run)" in stderr
        assert await final_state(admin) == EXPECTED
    finally:
        await _kill9(proc)
        if blocker is not None:
            await blocker.close()
        await admin.close()


async def _kill9(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()


async def _wait_for(admin: asyncpg.Connection, query: str, *args: object, timeout: float = 30) -> int:
    """Poll until ``query`` returns a pid (the isolation tester's way: no sleep guesses)."""
    async with asyncio.timeout(timeout):
        while (pid := await admin.fetchval(query, *args)) is None:
            await asyncio.sleep(0.005)
    return int(pid)


PARTS = """
CREATE TABLE events (id bigint NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX items_a_idx ON items (a);
"""
# (statement, what holds it in its wait, what must hold after the rerun)
CONCURRENTLY = {
    "create-index": (
        "CREATE INDEX CONCURRENTLY items_note_idx ON items (a)",
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ledger",  # an old snapshot
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_note_idx'::regclass",
    ),
    "drop-index": (
        "DROP INDEX CONCURRENTLY items_a_idx",
        "BEGIN; SELECT count(*) FROM items",  # a transaction using the table
        "SELECT to_regclass('items_a_idx') IS NULL",
    ),
    "reindex": (
        "REINDEX INDEX CONCURRENTLY items_a_idx",
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ledger",
        "SELECT bool_and(indisvalid) AND count(*) = 2 FROM pg_index WHERE indrelid = 'items'::regclass",
    ),
    "detach-partition": (
        "ALTER TABLE events DETACH PARTITION events_2025 CONCURRENTLY",
        # A transaction using the parent but not the partition (pre-flight would wait for that).
        "BEGIN; SELECT count(*) FROM events WHERE at = '2026-06-01'",
        "SELECT NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = 'events_2025'::regclass)",
    ),
}


@pytest.mark.parametrize("case", list(CONCURRENTLY))
async def test_kill_9_during_a_concurrently_statement_then_rerun(dsn: str, tmp_path: Path, case: str) -> None:
    """The statement is held in one of its waits when the process dies: its backend must not go
    on unseen, the rerun must wait for it to be gone, then tell from the catalog what is done
    and finish the rest (an INVALID index dropped and built again, a detach FINALIZEd)."""
    statement, hold, done = CONCURRENTLY[case]
    migration = f"INSERT INTO ledger (step) VALUES (1);\n{statement};\n"
    admin = await setup(dsn)
    # DROP INDEX CONCURRENTLY must be the first action of its transaction: no event trigger first.
    await admin.execute(PARTS + "ALTER EVENT TRIGGER log_ddl DISABLE;")
    holder = await asyncpg.connect(dsn)
    await holder.execute(hold)
    proc = await start_cli("apply", "--dsn", dsn, "--id", "m2", sql=migration, tmp_path=tmp_path)
    try:
        backend = await _wait_for(
            admin,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'zdmproxy:m2:step2'"
            " AND wait_event_type = 'Lock'",
        )
        await _kill9(proc)
        await holder.execute("ROLLBACK")
        code, stderr = await apply(dsn, tmp_path, migration, id="m2")
        assert code == 0, stderr
        assert not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend)
        assert await admin.fetchval(done), stderr
        assert await admin.fetchval("SELECT array_agg(step) FROM ledger") == [1]
        assert not await admin.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")  # no debris
        assert not await admin.fetchval("SELECT count(*) FROM pg_inherits WHERE inhdetachpending")
    finally:
        await _kill9(proc)
        await holder.close()
        await admin.close()


async def test_kill_9_during_commit_then_rerun(dsn: str, tmp_path: Path) -> None:
    admin = await setup(dsn, commit_sleep_s=1.0)
    proc = await start_cli("apply", "--dsn", dsn, "--id", "m1", sql=MIGRATION, tmp_path=tmp_path)
    try:
        await _wait_for(
            admin,
            "SELECT pid FROM pg_stat_activity WHERE query = 'COMMIT' AND wait_event = 'PgSleep'"
            " AND application_name LIKE 'zdmproxy:m1:step4'",
        )
        await _kill9(proc)
        code, stderr = await apply(dsn, tmp_path)
        assert code == 0, stderr
        assert await final_state(admin) == EXPECTED
    finally:
        await _kill9(proc)
        await admin.close()


async def test_kill_9_at_random_moments_then_rerun(dsn: str, tmp_path: Path) -> None:
    """Whatever moment the process dies at, the rerun completes with every step applied once.

    Each run is killed a random few milliseconds after a randomly chosen step began (its
    session is renamed for the step first): every step kind is hit at some moment of its life.
    """
    admin = await setup(dsn, commit_sleep_s=0.05)
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    try:
        for step in rng.sample(range(1, 6), 5):
            proc = await start_cli("apply", "--dsn", dsn, "--id", "m1", sql=MIGRATION, tmp_path=tmp_path)
            try:
                async with asyncio.timeout(30):  # until the step begins, or the run ends without it
                    while proc.returncode is None and not await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        f"zdmproxy:m1:step{step}",
                    ):
                        await asyncio.sleep(0.005)
                await asyncio.sleep(rng.uniform(0, 0.03))  # the random moment, not a synchronisation
            finally:
                await _kill9(proc)
        code, stderr = await apply(dsn, tmp_path)
        assert code == 0, f"seed {seed}: {stderr}"
        assert await final_state(admin) == EXPECTED, f"seed {seed}"
    finally:
        await admin.close()


LOST_COMMIT = """
INSERT INTO ledger (step) VALUES (1);
ALTER TABLE items ADD COLUMN after_commit int;
"""


COMMIT = (simple_query("COMMIT"), command_complete("COMMIT"))
CIC = "CREATE INDEX CONCURRENTLY items_lost_idx ON items (a)"


@pytest.mark.parametrize(
    ("arm", "query", "done"),
    [
        pytest.param(simple_query("INSERT INTO ledger (step) VALUES (1)"), *COMMIT, id="step-commit"),
        pytest.param(b"INSERT INTO zdmproxy.migrations", *COMMIT, id="journal-record-commit"),
        pytest.param(
            simple_query(CIC), simple_query(CIC), command_complete("CREATE INDEX"), id="concurrently"
        ),
    ],
)
async def test_connection_lost_after_the_server_finished_is_not_run_again(
    dsn: str, tmp_path: Path, arm: bytes, query: bytes, done: bytes
) -> None:
    """The server committed, the client lost the connection before hearing it. A transactional
    step's journal row committed with it, a CONCURRENTLY build is found valid in the catalog:
    either way the engine finds the step done and does not run it again (and recording the
    migration itself survives the same loss)."""
    admin = await setup(dsn)
    port = int(dsn.rsplit(":", 1)[1].split("/", 1)[0])
    cutter = AnswerCutter(port, arm, query, done)
    proxied = dsn.replace(f":{port}/", f":{await cutter.start()}/")
    try:
        result = await run_cli(
            "apply", "--dsn", proxied, "--id", "m3", sql=LOST_COMMIT + CIC, tmp_path=tmp_path
        )
        assert cutter.fired, "the proxy never cut an answer: the test proved nothing"
        assert result.code == 0, result.stderr
        assert await admin.fetchval("SELECT array_agg(step) FROM ledger") == [1]  # applied once
        assert await admin.fetchval("SELECT count(*) FROM pg_attribute WHERE attname = 'after_commit'") == 1
        assert await admin.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_lost_idx'::regclass"
        )
    finally:
        await cutter.close()
        await admin.close()


async def test_terminated_during_commit_then_rerun_applies_it_once(dsn: str, tmp_path: Path) -> None:
    """Terminated while its COMMIT runs (a deferred trigger): rolled back. An operator's
    terminate stops the run (exit 5); the rerun finds the step not done and applies it once."""
    admin = await setup(dsn, commit_sleep_s=0.5)
    migration = "INSERT INTO slow_commit (step) VALUES (1);"
    proc = await start_cli("apply", "--dsn", dsn, "--id", "m4", sql=migration, tmp_path=tmp_path)
    try:
        pid = await _wait_for(
            admin,
            "SELECT pid FROM pg_stat_activity WHERE query = 'COMMIT' AND wait_event = 'PgSleep'"
            " AND application_name = 'zdmproxy:m4:step1'",
        )
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        result = await finish(proc, timeout=60)
        assert result.code == 5, result.stderr
        assert await admin.fetchval("SELECT count(*) FROM slow_commit") == 0
        code, stderr = await apply(dsn, tmp_path, migration, id="m4")
        assert code == 0, stderr
        assert await admin.fetchval("SELECT array_agg(step) FROM slow_commit") == [1]
    finally:
        await _kill9(proc)
        await admin.close()


async def test_a_concurrently_step_is_checked_in_the_catalog_after_it_reports_success(
    dsn: str, tmp_path: Path
) -> None:
    """IF NOT EXISTS skips the build (with a NOTICE) when any relation has the name: success
    without an index. The journal must not record it as done."""
    admin = await setup(dsn)
    try:
        await admin.execute("CREATE TABLE clash (x int)")
        sql = "CREATE INDEX CONCURRENTLY IF NOT EXISTS clash ON items (a);"
        code, stderr = await apply(dsn, tmp_path, sql, id="m5")
        assert code == 1, stderr
        assert "does not show its effect" in stderr
        assert await admin.fetchval("SELECT state FROM zdmproxy.steps WHERE migration_id = 'm5'") == "failed"
    finally:
        await admin.close()


async def test_sigterm_of_a_waiter_stops_only_the_waiter_and_claims_no_step_of_its_own(
    dsn: str, tmp_path: Path
) -> None:
    """A deploy job stopped while it waits for another's run of the same migration: it exits 5
    without claiming a step was rolled back, and the run it waited for goes on untouched."""
    admin = await setup(dsn)
    blocker = await idle_blocker(dsn, "items")  # holds the runner's first step in its pre-flight
    runner = await start_cli("apply", "--dsn", dsn, "--id", "m1", sql=MIGRATION, tmp_path=tmp_path)
    waiter = None
    try:
        await wait_for_session(admin, "zdmproxy:m1:step1")
        waiter = await start_cli("apply", "--dsn", dsn, "--id", "m1", sql=MIGRATION, tmp_path=tmp_path)
        assert waiter.stderr is not None
        seen = []
        async with asyncio.timeout(30):
            while not seen or "waiting" not in seen[-1]:
                seen.append((await waiter.stderr.readline()).decode())
        waiter.send_signal(signal.SIGTERM)
        stopped = await finish(waiter, timeout=30)
        message = " ".join((stopped.stderr).split())
        assert stopped.code == 5, message
        assert "rolled back" not in message and "no step of m1 ran in this process" in message, message
        await blocker.close()
        done = await finish(runner, timeout=60)
        assert done.code == 0, done.stderr
        assert await final_state(admin) == EXPECTED
        assert await admin.fetchval("SELECT runs FROM zdmproxy.migrations WHERE id = 'm1'") == 1
        assert await admin.fetchval("SELECT array_agg(DISTINCT run) FROM zdmproxy.attempts") == [1]
    finally:
        await _kill9(runner)
        if waiter is not None:
            await _kill9(waiter)
        await blocker.close()
        await admin.close()


async def test_a_run_paused_between_steps_says_how_many_ran_and_its_waiter_says_it_was_paused(
    dsn: str, tmp_path: Path
) -> None:
    """An operator's pause, obeyed after step 1 while a second deploy job waits: neither process
    may say the migration was applied (all its steps) or that it failed."""
    admin = await setup(dsn)
    blocker = await idle_blocker(dsn, "items")  # holds step 1 long enough to ask for the pause
    runner = await start_cli("apply", "--dsn", dsn, "--id", "m1", sql=MIGRATION, tmp_path=tmp_path)
    waiter = None
    try:
        await wait_for_session(admin, "zdmproxy:m1:step1")
        waiter = await start_cli("apply", "--dsn", dsn, "--id", "m1", sql=MIGRATION, tmp_path=tmp_path)
        assert waiter.stderr is not None
        async with asyncio.timeout(30):
            while "waiting" not in (await waiter.stderr.readline()).decode():
                pass
        paused = await zdmproxy("pause", "--dsn", dsn, "m1")
        assert paused.code == 0, paused.stderr
        await blocker.close()
        ran = await finish(runner, timeout=60)
        message = " ".join(ran.stderr.split())
        assert ran.code == 5 and "paused before step 2" in message, message
        assert "m1: 1 of 5 step(s) applied" in message and "all 5 step(s) applied" not in message, message
        waited = await finish(waiter, timeout=30)
        message = " ".join(waited.stderr.split())
        assert waited.code == 5 and "m1 was paused in the run by" in message and "failed" not in message, (
            message
        )
        assert await admin.fetchval("SELECT state FROM zdmproxy.migrations WHERE id = 'm1'") == "paused"
    finally:
        await _kill9(runner)
        if waiter is not None:
            await _kill9(waiter)
        await blocker.close()
        await admin.close()
