"""What is retried and what fails at once, decided on real PostgreSQL errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from helpers import ITEMS, QUEUE_ANYWAY, idle_blocker, run_cli, start_run

from zdmproxy.engine.events import Event, EventKind
from zdmproxy.engine.outcomes import Outcome
from zdmproxy.engine.runner import MigrationReport, Runner
from zdmproxy.errors import StatementTimedOut, StepFailed
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy


async def test_syntax_error_fails_at_once_with_its_position(dsn: str, tmp_path: Path) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(ITEMS)  # the first statement could run: its table exists
        sql = "ALTER TABLE items ADD COLUMN ok int;\nALTER TABLE items ADD COLUMN;"
        started = time.monotonic()
        result = await run_cli("apply", "--dsn", dsn, "--id", "bad", sql=sql, tmp_path=tmp_path)
        assert result.code == 1
        assert "line 2, column 29" in result.stderr and 'syntax error at or near ";"' in result.stderr
        assert time.monotonic() - started < 10  # no retries, no waiting
        # Nothing ran: the first, valid statement was not applied either.
        assert not await admin.fetchval(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'ok'"
        )
    finally:
        await admin.close()


async def test_missing_table_fails_at_once(dsn: str) -> None:
    report = MigrationReport("missing")
    events: list[Event] = []
    runner = Runner(dsn, "missing", MigrationPolicy(), sink=events.append)
    with pytest.raises(StepFailed) as failure:
        await runner.run(make_plan("ALTER TABLE nope ADD COLUMN x int"), report)
    assert failure.value.pg is not None and failure.value.pg.sqlstate == "42P01"
    assert [a.outcome for a in report.steps[0].attempts] == [Outcome.FAILED]
    assert [e.kind for e in events][-1] == EventKind.STEP_FAILED  # observable, like every decision
    assert "nope" in events[-1].message


async def test_lock_timeout_is_retried_until_the_lock_is_free(dsn: str) -> None:
    """Pre-flight is told to ignore the blocker, so attempts really hit lock_timeout (55P03)."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items")
    report, task = start_run(
        dsn,
        "retry",
        "ALTER TABLE items ADD COLUMN x int",
        lock_timeout_ms=100,
        lock_timeout_max_ms=100,
        **QUEUE_ANYWAY,
    )
    try:
        async with asyncio.timeout(20):
            while len(report.steps) == 0 or len(report.steps[0].attempts) < 2:
                await asyncio.sleep(0.01)
        await blocker.execute("COMMIT")
        await asyncio.wait_for(task, 20)
    finally:
        await blocker.close()
        await admin.close()
    outcomes = [a.outcome for a in report.steps[0].attempts]
    assert outcomes[:2] == [Outcome.LOCK_TIMEOUT, Outcome.LOCK_TIMEOUT]
    assert outcomes[-1] == Outcome.SUCCEEDED
    assert report.steps[0].attempts[0].error.sqlstate == "55P03"  # type: ignore[union-attr]


