"""Every migration applied exactly once, by however many processes, resumable after any crash.

Processes coordinate only through PostgreSQL. A migration's run lock is a
session-level advisory lock held by the *step session* (the connection its
steps run on), so it is released exactly when the backend that could still be
changing the schema is gone: a killed process is detected by the lock coming
free, never by a timeout guess. A process that finds the lock taken waits
by polling from its idle journal connection (no transaction, no snapshot, so
it can never hold up the holder's ``CREATE INDEX CONCURRENTLY``), then:

- the migration succeeded, or failed for a reason running it again would
  not fix -> it reports what the other process recorded;
- the migration is still marked running or was cancelled (its owner died or
  was stopped) -> it takes over and resumes from the first unfinished step.

A migration's steps are recorded when it is first submitted; a resumed run
executes the recorded steps. A migration that has not finished may be
corrected (the failed statement fixed) as long as every step already applied
stays as it was; a finished one never changes (ChecksumConflict, exit 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from zdmproxy.engine import debris, verify
from zdmproxy.engine.catalog import plan_script
from zdmproxy.engine.connector import Session, connect, server_version_num
from zdmproxy.engine.events import Event, EventKind, EventSink, deliver, ignore
from zdmproxy.engine.runner import MigrationReport, Runner, check_allowed, require_apply_support
from zdmproxy.errors import (
    CancelRequested,
    ChecksumConflict,
    MigrationBusy,
    PauseRequested,
    PhaseOrder,
    RecordedFailure,
    StopRequested,
    WaitTimedOut,
    ZdmError,
)
from zdmproxy.journal import advisory
from zdmproxy.journal.ledger import Caller, JournalLedger
from zdmproxy.journal.steps import checksum
from zdmproxy.journal.store import Journal, MigrationRecord, StepRecord
from zdmproxy.plan.model import Step
from zdmproxy.plan.phases import RunPhase, expand_end, has_contract
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.parse import parse_script


class Result(StrEnum):
    APPLIED = "applied"  # this process ran (or finished) it
    ALREADY_APPLIED = "already_applied"  # it had succeeded before we came: nothing ran
    APPLIED_BY_OTHER = "applied_by_other"  # another process ran it while we waited


@dataclass(frozen=True)
class Request:
    """One migration to apply: a caller-chosen id and its SQL (and, from a folder, its file)."""

    migration_id: str
    script: str
    version: str | None = None
    source: str | None = None
    phase: RunPhase | None = None  # None: every phase, so the end state is the script's as written


@dataclass(frozen=True)
class Applied:
    result: Result
    record: MigrationRecord


@dataclass
class Coordinator:
    """Applies migrations to one database through its journal."""

    dsn: str
    journal: Journal
    policy: MigrationPolicy
    caller: Caller
    sink: EventSink = ignore
    poll_s: float = 0.25
    wait_timeout_s: float | None = None  # None: wait for another process's run as long as it takes

    async def apply(self, request: Request, report: MigrationReport | None = None) -> Applied:
        """Apply ``request`` exactly once; ``report`` fills in with what this process ran."""
        report = report if report is not None else MigrationReport(request.migration_id)
        ours = checksum(parse_script(request.script))
        ledger = JournalLedger(self.journal, request.migration_id, self.caller)
        deadline = None if self.wait_timeout_s is None else time.monotonic() + self.wait_timeout_s
        waiting_since: datetime | None = None  # the database's clock when another run held it
        while True:
            record = await self.journal.migration(request.migration_id)
            if record is None and request.phase is RunPhase.CONTRACT:
                raise _not_expanded(request.migration_id, "it has not been applied at all")
            if record is None:
                plan = await self.journal.using(
                    lambda session: plan_script(session, request.script, self.policy)
                )
                await self.journal.create(
                    request.migration_id,
                    ours,
                    request.script,
                    plan.steps,
                    version=request.version,
                    source=request.source,
                )
                continue  # read back what was recorded (ours, or a faster process's)
            settled = _settled(record, ours, waiting_since)
            if settled is not None:
                return settled
            if request.phase is RunPhase.EXPAND and record.phase == "expand" and record.state == "paused":
                return Applied(Result.ALREADY_APPLIED, record)  # expanded before: the contract waits
            session = await connect(self.dsn, f"zdmproxy:{request.migration_id}", step_session=True)
            try:
                await ledger.claim(session)
            except MigrationBusy as busy:
                await session.close()
                waiting_since = waiting_since or record.read_at
                await self._wait(request.migration_id, busy, deadline)
                continue
            except BaseException:
                await session.close()
                raise
            try:
                record = await self._reread(request.migration_id)  # as of holding the lock
                if _settled(record, ours, waiting_since) is not None:
                    continue  # finished while we connected: the top of the loop reports it
                await self._run(request, record, ours, ledger, session, report)
                return Applied(Result.APPLIED, await self._reread(request.migration_id))
            except MigrationBusy as busy:  # lost our connection, and another process took over
                waiting_since = waiting_since or record.read_at
                await self._wait(request.migration_id, busy, deadline)
            finally:
                if not session.is_closed():
                    await session.close()

    async def _run(
        self,
        request: Request,
        record: MigrationRecord,
        ours: str,
        ledger: JournalLedger,
        session: Session,
        report: MigrationReport,
    ) -> None:
        """Run the migration's unfinished steps, holding its run lock on ``session``."""
        require_apply_support(await server_version_num(session))
        steps = await self.journal.steps(request.migration_id)
        if record.checksum != ours:
            await self._amend(request, record, ours, steps)
            steps = await self.journal.steps(request.migration_id)
        start_at = _first_unfinished(steps)
        planned = [s.step for s in steps]
        expanded_at = expand_end(planned)
        if request.phase is RunPhase.CONTRACT and start_at < expanded_at:
            raise _not_expanded(request.migration_id, f"step {start_at + 1} of its expand phase has not run")
        end = expanded_at if request.phase is RunPhase.EXPAND else len(planned)
        # This caller's own policy refuses a step: nothing was tried, so nothing is recorded
        # (another caller, allowed to, may run the migration).
        check_allowed(planned[start_at:end], self.policy)
        if record.state in ("running", "cancelled") and record.runs and record.phase != "rollback":
            await deliver(
                self.sink,
                Event(
                    EventKind.TAKING_OVER,
                    -1,
                    f"resuming {request.migration_id} from step {start_at + 1}: the run by "
                    f"{record.by()} stopped without finishing ({record.state})",
                ),
            )
        await ledger.start(session)
        runner = Runner(
            self.dsn, request.migration_id, self.policy, self.sink, ledger=ledger, session=session
        )
        try:
            await runner.run_steps(planned[:end], report, start_at=start_at, close_session=False)
        except MigrationBusy:
            raise
        except StopRequested as stop:  # an operator's pause or cancel, obeyed between steps
            await ledger.stopped(stop)
            raise
        except ZdmError as error:
            await ledger.finish("failed", error)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            # Stopped (SIGTERM, Ctrl-C): the running step was rolled back or left for the next
            # run to verify; say so while the run lock is still ours.
            await _quietly(ledger.interrupted())
            raise
        else:
            if end < len(planned):
                await ledger.finish_phase("paused", RunPhase.EXPAND)  # the contract is for later
            elif has_contract(planned):
                await ledger.finish_phase("succeeded", RunPhase.CONTRACT)
            else:
                await ledger.finish("succeeded")
        finally:
            await runner.close()

    async def _amend(
        self, request: Request, record: MigrationRecord, ours: str, steps: Sequence[StepRecord]
    ) -> None:
        """Take the corrected SQL of an unfinished migration, if no applied step changes and the
        step it replaces left nothing behind."""
        plan = await self.journal.using(lambda session: plan_script(session, request.script, self.policy))
        start = _first_unfinished(steps)
        new = plan.steps
        for old in steps[:start]:
            if old.index >= len(new) or new[old.index].sql != old.sql:
                raise _conflict(
                    record,
                    ours,
                    f"step {old.index + 1} ({_short(old.sql)}) is already applied and the new SQL changes it",
                )
        interrupted = steps[start] if start < len(steps) else None
        changed = interrupted is not None and (start >= len(new) or new[start].sql != interrupted.sql)
        if (
            interrupted is not None
            and changed
            and not interrupted.transactional
            and interrupted.state != "pending"
        ):
            # A CONCURRENTLY statement commits on its own: replacing it must not hide what it did.
            left = await self.journal.using(lambda session: _leftovers(session, interrupted.step))
            if left:
                raise _conflict(
                    record,
                    ours,
                    f"step {start + 1} ({_short(interrupted.sql)}) was interrupted and left {left} "
                    "behind; re-run it unchanged to finish or clean it up, or remove that by hand first",
                )
        await self.journal.amend(request.migration_id, ours, request.script, new, start)

    async def _wait(self, migration_id: str, busy: MigrationBusy, deadline: float | None) -> None:
        """Poll, without taking it, until nobody holds the run lock (or the deadline passes)."""
        await deliver(self.sink, Event(EventKind.WAITING_FOR_OTHER_RUN, -1, f"waiting: {busy.message}"))
        key = advisory.migration_key(migration_id)
        while await self.journal.using(lambda session: advisory.holder(session, key)) is not None:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimedOut(
                    f"{busy.message}, still running after {self.wait_timeout_s:g} s of waiting; "
                    "it goes on without us: re-run to wait again (or see `zdmproxy status`)"
                )
            await asyncio.sleep(self.poll_s)

    async def _reread(self, migration_id: str) -> MigrationRecord:
        record = await self.journal.migration(migration_id)
        assert record is not None
        return record


