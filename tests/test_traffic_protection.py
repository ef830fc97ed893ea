"""The promise, measured: clients never wait behind zdmproxy's DDL longer than the budget.

One session holds AccessShareLock in an open transaction for several seconds
while 8 clients run primary-key reads and writes. ``zdmproxy apply`` of an
ADD COLUMN must not make any client wait longer than the queue budget plus a
small margin, and must finish shortly after the blocker ends. The same ALTER
run naively in the same test makes the clients wait for the blocker.

What the clients measured is backed by what PostgreSQL says: pg_locks is
sampled every few milliseconds, and no session may ever be seen waiting
behind a lock zdmproxy holds or requests for longer than the budget plus one
watchdog interval; with pre-flight, zdmproxy's own lock request never queues
behind the blocker at all (switch pre-flight off with ZDM_BLOCKER_MIN_AGE_MS
and this test fails).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
from helpers import ITEMS, finish, idle_blocker, start_cli, wait_for_preflight, wait_until_blocked
from traffic import LockSampler, Traffic

BUDGET_MS = 100
# Python clients on 2 shared cores see scheduling noise, not only lock waits (304 ms seen under a
# load of 5 test suites at once): the exact bound is asserted on pg_locks below.
MARGIN_MS = 400
WATCHDOG_INTERVAL_MS = 20  # the default
HOLD_S = 3.0


async def test_apply_keeps_traffic_flowing_where_naive_alter_stalls(dsn: str, tmp_path: Path) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS)
    try:
        async with Traffic(dsn, "items", rows=10000) as traffic:
            # zdmproxy: blocker first, then apply, which must wait without queueing.
            blocker = await idle_blocker(dsn, "items")
            blocker_pid = blocker.get_server_pid()
            start = time.monotonic()
            sampler = await LockSampler(dsn).__aenter__()
            proc = await start_cli(
                "apply",
                "--dsn",
                dsn,
                "--id",
                "add-note",
                "--queue-budget-ms",
                str(BUDGET_MS),
                "--json",
                sql="ALTER TABLE items ADD COLUMN note text",
                tmp_path=tmp_path,
            )
            await wait_for_preflight(admin, "add-note")
            # The blocker's lifetime, and at least a second of pre-flight waiting for it (the CLI
            # can take seconds to start on busy cores).
            await asyncio.sleep(max(1.0, start + HOLD_S - time.monotonic()))
            await blocker.execute("COMMIT")
            released, released_wall = time.monotonic(), time.time()
            result = await finish(proc)
            finished = time.monotonic()
            ours_max = traffic.max_latency(start, await traffic.settle())
            ours_errors = list(traffic.errors)

            # naive: the same ALTER, no timeouts, behind the same kind of blocker.
            blocker2 = await idle_blocker(dsn, "items")
            naive = await asyncpg.connect(dsn, server_settings={"application_name": "naive"})
            naive_start = time.monotonic()
            alter = asyncio.create_task(naive.execute("ALTER TABLE items ADD COLUMN naive text"))
            await wait_until_blocked(admin, naive.get_server_pid())
            await asyncio.sleep(max(0.0, naive_start + HOLD_S - time.monotonic()))
            await blocker2.execute("COMMIT")
            await asyncio.wait_for(alter, 30)
            naive_max = traffic.max_latency(naive_start, await traffic.settle())
            await sampler.__aexit__()
            await asyncio.gather(blocker.close(), blocker2.close(), naive.close())
    finally:
        await admin.close()

    assert result.code == 0, result.stderr
    assert ours_errors == []
    # The sampler does see queues: the naive ALTER's, seconds long.
    assert sampler.longest_wait_behind("naive") > 1000, (
        "the sampler missed the naive queue: it proves nothing"
    )
    assert sampler.queued_behind("zdmproxy", blocker_pid) == [], "our lock request queued behind the blocker"
    longest = sampler.longest_wait_behind("zdmproxy", start, finished)
    assert longest <= BUDGET_MS + WATCHDOG_INTERVAL_MS, f"a session waited {longest:.0f} ms behind zdmproxy"
    assert ours_max * 1000 < BUDGET_MS + MARGIN_MS, f"a client waited {ours_max * 1000:.0f} ms"
    # The process's exit included (1.7 s seen under five test suites at once); the attempt's own
    # start is checked tightly below.
    assert finished - released < 5, f"ALTER finished {finished - released:.2f} s after the blocker"
    step = result.json()["steps"][0]  # type: ignore[index]
    assert step["outcome"] == "succeeded"
    # It starts within a few hundred ms of the blocker's end: polled, not a blind backoff.
    assert step["attempts"][0]["started_at"] - released_wall < 0.5
    blocked = " ".join(step["blocked"])
    assert f"pid {blocker_pid}" in blocked and "app 'reporting'" in blocked, blocked
    assert "idle in transaction" in blocked
    # The contrast: run naively, the same ALTER stalls every client for the blocker's lifetime.
    assert naive_max > 2.0, f"naive ALTER: clients waited at most {naive_max:.2f} s"
    assert traffic.errors == []
