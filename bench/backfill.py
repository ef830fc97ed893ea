"""What the backfill engine costs and what the application sees while it runs.

Per PostgreSQL version, on one server with POSTGRES-FACTS.md's production-like settings
(fsync and autovacuum on, shared_buffers 1GB), a table ``items (id bigint PK, a int, n int)``
of N rows (default 1,000,000):

1. **Throughput**, runs interleaved: one bulk ``UPDATE items SET n = n + 1`` against the same
   statement planned by zdmproxy (a batched backfill, engine alone, default policy), each after
   a ``VACUUM`` so both start from the same table. Reported: rows/s of each, their ratio, and
   the backfill's longest batch (BEGIN to COMMIT, from its final progress event).
2. **Clients**: 8 connections doing primary-key reads and ``n = n + 1`` writes (2 ms pause
   between requests), first for 5 s with no DDL (the baseline), then during the backfill, then
   during ``CREATE INDEX`` planned by zdmproxy (built CONCURRENTLY). Reported: client max and
   p99 latency, max as a ratio to the baseline's; the index build's time against a plain
   ``CREATE INDEX`` without clients.
3. **Scale**: ``zdmproxy apply`` (the real CLI, journal and all) of ``UPDATE scale SET n = n + 1``
   on 0.25M to 4M rows: wall time less the CLI's start-up (the best of 3 applies on an empty
   table), rows/s, and the process's peak RSS (``wait4``'s ru_maxrss): time should grow
   linearly, memory stay flat.

Run: ``.venv/bin/python bench/backfill.py [--versions 15 18] [--rows 1000000] [--runs 3]
[--scale 250000 500000 1000000 2000000 4000000]``; ``--quick`` for 200k rows, 1 run, scale to 1M.
Results: printed, and written to ``bench/results/backfill-<date>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final

import asyncpg
import uvloop

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/ is not a package; its cluster helper is reused
sys.path.insert(0, str(ROOT / "bench"))
from lock_queue import FACTS_SETTINGS, machine_facts  # noqa: E402
from pgcluster import Cluster, find_bin_dir  # noqa: E402

from zdmproxy.engine.catalog import plan_script  # noqa: E402
from zdmproxy.engine.connector import connect  # noqa: E402
from zdmproxy.engine.events import BackfillProgress, Event, EventKind  # noqa: E402
from zdmproxy.engine.runner import Runner  # noqa: E402
from zdmproxy.policy import MigrationPolicy  # noqa: E402

UPDATE: Final = "UPDATE items SET n = n + 1"
CLIENTS: Final = 8


async def load(dsn: str, table: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint PRIMARY KEY, a int NOT NULL,"
            f" n int NOT NULL DEFAULT 0); INSERT INTO {table} (id, a) SELECT g, g % 1000"
            f" FROM generate_series(1, {rows}) g"
        )
        await conn.execute(f"VACUUM ANALYZE {table}")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def vacuum(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM items")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def bulk(dsn: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.execute(UPDATE)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def planned(dsn: str, script: str) -> tuple[float, BackfillProgress | None, list[Event]]:
    """Plan ``script`` and run it through the engine (no journal); its time and final progress."""
    events: list[Event] = []
    session = await connect(dsn, "bench-plan")
    try:
        plan = await plan_script(session, script)
    finally:
        await session.close()
    started = time.perf_counter()
    await Runner(dsn, f"b-{uuid.uuid4().hex[:8]}", MigrationPolicy(), events.append).run(plan)
    elapsed = time.perf_counter() - started
    done = [e.progress for e in events if e.kind is EventKind.BACKFILL_PROGRESS and e.progress is not None]
    return elapsed, (done[-1] if done else None), events


@dataclass
class Clients:
    dsn: str
    rows: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"read": [], "write": []})
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Clients:
        conns = [await asyncpg.connect(self.dsn) for _ in range(CLIENTS)]
        self._tasks = [asyncio.create_task(self._client(c, i)) for i, c in enumerate(conns)]
        await asyncio.sleep(0.5)
        for kind in self.latencies.values():
            kind.clear()  # warmed up
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, conn: asyncpg.Connection, number: int) -> None:
        rng = random.Random(number)
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                if reads := rng.random() < 0.5:
                    await conn.fetchval("SELECT a FROM items WHERE id = $1", rng.randint(1, self.rows))
                else:
                    await conn.execute("UPDATE items SET n = n + 1 WHERE id = $1", rng.randint(1, self.rows))
                self.latencies["read" if reads else "write"].append(time.perf_counter() - started)
                await asyncio.sleep(0.002)
        finally:
            await conn.close()

    def summary(self, kind: str) -> tuple[float, float]:
        """(max, p99) latency of the reads or the writes, in ms."""
        ms = sorted(x * 1000 for x in self.latencies[kind])
        return ms[-1], ms[int(len(ms) * 0.99)]


def apply_peak_rss(dsn: str, table: str) -> tuple[float, float]:
    """``zdmproxy apply`` of an UPDATE of every row of ``table``: (seconds, peak RSS in MB).

    Default settings, except that autovacuum on the table does not pause the walk: autovacuum
    starts on a table half rewritten, at a moment that depends on the machine, and the pause
    would measure autovacuum, not the engine (the throughput runs count the pauses instead)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(f"UPDATE {table} SET n = n + 1;\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZDM_")}
    env["ZDM_BACKFILL_PAUSE_ON_AUTOVACUUM"] = "false"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zdmproxy", "apply", "--dsn", dsn, "--id", uuid.uuid4().hex[:12], script.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    os.unlink(script.name)
    if status != 0:
        raise RuntimeError(f"apply failed ({status}): {proc.stderr.read().decode() if proc.stderr else ''}")
    return elapsed, usage.ru_maxrss / 1024


