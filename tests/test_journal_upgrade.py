"""The journal's own schema: a journal an older zdmproxy created (version 1) is upgraded in place
and what it recorded still counts; a process killed (kill -9) in the middle of the upgrade leaves
version 1 whole, and the next run upgrades it (15 and 18)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
from helpers import run_cli, start_cli

from zdmproxy.journal.schema import LATEST, upgrades
from zdmproxy.journal.steps import checksum, rows
from zdmproxy.plan.planner import make_plan
from zdmproxy.sql.parse import parse_script

DONE = "CREATE TABLE done_before (id int);\n"
HALF = "CREATE TABLE half (id int);\nCREATE TABLE half_two (id int);\n"


async def journal_v1(conn: asyncpg.Connection) -> None:
    """Schema zdmproxy as zdmproxy 0.1 with journal version 1 left it, with one migration that
    succeeded and one stopped after its first step."""
    version, sql = upgrades()[0]
    assert version == 1
    await conn.execute("CREATE SCHEMA zdmproxy")
    await conn.execute(sql)
    await conn.execute("INSERT INTO zdmproxy.schema_version (version, zdmproxy_version) VALUES (1, '0.1.0')")
    await conn.execute(DONE + "CREATE TABLE half (id int);")  # what those runs did
    for migration_id, script, state, done in (("done", DONE, "succeeded", 1), ("half", HALF, "failed", 1)):
        steps = make_plan(script).steps
        await conn.execute(
            "INSERT INTO zdmproxy.migrations (id, checksum, sql, state, runs, started_at, finished_at)"
            " VALUES ($1, $2, $3, $4, 1, now(), now())",
            migration_id,
            checksum(parse_script(script)),
            script,
            state,
        )
        await conn.execute(
            "INSERT INTO zdmproxy.steps (migration_id, index, sql, phase, kind, transactional, spec)"
            " SELECT $1, s.index, s.sql, s.phase, s.kind, s.transactional, s.spec"
            " FROM jsonb_to_recordset($2::jsonb)"
            " AS s(index int, sql text, phase text, kind text, transactional boolean, spec jsonb)",
            migration_id,
            rows(steps),
        )
        await conn.execute(
            "UPDATE zdmproxy.steps SET state = 'succeeded' WHERE migration_id = $1 AND index < $2",
            migration_id,
            done,
        )


async def versions(conn: asyncpg.Connection) -> list[int]:
    return [r["version"] for r in await conn.fetch("SELECT version FROM zdmproxy.schema_version ORDER BY 1")]


async def test_a_journal_of_an_older_version_is_upgraded_in_place_and_keeps_its_record(
    dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await journal_v1(conn)
        again = await run_cli("apply", "--dsn", dsn, "--id", "done", sql=DONE, tmp_path=tmp_path)
        assert again.code == 0 and "already applied" in again.stderr, again.stderr
        assert await versions(conn) == list(range(1, LATEST + 1))
        resumed = await run_cli("apply", "--dsn", dsn, "--id", "half", sql=HALF, tmp_path=tmp_path)
        assert resumed.code == 0 and "1 of them by an earlier run" in resumed.stderr, resumed.stderr
        assert await conn.fetchval("SELECT to_regclass('half_two') IS NOT NULL")
        state = await conn.fetchval("SELECT state FROM zdmproxy.migrations WHERE id = 'half'")
        assert state == "succeeded"
    finally:
        await conn.close()


async def test_kill_9_during_the_journals_upgrade_leaves_the_old_version_whole_and_the_rerun_upgrades(
    dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(dsn)
    holder = await asyncpg.connect(dsn)
    try:
        await journal_v1(conn)
        # A reader of the journal holds the upgrade's ALTER TABLE in its lock wait.
        await holder.execute("BEGIN; LOCK zdmproxy.migrations IN ACCESS SHARE MODE")
        proc = await start_cli("apply", "--dsn", dsn, "--id", "done", sql=DONE, tmp_path=tmp_path)
        try:
            async with asyncio.timeout(30):
                while not await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'zdmproxy-journal'"
                    " AND wait_event_type = 'Lock'"
                ):
                    await asyncio.sleep(0.005)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
        await holder.execute("ROLLBACK")
        # The rerun waits for the dead process's backend to be gone (it held the journal's schema
        # lock), then upgrades: version 1 was left whole, never half of version 2.
        rerun = await run_cli("apply", "--dsn", dsn, "--id", "done", sql=DONE, tmp_path=tmp_path)
        assert rerun.code == 0 and "already applied" in rerun.stderr, rerun.stderr
        assert await versions(conn) == list(range(1, LATEST + 1))
        assert await conn.fetchval("SELECT to_regclass('zdmproxy.events') IS NOT NULL")
    finally:
        await holder.close()
        await conn.close()
