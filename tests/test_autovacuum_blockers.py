"""Autovacuum in the way, for real: a worker held on a table by table-level cost settings is
cancelled by pre-flight when PostgreSQL itself would cancel it, and waited for (never cancelled)
when it vacuums to prevent wraparound; the decision rests on the catalog, not on the worker's
query text, which ``track_activities = off`` empties.

These tests run on a cluster of their own with autovacuum on (the shared test clusters keep it
off, so that no worker ever appears in another test's way). A worker is made to crawl with
``autovacuum_vacuum_cost_limit = 1`` and ``autovacuum_vacuum_cost_delay = 100`` (ms): it sleeps
at least 100 ms per page, so a 1,700-page table keeps it busy for minutes, far longer than any
test here. A real anti-wraparound vacuum is produced by lowering the table's
``autovacuum_freeze_max_age`` to PostgreSQL's minimum (100,000) and consuming that many xids
(under a second on this machine), with ``autovacuum_enabled = false`` so that only a
wraparound vacuum can ever run on it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from pgcluster import Cluster, candidate_bin_dir, find_bin_dir

from zdmproxy.engine.blockers import (
    Target,
    find_blockers,
    is_cancellable_autovacuum,
    resolve_targets,
    vacuum_for_wraparound,
)
from zdmproxy.engine.events import Blocker, Event, EventKind
from zdmproxy.engine.outcomes import Outcome
from zdmproxy.engine.runner import MigrationReport, Runner
from zdmproxy.errors import LockBudgetExhausted
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.locks import LockMode, LockRequest, RelationName

AUTOVACUUM_ON = {"autovacuum": "on", "autovacuum_naptime": "1"}
CRAWL = "autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1"
# lock_timeout below deadlock_timeout (1 s): PostgreSQL's own cancel of a blocking autovacuum
# (after deadlock_timeout) can never happen, so a cancelled worker was cancelled by pre-flight.
POLICY: dict[str, Any] = {"lock_timeout_ms": 200, "lock_timeout_max_ms": 200}


def _versions() -> list[Any]:
    params = []
    for major in (15, 18):
        missing = f"PostgreSQL {major} not installed: no {candidate_bin_dir(major)}"
        marks = [] if find_bin_dir(major) else [pytest.mark.skip(reason=missing)]
        params.append(pytest.param(major, id=f"pg{major}", marks=marks))
    return params


@pytest.fixture(scope="module", params=_versions())
def av_server(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    bin_dir = find_bin_dir(request.param)
    assert bin_dir is not None
    cluster = Cluster(bin_dir, settings=AUTOVACUUM_ON)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=[True, False], ids=["activity-reported", "track_activities-off"])
async def av_dsn(av_server: Cluster, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh database; with track_activities off for it (autovacuum workers read the
    database's settings too) a worker reports no query text and no progress."""
    name = f"zdm_av_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(av_server.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        if not request.param:
            await admin.execute(f'ALTER DATABASE "{name}" SET track_activities = off')
    finally:
        await admin.close()
    yield av_server.dsn(name)
    admin = await asyncpg.connect(av_server.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # ends its workers too
    finally:
        await admin.close()


async def crawling_worker(conn: asyncpg.Connection, table: str, timeout: float = 60) -> int:
    """The pid of the autovacuum worker holding ``table``'s ShareUpdateExclusiveLock, once its
    transaction is older than pre-flight's blocker_min_age (when the age can be read)."""
    async with asyncio.timeout(timeout):
        while True:
            pid = await conn.fetchval(
                "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'relation' AND l.relation = $1::regclass AND l.granted"
                "   AND l.mode = 'ShareUpdateExclusiveLock' AND a.backend_type = 'autovacuum worker'"
                "   AND coalesce(a.xact_start < clock_timestamp() - interval '500 ms', true)",
                table,
            )
            if pid is not None:
                return int(pid)
            await asyncio.sleep(0.05)


async def holds_lock(conn: asyncpg.Connection, pid: int, table: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND relation = $2::regclass AND granted",
            pid,
            table,
        )
    )


async def blockers_of(dsn: str, table: str) -> list[Blocker]:
    """What pre-flight sees for an AccessExclusiveLock on ``table``."""
    conn = await asyncpg.connect(dsn)
    try:
        targets: list[Target] = await resolve_targets(
            conn, [LockRequest(RelationName("public", table), LockMode.ACCESS_EXCLUSIVE)]
        )
        return await find_blockers(conn, targets, [conn.get_server_pid()])
    finally:
        await conn.close()


