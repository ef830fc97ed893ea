"""``zdmproxy locks``: what a migration on a table would wait for right now, prepared
transactions included (they hold locks with no session: pg_stat_activity does not show them)."""

from __future__ import annotations

import json

import asyncpg
from helpers import ITEMS, idle_blocker, zdmproxy


async def _locks(*args: str) -> tuple[int, str, str]:
    result = await zdmproxy("locks", *args)
    return result.code, result.stdout, result.stderr


async def test_locks_names_sessions_and_prepared_transactions(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    reader = await idle_blocker(dsn, "items")
    preparer = await asyncpg.connect(dsn)
    try:
        await preparer.execute(
            "BEGIN; LOCK TABLE items IN ROW EXCLUSIVE MODE; PREPARE TRANSACTION 'deploy-42'"
        )
        code, out, err = await _locks("items", "--dsn", dsn, "--json")
        assert code == 0, err
        found = json.loads(out)
        assert reader.get_server_pid() in {b["pid"] for b in found}
        (prepared,) = [b for b in found if b["gid"] == "deploy-42"]
        assert (
            prepared["mode"] == "RowExclusiveLock"
            and "prepared transaction 'deploy-42'" in prepared["describe"]
        )
        # Without tables: every relation someone waits for, or a prepared transaction holds.
        code, out, err = await _locks("--dsn", dsn)
        assert code == 0, err
        assert "items" in out and "deploy-42" in out
        code, _, err = await _locks("nosuch", "--dsn", dsn)
        assert code == 2 and "no such relation: nosuch" in err
    finally:
        await admin.execute("ROLLBACK PREPARED 'deploy-42'")
        for conn in (reader, preparer, admin):
            await conn.close()
