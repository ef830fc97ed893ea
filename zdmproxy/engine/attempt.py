"""One attempt at one step: timeouts set, locks taken first, the watchdog on guard.

The attempt does not care who owns the connection or who asked for the
step: it takes two sessions (one to run on, one to watch from) and reports a
record of what happened. Transactional steps take their table locks first,
strongest first, with ``LOCK TABLE ONLY``: a statement that needs several
locks would otherwise wait up to lock_timeout for each, and a timeout during
the LOCK phase is known to be a lock wait, not a slow statement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zdmproxy.engine.blockers import Target
from zdmproxy.engine.connector import Session, execute_quietly
from zdmproxy.engine.events import Blocker
from zdmproxy.engine.outcomes import Outcome, classify_failure, pg_error_info
from zdmproxy.engine.watchdog import Watchdog
from zdmproxy.errors import PgErrorInfo
from zdmproxy.plan.model import Step
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.names import quote_relation


@dataclass
class AttemptRecord:
    number: int
    lock_timeout_ms: float
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    outcome: Outcome | None = None
    error: PgErrorInfo | None = None
    blockers: tuple[Blocker, ...] = ()
    queued_behind_us: int = 0

    @property
    def duration_s(self) -> float:
        return (self.ended_at or time.time()) - self.started_at


class AttemptFailed(Exception):
    def __init__(self, record: AttemptRecord) -> None:
        assert record.outcome is not None
        super().__init__(f"attempt {record.number}: {record.outcome.value}")
        self.record = record


def lock_statements(targets: Sequence[Target]) -> list[str]:
    """LOCK TABLE statements for a step's existing tables, strongest mode first.

    Only plain and partitioned tables: LOCK on a view locks its base tables too (whatever
    ONLY says), and materialized views and foreign tables cannot be locked at all.
    """
    tables = [t.request for t in targets if t.request.kind == "table" and t.relkind in ("r", "p")]
    tables.sort(key=lambda req: req.mode, reverse=True)
    return [f"LOCK TABLE ONLY {quote_relation(req.relation)} IN {req.mode.sql_name} MODE" for req in tables]


def _ms(value: float) -> int:
    """A timeout in whole milliseconds for SET; never 0, which would mean no timeout at all."""
    return max(1, math.ceil(value))


async def run_attempt(
    session: Session,
    watch: Session,
    step: Step,
    targets: Sequence[Target],
    policy: MigrationPolicy,
    number: int,
    time_left_s: float,
    *,
    commit_with: tuple[str, tuple[Any, ...]] | None = None,
) -> AttemptRecord:
    """Run ``step`` once; return its record, or raise AttemptFailed carrying it.

    Lock waits never outlast the step's deadline (``time_left_s``); a statement that got its
    locks may run for its whole statement_timeout. ``commit_with`` is a statement (and its
    arguments) a transactional step runs in its own transaction just before COMMIT: the
    journal's row saying the step is done, so the two commit together or not at all.
    """
    if step.transactional:
        lock_timeout_ms = policy.lock_timeout_for(number)
        statement_timeout_ms = policy.statement_timeout_s * 1000
    else:
        lock_timeout_ms = policy.concurrent_lock_timeout_s * 1000
        statement_timeout_ms = policy.concurrent_statement_timeout_s * 1000
    lock_timeout_ms = min(lock_timeout_ms, max(time_left_s, 0.001) * 1000)
    record = AttemptRecord(number=number, lock_timeout_ms=lock_timeout_ms)
    dog = Watchdog(watch, session.get_server_pid(), policy.queue_budget_ms, policy.watchdog_interval_ms)
    in_lock_phase = False
    started = time.monotonic()

    async def run(query: str) -> None:
        nonlocal started
        started = time.monotonic()
        await session.execute(query)

    try:
        async with dog:
            if step.transactional:
                await run("BEGIN")
                await run(
                    f"SET LOCAL lock_timeout = {_ms(lock_timeout_ms)};"
                    f" SET LOCAL statement_timeout = {_ms(statement_timeout_ms)}"
                )
                in_lock_phase = True
                for statement in lock_statements(targets):
                    await run(statement)
                in_lock_phase = False
                await run(step.sql)
                if commit_with is not None:
                    await session.execute(commit_with[0], *commit_with[1])
                await run("COMMIT")
            else:
                await run(
                    f"SET lock_timeout = {_ms(lock_timeout_ms)};"
                    f" SET statement_timeout = {_ms(statement_timeout_ms)}"
                )
                try:
                    await run(step.sql)
                finally:
                    await execute_quietly(session, "RESET lock_timeout; RESET statement_timeout")
    except Exception as exc:
        record.outcome = classify_failure(
            exc,
            we_cancelled=dog.cancelled,
            waiting_for_lock=in_lock_phase or dog.waiting_for_lock,
            elapsed_ms=(time.monotonic() - started) * 1000,
            statement_timeout_ms=statement_timeout_ms,
        )
        record.error = pg_error_info(exc)
        if step.transactional:
            await execute_quietly(session, "ROLLBACK")
        raise AttemptFailed(record) from exc
    else:
        record.outcome = Outcome.SUCCEEDED
    finally:
        record.ended_at = time.time()
        record.blockers = tuple(dog.blockers.values())
        record.queued_behind_us = dog.max_queued
    return record
