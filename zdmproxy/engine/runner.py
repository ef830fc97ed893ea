"""Running a plan's steps in order, each until it succeeds, fails for good, or runs out of budget.

Per step: a dedicated connection named for zdmproxy and the migration, and a
second one for watching. Before every attempt, pre-flight looks for sessions
whose locks we would queue behind and waits for them (polling, so the step
starts within one poll of the blocker ending) instead of queueing; between
attempts tenacity supplies exponential backoff with jitter, cut short as soon
as the way is clear.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from zdmproxy.engine import controls, verify
from zdmproxy.engine.attempt import AttemptFailed, AttemptRecord, run_attempt
from zdmproxy.engine.backfill import run_backfill
from zdmproxy.engine.blockers import (
    Target,
    cancel_autovacuum,
    find_blockers,
    is_cancellable_autovacuum,
    resolve_targets,
    terminate,
)
from zdmproxy.engine.connector import CONNECTION_LOST, Session, connect
from zdmproxy.engine.debris import drop_invalid_indexes, resume_detach
from zdmproxy.engine.events import Blocker, Event, EventKind, EventSink, deliver, ignore
from zdmproxy.engine.ledger import NO_LEDGER, Ledger
from zdmproxy.engine.outcomes import Outcome, classify_failure, pg_error_info
from zdmproxy.engine.queries import QUERIES
from zdmproxy.errors import (
    Cancelled,
    ConfigError,
    DatabaseUnreachable,
    LockBudgetExhausted,
    MigrationBusy,
    PgErrorInfo,
    StatementTimedOut,
    StepFailed,
    StopRequested,
    UnsupportedServer,
    UnsupportedStatement,
    ZdmError,
)
from zdmproxy.plan.model import Plan, Step
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql import versions


def check_allowed(steps: Sequence[Step], policy: MigrationPolicy) -> None:
    """Refuse, before anything runs, a step the caller's policy does not allow."""
    refused = [s for s in steps if s.destructive and not policy.allow_destructive]
    if refused:
        raise UnsupportedStatement(
            f"refusing a destructive statement ({refused[0].destructive}): {refused[0].sql!r}; "
            "pass --allow-destructive (ZDM_ALLOW_DESTRUCTIVE=true) if this is intended"
        )
    unverified = [s for s in steps if s.unverified and not policy.allow_unverified_locks]
    if unverified:
        raise UnsupportedStatement(
            f"refusing a statement the lock catalogue does not know ({unverified[0].unverified}): "
            f"{unverified[0].sql!r}; pass --allow-unverified-locks (ZDM_ALLOW_UNVERIFIED_LOCKS=true) "
            "to run it as written, under the timeouts and the watchdog but without taking its locks first"
        )
    long = [s for s in steps if s.long_lock and not policy.allow_long_locks]
    if long:
        raise UnsupportedStatement(
            f"refusing a long lock ({long[0].long_lock}): {long[0].sql!r}; pass --allow-long-locks "
            "(ZDM_ALLOW_LONG_LOCKS=true) to run it as written anyway"
        )


def require_apply_support(server_version_num: int) -> None:
    """Refuse servers apply cannot guard (versions.APPLY says why)."""
    if server_version_num < versions.APPLY:
        raise UnsupportedServer(
            f"apply needs PostgreSQL {versions.major(versions.APPLY)} or later (the watchdog reads "
            f"pg_locks.waitstart); this server is {versions.major(server_version_num)}. "
            "`zdmproxy plan` still works."
        )


