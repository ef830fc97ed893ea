"""Idle-in-transaction blockers: reported by default, terminated only when the operator opts in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from helpers import ITEMS, idle_blocker, run_cli

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
