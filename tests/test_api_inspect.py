"""Dry runs and lock reports through the API, and readiness that reports a lost database
without flapping."""

from __future__ import annotations

import asyncio

import asyncpg
from daemon_helpers import in_process
from helpers import ITEMS, idle_blocker


async def test_plan_with_the_catalog(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(ITEMS)
    await conn.close()
    async with in_process(dsn) as api:
        answer = await api.client.post("/v1/plan", json={"sql": "CREATE INDEX items_a ON items (a)"})
        assert answer.status_code == 200, answer.text
        plan = answer.json()
        assert plan["from_catalog"] is True
        (statement,) = plan["statements"]
        assert statement["sizes"] and statement["sizes"][0]["rows_estimate"] == 10_000
        assert {"relation": "public.items", "mode": "ShareLock"} in statement["locks"]  # as written
        assert statement["verdict"]["level"]
        step = statement["steps"][0]
        assert {"sql", "phase", "transactional", "locks", "rewrites_table", "scans_table", "reason"} <= set(
            step
        )
        bad = await api.client.post("/v1/plan", json={"sql": "CREATE INDEXX"})
        assert bad.status_code == 400 and bad.json()["code"] == "parse_error"
    async with in_process(dsn) as api:
        assert (await api.client.get("/v1/migrations")).json() == {"migrations": []}  # a plan records nothing


async def test_locks_name_who_blocks(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items", app="reporting")
    waiter = await asyncpg.connect(dsn, server_settings={"application_name": "deployer"})
    pending = waiter.execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
    try:
        task = asyncio.ensure_future(pending)
        async with asyncio.timeout(10):
            while not await conn.fetchval(
                "SELECT EXISTS (SELECT FROM pg_locks WHERE NOT granted AND relation = 'items'::regclass)"
            ):
                await asyncio.sleep(0.02)
        async with in_process(dsn) as api:
            answer = await api.client.get("/v1/locks")
        assert answer.status_code == 200
        apps = {lock["application_name"] for lock in answer.json()["locks"]}
        assert "reporting" in apps
        assert all(lock["describe"] for lock in answer.json()["locks"])
    finally:
        await blocker.close()
        await task
        await waiter.close()
        await conn.close()


async def test_readiness_does_not_flap_on_a_lost_database(dsn: str) -> None:
    async with in_process(dsn) as api:
        ready = await api.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"]["reachable"] is True
        api.daemon.pool.dsn = api.daemon.dsn = (
            "postgresql://nobody@127.0.0.1:1/none"  # the database goes away
        )
        await api.daemon.pool.close()
        await api.daemon._check()
        blip = await api.client.get("/readyz")
        assert blip.status_code == 200  # still ready: a sidecar's pod stays in service
        assert blip.json()["database"]["reachable"] is False and blip.json()["database"]["error"]
        down = await api.client.get("/v1/migrations")
        assert down.status_code == 503 and down.json()["code"] == "database_unreachable"