async def test_autovacuum_in_the_way_is_cancelled_and_the_step_says_so(
    av_server: Cluster, av_dsn: str
) -> None:
    conn = await asyncpg.connect(av_dsn)
    try:
        await conn.execute(
            f"CREATE TABLE crawl (id int, pad text) WITH ({CRAWL}, autovacuum_vacuum_threshold = 0,"
            " autovacuum_vacuum_scale_factor = 0, autovacuum_analyze_threshold = 2000000000);"
            "INSERT INTO crawl SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g;"
            "DELETE FROM crawl WHERE id % 2 = 0"
        )
        worker = await crawling_worker(conn, "crawl")
        (seen,) = await blockers_of(av_dsn, "crawl")
        assert (seen.pid, seen.backend_type, seen.wraparound) == (worker, "autovacuum worker", False)
        assert is_cancellable_autovacuum(seen)

        events: list[Event] = []
        report = MigrationReport("av")
        runner = Runner(av_dsn, "av", MigrationPolicy(**POLICY, deadline_s=20), sink=events.append)
        await runner.run(make_plan("ALTER TABLE crawl ADD COLUMN flag boolean"), report)

        cancelled = [e for e in events if e.kind is EventKind.AUTOVACUUM_CANCELLED]
        assert cancelled and cancelled[0].blockers[0].pid == worker, events
        assert f"cancelled pid {worker}" in cancelled[0].message
        assert "(autovacuum worker)" in cancelled[0].message
        assert report.steps[0].outcome is Outcome.SUCCEEDED
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'crawl'::regclass AND attname = 'flag'"
            )
            == 1
        )
        assert not await holds_lock(conn, worker, "crawl")
        # PostgreSQL's word for it: the worker's vacuum of this very table ended by a cancel.
        database = await conn.fetchval("SELECT current_database()")
        log = av_server.log_file.read_text(errors="replace")
        assert f"[{worker}] ERROR:  canceling autovacuum task" in log
        assert f'automatic vacuum of table "{database}.public.crawl"' in log
    finally:
        await conn.close()


async def test_wraparound_autovacuum_is_waited_for_never_cancelled(av_dsn: str) -> None:
    conn = await asyncpg.connect(av_dsn)
    try:
        await conn.execute(
            f"CREATE TABLE wrap (id int, pad text) WITH ({CRAWL}, autovacuum_enabled = false,"
            " autovacuum_freeze_max_age = 100000);"
            "INSERT INTO wrap SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g;"
            "CREATE PROCEDURE burn(n int) LANGUAGE plpgsql AS"
            " $$ BEGIN FOR i IN 1..n LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$"
        )
        with pytest.raises(asyncpg.InvalidParameterValueError):  # 100,000 is as low as it goes
            await conn.execute("ALTER TABLE wrap SET (autovacuum_freeze_max_age = 99999)")
        age = await conn.fetchval("SELECT age(relfrozenxid) FROM pg_class WHERE oid = 'wrap'::regclass")
        await conn.execute(f"CALL burn({100_000 - age + 10})")
        assert (
            await conn.fetchval("SELECT age(relfrozenxid) FROM pg_class WHERE oid = 'wrap'::regclass")
            > 100_000
        )
        worker = await crawling_worker(conn, "wrap")
        (seen,) = await blockers_of(av_dsn, "wrap")
        assert (seen.pid, seen.backend_type, seen.wraparound) == (worker, "autovacuum worker", True)
        assert not is_cancellable_autovacuum(seen)
        reported = "(to prevent wraparound)" in seen.query  # the worker's own words, if readable
        track = await conn.fetchval("SHOW track_activities")
        assert reported == (track == "on"), seen.query

        events: list[Event] = []
        report = MigrationReport("wrap")
        runner = Runner(av_dsn, "wrap", MigrationPolicy(**POLICY, deadline_s=3), sink=events.append)
        with pytest.raises(LockBudgetExhausted) as failure:
            await runner.run(make_plan("ALTER TABLE wrap ADD COLUMN flag boolean"), report)

        assert not [e for e in events if e.kind is EventKind.AUTOVACUUM_CANCELLED]
        waiting = [e for e in events if e.kind is EventKind.WAITING_FOR_BLOCKERS]
        assert waiting and [b.pid for b in waiting[0].blockers] == [worker]
        assert f"pid {worker}" in failure.value.message
        assert "vacuuming to prevent wraparound (never cancelled)" in failure.value.message
        assert report.steps[0].attempts == []  # waited for it without ever queueing behind it
        assert await holds_lock(conn, worker, "wrap")  # still at work
    finally:
        await conn.close()


def _row(vacuuming: bool | None, xid_age: int | None, mxid_age: int | None = 0, **kw: Any) -> dict[str, Any]:
    return {
        "relation": kw.get("relation", "t"),
        "vacuuming": vacuuming,
        "xid_age": xid_age,
        "mxid_age": mxid_age,
        "freeze_max_age": kw.get("freeze_max_age", 100_000),
        "multixact_freeze_max_age": kw.get("multixact_freeze_max_age", 400_000_000),
    }


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (_row(True, 100_000), False),  # at the limit: relfrozenxid does not yet precede it
        (_row(True, 100_001), True),
        (_row(None, 100_001), True),  # phase unknown (track_activities off): wait
        (_row(None, 5), False),  # under every limit: no wraparound vacuum, whatever it does
        (_row(False, 100_001), False),  # analyzing: runs without the flag, PostgreSQL cancels it
        (_row(True, 5, 400_000_001), True),  # multixact age alone
        (_row(True, None, None), False),  # no storage: relfrozenxid/relminmxid invalid
        (_row(True, 100_001, relation=None), None),  # the worker's table is unknown
    ],
)
def test_wraparound_rule(row: dict[str, Any], expected: bool | None) -> None:
    assert vacuum_for_wraparound(row) is expected
