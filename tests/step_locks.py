"""Each step of a plan checked against what PostgreSQL locks and reads, the way
tests/test_lock_catalogue.py checks a statement: a transactional step runs inside BEGIN ...
ROLLBACK and its backend's pg_locks rows are compared with the step's lock list; a step that
cannot run in a transaction is made to wait behind a blocker while its pg_locks rows are read.
Then the step runs for real, so the next one sees the state it built on."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from test_lock_catalogue import (
    Case,
    _locks_in_transaction,
    _locks_while_blocked,
    relations,
)

from zdmproxy.plan.model import Plan, Step
from zdmproxy.plan.verdict import blocks_traffic
from zdmproxy.sql.locks import LockMode


async def check_step_locks(
    dsn: str,
    plan: Plan,
    blocker_table: Callable[[Step], str] = lambda step: str(step.locks[0].relation),
    *,
    partition_by_partition: bool = False,
) -> list[set[str]]:
    """Run every step of ``plan`` on ``dsn``, each observed first; returns the tables each step
    read in full. ``blocker_table`` names the table a non-transactional step's blocker reads (it
    must be one the step waits for). ``partition_by_partition``: a non-transactional step works
    through partitions one transaction at a time and holds no lock on the parent while it
    waits, so only "every lock seen is one the step lists, at that strength or weaker" holds."""
    conn = await asyncpg.connect(dsn)
    scanned_by_step = []
    try:
        for step in plan.steps:
            before = await relations(conn)
            if step.transactional:
                case = Case(step.sql)
                observed, scanned = await _locks_in_transaction(conn, case, before)
                await conn.execute(step.sql)
            else:
                case = Case(step.sql, blocker_table=blocker_table(step))
                observed, scanned = await _locks_while_blocked(conn, dsn, case, before)
            _compare(step, observed, exact_target=not partition_by_partition)
            claimed = {str(r) for r in step.scans}
            assert scanned <= claimed, f"{step.sql}: PostgreSQL read {scanned - claimed} in full, not claimed"
            scanned_by_step.append(scanned)
    finally:
        await conn.close()
    return scanned_by_step


def _compare(step: Step, observed: dict[str, tuple[str, LockMode]], *, exact_target: bool) -> None:
    expected = {str(lock.relation): (lock.kind, lock.mode) for lock in step.locks if not lock.created}
    if step.transactional:
        tables = {rel: mode for rel, (kind, mode) in observed.items() if kind in "rpvmf"}
        want = {rel: mode for rel, (kind, mode) in expected.items() if kind == "table"}
        assert tables == want, f"{step.sql}: PostgreSQL locked {tables}, the step says {want}"
        for rel, (kind, mode) in expected.items():
            if kind == "index":
                assert observed[rel][1] == mode, f"{step.sql}: index {rel} {observed[rel]} not {mode}"
    else:
        for rel, (_, mode) in observed.items():
            assert rel in expected and mode <= expected[rel][1], f"{step.sql}: {rel} {mode}"
        target = str(step.locks[0].relation)
        if "DETACH" in step.kind or not exact_target:
            return  # DETACH ... CONCURRENTLY holds no relation lock while it waits (POSTGRES-FACTS)
        assert observed[target][1] == expected[target][1], f"{step.sql}: {target}"


def read_under_traffic_lock(plan: Plan, scanned_by_step: list[set[str]]) -> list[tuple[str, str]]:
    """(step, table) wherever PostgreSQL read a table in full while the step held a lock on it
    that stops reads or writes: what a rule exists to prevent."""
    found = []
    for step, scanned in zip(plan.steps, scanned_by_step, strict=True):
        held = {str(lock.relation): lock.mode for lock in step.locks}
        found += [
            (step.sql, table) for table in sorted(scanned) if table in held and blocks_traffic(held[table])
        ]
    return found
