"""The engine's second pass on real servers: bounds chosen by what a step's lock blocks, the
watchdog counting only what queues behind our lock request, and attempts inside a caller's
own transaction."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import pytest
from helpers import ITEMS, QUEUE_ANYWAY, idle_blocker, start_run, wait_for_session, wait_until_blocked
from pgcluster import Cluster, find_bin_dir

from zdmproxy.engine.attempt import AttemptFailed, holds_traffic_blocking_locks, run_attempt
from zdmproxy.engine.blockers import resolve_targets
from zdmproxy.engine.events import Event, EventKind
from zdmproxy.engine.outcomes import Outcome
from zdmproxy.engine.runner import MigrationReport, Runner
from zdmproxy.engine.watchdog import Watchdog
from zdmproxy.errors import Cancelled, LockBudgetExhausted
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy


async def test_a_non_transactional_step_that_blocks_traffic_gets_the_short_lock_timeout(dsn: str) -> None:
    """VACUUM FULL cannot run in a transaction block, but its ACCESS EXCLUSIVE request queues
    every reader: it must wait no longer than a transactional ALTER would."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items")
    report, task = start_run(
        dsn,
        "vacfull",
        "VACUUM FULL items",
        lock_timeout_ms=300,
        deadline_s=2.5,
        allow_long_locks=True,  # the plan is made without the catalog: size unknown
        **QUEUE_ANYWAY,
    )
    try:
        with pytest.raises(LockBudgetExhausted):
            await asyncio.wait_for(task, 30)
        attempts = report.steps[0].attempts
        assert attempts[0].lock_timeout_ms == 300  # not the 600 s of a CONCURRENTLY build
        assert {a.outcome for a in attempts} == {Outcome.LOCK_TIMEOUT}
        assert len(attempts) >= 2
    finally:
        await blocker.close()
        await admin.close()


