"""The backfill engine: one large UPDATE (or DELETE) as keyset batches, each a short transaction.

A step with ``step.backfill`` set (a rule's plan, plan/model.Backfill) runs here instead of
as one statement. The walk:

- **Keyset over the primary key** (single or composite columns, compared as a row), from the
  checkpoint to an upper bound read once, when the backfill first starts, and kept in the
  checkpoint: rows inserted later are covered by the column's default or the sync trigger, so
  the walk terminates under steady inserts. A table without a primary key is refused.
- **One batch, one short transaction** through the engine's attempt (attempt.run_attempt:
  lock_timeout, the watchdog; pre-flight before the first batch and after a failed one), with
  ``statement_timeout`` set to ``backfill_max_lock_ms``: no batch's UPDATE holds its row locks
  longer (the COMMIT's fsync comes on top, unbounded by any timeout).
  Before it, a read of the key ``batch_rows`` rows on fixes the batch's end key; the batch
  changes the rows in (last key, end key] and, in the same transaction before COMMIT, moves
  the checkpoint to the end key, so a crash resumes exactly there: no row redone, none
  skipped. A rule's predicate (``c IS NULL``) also makes a redone batch change nothing. The
  key is the table's primary key as the catalog says when the walk starts (the plan's
  ``Backfill.key`` is what it was when planned; without a database it is empty).
- **Adaptive size**: each batch's duration steers the next one's rows towards
  ``backfill_target_batch_ms`` (at most doubling or halving); a batch that hits its statement
  timeout is halved and tried again, and one that times out at one row fails the step.
- **Throttled by health** (engine/health.py) between batches, with the signal named in the
  progress events; the live knobs an operator sets (migrations.throttle) are merged over the
  policy, and a pause or cancel asked through the journal is obeyed between batches (the
  checkpoint is already committed, so resuming continues from it). Both are read every
  ``backfill_health_poll_ms``, not before every batch: they move in seconds, batches in ms.
- **Memory flat**: one batch's end key is all it holds, whatever the table's size.

Every batch statement is generated here with pglast from the plan's SQL fragments and the
table's quoted names; key values go in as parameters (the key read) or as literals pglast
quotes (the batch, which the attempt runs as one simple-protocol statement).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import asyncpg
from pglast import ast, parse_sql
from pglast.stream import RawStream
from pglast.visitors import Visitor
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from zdmproxy.engine.attempt import AttemptFailed, AttemptRecord, run_attempt
from zdmproxy.engine.blockers import Target, resolve_targets
from zdmproxy.engine.connector import CONNECTION_LOST, Session, connect
from zdmproxy.engine.events import BackfillProgress, EventKind
from zdmproxy.engine.health import BlockedSampler, Signal, pausing_signals
from zdmproxy.engine.ledger import Checkpoint, Ledger
from zdmproxy.engine.outcomes import Outcome, classify_failure, pg_error_info
from zdmproxy.engine.queries import QUERIES
from zdmproxy.errors import (
    CancelRequested,
    DatabaseUnreachable,
    PauseRequested,
    PgErrorInfo,
    StatementTimedOut,
    UnsupportedStatement,
    ZdmError,
)
from zdmproxy.plan.model import Backfill, Step
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.names import quote_ident, quote_relation


class BatchHost(Protocol):
    """What a backfill needs from the step it runs in (the runner's step run provides it)."""

    policy: MigrationPolicy
    ledger: Ledger

    @property
    def index(self) -> int: ...

    @property
    def dsn(self) -> str: ...

    @property
    def migration_id(self) -> str: ...

    async def emit(self, kind: EventKind, message: str, **extra: object) -> None: ...

    async def batch_sessions(self) -> tuple[Session, Session, int]:
        """The step session (claimed), the watch session, and the step backend's pid."""

    async def batch_preflight(self, targets: list[Target]) -> None:
        """Wait out sessions whose locks the batch would queue behind (the step's pre-flight)."""

    async def batch_failed(self, record: AttemptRecord) -> None:
        """Record a failed batch attempt (report, journal, event; a lost connection is closed)."""

    def final_error(self, record: AttemptRecord) -> ZdmError:
        """The error a step ends with after this attempt (the runner's wording)."""


# ---------------------------------------------------------------------------------------------
# The statements, generated


class _Bind(Visitor):
    """Replaces $n with the n-th text value as a quoted literal (inside its ``::type`` cast)."""

    def __init__(self, values: Sequence[str]) -> None:
        super().__init__()
        self.values = values

    def visit_ParamRef(self, ancestors: Any, node: ast.ParamRef) -> ast.A_Const:
        return ast.A_Const(val=ast.String(sval=self.values[(node.number or 0) - 1]))


class _FindParameters(Visitor):
    found = False

    def visit_ParamRef(self, ancestors: Any, node: ast.ParamRef) -> None:
        self.found = True


def _has_parameters(sql: str) -> bool:
    finder = _FindParameters()
    finder(parse_sql(sql)[0])
    return finder.found


def _deparse(sql: str, values: Sequence[str] = ()) -> str:
    (raw,) = parse_sql(sql)
    if values:
        _Bind(values)(raw)
    assert raw.stmt is not None
    return str(RawStream()(raw.stmt))


@dataclass(frozen=True)
class Walk:
    """The statements of one backfill over one table's primary key (pure: no I/O).

    ``key`` and ``types`` are the key's columns and their types as ``format_type`` prints them.
    Key values travel as text (``k::text`` read, ``'v'::type`` written), which round-trips
    every type a primary key can have.
    """

    backfill: Backfill
    key: tuple[str, ...]
    types: tuple[str, ...]

    def __post_init__(self) -> None:
        # The batch's own $n are the key values: the plan's fragments may not have any.
        assignments, predicate = self.backfill.assignments, self.backfill.predicate
        probes = ([f"UPDATE t SET {assignments}"] if assignments else []) + (
            [f"SELECT WHERE {predicate}"] if predicate else []
        )
        if any(_has_parameters(probe) for probe in probes):
            raise UnsupportedStatement(f"a backfill takes no parameters ($n): {probes}")

    @property
    def _table(self) -> str:
        return quote_relation(self.backfill.table)

    def _columns(self, suffix: str = "") -> str:
        return ", ".join(quote_ident(k) + suffix for k in self.key)

    def _texts(self) -> str:
        return ", ".join(f"{quote_ident(k)}::text" for k in self.key)

    def _order(self, desc: bool = False) -> str:
        """ORDER BY the key, qualified: a bare name would sort by an output column of that name
        (the key's text copy: '9' after '10') where there is one."""
        return ", ".join(f"walked.{quote_ident(k)}{' DESC' if desc else ''}" for k in self.key)

    def _tuple(self, first: int, cast: str = "") -> str:
        """``$first::type, ...`` for the key's columns (parameters sent as text when ``cast``)."""
        return ", ".join(f"${first + i}{cast}::{t}" for i, t in enumerate(self.types))

    def _range(self, after: bool, first: int, cast: str = "") -> str:
        """Keys after the one at $first.. (when ``after``) up to the next ones, inclusive."""
        row = len(self.key) > 1  # composite: compared as a row, (a, b) > ($1, $2)
        keys = f"({self._columns()})" if row else self._columns()

        def values(n: int) -> str:
            return f"({self._tuple(n, cast)})" if row else self._tuple(n, cast)

        upper = f"{keys} <= {values(first + (len(self.key) if after else 0))}"
        return f"{keys} > {values(first)} AND {upper}" if after else upper

    def upper_bound(self) -> str:
        """The largest key now (the walk's end), as text; no row: the table is empty."""
        return _deparse(
            f"SELECT {self._texts()} FROM {self._table} AS walked ORDER BY {self._order(desc=True)} LIMIT 1"
        )

    def next_batch(self, after: bool) -> str:
        """The key ``n`` rows on (a primary key's values are unique: the batch's end when
        it holds ``n`` rows): parameters are the last key done (when ``after``), the walk's
        upper bound, then n - 1; no row: fewer are left (``rows_left`` counts them)."""
        n = len(self.key) * (2 if after else 1) + 1
        return _deparse(
            f"SELECT {self._texts()} FROM {self._table} AS walked WHERE {self._range(after, 1, '::text')} "
            f"ORDER BY {self._order()} OFFSET ${n}::int LIMIT 1"
        )

    def rows_left(self, after: bool) -> str:
        """How many rows the walk has left (the last batch's): parameters as ``next_batch``'s,
        without n."""
        return _deparse(f"SELECT count(*) FROM {self._table} WHERE {self._range(after, 1, '::text')}")

    def batch(self, after: Sequence[str] | None, end: Sequence[str]) -> str:
        """The batch itself: the rows in (after, end], with the plan's predicate."""
        where = self._range(after is not None, 1)
        if self.backfill.predicate is not None:
            where += f" AND ({self.backfill.predicate})"
        if self.backfill.assignments is None:
            sql = f"DELETE FROM {self._table} WHERE {where}"
        else:
            sql = f"UPDATE {self._table} SET {self.backfill.assignments} WHERE {where}"
        return _deparse(sql, [*(after or ()), *end])


# ---------------------------------------------------------------------------------------------
# The engine


class _Retry(Exception):
    """A batch to try again: the attempt's outcome allows it. After backoff, unless it was
    halved (a smaller batch is the remedy, not waiting)."""

    def __init__(self, record: AttemptRecord, *, at_once: bool = False) -> None:
        super().__init__(record.outcome)
        self.record = record
        self.at_once = at_once


@dataclass
class _Position:
    after: tuple[str, ...] | None  # the last key done; None: nothing done yet
    upper: tuple[str, ...]
    rows_done: int
    rows_total: int | None


def live_policy(policy: MigrationPolicy, throttle: dict[str, Any]) -> tuple[MigrationPolicy, str | None]:
    """The policy with an operator's live backfill knobs on top, and what was wrong with them
    (then the policy stays as it was: a typo must not stop a running backfill)."""
    knobs = {k: v for k, v in throttle.items() if k.startswith("backfill_")}
    ignored = sorted(set(throttle) - set(knobs))
    if not knobs and not ignored:
        return policy, None
    try:
        merged = MigrationPolicy.model_validate({**policy.model_dump(), **knobs})
    except ValidationError as exc:
        return policy, f"live throttle ignored: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
    return merged, (f"live throttle keys ignored (only backfill_* apply): {ignored}" if ignored else None)


class Backfiller:
    """Runs one backfill step to its end (or to an operator's pause or cancel)."""

    def __init__(self, host: BatchHost, step: Step) -> None:
        assert step.backfill is not None
        self.host = host
        self.step = step
        self.backfill = step.backfill
        self.policy = host.policy
        self.batch_rows = self.policy.backfill_batch_rows
        self.throttled_by: str | None = None
        self.health: Session | None = None
        self.started = time.monotonic()
        self.rows_at_start = 0
        self.last_progress = 0.0
        self.warned: str | None = None
        self.longest_batch_ms: float | None = None
        # Read again only after a failed attempt: the step's sessions, and whether the way is
        # clear (pre-flight); the journal's controls and the health signals at most every
        # backfill_health_poll_ms (signals that move in seconds, not per batch).
        self.sessions: tuple[Session, Session, int] | None = None
        self.preflight = True
        self.checked_at = -float("inf")

    async def run(self) -> None:
        self.health = await connect(self.host.dsn, f"zdmproxy-health:{self.host.migration_id}")
        try:
            await self._run()
        finally:
            await self.health.close()

    async def _run(self) -> None:
        assert self.health is not None
        session, _, _ = await self.host.batch_sessions()
        table = await session.fetchrow(QUERIES["backfill_table"], quote_relation(self.backfill.table))
        if table is None:
            raise UnsupportedStatement(f"backfill of {self.backfill.table}: the table does not exist")
        self.table_oid = int(table["oid"])
        key = await session.fetchrow(QUERIES["relation_primary_key"], self.table_oid)
        if key is None:
            raise UnsupportedStatement(
                f"backfill of {self.backfill.table}: the table has no primary key, and batches walk "
                "one (a batch without a key to stop at would rescan the table each time). Add a primary "
                "key first (CREATE UNIQUE INDEX CONCURRENTLY, then ADD PRIMARY KEY USING INDEX), or run "
                "the statement as written in a maintenance window"
            )
        self.walk = Walk(self.backfill, tuple(key["columns"]), tuple(key["types"]))
        # The key reads are the same for every batch (values are parameters): generated once.
        self.reads = {
            after: (self.walk.next_batch(after), self.walk.rows_left(after)) for after in (False, True)
        }
        estimate = float(table["rows_estimate"])
        self.position = await self._start(session, int(estimate) if estimate >= 0 else None)
        self.rows_at_start = self.position.rows_done
        targets = await resolve_targets(session, self.step.locks)
        while True:
            await self._obey_and_throttle()
            if not await self._batch(targets):
                break
            if self.policy.backfill_sleep_ms:
                await asyncio.sleep(self.policy.backfill_sleep_ms / 1000)
            await self._progress()
        await self._progress(final=True)

    async def _start(self, session: Session, estimate: int | None) -> _Position:
        """Where to begin: the journal's checkpoint, or the start with the upper bound now."""
        checkpoint = await self.host.ledger.checkpoint(self.host.index)
        if checkpoint is not None and checkpoint.upper:
            self.batch_rows = checkpoint.batch_rows or self.batch_rows
            await self.host.emit(
                EventKind.BACKFILL_PROGRESS,
                f"resuming the backfill of {self.backfill.table} after key {_key(checkpoint.position)} "
                f"({checkpoint.rows_done} rows done)",
            )
            return _Position(
                tuple(checkpoint.position) or None,
                tuple(checkpoint.upper),
                checkpoint.rows_done,
                checkpoint.rows_total_estimate,
            )
        upper = await session.fetchrow(self.walk.upper_bound())
        return _Position(None, tuple(upper.values()) if upper else (), 0, estimate)

    async def _obey_and_throttle(self) -> None:
        """Between batches: an operator's pause or cancel, the live knobs, the health signals
        (waiting while one says to pause, and obeying a stop asked meanwhile)."""
        assert self.health is not None
        if time.monotonic() - self.checked_at < self.policy.backfill_health_poll_ms / 1000:
            return
        paused_at: float | None = None
        shown: set[str] = set()
        while True:
            self.checked_at = time.monotonic()
            controls = await self.host.ledger.controls()
            await self._stop_if_asked(controls.request)
            self.policy, warning = live_policy(self.host.policy, dict(controls.throttle))
            if warning and warning != self.warned:
                self.warned = warning
                await self.host.emit(EventKind.BACKFILL_THROTTLED, warning)
            self.batch_rows = min(self.batch_rows, self.policy.backfill_batch_rows_max)
            if self.health.is_closed():  # lost with the server (a restart): the batch reconnects too
                self.health = await connect(self.host.dsn, f"zdmproxy-health:{self.host.migration_id}")
            signals = await pausing_signals(self.health, self.table_oid, self.policy)
            if not signals:
                if paused_at is not None:
                    await self.host.emit(
                        EventKind.BACKFILL_PROGRESS,
                        f"resumed after {time.monotonic() - paused_at:.1f} s paused ({self.throttled_by})",
                        progress=self._progress_now(),
                    )
                    self.throttled_by = None
                return
            names = {s.name for s in signals}
            if names != shown:  # said once per change of what holds it back, not every poll
                shown = names
                self.throttled_by = "paused: " + "; ".join(s.message for s in signals)
                await self.host.emit(
                    EventKind.BACKFILL_THROTTLED, self.throttled_by, progress=self._progress_now()
                )
            paused_at = paused_at or time.monotonic()
            await asyncio.sleep(self.policy.backfill_health_poll_ms / 1000)

    async def _stop_if_asked(self, request: str | None) -> None:
        """An operator's pause or cancel: said as an event (with the progress), then raised."""
        if request not in ("pause", "cancel"):
            return
        where = (
            f"the backfill of {self.backfill.table} stopped after key {_key(self.position.after)} "
            f"({self.position.rows_done} rows done, checkpoint committed)"
        )
        await self.host.emit(
            EventKind.BACKFILL_PAUSED, f"{request} asked: {where}", progress=self._progress_now()
        )
        if request == "pause":
            raise PauseRequested(
                f"migration {self.host.migration_id!r} paused as an operator asked: {where}; resume it "
                "(`zdmproxy resume ID`) to continue from the checkpoint"
            )
        raise CancelRequested(
            f"migration {self.host.migration_id!r} cancelled as an operator asked: {where}; it stays "
            "resumable from the checkpoint (resume, or re-run apply)"
        )

    async def _batch(self, targets: list[Target]) -> bool:
        """Run the next batch until it commits; False when the walk is done."""
        backoff = wait_exponential_jitter(
            multiplier=self.policy.backoff_initial_ms / 1000,
            max=self.policy.backoff_max_ms / 1000,
            jitter=self.policy.backoff_jitter_ms / 1000,
        )
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, _Retry)),
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=lambda state: 0.0 if _at_once(state) else backoff(state),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._try_batch(attempt.retry_state.attempt_number, targets)
        except _Retry as retry:
            raise self.host.final_error(retry.record) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _try_batch(self, number: int, targets: list[Target]) -> bool:
        assert self.health is not None
        try:
            found = await self._next(number, targets)
        except DatabaseUnreachable as exc:
            if number == 1:
                raise  # never reached it
            lost = _early(number, Outcome.CONNECTION_LOST, PgErrorInfo(None, exc.message))
            await self._failed(lost, self.batch_rows)
        except (*CONNECTION_LOST, asyncpg.PostgresError) as exc:
            # Failing before the batch proper (the key read, pre-flight) is judged like failing in it.
            outcome = classify_failure(exc, we_cancelled=False, waiting_for_lock=True)
            await self._failed(_early(number, outcome, pg_error_info(exc)), self.batch_rows)
        if found is None:
            return False
        end, rows = found
        assert self.sessions is not None
        session, watch, pid = self.sessions
        after = self.position.after
        checkpoint = Checkpoint(
            end,
            self.position.rows_done + rows,
            upper=self.position.upper,
            rows_total_estimate=self.position.rows_total,
            batch_rows=self.batch_rows,
            throttled_by=self.throttled_by,
        )
        batch = dataclasses.replace(self.step, sql=self.walk.batch(after, end), backfill=None)
        bounded = self.policy.model_copy(
            update={"statement_timeout_s": self.policy.backfill_max_lock_ms / 1000}
        )
        try:
            sampler = BlockedSampler(
                self.health, pid, self.policy.backfill_max_blocked_ms, self.policy.watchdog_interval_ms * 2
            )
            async with sampler:
                record = await run_attempt(
                    session,
                    watch,
                    batch,
                    [],  # no LOCK TABLE first: the UPDATE's own ROW EXCLUSIVE blocks no traffic
                    bounded,
                    number,
                    self.policy.deadline_s,
                    pid=pid,
                    commit_with=self.host.ledger.checkpoint_statement(self.host.index, checkpoint),
                )
        except AttemptFailed as failed:
            await self._failed(failed.record, rows)
        self.position = dataclasses.replace(self.position, after=end, rows_done=checkpoint.rows_done)
        await self._adapt(record, rows, sampler.signal(self.policy))
        return True

    async def _next(self, number: int, targets: list[Target]) -> tuple[tuple[str, ...], int] | None:
        """Connect (again, after a failure), find the next batch's end key and rows, and wait out
        blockers (first batch and after a failure); None when the walk is done."""
        if self.sessions is None or number > 1:
            self.sessions = await self.host.batch_sessions()
            await self._recheck()  # after a lost connection the last batch may have committed
        session = self.sessions[0]
        if not self.position.upper:
            return None  # the table was empty when the backfill started
        after = self.position.after
        bounds: list[Any] = [*(after or ()), *self.position.upper]
        next_batch, rows_left = self.reads[after is not None]
        row = await session.fetchrow(next_batch, *bounds, self.batch_rows - 1)
        if row is not None:
            found = tuple(row.values()), self.batch_rows
        else:
            rows = int(await session.fetchval(rows_left, *bounds))
            if rows == 0:
                return None
            found = self.position.upper, rows
        if self.preflight or number > 1:
            await self.host.batch_preflight(targets)
            self.preflight = False
        return found

    async def _failed(self, record: AttemptRecord, rows: int) -> NoReturn:
        """A batch that did not commit: halve it after a statement timeout, retry what may be
        retried, fail the step otherwise."""
        await self.host.batch_failed(record)
        if record.outcome is Outcome.STATEMENT_TIMEOUT:
            if self.batch_rows <= 1:
                raise StatementTimedOut(
                    f"a backfill batch of one row of {self.backfill.table} ran past backfill_max_lock_ms "
                    f"({self.policy.backfill_max_lock_ms:g} ms) after key {_key(self.position.after)}: "
                    "the assignment is too slow per row, or something holds that row; raise "
                    "backfill_max_lock_ms, or find what holds it. Re-running resumes from the checkpoint",
                    pg=record.error,
                )
            self.batch_rows = max(1, min(self.batch_rows, rows) // 2)
            await self.host.emit(
                EventKind.BACKFILL_THROTTLED,
                f"a batch ran past {self.policy.backfill_max_lock_ms:g} ms: halved to {self.batch_rows} rows",
                progress=self._progress_now(),
            )
            raise _Retry(record, at_once=True)
        if record.outcome is not None and record.outcome.retryable:
            raise _Retry(record)
        raise self.host.final_error(record)

    async def _recheck(self) -> None:
        """Take the journal's checkpoint when it is ahead of ours (the batch committed before
        the connection was lost); without a journal the batch runs again (its predicate keeps a
        rule's backfill from changing a row twice)."""
        checkpoint = await self.host.ledger.checkpoint(self.host.index)
        if checkpoint is not None and checkpoint.rows_done > self.position.rows_done:
            self.position = dataclasses.replace(
                self.position, after=tuple(checkpoint.position), rows_done=checkpoint.rows_done
            )

    async def _adapt(self, record: AttemptRecord, rows: int, blocked: Signal | None) -> None:
        """Steer the batch size towards the target duration; shrink it when sessions waited."""
        self.longest_batch_ms = max(self.longest_batch_ms or 0.0, record.duration_s * 1000)
        if blocked is not None:
            self.batch_rows = max(1, self.batch_rows // 2)
            self.throttled_by = f"slowed: {blocked.message}"
            await self.host.emit(
                EventKind.BACKFILL_THROTTLED,
                f"{self.throttled_by}: batches halved to {self.batch_rows} rows",
                progress=self._progress_now(),
            )
            await asyncio.sleep(self.policy.backfill_target_batch_ms / 1000)
            return
        self.throttled_by = None
        if rows < self.batch_rows:
            return  # the walk's last batch, or a short one: says nothing about speed
        took_ms = max(record.duration_s * 1000, 1.0)
        factor = min(2.0, max(0.5, self.policy.backfill_target_batch_ms / took_ms))
        self.batch_rows = max(1, min(int(self.batch_rows * factor), self.policy.backfill_batch_rows_max))

    def _progress_now(self) -> BackfillProgress:
        position = self.position
        elapsed = time.monotonic() - self.started
        walked = position.rows_done - self.rows_at_start
        rate = walked / elapsed if elapsed > 0 and walked else None
        left = None if position.rows_total is None else max(position.rows_total - position.rows_done, 0)
        return BackfillProgress(
            rows_done=position.rows_done,
            rows_total_estimate=position.rows_total,
            rows_per_s=rate,
            eta_s=left / rate if rate and left is not None else None,
            batch_rows=self.batch_rows,
            throttled_by=self.throttled_by,
            longest_batch_ms=self.longest_batch_ms,
        )

    async def _progress(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_progress < self.policy.backfill_progress_interval_s:
            return
        self.last_progress = now
        progress = self._progress_now()
        total = f" of ~{progress.rows_total_estimate}" if progress.rows_total_estimate is not None else ""
        rate = f", {progress.rows_per_s:.0f} rows/s" if progress.rows_per_s else ""
        if final:
            what = "backfill done"
            longest = progress.longest_batch_ms
            tail = f", longest batch {longest:.0f} ms" if longest is not None else ""
        else:
            what = "backfill"
            tail = f", ETA {progress.eta_s:.0f} s" if progress.eta_s is not None else ""
        await self.host.emit(
            EventKind.BACKFILL_PROGRESS,
            f"{what}: {progress.rows_done}{total} rows{rate}{tail}, batches of {progress.batch_rows}",
            progress=progress,
        )


def _early(number: int, outcome: Outcome, error: PgErrorInfo) -> AttemptRecord:
    """The record of an attempt that failed before its batch ran."""
    record = AttemptRecord(number=number, lock_timeout_ms=0, outcome=outcome, error=error)
    record.ended_at = time.time()
    return record


def _at_once(state: RetryCallState) -> bool:
    failure = state.outcome.exception() if state.outcome is not None else None
    return isinstance(failure, _Retry) and failure.at_once


def _key(values: Sequence[Any] | None) -> str:
    return "(start)" if not values else "(" + ", ".join(map(str, values)) + ")"


async def run_backfill(host: BatchHost, step: Step) -> None:
    """Run backfill step ``step`` for ``host``; raises PauseRequested / CancelRequested when an
    operator asked for it (the checkpoint is committed), or the step's final error."""
    await Backfiller(host, step).run()
