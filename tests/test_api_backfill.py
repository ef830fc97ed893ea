"""A running backfill controlled through the API: live throttle knobs, pause between batches,
progress in the status, resume from the checkpoint, a daemon killed mid-way and another one
finishing; every row updated exactly once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg
from daemon_helpers import in_process, serve, settled
from helpers import ITEMS

POLICY = {
    "backfill_dml_min_rows": 1000,
    "backfill_batch_rows": 200,
    "backfill_batch_rows_max": 200,
    "backfill_sleep_ms": 30,
}


async def _until(conn: asyncpg.Connection, query: str, *args: object) -> None:
    async with asyncio.timeout(20):
        while not await conn.fetchval(query, *args):
            await asyncio.sleep(0.02)


async def test_throttle_pause_and_resume_a_running_backfill(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(ITEMS)
    try:
        async with in_process(dsn) as api:
            body = {"sql": "UPDATE items SET n = n + 1", "policy": POLICY}
            put = await api.client.put("/v1/migrations/b1", json=body)
            assert put.status_code == 201, put.text
            assert [s["phase"] for s in put.json()["steps"]] == ["backfill"]
            await _until(conn, "SELECT EXISTS (SELECT FROM zdmproxy.checkpoints WHERE rows_done > 0)")

            knobs = await api.client.patch("/v1/migrations/b1/throttle", json={"backfill_batch_rows_max": 50})
            assert knobs.status_code == 200
            await _until(
                conn,
                "SELECT EXISTS (SELECT FROM zdmproxy.events WHERE kind = 'backfill_progress'"
                " AND (fields -> 'progress' ->> 'batch_rows')::int <= 50)",
            )

            assert (await api.client.post("/v1/migrations/b1/pause")).status_code == 200
            paused = await settled(api.client, "b1")
            assert paused["state"] == "paused" and paused["error"]["code"] == "pause_requested"
            progress = next(s["backfill"] for s in paused["steps"] if s["backfill"] is not None)
            updated = await conn.fetchval("SELECT count(*) FROM items WHERE n = 1")
            assert 0 < progress["rows_done"] < 10_000 and 0 < updated < 10_000

            assert (await api.client.post("/v1/migrations/b1/resume")).status_code == 200
            done = await settled(api.client, "b1")
            assert done["state"] == "succeeded"
            lines = (await api.client.get("/metrics")).text.splitlines()
            rows = next(line for line in lines if line.startswith("zdmproxy_backfill_rows_total"))
            assert float(rows.split()[-1]) >= 10_000  # the resumed run counts its first part again
        assert await conn.fetchval("SELECT count(*) FILTER (WHERE n = 1) = 10000 FROM items")
    finally:
        await conn.close()


async def test_kill_9_during_a_backfill_and_another_daemon_finishes_it(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(ITEMS)
    body = {"sql": "UPDATE items SET n = n + 1", "policy": POLICY}
    victim = await serve(tmp_path, "--dsn", dsn, name="victim")
    survivor = await serve(tmp_path, "--dsn", dsn, name="survivor")
    try:
        async with victim.client() as client:
            assert (await client.put("/v1/migrations/b2", json=body)).status_code == 201
        await _until(conn, "SELECT EXISTS (SELECT FROM zdmproxy.checkpoints WHERE rows_done >= 1000)")
        victim.proc.send_signal(signal.SIGKILL)
        await victim.proc.wait()
        done_then = await conn.fetchval("SELECT rows_done FROM zdmproxy.checkpoints")
        assert done_then < 10_000  # killed mid-way
        async with survivor.client() as client:
            taken = await client.put("/v1/migrations/b2", params={"wait": 60}, json=body)
            assert taken.json()["state"] == "succeeded" and taken.json()["runs"] == 2, taken.text
        # Each batch committed with its checkpoint: no row was updated twice, none was missed.
        assert await conn.fetchval("SELECT count(*) FILTER (WHERE n = 1) = 10000 FROM items")
    finally:
        assert await survivor.stop() == 0
        if victim.proc.returncode is None:
            victim.proc.kill()
            await victim.proc.wait()
        await conn.close()