async def test_a_queue_behind_a_concurrently_builds_held_lock_is_reported_not_cancelled(dsn: str) -> None:
    """The build waits for an old snapshot (a virtualxid: it queues nobody by waiting); a manual
    VACUUM queues behind the ShareUpdateExclusiveLock it holds meanwhile. Cancelling the build
    would leave an INVALID index and the VACUUM would queue again: report it, keep building."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS + "CREATE TABLE other (x int);")
    snapshot = await asyncpg.connect(dsn)
    vacuum = await asyncpg.connect(dsn)
    await snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM other")
    events: list[Event] = []
    report = MigrationReport("cic")
    runner = Runner(dsn, "cic", MigrationPolicy(queue_budget_ms=50), sink=events.append)
    task = asyncio.create_task(
        runner.run(make_plan("CREATE INDEX CONCURRENTLY items_a_idx ON items (a)"), report)
    )
    vacuum_task: asyncio.Task[Any] | None = None
    try:
        async with asyncio.timeout(30):
            while not await admin.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE"
                " a.application_name = 'zdmproxy:cic:step1' AND NOT l.granted AND l.locktype = 'virtualxid'"
            ):
                await asyncio.sleep(0.005)
        vacuum_pid = await vacuum.fetchval("SELECT pg_backend_pid()")
        vacuum_task = asyncio.create_task(vacuum.execute("VACUUM items"))
        await wait_until_blocked(admin, vacuum_pid)
        async with asyncio.timeout(30):  # the VACUUM has now waited well past the budget
            while not any(e.kind is EventKind.QUEUED_BEHIND_HELD_LOCK for e in events):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # (the watchdog gets several more polls to misbehave in)
        await snapshot.execute("ROLLBACK")
        await asyncio.wait_for(task, 30)
        await asyncio.wait_for(vacuum_task, 30)
        assert [a.outcome for a in report.steps[0].attempts] == [Outcome.SUCCEEDED]
        (queued,) = [e for e in events if e.kind is EventKind.QUEUED_BEHIND_HELD_LOCK]
        assert vacuum_pid in {b.pid for b in queued.blockers}
        assert await admin.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_a_idx'::regclass"
        )
    finally:
        for pending in (task, vacuum_task):
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
        for conn in (snapshot, vacuum, admin):
            await conn.close()


async def _waiting_lock(dsn: str) -> tuple[asyncpg.Connection, asyncpg.Connection, asyncio.Task[Any], int]:
    """A session waiting, with no lock_timeout, for ACCESS EXCLUSIVE behind an idle reader."""
    blocker = await idle_blocker(dsn, "items")
    waiter = await asyncpg.connect(dsn)
    pid = await waiter.fetchval("SELECT pg_backend_pid()")
    task = asyncio.create_task(waiter.execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
    return blocker, waiter, task, int(pid)


async def test_the_watchdog_bounds_a_traffic_blocking_wait_that_lock_timeout_does_not(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker, waiter, task, pid = await _waiting_lock(dsn)
    watch = await asyncpg.connect(dsn)
    try:
        await wait_until_blocked(admin, pid)
        async with Watchdog(watch, pid, budget_ms=10**6, interval_ms=10, wait_limit_ms=200) as dog:
            with pytest.raises(asyncpg.QueryCanceledError):
                await asyncio.wait_for(task, 10)
        assert dog.cancelled
    finally:
        for conn in (blocker, waiter, watch, admin):
            await conn.close()


async def test_losing_the_watch_connection_ends_a_wait_nothing_else_bounds(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker, waiter, task, pid = await _waiting_lock(dsn)
    watch = await asyncpg.connect(dsn)
    try:
        await wait_until_blocked(admin, pid)
        async with Watchdog(
            watch, pid, budget_ms=10**6, interval_ms=10, wait_limit_ms=60_000, cancel_statement=task.cancel
        ) as dog:
            await asyncio.sleep(0.05)
            await admin.execute("SELECT pg_terminate_backend($1)", watch.get_server_pid())
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        assert dog.lost and dog.cancelled
    finally:
        for conn in (blocker, waiter, watch, admin):
            with contextlib.suppress(Exception):
                await conn.close()


async def test_an_attempt_inside_the_callers_transaction_uses_a_savepoint(dsn: str) -> None:
    """The wire-protocol front door will run steps inside a client's own transaction: a failed
    attempt rolls back to its savepoint, leaving the transaction (and its earlier work) usable;
    the caller's own timeouts come back afterwards."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS + "CREATE TABLE ledger (x int);")
    client = await asyncpg.connect(dsn)
    watch = await asyncpg.connect(dsn)
    blocker = await idle_blocker(dsn, "items")
    policy = MigrationPolicy(lock_timeout_ms=200, **QUEUE_ANYWAY)
    (step,) = make_plan("ALTER TABLE items ADD COLUMN z int").steps
    pid = await client.fetchval("SELECT pg_backend_pid()")
    try:
        await client.execute("BEGIN; SET LOCAL lock_timeout = '7s'; INSERT INTO ledger VALUES (1)")
        targets = await resolve_targets(watch, step.locks)
        with pytest.raises(AttemptFailed) as failed:
            await run_attempt(client, watch, step, targets, policy, 1, 10, pid=pid, in_transaction=True)
        assert failed.value.record.outcome is Outcome.LOCK_TIMEOUT
        assert await client.fetchval("SELECT count(*) FROM ledger") == 1  # the transaction goes on
        assert not await holds_traffic_blocking_locks(client)  # so trying again is allowed
        await blocker.close()
        record = await run_attempt(client, watch, step, targets, policy, 2, 10, pid=pid, in_transaction=True)
        assert record.outcome is Outcome.SUCCEEDED
        assert await client.fetchval("SHOW lock_timeout") == "7s"
        assert await holds_traffic_blocking_locks(client)  # ACCESS EXCLUSIVE until the caller commits
        await client.execute("COMMIT")
        assert await admin.fetchval("SELECT count(*) FROM pg_attribute WHERE attname = 'z'") == 1
        assert await admin.fetchval("SELECT count(*) FROM ledger") == 1
    finally:
        for conn in (blocker, client, watch, admin):
            await conn.close()