# Recorded failures that running the migration again cannot change (the SQL is wrong, an object
# is missing, a permission): a process that waited reports them. Anything that depends on the
# moment or on the caller's own settings (a lock budget, a statement timeout, a lost database,
# a cancel) is taken over and run again instead.
_FINAL_FAILURES = frozenset({"step_failed"})
# An operator's pause or cancel: a process that waited must not take the run over and undo it.
_STOPPED_AS_ASKED = frozenset({PauseRequested.code, CancelRequested.code})


def _settled(record: MigrationRecord, ours: str, waiting_since: datetime | None) -> Applied | None:
    """The answer when there is nothing to run; raises when the answer is an error."""
    if record.state == "succeeded":
        if record.checksum != ours:
            raise _conflict(record, ours, "it is already applied")
        return Applied(Result.APPLIED_BY_OTHER if waiting_since else Result.ALREADY_APPLIED, record)
    error = record.error or {}
    adopt = (
        waiting_since is not None
        and record.state in ("failed", "paused", "cancelled")
        and record.checksum == ours
        and record.finished_at is not None
        and record.finished_at >= waiting_since  # the run we waited for, not an older one
        and error.get("code") in _FINAL_FAILURES | _STOPPED_AS_ASKED
    )
    if adopt:
        how = "failed" if record.state == "failed" else f"was {record.state}"  # paused / cancelled
        raise RecordedFailure(
            f"{record.id} {how} in the run by {record.by()}: {error.get('message', 'no message recorded')}",
            code=str(error.get("code")),
            exit_code=int(error.get("exit_code", 1)),
        )
    return None


