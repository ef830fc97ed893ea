"""One attempt at one step: timeouts set, locks taken first, the watchdog on guard.

The attempt does not care who owns the connection or who asked for the
step: it takes two sessions (one to run on, one to watch from) and reports a
record of what happened. Transactional steps take their table locks first,
strongest first, with ``LOCK TABLE ONLY``: a statement that needs several
locks would otherwise wait up to lock_timeout for each, and a timeout during
the LOCK phase is known to be a lock wait, not a slow statement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zdmproxy.engine.blockers import Target
from zdmproxy.engine.connector import Session, execute_quietly
from zdmproxy.engine.events import Blocker
from zdmproxy.engine.outcomes import Outcome, classify_failure, pg_error_info
from zdmproxy.engine.queries import QUERIES
from zdmproxy.engine.timeouts import RESET_TIMEOUTS, timeouts_sql
from zdmproxy.engine.watchdog import QueueReport, Watchdog
from zdmproxy.errors import PgErrorInfo
from zdmproxy.plan.model import Step
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.locks import LockMode
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


def blocks_traffic(step: Step) -> bool:
    """Whether a lock the step takes on an existing relation makes reads or writes wait
    (every mode that conflicts with ROW EXCLUSIVE; ACCESS SHARE conflicts only with one of them)."""
    return any(lock.mode.conflicts_with(LockMode.ROW_EXCLUSIVE) for lock in step.locks if not lock.created)


def runs_quietly(step: Step) -> bool:
    """Whether nobody's reads or writes wait for the step *while it runs*: the catalogue vouches
    for its locks (not unverified), it locks existing relations only in modes both pass (SHARE
    UPDATE EXCLUSIVE and weaker: VALIDATE CONSTRAINT, VACUUM, ANALYZE) and writes no rows (ROW
    EXCLUSIVE: the row locks of an UPDATE or DELETE hold writers up). Such a step may run as long
    as a CONCURRENTLY build; any other is cut at statement_timeout_s."""
    existing = [lock for lock in step.locks if not lock.created]
    return (
        bool(existing)
        and not step.unverified
        and not blocks_traffic(step)
        and all(lock.mode is not LockMode.ROW_EXCLUSIVE for lock in existing)
    )


# The statements that wait for older transactions to end (a virtualxid wait), which queues
# nobody: they need a long lock_timeout, or every long transaction anywhere leaves debris.
_WAITS_FOR_OLDER_TRANSACTIONS = (
    "CREATE INDEX CONCURRENTLY",
    "DROP INDEX CONCURRENTLY",
    "REINDEX CONCURRENTLY",
    "ALTER TABLE DETACH PARTITION",  # non-transactional: CONCURRENTLY (or its FINALIZE)
)


@dataclass(frozen=True)
class Bounds:
    """How long one attempt may wait and run, chosen by what its locks block.

    A step whose lock blocks reads or writes waits at most the short lock_timeout, whatever its
    transaction mode. Only a statement that must wait for older transactions gets a long
    lock_timeout (and a non-transactional one that runs quietly, VACUUM); if it also takes a
    traffic-blocking lock (DETACH ... CONCURRENTLY's ACCESS EXCLUSIVE on the partition), the
    watchdog holds that relation wait to the short bound (``wait_limit_ms``), since one
    lock_timeout cannot tell the two waits apart. The run is bounded the same way: by
    statement_timeout_s when traffic waits for it, by the CONCURRENTLY bound when nobody does
    (``runs_quietly``), whatever the transaction mode.
    """

    lock_timeout_ms: float
    statement_timeout_ms: float
    wait_limit_ms: float | None = None

    @classmethod
    def of(cls, step: Step, policy: MigrationPolicy, number: int, time_left_s: float) -> Bounds:
        short = policy.lock_timeout_for(number)
        traffic = blocks_traffic(step)
        waits_for_older = not step.transactional and step.kind.startswith(_WAITS_FOR_OLDER_TRANSACTIONS)
        quiet = runs_quietly(step)
        if waits_for_older or (quiet and not step.transactional):
            lock_timeout_ms = policy.concurrent_lock_timeout_s * 1000
        else:
            lock_timeout_ms = short
        if waits_for_older or quiet:
            statement_timeout_ms = policy.concurrent_statement_timeout_s * 1000
        else:
            statement_timeout_ms = policy.statement_timeout_s * 1000
        left_ms = max(time_left_s, 0.001) * 1000  # lock waits never outlast the step's deadline
        return cls(
            lock_timeout_ms=min(lock_timeout_ms, left_ms),
            statement_timeout_ms=statement_timeout_ms,
            wait_limit_ms=min(short, left_ms) if waits_for_older and traffic else None,
        )

    @property
    def client_timeout_s(self) -> float:
        """The client's own bound on one statement: the server's, plus room for the answer to
        arrive. Past it the network, not the statement, is what hangs."""
        return (self.lock_timeout_ms + self.statement_timeout_ms) / 1000 + 30


async def run_attempt(
    session: Session,
    watch: Session,
    step: Step,
    targets: Sequence[Target],
    policy: MigrationPolicy,
    number: int,
    time_left_s: float,
    *,
    pid: int,
    commit_with: tuple[str, tuple[Any, ...]] | None = None,
    in_transaction: bool = False,
    report_queue: QueueReport | None = None,
) -> AttemptRecord:
    """Run ``step`` once on ``session`` (watched from ``watch``); return its record, or raise
    AttemptFailed carrying it. Usable on any connection the caller owns.

    ``pid`` is the step session's own backend, from ``pg_backend_pid()`` inside it.
    Lock waits never outlast the step's deadline (``time_left_s``); a statement that got its
    locks may run for its whole statement_timeout. ``commit_with`` is a statement (and its
    arguments) a transactional step runs in its own transaction just before COMMIT: the
    journal's row saying the step is done, so the two commit together or not at all.

    ``in_transaction``: the caller's transaction is already open on ``session`` (the wire
    protocol front door relays a client's transaction); the step runs inside a SAVEPOINT that is
    released on success and rolled back to on failure, leaving the caller's transaction usable,
    and the caller's own timeouts are restored afterwards. Whether to try again is the caller's
    call: only while ``holds_traffic_blocking_locks`` says no, or its wait holds traffic up.
    """
    bounds = Bounds.of(step, policy, number, time_left_s)
    record = AttemptRecord(number=number, lock_timeout_ms=bounds.lock_timeout_ms)
    running: asyncio.Task[Any] | None = None

    def cancel_statement() -> None:
        if running is not None and not running.done():
            running.cancel()  # asyncpg sends the server a cancel request for it

    dog = Watchdog(
        watch,
        pid,
        policy.queue_budget_ms,
        policy.watchdog_interval_ms,
        wait_limit_ms=bounds.wait_limit_ms,
        cancel_statement=cancel_statement,
        transactional=step.transactional or in_transaction,
        report_queue=report_queue,
    )
    in_lock_phase = False
    started = time.monotonic()

    async def run(query: str, *args: Any) -> None:
        nonlocal started, running
        started = time.monotonic()
        running = asyncio.ensure_future(session.execute(query, *args, timeout=bounds.client_timeout_s))
        try:
            await running
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if running.cancelled() and task is not None and not task.cancelling():
                raise WatchLost() from None  # our own cancel, not the caller's
            raise

    transactional = step.transactional or in_transaction
    begin, finish, undo = (
        ("SAVEPOINT zdmproxy_step", "RELEASE SAVEPOINT zdmproxy_step", "ROLLBACK TO SAVEPOINT zdmproxy_step")
        if in_transaction
        else ("BEGIN", "COMMIT", "ROLLBACK")
    )
    saved: Any = None
    try:
        async with dog:
            if in_transaction:
                saved = await session.fetchrow(QUERIES["current_timeouts"])
            if transactional:
                await run(begin)
                await run(timeouts_sql(bounds.lock_timeout_ms, bounds.statement_timeout_ms, local=True))
                in_lock_phase = True
                for statement in lock_statements(targets):
                    await run(statement)
                in_lock_phase = False
                await run(step.sql)
                if commit_with is not None:
                    await run(commit_with[0], *commit_with[1])
                await run(finish)
            else:
                await run(timeouts_sql(bounds.lock_timeout_ms, bounds.statement_timeout_ms, local=False))
                try:
                    await run(step.sql)
                finally:
                    await execute_quietly(session, RESET_TIMEOUTS)
    except Exception as exc:
        record.outcome = classify_failure(
            exc,
            we_cancelled=dog.cancelled,
            waiting_for_lock=in_lock_phase or dog.waiting_for_lock,
            elapsed_ms=(time.monotonic() - started) * 1000,
            statement_timeout_ms=bounds.statement_timeout_ms,
        )
        record.error = pg_error_info(exc)
        if transactional:
            await execute_quietly(session, undo)
        raise AttemptFailed(record) from exc
    else:
        record.outcome = Outcome.SUCCEEDED
    finally:
        if in_transaction and saved is not None and not session.is_closed():
            await session.fetchrow(
                QUERIES["restore_timeouts"], saved["lock_timeout"], saved["statement_timeout"]
            )
        record.ended_at = time.time()
        record.blockers = tuple(dog.blockers.values())
        record.queued_behind_us = dog.max_queued
    return record


class WatchLost(Exception):
    """The watch connection was lost while nothing else bounded a traffic-blocking wait, and
    the attempt's statement was cancelled from the client side."""

    sqlstate = "57014"


async def holds_traffic_blocking_locks(session: Session) -> bool:
    """Whether the session's open transaction already holds a lock that blocks reads or writes,
    or anyone waits right now for a lock it holds (a row it changed): then waiting (or retrying)
    inside it would hold that traffic up, so a caller running steps in its own transaction must
    stop rather than try again."""
    return bool(await session.fetchval(QUERIES["holds_traffic_blocking_locks"]))