async def test_events_carry_their_data_as_fields_to_an_async_sink(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items")
    events: list[Event] = []

    async def sink(event: Event) -> None:  # the journal's, or an HTTP stream's, would write
        await asyncio.sleep(0)
        events.append(event)

    policy = MigrationPolicy(lock_timeout_ms=200, deadline_s=1.0, **QUEUE_ANYWAY)
    runner = Runner(dsn, "fields", policy, sink=sink)
    try:
        with pytest.raises(LockBudgetExhausted):
            await asyncio.wait_for(runner.run(make_plan("ALTER TABLE items ADD COLUMN f int")), 30)
        failed = [e for e in events if e.kind is EventKind.ATTEMPT_FAILED]
        assert failed and failed[0].outcome == "lock_timeout" and failed[0].sqlstate == "55P03"
        assert failed[0].lock_timeout_ms == 200 and failed[0].attempt == 1
        assert events[-1].kind is EventKind.STEP_FAILED
    finally:
        await blocker.close()
        await admin.close()


async def _waiting_step(dsn: str, migration_id: str) -> tuple[MigrationReport, asyncio.Task[Any], int]:
    """A step waiting for its lock behind an idle reader (pre-flight told to queue anyway)."""
    report, task = start_run(
        dsn,
        migration_id,
        "ALTER TABLE items ADD COLUMN z int",
        lock_timeout_ms=10_000,
        lock_timeout_max_ms=10_000,
        **QUEUE_ANYWAY,
    )
    admin = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(15):
            while not (
                pid := await admin.fetchval(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    f"zdmproxy:{migration_id}:step1",
                )
            ):
                await asyncio.sleep(0.005)
    finally:
        await admin.close()
    return report, task, int(pid)


async def test_a_backend_terminated_by_an_operator_stops_the_step(dsn: str) -> None:
    """pg_terminate_backend on our step while the server stays up is someone's decision: stop
    (exit 5 from the CLI), do not reconnect and try again behind their back."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items")
    report, task, pid = await _waiting_step(dsn, "term")
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(Cancelled, match="terminated our backend"):
            await asyncio.wait_for(task, 20)
        (attempt,) = report.steps[0].attempts
        assert attempt.outcome is Outcome.CONNECTION_LOST
        assert attempt.error is not None and attempt.error.sqlstate == "57P01"
        assert await admin.fetchval("SELECT count(*) FROM pg_attribute WHERE attname = 'z'") == 0
    finally:
        await blocker.close()
        await admin.close()


@pytest.mark.parametrize("major", [15, 18])
async def test_a_server_restart_is_waited_out_and_the_step_retried(major: int) -> None:
    """A restart also ends our backend with 57P01, but the server comes back with a new start
    time: that is not an operator's decision, so the step reconnects and runs."""
    bin_dir = find_bin_dir(major)
    if bin_dir is None:
        pytest.skip(f"PostgreSQL {major} not installed")
    cluster = Cluster(bin_dir)  # its own server: restarting the shared one would disturb others
    await asyncio.to_thread(cluster.start)
    try:
        dsn = cluster.dsn()
        admin = await asyncpg.connect(dsn)
        await admin.execute(ITEMS)
        await admin.close()
        blocker = await idle_blocker(dsn, "items")
        report, task, _ = await _waiting_step(dsn, "restart")
        await asyncio.to_thread(cluster.restart)
        await asyncio.wait_for(task, 60)
        outcomes = [a.outcome for a in report.steps[0].attempts]
        # The first attempt ends by the step's own 57P01, or by the watchdog losing its
        # connection first (it then cancels the wait it can no longer watch): either way the
        # step comes back after the restart instead of stopping as for an operator's terminate.
        assert outcomes[0] in (Outcome.CONNECTION_LOST, Outcome.WATCHDOG_CANCELLED)
        assert Outcome.CONNECTION_LOST in outcomes and outcomes[-1] is Outcome.SUCCEEDED
        with contextlib.suppress(Exception):
            await blocker.close()
        admin = await asyncpg.connect(dsn)
        assert await admin.fetchval("SELECT count(*) FROM pg_attribute WHERE attname = 'z'") == 1
        await admin.close()
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_the_watchdog_names_a_prepared_transaction_it_waits_behind(dsn: str) -> None:
    """pg_blocking_pids calls a prepared transaction pid 0; the attempt's record must still name
    it (by its gid), not come back with nobody in the way."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    preparer = await asyncpg.connect(dsn)
    await preparer.execute("BEGIN; LOCK TABLE items IN ROW EXCLUSIVE MODE; PREPARE TRANSACTION 'stuck-1'")
    report, task = start_run(
        dsn, "prep", "ALTER TABLE items ADD COLUMN p int", lock_timeout_ms=300, deadline_s=1.0, **QUEUE_ANYWAY
    )
    try:
        with pytest.raises(LockBudgetExhausted):
            await asyncio.wait_for(task, 30)
        named = {b.gid for a in report.steps[0].attempts for b in a.blockers}
        assert "stuck-1" in named
    finally:
        await admin.execute("ROLLBACK PREPARED 'stuck-1'")
        await preparer.close()
        await admin.close()


async def test_a_step_whose_locks_block_no_traffic_runs_past_the_short_statement_timeout(dsn: str) -> None:
    """VALIDATE CONSTRAINT holds SHARE UPDATE EXCLUSIVE while it scans: reads and writes pass
    (the planner splits ADD CONSTRAINT in two for exactly that), so its run is bounded like a
    CONCURRENTLY build's, not cut at statement_timeout_s as a traffic-blocking step's must be."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(
        "CREATE TABLE slow_rows (id int PRIMARY KEY);"
        "INSERT INTO slow_rows SELECT generate_series(1, 300);"
        # IMMUTABLE is a lie PostgreSQL accepts: each row's check takes 10 ms, 3 s in all
        "CREATE FUNCTION slow_ok(int) RETURNS bool IMMUTABLE LANGUAGE sql"
        " AS 'SELECT pg_sleep(0.01) IS NOT NULL';"
        "ALTER TABLE slow_rows ADD CONSTRAINT slow CHECK (slow_ok(id)) NOT VALID"
    )
    writer = await asyncpg.connect(dsn)
    report, task = start_run(
        dsn, "validate", "ALTER TABLE slow_rows VALIDATE CONSTRAINT slow", statement_timeout_s=0.5
    )
    try:
        async with asyncio.timeout(10):  # the validation is scanning: a write goes through meanwhile
            while not await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE slow_rows VALIDATE%'"
                " AND state = 'active' AND wait_event IS DISTINCT FROM 'Lock'"
            ):
                await asyncio.sleep(0.01)
        await asyncio.wait_for(writer.execute("INSERT INTO slow_rows VALUES (0)"), 2.0)
        await asyncio.wait_for(task, 30)
        assert [a.outcome for a in report.steps[0].attempts] == [Outcome.SUCCEEDED]
        assert await admin.fetchval("SELECT convalidated FROM pg_constraint WHERE conname = 'slow'")
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await writer.close()
        await admin.close()


