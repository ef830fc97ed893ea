from __future__ import annotations

import os
import pwd

import asyncpg
import pytest
from pgcluster import OS_USER, Cluster

# Databases handed out so far, per server version: the second round must get a new one.
_seen: dict[int, list[str]] = {}


async def test_server_version_and_settings(pg_server: Cluster, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        version_num = int(await conn.fetchval("SHOW server_version_num"))
        assert version_num // 10000 == pg_server.version
        assert version_num == pg_server.version_num
        assert await conn.fetchval("SHOW fsync") == "off"
        assert await conn.fetchval("SHOW max_connections") == "200"
        assert await conn.fetchval("SHOW unix_socket_directories") == ""
    finally:
        await conn.close()


@pytest.mark.parametrize("round_", [1, 2])
async def test_each_test_gets_a_fresh_database(pg_server: Cluster, dsn: str, round_: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        name = await conn.fetchval("SELECT current_database()")
        user_tables = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%'"
        )
        assert name != "postgres"
        assert user_tables == 0
        previous = _seen.setdefault(pg_server.version, [])
        assert name not in previous
        if previous:
            still_there = await conn.fetchval(
                "SELECT count(*) FROM pg_database WHERE datname = ANY($1::text[])", previous
            )
            assert still_there == 0, "earlier test databases were not dropped"
        previous.append(name)
        # Left behind on purpose: the next round proves it does not leak.
        await conn.execute("CREATE TABLE leak_probe (id int)")
    finally:
        await conn.close()


async def test_server_runs_as_unprivileged_user(pg_server: Cluster, dsn: str) -> None:
    expected_uid = pwd.getpwnam(OS_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert expected_uid != 0
    conn = await asyncpg.connect(dsn)
    try:
        backend_pid = await conn.fetchval("SELECT pg_backend_pid()")
        data_dir = await conn.fetchval("SELECT current_setting('data_directory')")
        # Checked while connected: the backend process exits with the connection.
        assert os.stat(f"/proc/{backend_pid}").st_uid == expected_uid
        assert os.stat(data_dir).st_uid == expected_uid
    finally:
        await conn.close()
