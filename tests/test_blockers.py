"""Idle-in-transaction blockers: reported by default, terminated only when the operator opts in;
prepared transactions: waited for and named, never terminated."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from helpers import ITEMS, idle_blocker, run_cli

from zdmproxy.engine.events import Event, EventKind
from zdmproxy.engine.outcomes import Outcome
from zdmproxy.engine.runner import MigrationReport, Runner
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy

ALTER = "ALTER TABLE items ADD COLUMN flag boolean"


@pytest.fixture
async def admin(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    await conn.execute(ITEMS)
    yield conn
    await conn.close()


@pytest.fixture
async def blocker(dsn: str, admin: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A 'reporting' session that read items and sits idle in its transaction."""
    conn = await idle_blocker(dsn, "items")
    yield conn
    await conn.close()


async def columns(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT attname FROM pg_attribute WHERE attrelid = 'items'::regclass")
    return {r["attname"] for r in rows}


async def apply(dsn: str, tmp_path: Path, *options: str) -> tuple[int, str, str]:
    result = await run_cli("apply", "--dsn", dsn, "--id", "flag", *options, sql=ALTER, tmp_path=tmp_path)
    return result.code, result.stdout, result.stderr


async def test_idle_blocker_is_reported_and_left_alone_by_default(
    dsn: str, tmp_path: Path, admin: asyncpg.Connection, blocker: asyncpg.Connection
) -> None:
    code, _, stderr = await apply(dsn, tmp_path, "--deadline-s", "1.5")
    assert code == 75, stderr  # lock budget ran out: retry later
    assert f"pid {blocker.get_server_pid()}" in stderr
    assert "app 'reporting'" in stderr and "idle in transaction" in stderr
    assert await blocker.fetchval("SELECT 1") == 1  # still alive: nobody terminated it
    assert "flag" not in await columns(admin)


async def test_opt_in_policy_terminates_old_idle_blocker(
    dsn: str, tmp_path: Path, admin: asyncpg.Connection, blocker: asyncpg.Connection
) -> None:
    pid = blocker.get_server_pid()
    code, stdout, stderr = await apply(dsn, tmp_path, "--terminate-idle-blockers-after-s", "0.5", "--json")
    assert code == 0, stderr
    assert "flag" in await columns(admin)
    assert await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0
    assert f"terminated pid {pid}" in stderr
    assert json.loads(stdout)["steps"][0]["terminated"] == [pid]


async def test_young_idle_blocker_is_not_terminated(
    dsn: str, tmp_path: Path, admin: asyncpg.Connection, blocker: asyncpg.Connection
) -> None:
    """The threshold is honoured: a blocker idle for less than it is waited for, not killed."""
    code, _, stderr = await apply(
        dsn, tmp_path, "--terminate-idle-blockers-after-s", "600", "--deadline-s", "1"
    )
    assert code == 75, stderr
    assert await blocker.fetchval("SELECT 1") == 1
    assert "flag" not in await columns(admin)


async def test_blockers_hidden_by_missing_privileges_are_waited_for(
    dsn: str, tmp_path: Path, admin: asyncpg.Connection
) -> None:
    """A role without pg_read_all_stats sees no age or state for the superuser's idle
    session: pre-flight must still wait for it rather than queue behind it."""
    await admin.execute(
        "DO $$ BEGIN CREATE ROLE migrator LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        "ALTER TABLE items OWNER TO migrator;"
        "CREATE SCHEMA zdmproxy AUTHORIZATION migrator"  # where the journal lives
    )
    blocker = await idle_blocker(dsn, "items")  # a superuser's session
    try:
        result = await run_cli(
            "apply",
            "--dsn",
            dsn.replace("postgres@", "migrator@", 1),
            "--id",
            "flag",
            "--deadline-s",
            "1.5",
            "--json",
            sql=ALTER,
            tmp_path=tmp_path,
        )
        assert result.code == 75, result.stderr
        assert "details hidden" in result.stderr
        assert json.loads(result.stdout)["steps"][0]["attempts"] == []  # it never queued
        assert await blocker.fetchval("SELECT 1") == 1
    finally:
        await blocker.close()


@pytest.mark.parametrize(
    ("role", "grant", "why"),
    [
        ("migrator_unseeing", "", "whether it is idle is hidden from this role: grant it pg_read_all_stats"),
        ("migrator_signalling", "GRANT pg_read_all_stats, pg_signal_backend TO {}", "not permitted"),
    ],
)
async def test_the_opt_in_termination_says_why_it_could_not_end_a_blocker(
    dsn: str, tmp_path: Path, admin: asyncpg.Connection, role: str, grant: str, why: str
) -> None:
    """--terminate-idle-blockers-after-s asked for, and the superuser's idle session not ended:
    the role cannot see that it is idle (no pg_read_all_stats), or may not end it (only a
    superuser ends a superuser's session). The step gives up saying which, not only "blocked"."""
    await admin.execute(
        # a role of its own: the grants must not reach the tests that need a role without them
        f"DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        f"ALTER TABLE items OWNER TO {role};"
        f"CREATE SCHEMA zdmproxy AUTHORIZATION {role};" + grant.format(role)
    )
    blocker = await idle_blocker(dsn, "items")  # a superuser's session
    try:
        result = await run_cli(
            "apply",
            "--dsn",
            dsn.replace("postgres@", f"{role}@", 1),
            "--id",
            "flag",
            "--deadline-s",
            "2",
            "--terminate-idle-blockers-after-s",
            "0.2",
            sql=ALTER,
            tmp_path=tmp_path,
        )
        assert result.code == 75, result.stderr
        assert f"Not terminated (terminate_idle_blockers_after_s): pid {blocker.get_server_pid()}: {why}" in (
            result.stderr
        ), result.stderr
        assert await blocker.fetchval("SELECT 1") == 1
    finally:
        await blocker.close()


async def prepare_transaction(dsn: str, table: str) -> str:
    """A transaction that read ``table`` and was PREPAREd: it keeps its AccessShareLock with no
    session at all (pg_locks.pid is NULL) until COMMIT/ROLLBACK PREPARED. Returned once it is
    older than pre-flight's blocker_min_age (200 ms), so that pre-flight counts it as long."""
    gid = f"zdm-test-{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"BEGIN; SELECT count(*) FROM {table}; PREPARE TRANSACTION '{gid}'")
        async with asyncio.timeout(10):
            while not await conn.fetchval(
                "SELECT prepared < clock_timestamp() - interval '300 ms'"
                " FROM pg_prepared_xacts WHERE gid = $1",
                gid,
            ):
                await asyncio.sleep(0.02)
    finally:
        await conn.close()
    return gid


async def end_prepared(admin: asyncpg.Connection, gid: str, how: str = "ROLLBACK") -> None:
    """Prepared transactions outlive every session and would stop the database's DROP."""
    if await admin.fetchval("SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", gid):
        await admin.execute(f"{how} PREPARED '{gid}'")


async def test_prepared_transaction_is_waited_for_named_and_never_terminated(
    dsn: str, tmp_path: Path, admin: asyncpg.Connection
) -> None:
    """Its locks have no pid: a join to pg_stat_activity alone loses them, and the ALTER queues
    behind a lock nobody is reported to hold. Pre-flight must wait for it, name it when the
    deadline runs out, and never try to end it (even with terminating idle blockers opted in)."""
    gid = await prepare_transaction(dsn, "items")
    try:
        code, stdout, stderr = await apply(
            dsn, tmp_path, "--deadline-s", "1.5", "--terminate-idle-blockers-after-s", "0.1", "--json"
        )
        assert code == 75, stderr
        database = await admin.fetchval("SELECT current_database()")
        assert f"prepared transaction '{gid}' (postgres, {database}) prepared " in stderr
        assert "AccessShareLock on items" in stderr
        step = json.loads(stdout)["steps"][0]
        assert step["attempts"] == []  # it never queued behind the prepared transaction
        assert step["terminated"] == []
        assert await admin.fetchval("SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", gid) == 1
        assert "flag" not in await columns(admin)
    finally:
        await end_prepared(admin, gid)


async def test_preflight_waits_for_a_prepared_transaction_then_runs_once_it_ends(
    dsn: str, admin: asyncpg.Connection
) -> None:
    """The wait is on the prepared transaction itself (pid 0, as pg_blocking_pids reports it,
    with its gid): when COMMIT PREPARED releases its lock, the step's only attempt runs."""
    gid = await prepare_transaction(dsn, "items")
    events: list[Event] = []
    report = MigrationReport("prepared")
    runner = Runner(dsn, "prepared", MigrationPolicy(deadline_s=60), sink=events.append)
    task = asyncio.create_task(runner.run(make_plan(ALTER), report))
    try:
        async with asyncio.timeout(20):
            while not any(e.kind is EventKind.WAITING_FOR_BLOCKERS for e in events):
                assert not task.done(), task
                await asyncio.sleep(0.01)
        waiting = next(e for e in events if e.kind is EventKind.WAITING_FOR_BLOCKERS)
        (blocker,) = waiting.blockers
        assert (blocker.pid, blocker.gid, blocker.owner, blocker.prepared) == (0, gid, "postgres", True)
        assert blocker.database == await admin.fetchval("SELECT current_database()")
        assert (blocker.mode, blocker.relation) == ("AccessShareLock", "items")
        assert f"prepared transaction '{gid}'" in waiting.message
        assert "flag" not in await columns(admin)
        await admin.execute(f"COMMIT PREPARED '{gid}'")
        await asyncio.wait_for(task, 30)
    finally:
        if not task.done():
            task.cancel()
        await end_prepared(admin, gid)
    assert "flag" in await columns(admin)
    assert [a.outcome for a in report.steps[0].attempts] == [Outcome.SUCCEEDED]
    assert [b.gid for wait in report.steps[0].waits for b in wait] == [gid]
