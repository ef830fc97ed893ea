"""The control plane through the API: pause and resume between steps, cancel (of a step this
daemon runs, and through another daemon), live throttle knobs."""

from __future__ import annotations

import asyncio

import asyncpg
from daemon_helpers import in_process, settled
from helpers import ITEMS, idle_blocker

THREE_STEPS = "CREATE TABLE a (id int); ALTER TABLE items ADD COLUMN x int; CREATE TABLE c (id int);"


async def _setup(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await conn.execute(ITEMS)
    return conn


async def _second_step_waiting(conn: asyncpg.Connection, migration_id: str) -> None:
    """Once step 2 is held up by the blocker: the journal has its event saying so."""
    async with asyncio.timeout(20):
        while not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM zdmproxy.events WHERE migration_id = $1 AND step_index = 1"
            " AND kind IN ('waiting_for_blockers', 'attempt_failed'))",
            migration_id,
        ):
            await asyncio.sleep(0.05)


async def _relations(conn: asyncpg.Connection) -> dict[str, bool]:
    row = await conn.fetchrow(
        "SELECT to_regclass('a') IS NOT NULL AS a, to_regclass('c') IS NOT NULL AS c,"
        " EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'x') AS x"
    )
    return dict(row)


async def test_pause_between_steps_then_resume(dsn: str) -> None:
    conn = await _setup(dsn)
    blocker = await idle_blocker(dsn, "items")
    try:
        async with in_process(dsn) as api:
            put = await api.client.put("/v1/migrations/p1", json={"sql": THREE_STEPS})
            assert put.status_code == 201
            await _second_step_waiting(conn, "p1")
            paused = await api.client.post("/v1/migrations/p1/pause")
            assert paused.status_code == 200 and paused.json()["control"] == "pause"
            await blocker.execute("ROLLBACK")  # step 2 can run now; step 3 must not

            body = await settled(api.client, "p1")
            assert body["state"] == "paused" and body["error"]["code"] == "pause_requested"
            assert [s["state"] for s in body["steps"]] == ["succeeded", "succeeded", "pending"]
            assert body["control"] is None  # obeyed, so cleared
            assert await _relations(conn) == {"a": True, "x": True, "c": False}
            # Submitting it again does not undo the operator's pause.
            again = await api.client.put("/v1/migrations/p1", params={"wait": 1}, json={"sql": THREE_STEPS})
            assert again.status_code == 200 and again.json()["state"] == "paused"

            resumed = await api.client.post("/v1/migrations/p1/resume")
            assert resumed.status_code == 200
            body = await settled(api.client, "p1")
            assert body["state"] == "succeeded" and body["runs"] == 2
            assert await _relations(conn) == {"a": True, "x": True, "c": True}
    finally:
        await blocker.close()
        await conn.close()


async def test_cancel_cuts_the_running_step(dsn: str) -> None:
    conn = await _setup(dsn)
    blocker = await idle_blocker(dsn, "items")
    try:
        async with in_process(dsn) as api:
            await api.client.put("/v1/migrations/c1", json={"sql": THREE_STEPS})
            await _second_step_waiting(conn, "c1")
            cancel = await api.client.post("/v1/migrations/c1/cancel")
            assert cancel.status_code == 200 and "rolled back" in cancel.json()["message"]
            body = await settled(api.client, "c1")  # while the blocker still holds its lock
            assert body["state"] == "cancelled" and body["error"]["code"] == "cancel_requested"
            assert body["steps"][0]["state"] == "succeeded" and body["steps"][2]["state"] == "pending"
            assert await _relations(conn) == {"a": True, "x": False, "c": False}
            # Cancelling what is cancelled says so.
            again = await api.client.post("/v1/migrations/c1/cancel")
            assert again.status_code == 409 and again.json()["code"] == "not_running"

            await blocker.execute("ROLLBACK")
            assert (await api.client.post("/v1/migrations/c1/resume")).status_code == 200
            body = await settled(api.client, "c1")
            assert body["state"] == "succeeded"
            assert await _relations(conn) == {"a": True, "x": True, "c": True}
    finally:
        await blocker.close()
        await conn.close()


async def test_cancel_through_another_daemon(dsn: str) -> None:
    conn = await _setup(dsn)
    blocker = await idle_blocker(dsn, "items")
    try:
        async with in_process(dsn) as runner, in_process(dsn) as other:
            await runner.client.put("/v1/migrations/c2", json={"sql": THREE_STEPS})
            await _second_step_waiting(conn, "c2")
            assert (await other.client.post("/v1/migrations/c2/cancel")).status_code == 200
            body = await settled(other.client, "c2")
            assert body["state"] == "cancelled" and body["error"]["code"] == "cancel_requested"
            assert await _relations(conn) == {"a": True, "x": False, "c": False}
    finally:
        await blocker.close()
        await conn.close()


async def test_throttle_knobs_merge_and_clear(dsn: str) -> None:
    async with in_process(dsn) as api:
        await api.client.put(
            "/v1/migrations/t1", params={"wait": 30}, json={"sql": "CREATE TABLE t (id int)"}
        )
        knobs = {"backfill_batch_rows": 500, "backfill_sleep_ms": 20}
        first = await api.client.patch("/v1/migrations/t1/throttle", json=knobs)
        assert first.status_code == 200 and first.json()["throttle"] == knobs
        second = await api.client.patch("/v1/migrations/t1/throttle", json={"backfill_sleep_ms": None})
        assert second.json()["throttle"] == {"backfill_batch_rows": 500}
        assert (await api.client.get("/v1/migrations/t1")).json()["throttle"] == {"backfill_batch_rows": 500}
        bad = await api.client.patch("/v1/migrations/t1/throttle", json={"backfill_batch_rows": 0})
        assert bad.status_code == 422
        missing = await api.client.patch("/v1/migrations/nope/throttle", json={"backfill_batch_rows": 5})
        assert missing.status_code == 404