@dataclass
class StepReport:
    index: int
    step: Step
    attempts: list[AttemptRecord] = field(default_factory=list)
    waits: list[tuple[Blocker, ...]] = field(default_factory=list)  # one entry per pre-flight wait
    terminated: list[Blocker] = field(default_factory=list)
    debris_dropped: list[str] = field(default_factory=list)
    outcome: Outcome | None = None

    def blocked_summary(self) -> list[str]:
        """'blocked 14 times by pid 4711, app 'reporting', idle in transaction for 35 min: ...'"""
        counts: Counter[int | str] = Counter()
        latest: dict[int | str, Blocker] = {}
        for seen in [*self.waits, *(a.blockers for a in self.attempts)]:
            for blocker in seen:
                counts[blocker.key] += 1  # prepared transactions all have pid 0
                if blocker.key not in latest or not blocker.ending:
                    latest[blocker.key] = blocker
        return [
            f"blocked {n} time{'s' if n > 1 else ''} by {latest[key].describe()}"
            for key, n in counts.most_common()
        ]


@dataclass
class MigrationReport:
    migration_id: str
    steps: list[StepReport] = field(default_factory=list)
    planned: int = 0  # steps in the plan; fewer reports mean the run stopped early
    start_at: int = 0  # the steps before it were done by an earlier run

    @property
    def succeeded(self) -> bool:
        return bool(self.steps) and all(s.outcome is Outcome.SUCCEEDED for s in self.steps)


class Runner:
    """Runs plans against one database for one migration id.

    The step session (the connection steps run on) lives for the whole run, so
    the ledger's run lock taken on it (``Ledger.claim``) lives exactly as long as
    the backend that could still be changing the schema. A caller may hand in a
    session it opened and claimed; the runner replaces it after a lost
    connection (claiming the new one) and closes the watch session at the end.
    """

    def __init__(
        self,
        dsn: str,
        migration_id: str,
        policy: MigrationPolicy,
        sink: EventSink = ignore,
        *,
        ledger: Ledger = NO_LEDGER,
        session: Session | None = None,
    ) -> None:
        self.dsn = dsn
        self.migration_id = migration_id
        self.policy = policy
        self.sink = sink
        self.ledger = ledger
        self.session = session
        self.step_pid: int | None = None
        self.server_started: object | None = None  # pg_postmaster_start_time() when first seen
        self.restarted = False  # the server restarted since the step session before this one
        self.watch: Session | None = None

    async def run(self, plan: Plan, report: MigrationReport | None = None) -> MigrationReport:
        """Run every step of ``plan``; raises a ZdmError on the first step that cannot complete.

        ``report`` (filled in as steps run) stays readable after an error.
        """
        if plan.from_catalog:
            require_apply_support(plan.server_version_num)
        return await self.run_steps(plan.steps, report)

    async def run_steps(
        self,
        steps: Sequence[Step],
        report: MigrationReport | None = None,
        *,
        start_at: int = 0,
        close_session: bool = True,
    ) -> MigrationReport:
        """Run ``steps`` from ``start_at`` (the ones before are done). With
        ``close_session=False`` the step session stays open, and its run lock held, for the
        caller to record the outcome before letting go (then ``close()``)."""
        report = report if report is not None else MigrationReport(self.migration_id)
        report.planned = len(steps)
        report.start_at = start_at
        check_allowed(steps[start_at:], self.policy)
        try:
            for index in range(start_at, len(steps)):
                await controls.obey(self.ledger, self.migration_id, index)  # a pause or cancel asked
                step_report = StepReport(index, steps[index])
                report.steps.append(step_report)
                await _StepRun(self, step_report).run()
        finally:
            await self.close(watch_only=not close_session)
        return report

    async def sessions(self, step_index: int) -> tuple[Session, Session]:
        """The step session (claimed for the ledger when new) and the watch session."""
        if self.session is None or self.session.is_closed():
            self.session = self.step_pid = None
            session = await connect(self.dsn, f"zdmproxy:{self.migration_id}", step_session=True)
            try:
                await self.ledger.claim(session)
            except BaseException:
                await session.close()
                raise
            self.session = session
        if self.watch is None or self.watch.is_closed():
            self.watch = await connect(self.dsn, f"zdmproxy-watch:{self.migration_id}")
        await self._name_step(self.session, step_index)
        return self.session, self.watch

    async def _name_step(self, session: Session, step_index: int) -> None:
        """Name the step session for its step, and learn its backend's pid from inside it.

        The pid the watchdog watches must be the backend that runs our statements; behind a
        pooler the handshake's pid is some other backend (pgbouncer #1296). A pid that changes
        between two statements means a pooler in transaction or statement mode, where neither
        the run lock nor a non-transactional step's session survives: refused.
        """
        name = f"zdmproxy:{self.migration_id}:step{step_index + 1}"[:63]
        row = await session.fetchrow(QUERIES["backend_pid"], name)
        pid = int(row["pid"])
        self.restarted = self.server_started is not None and row["server_started"] != self.server_started
        self.server_started = row["server_started"]
        if self.step_pid is not None and pid != self.step_pid:
            raise ConfigError(
                f"the step session's backend changed between two statements (pid {self.step_pid}, then "
                f"{pid}): a connection pooler in transaction or statement mode is in between. Point "
                "zdmproxy at the database directly, or at a pool in session mode"
            )
        self.step_pid = pid

    async def close(self, *, watch_only: bool = False) -> None:
        for session in (self.watch,) if watch_only else (self.session, self.watch):
            if session is not None and not session.is_closed():
                await session.close()