Latency = tuple[float, float]  # (max, p99) ms


@dataclass(frozen=True)
class Measured:
    bulk_rows_s: float
    fill_rows_s: float
    longest_batch_ms: float
    during_longest_batch_ms: float
    throttled: int
    clients: dict[str, tuple[Latency, Latency, Latency]]  # reads / writes: baseline, backfill, index
    index_s: float
    plain_index_s: float


async def measure(dsn: str, rows: int, runs: int) -> Measured:
    await load(dsn, "items", rows)
    bulk_s: list[float] = []
    fill_s: list[float] = []
    longest: list[float] = []
    throttled = 0
    for _ in range(runs):
        await vacuum(dsn)
        bulk_s.append(await bulk(dsn))
        await vacuum(dsn)
        elapsed, progress, events = await planned(dsn, UPDATE)
        fill_s.append(elapsed)
        longest.append(progress.longest_batch_ms or 0.0 if progress else 0.0)
        throttled += sum(e.kind is EventKind.BACKFILL_THROTTLED for e in events)
    async with Clients(dsn, rows) as baseline:
        await asyncio.sleep(5)
    await vacuum(dsn)
    async with Clients(dsn, rows) as during:
        _, progress, _ = await planned(dsn, UPDATE)
    async with Clients(dsn, rows) as indexing:
        index_s, _, _ = await planned(dsn, "CREATE INDEX items_a_idx ON items (a)")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP INDEX items_a_idx")
        await conn.execute("CHECKPOINT")
        started = time.perf_counter()
        await conn.execute("CREATE INDEX items_a_idx ON items (a)")
        plain_index_s = time.perf_counter() - started
    finally:
        await conn.close()
    return Measured(
        bulk_rows_s=rows / statistics.median(bulk_s),
        fill_rows_s=rows / statistics.median(fill_s),
        longest_batch_ms=max(longest),
        during_longest_batch_ms=progress.longest_batch_ms or 0.0 if progress else 0.0,
        throttled=throttled,
        clients={
            kind: (baseline.summary(kind), during.summary(kind), indexing.summary(kind))
            for kind in ("read", "write")
        },
        index_s=index_s,
        plain_index_s=plain_index_s,
    )


