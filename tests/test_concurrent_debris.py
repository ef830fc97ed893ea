"""A failed CREATE INDEX CONCURRENTLY leaves an INVALID index: it is dropped before the retry."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from helpers import ITEMS, start_run

from zdmproxy.engine.outcomes import Outcome
from zdmproxy.engine.runner import MigrationReport, Runner
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy

INDEX_STATE = """
SELECT ix.indisvalid FROM pg_index ix WHERE ix.indexrelid = to_regclass('items_a_idx')
"""


async def test_invalid_index_from_a_failed_build_is_dropped_and_rebuilt(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS + "CREATE TABLE other (id int); INSERT INTO other VALUES (1);")
    # An old snapshot anywhere in the database makes CIC wait at "waiting for old snapshots".
    snapshot = await asyncpg.connect(dsn)
    await snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM other")
    report, task = start_run(
        dsn,
        "cic",
        "CREATE INDEX CONCURRENTLY items_a_idx ON items (a)",
        concurrent_lock_timeout_s=0.3,
        backoff_max_ms=200,
    )
    try:
        async with asyncio.timeout(30):
            while not (report.steps and report.steps[0].debris_dropped):
                assert not task.done(), task
                await asyncio.sleep(0.01)
        await snapshot.execute("COMMIT")
        await asyncio.wait_for(task, 30)
        assert await admin.fetchval(INDEX_STATE) is True
    finally:
        await snapshot.close()
        await admin.close()
    step = report.steps[0]
    assert step.attempts[0].outcome == Outcome.LOCK_TIMEOUT
    assert step.debris_dropped and step.debris_dropped[0].endswith("items_a_idx")
    assert step.outcome == Outcome.SUCCEEDED
    # The snapshot holder is named as what the build waited for.
    assert any(b.pid == snapshot.get_server_pid() for b in step.attempts[0].blockers)


INVALID_INDEXES = """
SELECT c.relname FROM pg_index ix JOIN pg_class c ON c.oid = ix.indexrelid
 WHERE ix.indrelid = 'items'::regclass AND NOT ix.indisvalid
"""


async def test_ccnew_copies_from_a_failed_reindex_are_dropped(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS + "CREATE INDEX items_a_idx ON items (a); CREATE TABLE other (id int);")
    # A manual REINDEX CONCURRENTLY that timed out earlier left items_a_idx_ccnew behind.
    snapshot = await asyncpg.connect(dsn)
    await snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM other")
    await admin.execute("SET lock_timeout = 300")
    with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
        await admin.execute("REINDEX INDEX CONCURRENTLY items_a_idx")
    assert [r["relname"] for r in await admin.fetch(INVALID_INDEXES)] == ["items_a_idx_ccnew"]
    await snapshot.execute("COMMIT")
    await snapshot.close()
    report = MigrationReport("ric")
    try:
        await Runner(dsn, "ric", MigrationPolicy()).run(
            make_plan("REINDEX INDEX CONCURRENTLY items_a_idx"), report
        )
        assert await admin.fetch(INVALID_INDEXES) == []
    finally:
        await admin.close()
    assert report.steps[0].debris_dropped == ["items_a_idx_ccnew"]
    assert report.steps[0].outcome == Outcome.SUCCEEDED


DETACH_FIXTURE = """
CREATE TABLE logs (id bigint, day int) PARTITION BY RANGE (day);
CREATE TABLE logs_1 PARTITION OF logs FOR VALUES FROM (1) TO (10);
CREATE TABLE logs_2 PARTITION OF logs FOR VALUES FROM (10) TO (20);
INSERT INTO logs SELECT g, 1 + g % 19 FROM generate_series(1, 1000) g;
"""


async def test_interrupted_concurrent_detach_is_finalized(dsn: str) -> None:
    """A timed-out DETACH ... CONCURRENTLY leaves the partition detach-pending; the retry must
    FINALIZE it, since running the statement again fails."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(DETACH_FIXTURE)
    reader = await asyncpg.connect(dsn)  # uses the parent: the detach waits for it to end
    await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM logs")
    # Pre-flight would rightly wait for the reader instead; told not to, the detach times out.
    report, task = start_run(
        dsn,
        "detach",
        "ALTER TABLE logs DETACH PARTITION logs_1 CONCURRENTLY",
        concurrent_lock_timeout_s=0.3,
        backoff_max_ms=200,
        blocker_min_age_ms=10**9,
    )
    try:
        async with asyncio.timeout(30):
            while not (report.steps and len(report.steps[0].attempts) >= 2):
                assert not task.done(), task
                await asyncio.sleep(0.01)
        await reader.execute("COMMIT")
        await asyncio.wait_for(task, 30)
        still_attached = await admin.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'logs_1'::regclass"
        )
    finally:
        await reader.close()
        await admin.close()
    assert still_attached == 0
    step = report.steps[0]
    assert step.attempts[0].outcome == Outcome.LOCK_TIMEOUT
    assert step.outcome == Outcome.SUCCEEDED