async def _leftovers(session: Session, step: Step) -> str:
    """What an interrupted non-transactional step left in the catalog, named; '' for nothing."""
    if await verify.applied(session, step):
        return "its effect (it completed)"
    found = await debris.leftovers(session, step)
    if await debris.resume_detach(session, step) is not None:
        found.append("a partition detach pending")
    return ", ".join(found)


def _conflict(record: MigrationRecord, ours: str, why: str) -> ChecksumConflict:
    return ChecksumConflict(
        f"migration {record.id!r} is recorded with different SQL ({why}): recorded sha256 "
        f"{record.checksum}, given {ours}. An applied migration never changes: put the change in a "
        f"new migration with its own id (`zdmproxy status {record.id}` shows what was recorded)"
    )


def _not_expanded(migration_id: str, why: str) -> PhaseOrder:
    return PhaseOrder(
        f"cannot contract migration {migration_id!r}: {why}. Run `zdmproxy apply --phase expand` "
        "first, deploy the application version that no longer needs the old schema, then contract"
    )


def _first_unfinished(steps: Sequence[StepRecord]) -> int:
    for step in steps:
        if step.state != "succeeded":
            return step.index
    return len(steps)


def _short(sql: str) -> str:
    flat = " ".join(sql.split())
    return repr(flat if len(flat) <= 60 else flat[:57] + "...")


async def _quietly(awaitable: Awaitable[None]) -> None:
    """Best effort on the way out: a journal write that fails must not hide why we stopped."""
    with contextlib.suppress(Exception):
        await awaitable