async def test_sessions_queued_behind_a_transactional_steps_row_lock_wait_are_not_left_waiting(
    dsn: str,
) -> None:
    """An UPDATE step waits for a row an application transaction holds (a transactionid wait,
    not a relation lock) while it holds the rows it already changed: writers of those queue
    behind our wait. A transactional step rolls back cleanly, so the watchdog cancels that wait
    within the budget as it would a relation wait; it is not a CONCURRENTLY build's wait for
    older transactions, which is only reported."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    app = await asyncpg.connect(dsn)
    writer = await asyncpg.connect(dsn)
    await app.execute("BEGIN; UPDATE items SET n = n + 1 WHERE id = 5000")  # then idle
    report, task = start_run(
        dsn, "rows", "UPDATE items SET n = n + 10 WHERE id <= 5000", lock_timeout_ms=5000, deadline_s=30
    )
    try:
        async with asyncio.timeout(10):  # our UPDATE has changed rows 1.. and waits for row 5000
            while not await admin.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE a.application_name = 'zdmproxy:rows:step1' AND NOT l.granted"
                " AND l.locktype = 'transactionid'"
            ):
                await asyncio.sleep(0.005)
        started = time.monotonic()
        await asyncio.wait_for(writer.execute("UPDATE items SET n = n + 100 WHERE id = 1"), 10)
        waited_s = time.monotonic() - started
        await app.execute("COMMIT")
        await asyncio.wait_for(task, 30)
        attempts = report.steps[0].attempts
        assert attempts[0].outcome is Outcome.WATCHDOG_CANCELLED and attempts[-1].outcome is Outcome.SUCCEEDED
        assert waited_s < 2.5  # not lock_timeout's 5 s (the budget is 0.1 s; 2 shared cores are slow)
        assert await admin.fetchval("SELECT n FROM items WHERE id = 1") == 110
        assert await admin.fetchval("SELECT n FROM items WHERE id = 5000") == 11
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        for conn in (app, writer, admin):
            await conn.close()


async def test_a_callers_transaction_that_someone_waits_for_is_not_retried_in(dsn: str) -> None:
    """The front door relays `BEGIN; UPDATE items ... WHERE id = 1; ALTER TABLE items ...`: the
    client's transaction holds only ROW EXCLUSIVE, but a writer of row 1 waits for it. Trying
    the ALTER again inside that transaction would keep the writer waiting: the retry decision
    says no while anyone waits for us, and yes once nobody does."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    client = await asyncpg.connect(dsn)
    writer = await asyncpg.connect(dsn)
    try:
        await client.execute("BEGIN; UPDATE items SET n = n + 1 WHERE id = 1")
        assert not await holds_traffic_blocking_locks(client)  # nobody waits for row 1 yet
        write = asyncio.create_task(writer.execute("UPDATE items SET n = n + 1 WHERE id = 1"))
        await wait_until_blocked(admin, writer.get_server_pid())
        assert await holds_traffic_blocking_locks(client)
        await client.execute("COMMIT")
        await asyncio.wait_for(write, 10)
    finally:
        for conn in (client, writer, admin):
            await conn.close()