def scale(dsn: str, sizes: list[int]) -> tuple[float, list[tuple[int, float, float]]]:
    """The start-up's time (apply on an empty table) and, per size, (rows, time less start-up, RSS)."""
    uvloop.run(load(dsn, "scale", 0))
    startup = min(apply_peak_rss(dsn, "scale")[0] for _ in range(3))
    found = []
    for rows in sizes:
        uvloop.run(load(dsn, "scale", rows))
        elapsed, rss = apply_peak_rss(dsn, "scale")
        found.append((rows, elapsed - startup, rss))
    return startup, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, nargs="+", default=[15, 18])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--scale", type=int, nargs="*", default=[250_000, 500_000, 1_000_000, 2_000_000, 4_000_000]
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.runs, args.scale = 200_000, 1, [250_000, 500_000, 1_000_000]
    began = time.monotonic()
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    main_rows = [
        "| PG | bulk UPDATE rows/s | backfill rows/s | ratio | longest batch ms (alone / under clients) "
        "| index build s: plain / zdmproxy (ratio) | throttle events |",
        "|---|---|---|---|---|---|---|",
    ]
    client_rows = [
        "| PG | clients | max ms: baseline / backfill / index build | max as a ratio to baseline "
        "(backfill / index build) | p99 ms: baseline / backfill / index build |",
        "|---|---|---|---|---|",
    ]
    scale_rows = [
        "| PG | rows | apply s (start-up subtracted) | rows/s | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for major in args.versions:
        bin_dir = find_bin_dir(major)
        if bin_dir is None:
            main_rows.append(f"| {major} | skipped: not installed |||||||")
            continue
        with Cluster(bin_dir, settings=FACTS_SETTINGS) as cluster:
            r = uvloop.run(measure(cluster.dsn(), args.rows, args.runs))
            startup, grown = scale(cluster.dsn(), args.scale)
        main_rows.append(
            f"| {major} | {r.bulk_rows_s:,.0f} | {r.fill_rows_s:,.0f} | "
            f"**{r.fill_rows_s / r.bulk_rows_s:.2f}** "
            f"| {r.longest_batch_ms:.0f} / {r.during_longest_batch_ms:.0f} | {r.plain_index_s:.2f} / "
            f"{r.index_s:.2f} (**{r.index_s / r.plain_index_s:.2f}x**) | {r.throttled} |"
        )
        for kind, (base, during, indexing) in r.clients.items():
            client_rows.append(
                f"| {major} | {kind}s | {base[0]:.1f} / {during[0]:.1f} / {indexing[0]:.1f} | "
                f"**{during[0] / base[0]:.2f}x / {indexing[0] / base[0]:.2f}x** | "
                f"{base[1]:.2f} / {during[1]:.2f} / {indexing[1]:.2f} |"
            )
        scale_rows.append(f"| {major} | 0 (start-up) | {startup:.1f} | | |")
        for rows, elapsed, rss in grown:
            scale_rows.append(f"| {major} | {rows:,} | {elapsed:.1f} | {rows / elapsed:,.0f} | {rss:.0f} |")
    facts = machine_facts()
    text = (
        f"# bench/backfill.py, {date.today()}\n\n"
        f"`{' '.join(sys.argv)}`: {args.rows:,} rows, {args.runs} run(s) per mode, "
        f"{time.monotonic() - began:.0f} s; load average {load_before} at the start; "
        f"{facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']}; "
        f"server settings: {', '.join(f'{k}={v}' for k, v in FACTS_SETTINGS.items())}.\n\n"
        + "\n".join(main_rows)
        + "\n\n"
        + "\n".join(client_rows)
        + "\n\n"
        + "\n".join(scale_rows)
        + "\n"
    )
    print(text)
    out = (
        args.out or ROOT / "bench" / "results" / f"backfill-{date.today()}{'-quick' if args.quick else ''}.md"
    )
    out.write_text(text)


if __name__ == "__main__":
    main()
