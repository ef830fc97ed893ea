"""What the journal costs: one journaled step against the same step run by the engine alone.

Per PostgreSQL version, migrations of S tiny transactional steps
(``UPDATE t SET n = n + 1 WHERE id = 1``) run in two modes, alternating:

- engine: ``Runner`` with no ledger, the plan read from the catalog, as before the journal;
- journal: ``Coordinator.apply``, as ``zdmproxy apply`` runs it (a new migration id each time:
  record the migration and its steps, claim the run lock, record each step's start, its
  attempt, its end in its own transaction, then the migration's end).

Each migration runs with S = 1 and S = 50 steps; a straight line through the two gives the
cost per step (slope) and per migration (intercept) of each mode. The steps are as small as
steps get, so the journal's share is as large as it can be; a real DDL step costs more.

Run: ``.venv/bin/python bench/journal_overhead.py [--versions 15 18] [--rounds 15]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Final

import asyncpg
import uvloop

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/ is not a package; its cluster helper is reused
from pgcluster import Cluster, find_bin_dir  # noqa: E402

from zdmproxy.engine.catalog import plan_script  # noqa: E402
from zdmproxy.engine.connector import connect  # noqa: E402
from zdmproxy.engine.runner import Runner  # noqa: E402
from zdmproxy.journal.coordinator import Coordinator, Request  # noqa: E402
from zdmproxy.journal.ledger import Caller  # noqa: E402
from zdmproxy.journal.store import Journal  # noqa: E402
from zdmproxy.policy import MigrationPolicy  # noqa: E402

STEP: Final = "UPDATE t SET n = n + 1 WHERE id = 1;\n"
SIZES: Final = (1, 50)


async def engine_alone(dsn: str, script: str) -> float:
    started = time.perf_counter()
    session = await connect(dsn, "bench-plan")
    try:
        plan = await plan_script(session, script)
    finally:
        await session.close()
    await Runner(dsn, f"e-{uuid.uuid4().hex[:8]}", MigrationPolicy()).run(plan)
    return time.perf_counter() - started


async def journaled(dsn: str, script: str) -> float:
    started = time.perf_counter()
    journal = await Journal.open(dsn, "bench-journal")
    try:
        coordinator = Coordinator(dsn, journal, MigrationPolicy(), Caller("bench"))
        await coordinator.apply(Request(f"j-{uuid.uuid4().hex[:8]}", script))
    finally:
        await journal.close()
    return time.perf_counter() - started


async def measure(dsn: str, rounds: int) -> dict[tuple[str, int], list[float]]:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(
            "CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL); INSERT INTO t VALUES (1, 0)"
        )
    finally:
        await admin.close()
    await journaled(dsn, STEP)  # creates the journal schema; warms both paths up
    await engine_alone(dsn, STEP)
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for size in SIZES:
            for mode, run in (("engine", engine_alone), ("journal", journaled)):
                times.setdefault((mode, size), []).append(await run(dsn, STEP * size))
    return times


def line(times: dict[tuple[str, int], list[float]], mode: str) -> tuple[float, float]:
    """(ms per step, ms per migration) through the medians at S = 1 and S = 50."""
    low, high = (statistics.median(times[(mode, size)]) * 1000 for size in SIZES)
    slope = (high - low) / (SIZES[1] - SIZES[0])
    return slope, low - slope * SIZES[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, nargs="+", default=[15, 18])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print("| PG | mode | ms per step | ms per migration | median ms, 1 step | median ms, 50 steps |")
    print("|---|---|---|---|---|---|")
    for major in args.versions:
        bin_dir = find_bin_dir(major)
        if bin_dir is None:
            print(f"| {major} | skipped: not installed | | | | |")
            continue
        with Cluster(bin_dir) as cluster:
            times = uvloop.run(measure(cluster.dsn(), args.rounds))
        for mode in ("engine", "journal"):
            per_step, per_migration = line(times, mode)
            low, high = (statistics.median(times[(mode, size)]) * 1000 for size in SIZES)
            print(f"| {major} | {mode} | {per_step:.2f} | {per_migration:.1f} | {low:.1f} | {high:.1f} |")
        engine_step, engine_fixed = line(times, "engine")
        journal_step, journal_fixed = line(times, "journal")
        print(
            f"| {major} | journal - engine | **{journal_step - engine_step:+.2f}** | "
            f"{journal_fixed - engine_fixed:+.1f} | | |"
        )


if __name__ == "__main__":
    main()
