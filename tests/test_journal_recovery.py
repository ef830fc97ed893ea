"""Recovery at every step kind the planner emits (issue 9, test 2, with the rules of issue 11):
a run killed with kill -9 at a random moment of each step — a CHECK added NOT VALID then
validated, a partitioned index (ON ONLY, a CONCURRENTLY build per partition, ATTACH), a batched
UPDATE's batches, a column type change's expand (column, sync trigger, backfill) and its
contract (the swap transaction) — then run again: it ends exactly as an uninterrupted run
(catalog and data compared), every row updated once, nothing INVALID left."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import asyncpg
from equivalence import plan_for, sibling_database, snapshot
from helpers import run_cli, start_cli

SETUP = """
CREATE TABLE items (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, n int NOT NULL DEFAULT 0);
INSERT INTO items SELECT g, g % 100, (g % 1000)::text, 0 FROM generate_series(1, 20000) g;
CREATE TABLE events (id bigint NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events SELECT g, date '2025-01-01' + (g % 700) FROM generate_series(1, 5000) g;
ANALYZE;
"""
MIGRATION = """
ALTER TABLE items ADD CONSTRAINT items_a_check CHECK (a >= 0);
CREATE INDEX events_at_idx ON events (at);
UPDATE items SET n = n + 1;
ALTER TABLE items ALTER COLUMN b TYPE int USING b::int;
"""
# Small batches: a kill lands inside the batched steps, not after them.
BATCHES = ("--backfill-batch-rows", "500")


async def apply(dsn: str, tmp_path: Path) -> tuple[int, str]:
    result = await run_cli("apply", "--dsn", dsn, "--id", "m1", *BATCHES, sql=MIGRATION, tmp_path=tmp_path)
    return result.code, result.stderr


async def test_kill_9_at_a_random_moment_of_every_planned_step_then_rerun_ends_as_an_uninterrupted_run(
    dsn: str, tmp_path: Path
) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(SETUP)
    steps = (await plan_for(dsn, MIGRATION)).steps
    kinds = " ".join(s.sql for s in steps)
    # The step kinds this test is about are all in the plan.
    assert "NOT VALID" in kinds and "VALIDATE CONSTRAINT" in kinds and "ON ONLY" in kinds
    assert "ATTACH PARTITION" in kinds and any(s.backfill for s in steps)
    assert any(s.phase.value == "contract" for s in steps)
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    try:
        for number in range(1, len(steps) + 1):
            proc = await start_cli(
                "apply", "--dsn", dsn, "--id", "m1", *BATCHES, sql=MIGRATION, tmp_path=tmp_path
            )
            try:
                async with asyncio.timeout(60):  # until the step begins, or the run ends before it
                    while proc.returncode is None and not await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        f"zdmproxy:m1:step{number}",
                    ):
                        await asyncio.sleep(0.002)
                await asyncio.sleep(rng.uniform(0, 0.05))
            finally:
                if proc.returncode is None:
                    os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        code, stderr = await apply(dsn, tmp_path)
        assert code == 0, f"seed {seed}: {stderr}"
        async with sibling_database(dsn) as twin_dsn:
            twin = await asyncpg.connect(twin_dsn)
            try:
                await twin.execute(SETUP)
                code, stderr = await apply(twin_dsn, tmp_path)
                assert code == 0, stderr
                assert await snapshot(admin) == await snapshot(twin), f"seed {seed}"
            finally:
                await twin.close()
        assert await admin.fetchval("SELECT count(*) FROM items WHERE n <> 1") == 0, f"seed {seed}"
        assert not await admin.fetchval(
            "SELECT count(*) FROM pg_index WHERE NOT indisvalid OR NOT indisready"
        )
        assert not await admin.fetchval("SELECT count(*) FROM pg_constraint WHERE NOT convalidated")
        states = await admin.fetch("SELECT state, count(*) FROM zdmproxy.steps GROUP BY state")
        assert {r["state"]: r["count"] for r in states} == {"succeeded": len(steps)}
    finally:
        await admin.close()
