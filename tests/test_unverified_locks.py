"""apply takes no lock it only guessed.

A statement whose locks the catalogue knows is run with exactly those locks
taken first: GRANT, CREATE VIEW and COMMENT never wait for (or queue in front
of) a reader holding ACCESS SHARE. A statement the catalogue does not know
is refused unless unverified locks are allowed, and then runs as written,
with no LOCK TABLE before it.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from helpers import ITEMS, idle_blocker

from zdmproxy.engine.catalog import plan_script
from zdmproxy.engine.runner import Runner
from zdmproxy.errors import UnsupportedStatement
from zdmproxy.policy import MigrationPolicy
from zdmproxy.settings import load_settings

# With a guessed ACCESS EXCLUSIVE, pre-flight would wait the whole deadline for the reader.
QUICK = {"deadline_s": 3, "blocker_min_age_ms": 0}
STATEMENTS = {
    "GRANT SELECT ON items TO public": {"public.items": "AccessShareLock"},
    "CREATE VIEW cheap_items AS SELECT id, a FROM items WHERE a < 10": {"public.items": "AccessShareLock"},
    "COMMENT ON TABLE items IS 'the items'": {"public.items": "ShareUpdateExclusiveLock"},
}


@pytest.mark.parametrize("sql", list(STATEMENTS))
async def test_plan_names_the_lock_and_apply_never_blocks_a_reader(
    dsn: str, pg_server: object, sql: str
) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    reader = await idle_blocker(dsn, "items")
    try:
        plan = await plan_script(admin, sql)
        (step,) = plan.steps
        expected = STATEMENTS[sql]
        if sql.startswith("GRANT") and pg_server.version < 17:  # type: ignore[attr-defined]
            expected = {}  # no relation lock at all before 17
        held = {str(lock.relation): lock.mode.pg_name for lock in step.locks if not lock.created}
        assert held == expected
        assert step.unverified is None
        report = await asyncio.wait_for(Runner(dsn, "known", MigrationPolicy(**QUICK)).run(plan), 10)
        assert report.succeeded
        # The reader was never in the way: one attempt, no wait for blockers.
        assert len(report.steps[0].attempts) == 1 and report.steps[0].waits == []
        # ... and it can still read (nobody holds or waits for a conflicting lock).
        await reader.execute("SELECT count(*) FROM items")
    finally:
        await reader.close()
        await admin.close()


async def test_an_unverified_statement_is_refused_unless_allowed(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    sql = "DO $$ BEGIN UPDATE items SET n = n + 1 WHERE id = 1; END $$"
    try:
        plan = await plan_script(admin, sql)
        (step,) = plan.steps
        assert step.unverified is not None and step.locks == ()
        assert "not in the lock catalogue" in step.reason
        with pytest.raises(UnsupportedStatement, match="--allow-unverified-locks"):
            await Runner(dsn, "refused", MigrationPolicy()).run(plan)
        assert await admin.fetchval("SELECT n FROM items WHERE id = 1") == 0
    finally:
        await admin.close()


async def test_allowed_unverified_statement_runs_without_a_lock_first(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allowed through the environment: it runs as written, and takes no LOCK TABLE first
    (an ACCESS EXCLUSIVE would wait for the reader until the deadline)."""
    monkeypatch.setenv("ZDM_ALLOW_UNVERIFIED_LOCKS", "true")
    policy = load_settings().policy(**QUICK)
    assert policy.allow_unverified_locks
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    reader = await idle_blocker(dsn, "items")
    try:
        plan = await plan_script(admin, "DO $$ BEGIN UPDATE items SET n = n + 1 WHERE id = 1; END $$")
        report = await asyncio.wait_for(Runner(dsn, "allowed", policy).run(plan), 10)
        assert report.succeeded and len(report.steps[0].attempts) == 1
        assert await admin.fetchval("SELECT n FROM items WHERE id = 1") == 1
    finally:
        await reader.close()
        await admin.close()
