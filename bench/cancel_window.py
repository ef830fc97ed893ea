"""How often the watchdog's cancel lands after our lock was granted (issue 11's "remaining window").

``cancel_if_waiting`` checks that our backend still waits for the lock and signals it in one
statement, but the signal travels: if the lock is granted between PostgreSQL reading pg_locks and
the backend taking the interrupt, the cancel ends whatever runs next. This script provokes that
race on purpose, as often as it can: per trial, an idle transaction holds AccessShareLock on a
table, our session waits in ``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE`` (as an attempt runs it: its
own statement in a transaction), and then the holder's COMMIT and the watchdog's
``cancel_if_waiting`` are sent at the same moment, the cancel shifted by a random offset of up to
±1 ms so that every ordering is sampled. Each trial ends one of these ways:

- ``not sent``: the check found the lock granted: no signal (the common case once COMMIT won);
- ``cancelled waiting``: signalled and the LOCK failed with 57014: the wait was ended, as meant;
- ``landed after grant``: signalled, the LOCK returned, and the cancel ended the next statement
  (``SELECT pg_sleep(0.05)``, standing in for the step's DDL): the window, hit;
- ``lost``: signalled, the LOCK returned, and nothing was cancelled (the signal arrived between
  statements, when PostgreSQL ignores it).

Whichever way, the transaction is rolled back and retried by the engine (``watchdog_cancelled``):
the window costs a retry, never a wrong result. The trials are biased towards the race (real runs
cancel only after the queue budget, with no COMMIT timed against it), so the rate here is an
upper bound for that moment, not a rate per migration.

Run: ``.venv/bin/python bench/cancel_window.py [--versions 15 18] [--trials 500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Final

import asyncpg
import uvloop

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/ is not a package; its cluster helper is reused
from pgcluster import Cluster, find_bin_dir  # noqa: E402

from zdmproxy.engine.queries import QUERIES  # noqa: E402

OUTCOMES: Final = ("not sent", "cancelled waiting", "landed after grant", "lost")
# Our waiting request, as the watch query names it (its whole tag, as cancel_if_waiting compares).
OUR_WAIT: Final = """
SELECT row(l.locktype, l.database, l.relation, l.page, l.tuple, l.virtualxid, l.transactionid,
           l.classid, l.objid, l.objsubid)::text AS tag, l.mode
  FROM pg_locks l WHERE l.pid = $1 AND NOT l.granted
"""


async def trial(holder: asyncpg.Connection, ours: asyncpg.Connection, watch: asyncpg.Connection) -> str:
    await holder.execute("BEGIN; LOCK TABLE items IN ACCESS SHARE MODE")
    await ours.execute("BEGIN")
    lock = asyncio.ensure_future(ours.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
    pid = ours.get_server_pid()
    while (wait := await watch.fetchrow(OUR_WAIT, pid)) is None:
        await asyncio.sleep(0.001)
    offset = random.uniform(-0.001, 0.001)

    async def cancel() -> bool:
        await asyncio.sleep(max(0.0, offset))
        return bool(await watch.fetchval(QUERIES["cancel_if_waiting"], pid, wait["tag"], wait["mode"]))

    async def commit() -> None:
        await asyncio.sleep(max(0.0, -offset))
        await holder.execute("COMMIT")

    sent, _ = await asyncio.gather(cancel(), commit())
    try:
        await lock
    except asyncpg.QueryCanceledError:
        outcome = "cancelled waiting"
    else:
        try:
            await ours.execute("SELECT pg_sleep(0.05)")
            outcome = "lost" if sent else "not sent"
        except asyncpg.QueryCanceledError:
            outcome = "landed after grant"
    await ours.execute("ROLLBACK")
    if not sent and outcome != "not sent":
        raise AssertionError(f"cancel_if_waiting sent nothing, yet: {outcome}")
    return outcome


async def measure(dsn: str, trials: int) -> Counter[str]:
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    holder, ours, watch = conns
    try:
        await holder.execute("CREATE TABLE items (id int)")
        return Counter([await trial(holder, ours, watch) for _ in range(trials)])
    finally:
        for conn in conns:
            await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, nargs="+", default=[15, 18])
    parser.add_argument("--trials", type=int, default=500)
    args = parser.parse_args()
    print("| PG | trials | " + " | ".join(OUTCOMES) + " | window hit |")
    print("|---|---|" + "---|" * (len(OUTCOMES) + 1))
    for major in args.versions:
        bin_dir = find_bin_dir(major)
        if bin_dir is None:
            print(f"| {major} | skipped: not installed |" + " |" * (len(OUTCOMES) + 1))
            continue
        with Cluster(bin_dir) as cluster:
            counts = uvloop.run(measure(cluster.dsn(), args.trials))
        hit = counts["landed after grant"] / args.trials
        cells = " | ".join(str(counts[o]) for o in OUTCOMES)
        print(f"| {major} | {args.trials} | {cells} | {hit:.1%} |")


if __name__ == "__main__":
    main()