async def test_the_roles_session_limits_do_not_end_a_step_that_takes_longer(dsn: str) -> None:
    """A database (or role) with transaction_timeout (17+) and idle_session_timeout below what a
    step takes: the server would end the step session (FATAL 25P04; 57P05 while pre-flight
    waits) and, since that reads as a lost connection, end every retry of it the same way.
    The step session is bounded by the engine's own timeouts instead."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(
        "CREATE TABLE slow_rows (id int PRIMARY KEY);"
        "INSERT INTO slow_rows SELECT generate_series(1, 100);"
        "CREATE FUNCTION slow_ok(int) RETURNS bool IMMUTABLE LANGUAGE sql"
        " AS 'SELECT pg_sleep(0.01) IS NOT NULL';"  # 1 s to validate
        "ALTER TABLE slow_rows ADD CONSTRAINT slow CHECK (slow_ok(id)) NOT VALID"
    )
    database = await admin.fetchval("SELECT current_database()")
    limits = ["idle_session_timeout", "idle_in_transaction_session_timeout"]
    if await admin.fetchval("SELECT count(*) FROM pg_settings WHERE name = 'transaction_timeout'"):
        limits.append("transaction_timeout")  # 17+
    for limit in limits:
        await admin.execute(f'ALTER DATABASE "{database}" SET {limit} = 300')
    # SHARE conflicts with VALIDATE's SHARE UPDATE EXCLUSIVE: pre-flight waits, the session idles
    blocker = await asyncpg.connect(dsn)
    await blocker.execute(
        "".join(f"SET {limit} = 0;" for limit in limits) + "BEGIN; LOCK TABLE slow_rows IN SHARE MODE"
    )
    await asyncio.sleep(0.3)  # older than blocker_min_age_ms: waited for, not queued behind
    report, task = start_run(dsn, "limits", "ALTER TABLE slow_rows VALIDATE CONSTRAINT slow", deadline_s=8)
    try:
        step_pid = await wait_for_session(admin, "zdmproxy:limits:")
        await asyncio.sleep(1.0)
        # the step session (and the run lock it holds) outlived idle_session_timeout in pre-flight
        assert await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", step_pid) == 1
        await blocker.execute("COMMIT")
        await asyncio.wait_for(task, 30)
        assert [a.outcome for a in report.steps[0].attempts] == [Outcome.SUCCEEDED]
        assert await admin.fetchval("SELECT convalidated FROM pg_constraint WHERE conname = 'slow'")
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await blocker.close()
        await admin.close()