class _AlreadyApplied(Exception):
    """The step's effect is already in the database: an earlier run or attempt committed it."""


class _StepRun:
    """The state of one step while it runs: its deadline, report and ledger record."""

    def __init__(self, runner: Runner, report: StepReport) -> None:
        self.runner = runner
        self.policy = runner.policy
        self.ledger = runner.ledger
        self.report = report
        self.step = report.step
        self.deadline = time.monotonic() + self.policy.deadline_s
        self.targets: list[Target] = []
        # Set when an earlier run or attempt may have applied the step before it was cut off:
        # the next attempt first asks the ledger (transactional) or the catalog (not).
        self.recheck = False
        # Blockers the opt-in termination applied to but could not end, and why (said when the
        # step gives up waiting for them).
        self.not_terminated: dict[int, str] = {}

    @property
    def session(self) -> Session | None:
        return self.runner.session

    @property
    def watch(self) -> Session | None:
        return self.runner.watch

    @watch.setter
    def watch(self, value: Session | None) -> None:
        self.runner.watch = value

    async def emit(self, kind: EventKind, message: str, **extra: object) -> None:
        await deliver(self.runner.sink, Event(kind, self.report.index, message, **extra))  # type: ignore[arg-type]

    async def run(self) -> None:
        started = time.monotonic()
        index = self.report.index
        await self.emit(EventKind.STEP_STARTED, self.step.sql, detail=self.step.reason)
        retrying = AsyncRetrying(
            retry=retry_if_exception(
                lambda exc: isinstance(exc, AttemptFailed) and exc.record.outcome.retryable  # type: ignore[union-attr]
            ),
            stop=stop_after_attempt(self.policy.max_attempts) | stop_after_delay(self.policy.deadline_s),
            wait=wait_exponential_jitter(
                multiplier=self.policy.backoff_initial_ms / 1000,
                max=self.policy.backoff_max_ms / 1000,
                jitter=self.policy.backoff_jitter_ms / 1000,
            ),
            sleep=self._pause,
            reraise=True,
        )
        found_applied = False
        try:
            before = await self.ledger.step_started(index)
            if before == "succeeded":
                raise _AlreadyApplied
            # A transactional step recorded as failed rolled back; a CONCURRENTLY one may not have.
            self.recheck = before == "running" or (before == "failed" and not self.step.transactional)
            if self.step.backfill is not None:
                await run_backfill(self, self.step)  # batches, each one attempt of its own
            else:
                async for attempt in retrying:
                    with attempt:
                        await self._attempt(attempt.retry_state.attempt_number)
        except _AlreadyApplied:
            found_applied = True
            if before == "succeeded":
                self.report.outcome = Outcome.SUCCEEDED
                await self.emit(EventKind.STEP_SUCCEEDED, "already applied (the journal says so)")
                return
        except AttemptFailed as failed:
            self.report.outcome = failed.record.outcome
            error = self._final_error(failed.record)
            await self.emit(EventKind.STEP_FAILED, error.message)
            if failed.record.outcome is not Outcome.CONNECTION_LOST:
                # After a lost connection nobody knows whether the step committed: it stays
                # 'running' in the journal, so the next run asks before running it again.
                await self.ledger.step_failed(index, failed.record.outcome, error)  # type: ignore[arg-type]
            raise error from failed
        except MigrationBusy:
            # Another process took the migration over while we reconnected: it is theirs now,
            # and this run records nothing more.
            self.report.outcome = Outcome.FAILED
            raise
        except StopRequested:
            raise  # a backfill paused or cancelled between batches: it resumes from its checkpoint
        except ZdmError as error:  # pre-flight ran out of time, the database became unreachable
            self.report.outcome = (
                Outcome.BLOCKED if isinstance(error, LockBudgetExhausted) else Outcome.FAILED
            )
            await self.emit(EventKind.STEP_FAILED, error.message)
            await self.ledger.step_failed(index, self.report.outcome, error)
            raise
        except BaseException:
            self.report.outcome = Outcome.FAILED
            raise
        if not self.step.transactional or found_applied or self.step.backfill is not None:
            await self.ledger.step_succeeded(index)  # transactional steps committed their own row
        self.report.outcome = Outcome.SUCCEEDED
        attempts = len(self.report.attempts)
        if found_applied:
            await self.emit(
                EventKind.STEP_SUCCEEDED, "already applied by an earlier attempt that was cut off"
            )
            return
        await self.emit(
            EventKind.STEP_SUCCEEDED,
            f"done in {(time.monotonic() - started) * 1000:.0f} ms"
            + (f" after {attempts} attempts" if attempts > 1 else ""),
        )

    # The backfill engine's view of this step (backfill.BatchHost): each batch is an attempt.
    @property
    def index(self) -> int:
        return self.report.index

    @property
    def dsn(self) -> str:
        return self.runner.dsn

    @property
    def migration_id(self) -> str:
        return self.runner.migration_id

    async def batch_sessions(self) -> tuple[Session, Session, int]:
        session, watch = await self.runner.sessions(self.report.index)
        self._stop_if_terminated()
        return session, watch, self.runner.step_pid or session.get_server_pid()

    async def batch_preflight(self, targets: list[Target]) -> None:
        self.targets = targets
        self.deadline = time.monotonic() + self.policy.deadline_s  # per batch, not for the whole walk
        await self._preflight()

    async def batch_failed(self, record: AttemptRecord) -> None:
        await self._after_failure(record)

    def final_error(self, record: AttemptRecord) -> ZdmError:
        return self._final_error(record)

    async def _attempt(self, number: int) -> None:
        try:
            session, watch, step = await self._prepare()
        except DatabaseUnreachable as exc:
            if number == 1 and not self.recheck:
                raise  # never reached it: exit 69 at once
            # Reconnecting after a lost connection (a restarting server): keep trying.
            raise await self._failed_early(
                number, Outcome.CONNECTION_LOST, PgErrorInfo(None, exc.message)
            ) from exc
        except (*CONNECTION_LOST, asyncpg.PostgresError) as exc:
            # Failing before the attempt proper (a lost connection, the debris drop's lock
            # timeout) is judged like failing during one.
            outcome = classify_failure(exc, we_cancelled=False, waiting_for_lock=True)
            raise await self._failed_early(number, outcome, pg_error_info(exc)) from exc
        await self.emit(EventKind.ATTEMPT_STARTED, f"attempt {number}", attempt=number)
        try:
            record = await run_attempt(
                session,
                watch,
                step,
                self.targets,
                self.policy,
                number,
                self._time_left(),
                pid=self.runner.step_pid or session.get_server_pid(),
                commit_with=self.ledger.commit_statement(self.report.index),
                report_queue=self._report_queue,
            )
        except AttemptFailed as failed:
            await self._after_failure(failed.record)
            raise
        self.report.attempts.append(record)
        await self.ledger.attempt_ended(self.report.index, record)
        if not step.transactional and await verify.applied(watch, step) is False:
            # No transaction commits a CONCURRENTLY statement's effect together with its record:
            # the catalog is asked instead (an IF NOT EXISTS that met an INVALID index succeeds).
            raise StepFailed(
                f"step {self.report.index + 1} ({step.sql[:60]!r}) reported success, but the catalog "
                "does not show its effect (an INVALID index, an index still there, a partition still "
                "attached); see `zdmproxy status` and fix it by hand before re-running"
            )

    async def _report_queue(self, queued: tuple[Blocker, ...]) -> None:
        await self.emit(
            EventKind.QUEUED_BEHIND_HELD_LOCK,
            "sessions wait behind the lock this step holds while it waits for older transactions "
            "(not cancelled: that would leave debris and the queue would form again): "
            + "; ".join(b.describe() for b in queued),
            blockers=queued,
        )

    async def _failed_early(self, number: int, outcome: Outcome, error: PgErrorInfo) -> AttemptFailed:
        record = AttemptRecord(number=number, lock_timeout_ms=0, outcome=outcome, error=error)
        record.ended_at = time.time()
        await self._after_failure(record)
        return AttemptFailed(record)

    async def _prepare(self) -> tuple[Session, Session, Step]:
        """Connect, find our relations, wait out blockers, clean up after an earlier failure:
        all before asking for any lock. Returns the step to run this time."""
        session, watch = await self.runner.sessions(self.report.index)
        self._stop_if_terminated()
        if self.recheck:
            if await self._already_applied(watch):
                raise _AlreadyApplied
            self.recheck = False
        self.targets = await resolve_targets(watch, self.step.locks)
        await self._preflight()
        if self.step.transactional:
            return session, watch, self.step
        lock_timeout_ms = min(self.policy.concurrent_lock_timeout_s, max(self._time_left(), 0.001)) * 1000
        for name in await drop_invalid_indexes(watch, self.step, lock_timeout_ms):
            self.report.debris_dropped.append(name)
            await self.emit(
                EventKind.DEBRIS_DROPPED, f"dropped INVALID index {name} left by a failed attempt"
            )
        finish = await resume_detach(watch, self.step)
        if finish is not None:
            await self.emit(EventKind.DETACH_RESUMED, finish.reason)
            return session, watch, finish
        return session, watch, self.step

    def _stop_if_terminated(self) -> None:
        """Our backend was ended with 57P01 and the server stayed up (same start time): an
        operator terminated it on purpose (pg_terminate_backend), and trying again would defy
        them. A server shutdown also says 57P01, but the server comes back with a new start time."""
        last = self.report.attempts[-1] if self.report.attempts else None
        if (
            last is None
            or last.outcome is not Outcome.CONNECTION_LOST
            or last.error is None
            or last.error.sqlstate != "57P01"
            or self.runner.restarted
        ):
            return
        raise Cancelled(
            f"step {self.report.index + 1} ({self.step.sql[:60]!r}): another session terminated our "
            "backend (pg_terminate_backend) while the server stayed up; stopping as asked. Nothing "
            "of the step is applied unless the journal says so: re-run to resume.",
            pg=last.error,
        )

    async def _already_applied(self, watch: Session) -> bool:
        """After a cut-off run or attempt: did the step take effect before it was cut off?

        A transactional step committed exactly when the ledger's row did (same transaction);
        a non-transactional one is looked up in the catalog (verify.py), and when the catalog
        cannot tell, running it again is what the statement itself tolerates.
        """
        if self.step.transactional:
            return await self.ledger.step_committed(self.report.index)
        return bool(await verify.applied(watch, self.step))

    async def _after_failure(self, record: AttemptRecord) -> None:
        assert record.outcome is not None
        self.report.attempts.append(record)
        message = f"attempt {record.number}: {record.outcome.value}"
        if record.error is not None:
            message += f" ({record.error.sqlstate}: {record.error.message})"
        if record.outcome is Outcome.CONNECTION_LOST:
            # Close what is left of both (a half-open step session would keep its run lock) and
            # find out, before trying again, whether the lost attempt had committed.
            await self.runner.close()
            self.runner.session = self.watch = None
            self.recheck = True
        await self.emit(
            EventKind.ATTEMPT_FAILED,
            message,
            attempt=record.number,
            blockers=record.blockers,
            outcome=record.outcome.value,
            sqlstate=record.error.sqlstate if record.error else None,
            lock_timeout_ms=record.lock_timeout_ms,
            queued_behind_us=record.queued_behind_us,
        )
        await self.ledger.attempt_ended(self.report.index, record)

    def _time_left(self) -> float:
        return self.deadline - time.monotonic()

    def _own_pids(self) -> list[int]:
        return [s.get_server_pid() for s in (self.session, self.watch) if s is not None]

    async def _preflight(self) -> None:
        """Wait, without asking for any lock, while a conflicting transaction older than
        blocker_min_age is open: queueing behind it would stop every later query."""
        assert self.watch is not None
        # Keyed by Blocker.key: prepared transactions have no pid (0), only a gid.
        seen: set[int | str] = set()
        signalled: set[int | str] = set()  # cancelled or terminated: gone only once pg_locks says so
        waited: dict[int | str, Blocker] = {}
        while True:
            blockers = await find_blockers(self.watch, self.targets, self._own_pids())
            # An unknown age (another role's session, details hidden) counts as old: waiting for
            # it is safe, queueing behind it is not.
            long = [
                b
                for b in blockers
                if b.xact_age_s is None or b.xact_age_s * 1000 >= self.policy.blocker_min_age_ms
            ]
            for blocker in long:
                if blocker.key not in signalled and await self._clear(blocker):
                    signalled.add(blocker.key)
            waited.update(
                (b.key, b) for b in long if b.key not in signalled and not (b.ending and b.key in waited)
            )
            if not long:
                if waited:
                    self.report.waits.append(tuple(waited.values()))
                return
            new = [b for b in long if b.key not in seen and b.key not in signalled]
            if new:
                seen |= {b.key for b in new}
                await self.emit(
                    EventKind.WAITING_FOR_BLOCKERS,
                    "waiting for " + "; ".join(b.describe() for b in long if b.key not in signalled),
                    blockers=tuple(b for b in long if b.key not in signalled),
                )
            if time.monotonic() >= self.deadline:
                self.report.waits.append(tuple(waited.values()))
                refused = [
                    f"pid {b.pid}: {self.not_terminated[b.pid]}" for b in long if b.pid in self.not_terminated
                ]
                raise LockBudgetExhausted(
                    f"step {self.report.index + 1} waited {self.policy.deadline_s:.0f} s for blockers "
                    "to finish: "
                    + "; ".join(b.describe() for b in long)
                    + (
                        ". Not terminated (terminate_idle_blockers_after_s): " + "; ".join(refused)
                        if refused
                        else ""
                    )
                    + ". Re-run when they are gone."
                )
            await asyncio.sleep(self.policy.blocker_poll_ms / 1000)

    async def _clear(self, blocker: Blocker) -> bool:
        """Whether the blocker was removed: an autovacuum cancelled, or an idle session terminated."""
        if blocker.prepared:
            return False  # no session to signal: only COMMIT/ROLLBACK PREPARED ends it
        if self.policy.cancel_autovacuum and is_cancellable_autovacuum(blocker):
            assert self.watch is not None
            if await cancel_autovacuum(self.watch, blocker):
                await self.emit(
                    EventKind.AUTOVACUUM_CANCELLED,
                    f"cancelled {blocker.describe()} (it restarts later)",
                    blockers=(blocker,),
                )
                return True
            return False
        return await self._maybe_terminate(blocker)

    async def _maybe_terminate(self, blocker: Blocker) -> bool:
        """The opt-in policy: end sessions idle in transaction for longer than the threshold."""
        threshold = self.policy.terminate_idle_blockers_after_s
        if threshold is None or blocker.prepared:
            return False
        if blocker.state is None:  # another role's session, its state hidden from ours
            self.not_terminated[blocker.pid] = (
                "whether it is idle is hidden from this role: grant it pg_read_all_stats"
            )
            return False
        if not blocker.idle_in_transaction or (blocker.state_age_s or 0) < threshold:
            return False
        assert self.watch is not None
        if not await terminate(self.watch, blocker.pid):
            self.not_terminated[blocker.pid] = (
                "not permitted: the role needs pg_signal_backend, and a superuser's session only a "
                "superuser may end"
            )
            return False
        if blocker.pid not in {b.pid for b in self.report.terminated}:
            self.report.terminated.append(blocker)
        await self.emit(
            EventKind.BLOCKER_TERMINATED,
            f"terminated {blocker.describe()} (idle in transaction longer than {threshold:g} s)",
            blockers=(blocker,),
        )
        return True

    async def _pause(self, seconds: float) -> None:
        """tenacity's sleep: back off, but start again as soon as nobody is in the way."""
        end = time.monotonic() + seconds
        await asyncio.sleep(min(seconds, self.policy.backoff_initial_ms / 1000))
        while time.monotonic() < end:
            if self.watch is None:
                # The connection was lost (a failover, a restart): back off for real, so the
                # attempts last through it instead of being spent in a few seconds.
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                return
            try:
                if not await find_blockers(self.watch, self.targets, self._own_pids()):
                    return
            except (*CONNECTION_LOST, asyncpg.PostgresError):
                self.watch = None
                return
            await asyncio.sleep(min(self.policy.blocker_poll_ms / 1000, max(0.0, end - time.monotonic())))

    def _final_error(self, record: AttemptRecord) -> ZdmError:
        summary = self.report.blocked_summary()
        where = f"step {self.report.index + 1} ({self.step.sql[:60]!r})"
        if record.outcome is Outcome.CANCELLED:
            return Cancelled(
                f"{where} was cancelled by another session (pg_cancel_backend) after "
                f"{record.duration_s:.1f} s; nothing of it was committed. Re-run to resume.",
                pg=record.error,
            )
        if record.outcome is Outcome.CONNECTION_LOST:
            return DatabaseUnreachable(
                f"{where}: lost the connection to the database and could not get it back within the "
                f"step's deadline ({self.policy.deadline_s:g} s) or attempts; whether the last attempt "
                "committed is unknown here: re-run, the journal tells and nothing runs twice",
                pg=record.error,
            )
        if record.outcome is not None and record.outcome.retryable:
            return LockBudgetExhausted(
                f"{where}: gave up after {len(self.report.attempts)} attempts "
                f"(the last one: {record.outcome.value})"
                + ("; " + "; ".join(summary) if summary else "")
                + ". Retry later, or raise lock_timeout_max_ms / deadline_s."
            )
        error = record.error
        message = f"{where} failed: {error.message if error else record.outcome}"
        if error is not None and error.hint:
            message += f" (hint: {error.hint})"
        if record.outcome is Outcome.STATEMENT_TIMEOUT:
            return StatementTimedOut(
                message + ". It held its locks and was making progress, so it is not retried: raise "
                "statement_timeout_s or split the statement into smaller steps.",
                pg=error,
            )
        return StepFailed(message, pg=error)
