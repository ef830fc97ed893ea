"""Idle-in-transaction blockers: reported by default, terminated only when the operator opts in."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from helpers import ITEMS, idle_blocker, run_cli

ALTER = "ALTER TABLE items ADD COLUMN flag boolean"


async def columns(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT attname FROM pg_attribute WHERE attrelid = 'items'::regclass")
    return {r["attname"] for r in rows}


async def test_idle_blocker_is_reported_and_left_alone_by_default(dsn: str, tmp_path: Path) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items")
    try:
        result = await run_cli(
            "apply", "--dsn", dsn, "--id", "flag", "--deadline-s", "1.5", sql=ALTER, tmp_path=tmp_path
        )
        assert result.code == 75, result.stderr  # lock budget ran out: retry later
        assert f"pid {blocker.get_server_pid()}" in result.stderr
        assert "app 'reporting'" in result.stderr and "idle in transaction" in result.stderr
        assert await blocker.fetchval("SELECT 1") == 1  # still alive: nobody terminated it
        assert "flag" not in await columns(admin)
    finally:
        await blocker.close()
        await admin.close()


async def test_opt_in_policy_terminates_old_idle_blocker(dsn: str, tmp_path: Path) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items")
    pid = blocker.get_server_pid()
    try:
        result = await run_cli(
            "apply",
            "--dsn",
            dsn,
            "--id",
            "flag",
            "--terminate-idle-blockers-after-s",
            "0.5",
            "--json",
            sql=ALTER,
            tmp_path=tmp_path,
        )
        assert result.code == 0, result.stderr
        assert "flag" in await columns(admin)
        assert await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0
        assert result.json()["steps"][0]["terminated"] == [pid]  # type: ignore[index]
        assert f"terminated pid {pid}" in result.stderr
    finally:
        await blocker.close()
        await admin.close()


async def test_young_idle_blocker_is_not_terminated(dsn: str, tmp_path: Path) -> None:
    """The threshold is honoured: a blocker idle for less than it is waited for, not killed."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items")
    try:
        result = await run_cli(
            "apply",
            "--dsn",
            dsn,
            "--id",
            "flag",
            "--terminate-idle-blockers-after-s",
            "600",
            "--deadline-s",
            "1",
            sql=ALTER,
            tmp_path=tmp_path,
        )
        assert result.code == 75, result.stderr
        assert await blocker.fetchval("SELECT 1") == 1
    finally:
        await blocker.close()
        await admin.close()