async def test_watchdog_cancels_our_wait_when_traffic_queues_behind_it(dsn: str) -> None:
    """lock_timeout is long; a reader queued behind our AccessExclusiveLock request makes the
    watchdog cancel us within the budget, and the reader goes on."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items")
    reader = await asyncpg.connect(dsn)
    report, task = start_run(
        dsn,
        "dog",
        "ALTER TABLE items ADD COLUMN y int",
        lock_timeout_ms=10_000,
        lock_timeout_max_ms=10_000,
        blocker_min_age_ms=10**9,
        queue_budget_ms=50,
    )
    try:
        ddl_pid = await _first_waiting(admin, "dog")
        read = asyncio.create_task(reader.fetchval("SELECT count(*) FROM items WHERE id = 1"))
        # The reader queues behind our AccessExclusiveLock *request*, and behind nothing else
        # (the idle blocker's AccessShareLock does not conflict with the reader's).
        queued_behind = await _blocked_by(admin, reader.get_server_pid())
        started = time.monotonic()
        assert await asyncio.wait_for(read, 5) == 1
        reader_waited = time.monotonic() - started
        async with asyncio.timeout(10):
            while not report.steps[0].attempts:
                await asyncio.sleep(0.01)
        await blocker.execute("COMMIT")
        await asyncio.wait_for(task, 20)
    finally:
        await asyncio.gather(blocker.close(), reader.close())
        await admin.close()
    first = report.steps[0].attempts[0]
    assert first.outcome == Outcome.WATCHDOG_CANCELLED, first
    assert first.error is not None and first.error.sqlstate == "57014"
    assert first.duration_s < 5  # far below lock_timeout: the watchdog, not the timeout, ended it
    assert reader_waited < 1.0
    assert queued_behind == [ddl_pid]
    assert report.steps[0].outcome == Outcome.SUCCEEDED


async def test_statement_timeout_while_holding_locks_is_not_retried(dsn: str) -> None:
    """57014 without our cancel, after the locks were granted: a slow statement, not a lock wait."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    await admin.close()
    report = MigrationReport("slow")
    runner = Runner(dsn, "slow", MigrationPolicy(statement_timeout_s=0.3))
    with pytest.raises(StatementTimedOut) as failure:
        await runner.run(make_plan("UPDATE items SET n = n + 1 WHERE pg_sleep(0.01) IS NOT NULL"), report)
    assert "not retried" in failure.value.message
    assert [a.outcome for a in report.steps[0].attempts] == [Outcome.STATEMENT_TIMEOUT]


async def _first_waiting(admin: asyncpg.Connection, migration_id: str) -> int:
    """The pid of the migration's step connection once it waits for a lock."""
    async with asyncio.timeout(10):
        while True:
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'zdmproxy:' || $1 || ':%'"
                " AND wait_event_type = 'Lock'",
                migration_id,
            )
            if pid:
                return int(pid)
            await asyncio.sleep(0.005)


async def _blocked_by(admin: asyncpg.Connection, pid: int, timeout: float = 10.0) -> list[int]:
    """Who blocks ``pid``, read in the same poll that sees it blocked (a watchdog may end the
    wait a moment later)."""
    async with asyncio.timeout(timeout):
        while not (blockers := await admin.fetchval("SELECT pg_blocking_pids($1)", pid)):
            await asyncio.sleep(0.005)
    return list(blockers)


async def test_reconnect_keeps_trying_while_the_database_refuses_connections(
    dsn: str, pg_server: Any
) -> None:
    """A lost connection during a restart-like window: reconnects are refused for a while,
    the step keeps trying within its deadline instead of giving up with 69."""
    admin = await asyncpg.connect(dsn)
    server = await asyncpg.connect(pg_server.dsn())  # ALTER DATABASE runs from another database
    await admin.execute(ITEMS)
    name = await admin.fetchval("SELECT current_database()")
    blocker = await idle_blocker(dsn, "items")
    report, task = start_run(
        dsn,
        "restart",
        "ALTER TABLE items ADD COLUMN r int",
        lock_timeout_ms=10_000,
        lock_timeout_max_ms=10_000,
        backoff_max_ms=100,
        **QUEUE_ANYWAY,
    )
    try:
        pid = await _first_waiting(admin, "restart")
        await server.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'zdmproxy%' OR pid = $1",
            pid,
        )
        await blocker.close()
        async with asyncio.timeout(20):  # a few refused reconnects
            while sum(a.outcome == Outcome.CONNECTION_LOST for a in report.steps[0].attempts) < 3:
                assert not task.done(), task
                await asyncio.sleep(0.01)
        await server.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await asyncio.wait_for(task, 20)
    finally:
        await server.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await server.close()
        await admin.close()
    assert report.steps[0].outcome == Outcome.SUCCEEDED
