"""How fast the watchdog ends our lock wait once a session queues behind it.

Per PostgreSQL version, N runs of: an idle transaction holds AccessShareLock on ``items``;
zdmproxy's step (``ALTER TABLE items ADD COLUMN``) is told to request its lock anyway (pre-flight
off: ``blocker_min_age_ms`` huge) with the default queue budget (100 ms) and watchdog interval
(20 ms), so its ACCESS EXCLUSIVE request waits; then one client runs ``SELECT`` on ``items`` and
queues behind that request. The client's latency is the time from its queueing to our request
leaving the queue: the watchdog's reaction. Target (issue 11): p99 <= budget + 2 x interval.

Run: ``.venv/bin/python bench/watchdog_reaction.py [--versions 15 18] [--runs 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Final

import asyncpg
import uvloop

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/ is not a package; its cluster helper is reused
from pgcluster import Cluster, find_bin_dir  # noqa: E402

from zdmproxy.engine.runner import Runner  # noqa: E402
from zdmproxy.plan.planner import make_plan  # noqa: E402
from zdmproxy.policy import MigrationPolicy  # noqa: E402

POLICY: Final = MigrationPolicy(blocker_min_age_ms=10**9, lock_timeout_ms=30_000, deadline_s=60)


async def one_run(dsn: str, number: int) -> float:
    """The latency (ms) of one client that queued behind our waiting lock request."""
    blocker = await asyncpg.connect(dsn)
    client = await asyncpg.connect(dsn)
    admin = await asyncpg.connect(dsn)
    await blocker.execute("BEGIN; SELECT count(*) FROM items WHERE id < 10")
    runner = Runner(dsn, f"react{number}", POLICY)
    task = asyncio.create_task(runner.run(make_plan(f"ALTER TABLE items ADD COLUMN c{number} int")))
    try:
        async with asyncio.timeout(30):  # our request is waiting
            while not await admin.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE NOT l.granted AND l.locktype = 'relation' AND a.application_name LIKE $1",
                f"zdmproxy:react{number}:%",
            ):
                await asyncio.sleep(0.002)
        started = time.perf_counter()
        await client.fetchval("SELECT a FROM items WHERE id = 1")
        return (time.perf_counter() - started) * 1000
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        for conn in (blocker, client, admin):
            await conn.close()


async def measure(dsn: str, runs: int) -> list[float]:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, a int);"
            " INSERT INTO items SELECT g, g FROM generate_series(1, 10000) g"
        )
    finally:
        await admin.close()
    await one_run(dsn, 0)  # warm-up
    return [await one_run(dsn, number) for number in range(1, runs + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, nargs="+", default=[15, 18])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    bound = POLICY.queue_budget_ms + 2 * POLICY.watchdog_interval_ms
    print(f"| PG | runs | p50 ms | p99 ms | max ms | target p99 <= {bound:.0f} ms |")
    print("|---|---|---|---|---|---|")
    for major in args.versions:
        bin_dir = find_bin_dir(major)
        if bin_dir is None:
            print(f"| {major} | skipped: not installed | | | | |")
            continue
        with Cluster(bin_dir) as cluster:
            latencies = sorted(uvloop.run(measure(cluster.dsn(), args.runs)))
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        verdict = "met" if p99 <= bound else "missed"
        print(
            f"| {major} | {len(latencies)} | {statistics.median(latencies):.0f} | {p99:.0f} | "
            f"{latencies[-1]:.0f} | {verdict} |"
        )


if __name__ == "__main__":
    main()
