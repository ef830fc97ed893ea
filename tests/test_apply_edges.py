"""apply on the edges: views and materialized views, someone else's cancel, one JSON document."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
from helpers import ITEMS, finish, idle_blocker, run_cli, start_cli, wait_for_session

VIEWS = """
CREATE VIEW cheap_items AS SELECT id, a FROM items WHERE a < 10;
CREATE MATERIALIZED VIEW item_counts AS SELECT a, count(*) FROM items GROUP BY a;
"""


async def test_views_are_not_locked_through_their_base_tables(dsn: str, tmp_path: Path) -> None:
    """LOCK TABLE on a view would lock its base tables, which an idle reader holds: zdmproxy
    must lock only what the statement itself locks, and a materialized view cannot be LOCKed."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS + VIEWS)
    reader = await idle_blocker(dsn, "items")
    try:
        sql = "ALTER VIEW cheap_items RENAME TO bargain_items; REFRESH MATERIALIZED VIEW item_counts"
        result = await run_cli(
            "apply", "--dsn", dsn, "--id", "views", "--deadline-s", "5", sql=sql, tmp_path=tmp_path
        )
        assert result.code == 0, result.stderr
        assert await admin.fetchval("SELECT to_regclass('bargain_items') IS NOT NULL")
    finally:
        await reader.close()
        await admin.close()


async def test_someone_elses_cancel_exits_5_with_one_json_document(dsn: str, tmp_path: Path) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    try:
        proc = await start_cli(
            "apply",
            "--dsn",
            dsn,
            "--id",
            "slow",
            "--json",
            sql="UPDATE items SET n = n + 1 WHERE pg_sleep(0.01) IS NOT NULL",
            tmp_path=tmp_path,
        )
        pid = await wait_for_session(admin, "zdmproxy:slow:")
        async with asyncio.timeout(10):  # wait until the UPDATE itself runs, then cancel it
            while not await admin.fetchval(
                "SELECT query LIKE 'UPDATE%' FROM pg_stat_activity WHERE pid = $1", pid
            ):
                await asyncio.sleep(0.01)
        assert await admin.fetchval("SELECT pg_cancel_backend($1)", pid)
        result = await finish(proc)
        assert await admin.fetchval("SELECT sum(n) FROM items") == 0  # nothing committed
    finally:
        await admin.close()
    assert result.code == 5, result.stderr
    assert "cancelled by another session" in result.stderr
    report = json.loads(result.stdout)  # exactly one document
    assert report["error"]["code"] == "cancelled"
    assert [a["outcome"] for a in report["steps"][0]["attempts"]] == ["cancelled_by_someone_else"]


async def test_sigterm_stops_cleanly_with_exit_5(dsn: str, tmp_path: Path) -> None:
    """A pod being stopped: the waiting step is abandoned, nothing is half-applied."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items")
    try:
        proc = await start_cli(
            "apply", "--dsn", dsn, "--id", "term", sql="ALTER TABLE items ADD COLUMN t int", tmp_path=tmp_path
        )
        await wait_for_session(admin, "zdmproxy:term:")
        proc.terminate()
        result = await finish(proc, timeout=15)
        async with asyncio.timeout(10):  # its connections go away with it
            while await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'zdmproxy%'"
            ):
                await asyncio.sleep(0.01)
        assert await admin.fetchval("SELECT count(*) FROM pg_attribute WHERE attname = 't'") == 0
    finally:
        await blocker.close()
        await admin.close()
    assert result.code == 5, result.stderr
    assert "interrupted" in result.stderr and "0 of 1 step(s) applied" in result.stderr


async def test_a_failed_first_step_counts_nothing_applied(dsn: str, tmp_path: Path) -> None:
    """The summary counts the steps done, by this run and earlier ones: a first step that fails
    leaves none applied, however many come after it (not "planned minus reported")."""
    admin = await asyncpg.connect(dsn)
    await admin.execute("CREATE TABLE a (x int)")
    try:
        sql = "CREATE TABLE a (x int); CREATE TABLE b (x int); CREATE TABLE c (x int)"
        result = await run_cli("apply", "--dsn", dsn, "--id", "first", sql=sql, tmp_path=tmp_path)
        assert result.code == 1, result.stderr
        assert "0 of 3 step(s) applied" in result.stderr, result.stderr
        assert "resumes at step 1 " in result.stderr
        await admin.execute("DROP TABLE a")
        await admin.execute("CREATE TABLE b (x int)")
        result = await run_cli("apply", "--dsn", dsn, "--id", "first", sql=sql, tmp_path=tmp_path)
        assert result.code == 1, result.stderr
        assert "1 of 3 step(s) applied" in result.stderr, result.stderr
        assert "resumes at step 2 " in result.stderr
    finally:
        await admin.close()
