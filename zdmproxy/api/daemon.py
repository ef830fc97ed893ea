"""What the daemon does behind its HTTP API: submitted migrations run as asyncio tasks, through
the journal's Coordinator, so however many daemons receive a migration it runs exactly once.

The daemon keeps no state of its own that matters: every answer comes from the journal (so any
daemon answers for a migration another one runs), and everything an operator asks is a row
update the running process obeys (journal/control.py). Its journal connections only ever run
short autocommit statements: a daemon that waits holds no snapshot, and never holds up another
daemon's CREATE INDEX CONCURRENTLY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from zdmproxy.engine.blockers import lock_report
from zdmproxy.engine.catalog import plan_script
from zdmproxy.engine.connector import CONNECTION_LOST, Session
from zdmproxy.engine.events import Blocker, Event, EventSink, deliver
from zdmproxy.engine.runner import check_allowed
from zdmproxy.errors import (
    ChecksumConflict,
    DatabaseUnreachable,
    NotFound,
    UsageError,
    ZdmError,
)
from zdmproxy.journal import control
from zdmproxy.journal.coordinator import Coordinator, Request
from zdmproxy.journal.events import JournalEventSink, StoredEvent, events_after
from zdmproxy.journal.folder import check_id
from zdmproxy.journal.ledger import Caller
from zdmproxy.journal.queries import QUERIES
from zdmproxy.journal.steps import checksum
from zdmproxy.journal.store import Journal, MigrationRecord
from zdmproxy.metrics import Metrics
from zdmproxy.plan.model import Plan
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.parse import parse_script

log = logging.getLogger("zdmproxy.daemon")
T = TypeVar("T")

# States in which nothing runs the migration until someone asks again (wait returns on them).
SETTLED = frozenset({"succeeded", "failed", "cancelled", "paused"})
# States after which an event stream has nothing more to say.
ENDED = frozenset({"succeeded", "failed", "cancelled"})
_STOPPED_AS_ASKED = ("pause_requested", "cancel_requested")
APPLICATION_NAME = "zdmproxy-daemon"
_LOST: tuple[type[BaseException], ...] = (*CONNECTION_LOST, OSError)
_UNAVAILABLE: tuple[type[BaseException], ...] = (ZdmError, *_LOST)


class NotRunning(ZdmError):
    """Asked to pause, cancel or resume a migration in a state where that means nothing."""

    code = "not_running"


@dataclass
class Health:
    """The database as the daemon's own probe last saw it (readiness reads this, never the DB)."""

    reachable: bool = False
    checked_at: datetime | None = None
    error: str | None = None


class JournalPool:
    """A few journal connections shared by the API's requests, each used by one at a time."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self._free: asyncio.Queue[Journal | None] = asyncio.Queue()
        for _ in range(size):
            self._free.put_nowait(None)

    @contextlib.asynccontextmanager
    async def journal(self) -> AsyncIterator[Journal]:
        journal = await self._free.get()
        try:
            if journal is None:
                journal = await Journal.open(self.dsn, APPLICATION_NAME)
            yield journal
        except CONNECTION_LOST as exc:
            raise DatabaseUnreachable(f"lost the connection to the database: {type(exc).__name__}") from exc
        finally:
            self._free.put_nowait(journal)

    async def close(self) -> None:
        """Close the idle connections; the pool stays usable (it reconnects), so a request still
        waiting for a connection gets an answer rather than a hang."""
        idle = [self._free.get_nowait() for _ in range(self._free.qsize())]
        for journal in idle:
            if journal is not None:
                with contextlib.suppress(Exception):
                    await journal.close()
            self._free.put_nowait(None)


@dataclass(frozen=True)
class Status:
    """Everything the journal says about one migration, for GET /v1/migrations/{id}."""

    record: MigrationRecord
    plane: control.ControlPlane
    steps: list[Any]
    attempts: list[dict[str, Any]]
    backfills: list[control.BackfillProgress]


@dataclass
class Daemon:
    """The migrations of one database, run on request, observed and controlled through its journal."""

    dsn: str
    policy: MigrationPolicy
    metrics: Metrics = field(default_factory=Metrics)
    caller: Caller = field(default_factory=lambda: Caller("zdmproxy serve"))
    probe_interval_s: float = 1.0
    poll_s: float = 0.2

    def __post_init__(self) -> None:
        self.pool = JournalPool(self.dsn, size=4)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.health = Health()
        self.ready = False  # the journal was reachable (and is installed) at least once
        self.stopping = asyncio.Event()
        self._probe: asyncio.Task[None] | None = None

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start probing the database; the daemon is ready once the journal was reached."""
        await self._check()
        self._probe = asyncio.create_task(self._probing())

    async def stop(self) -> None:
        """Graceful: the running steps are brought to a safe point (a transactional step rolls
        back, the backfill's last batch is checkpointed), each run is recorded as stopped while
        its run lock is still held, so another daemon (or this one restarted) takes it over."""
        self.stopping.set()
        if self._probe is not None:
            self._probe.cancel()
        running = [task for task in self.tasks.values() if not task.done()]
        for task in running:
            _cut(task)
        await asyncio.gather(*running, *([self._probe] if self._probe else []), return_exceptions=True)
        await self.pool.close()

    async def _probing(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(self.probe_interval_s)
            try:
                await self._check()
                await self._obey_cancels()
            except Exception as exc:  # the probe must outlive any one failure, or readiness freezes
                self.health = Health(False, datetime.now(UTC), type(exc).__name__)

    async def _check(self) -> None:
        try:
            async with self.pool.journal() as journal:
                await journal.using(lambda session: session.fetchval(QUERIES["ping"]))
        except ZdmError as exc:
            self.health = Health(False, datetime.now(UTC), exc.message)
        except _LOST as exc:
            self.health = Health(False, datetime.now(UTC), type(exc).__name__)
        else:
            self.health = Health(True, datetime.now(UTC), None)
            self.ready = True

    async def _obey_cancels(self) -> None:
        """A cancel asked through another daemon also cuts the step this daemon is running."""
        for migration_id, task in list(self.tasks.items()):
            if task.done():
                continue
            with contextlib.suppress(*_UNAVAILABLE):  # the database away: asked again next time
                async with self.pool.journal() as journal:
                    record, plane = await _record_and_plane(journal, migration_id)
                if plane is not None and plane.control == "cancel" and self._runs_here(record):
                    _cut(task)

    def _runs_here(self, record: MigrationRecord | None) -> bool:
        return (
            record is not None
            and record.state == "running"
            and record.client_pid == self.caller.pid
            and record.client_host == self.caller.host
        )

    async def _with_journal(self, work: Callable[[Journal], Awaitable[T]]) -> T:
        async with self.pool.journal() as journal:
            return await work(journal)

    # -- migrations --------------------------------------------------------------------------

    async def submit(
        self, request: Request, policy: MigrationPolicy | None = None
    ) -> tuple[bool, MigrationRecord]:
        """Record the migration (True: this call created it) and run it unless it is settled.

        Everything that can be refused is refused before anything is recorded: a bad id, SQL
        that does not parse or that zdmproxy refuses (transaction control, SET ...), a
        destructive statement the policy does not allow, and different SQL under a known id.
        """
        migration_id, script = check_id(request.migration_id), request.script
        policy = policy or self.policy
        statements = parse_script(script)
        if not statements:
            raise UsageError("the SQL holds no statement (only whitespace or comments): nothing to run")
        make_plan(script)  # SQL zdmproxy refuses whatever the database holds is refused here
        ours = checksum(statements)

        async def record(journal: Journal) -> tuple[bool, MigrationRecord]:
            # What the policy refuses depends on the catalog (a long lock only on a large table):
            # judged on the plan the run will execute, so a refused migration is never left queued.
            found = await journal.migration(migration_id)
            created = False
            if found is None:
                plan = await journal.using(lambda session: plan_script(session, script, policy))
                check_allowed(plan.steps, policy)
                created = await journal.create(
                    migration_id, ours, script, plan.steps, version=request.version, source=request.source
                )
                found = await journal.migration(migration_id)
                assert found is not None
            elif found.checksum == ours and _runnable(found):
                recorded = await journal.steps(migration_id)
                check_allowed([s.step for s in recorded if s.state != "succeeded"], policy)
            return created, found

        created, found = await self._with_journal(record)
        if found.checksum != ours:
            raise ChecksumConflict(
                f"migration {migration_id!r} is recorded with different SQL (recorded sha256 "
                f"{found.checksum}, given {ours}): a migration never changes; give the change a new id"
            )
        if _runnable(found):
            self.run(request, policy)
        self.metrics.migration_state(migration_id, found.state)
        return created, found

    def run(self, request: Request, policy: MigrationPolicy | None = None) -> None:
        """Run the migration in the background unless this daemon already does."""
        migration_id = request.migration_id
        task = self.tasks.get(migration_id)
        if (task is not None and not task.done()) or self.stopping.is_set():
            return
        task = asyncio.create_task(self._apply(request, policy or self.policy))
        self.tasks[migration_id] = task
        task.add_done_callback(lambda done: self._forget(migration_id, done))

    def _forget(self, migration_id: str, task: asyncio.Task[None]) -> None:
        """A finished run's task is dropped: the journal remembers the outcome, not the daemon."""
        if self.tasks.get(migration_id) is task:
            del self.tasks[migration_id]

    async def _apply(self, request: Request, policy: MigrationPolicy) -> None:
        migration_id = request.migration_id
        journal = await _open_quietly(self.dsn)
        events = await _open_quietly(self.dsn)
        if journal is None or events is None:
            for opened in (journal, events):
                if opened is not None:
                    await opened.close()
            log.warning("%s: database unreachable; not started (submit it again)", migration_id)
            return
        sink = _fan_out(self.metrics.sink(), JournalEventSink(events, migration_id))
        coordinator = Coordinator(self.dsn, journal, policy, self.caller, sink=sink, poll_s=self.poll_s)
        self.metrics.migration_state(migration_id, "running")
        try:
            applied = await coordinator.apply(request)
            log.info("%s: %s", migration_id, applied.result.value)
        except ZdmError as exc:
            log.info("%s: %s: %s", migration_id, exc.code, exc.message)
        except _LOST as exc:
            log.warning(
                "%s: lost the database (%s); submit it again to resume", migration_id, type(exc).__name__
            )
        except asyncio.CancelledError:
            log.info("%s: stopped", migration_id)
            raise
        except Exception as exc:  # a bug: logged without its arguments (they may hold SQL)
            log.error("%s: internal error %s", migration_id, type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                found = await journal.migration(migration_id)
                if found is not None:
                    self.metrics.migration_state(migration_id, found.state)
            await journal.close()
            await events.close()

    async def wait(self, migration_id: str, timeout_s: float) -> None:
        """Until the migration settles, the timeout passes, or the daemon stops."""
        deadline = time.monotonic() + timeout_s
        task = self.tasks.get(migration_id)
        stopping = asyncio.create_task(self.stopping.wait())
        try:
            if task is not None and not task.done():
                await asyncio.wait({task, stopping}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
                return
            while time.monotonic() < deadline and not self.stopping.is_set():
                found = await self._with_journal(lambda journal: journal.migration(migration_id))
                if found is None or found.state in SETTLED:
                    return
                await asyncio.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))
        finally:
            stopping.cancel()

    async def record(self, migration_id: str) -> MigrationRecord:
        check_id(migration_id)
        found = await self._with_journal(lambda journal: journal.migration(migration_id))
        if found is None:
            raise NotFound(f"no migration {migration_id!r} in the journal (GET /v1/migrations lists them)")
        return found

    async def status(self, migration_id: str) -> Status:
        check_id(migration_id)

        async def read(journal: Journal) -> Status:
            found, plane = await _record_and_plane(journal, migration_id)
            if found is None or plane is None:
                raise NotFound(
                    f"no migration {migration_id!r} in the journal (GET /v1/migrations lists them)"
                )
            return Status(
                found,
                plane,
                await journal.steps(migration_id),
                await journal.attempts(migration_id),
                await control.backfill_progress(journal, migration_id),
            )

        return await self._with_journal(read)

    async def history(self, limit: int) -> list[dict[str, Any]]:
        return await self._with_journal(lambda journal: journal.history(limit))

    async def events(self, migration_id: str, after: int) -> list[StoredEvent]:
        return await self._with_journal(lambda journal: events_after(journal, migration_id, after))

    async def ask(self, migration_id: str, what: Literal["pause", "cancel"]) -> MigrationRecord:
        """Record an operator's pause or cancel; a cancel also cuts a step this daemon runs."""
        check_id(migration_id)
        state = await self._with_journal(lambda journal: control.request(journal, migration_id, what))
        found = await self.record(migration_id)
        if state is None:
            raise NotRunning(f"migration {migration_id!r} is {found.state}: there is no run to {what}")
        task = self.tasks.get(migration_id)
        if what == "cancel" and task is not None and not task.done() and self._runs_here(found):
            _cut(task)
        return found

    async def resume(self, migration_id: str) -> MigrationRecord:
        check_id(migration_id)
        state = await self._with_journal(lambda journal: control.resume(journal, migration_id))
        found = await self.record(migration_id)
        if state is None:
            raise NotRunning(f"migration {migration_id!r} has succeeded: there is nothing to resume")
        if state == "queued":
            self.run(Request(migration_id, found.sql, found.version, found.source))
        return found

    async def throttle(self, migration_id: str, knobs: dict[str, Any]) -> dict[str, Any]:
        check_id(migration_id)
        merged = await self._with_journal(lambda journal: control.set_throttle(journal, migration_id, knobs))
        if merged is None:
            raise NotFound(f"no migration {migration_id!r} in the journal")
        return merged

    async def plan(self, script: str) -> Plan:
        """The plan from the database's catalog, or without it when the database is unreachable."""
        parse_script(script)
        try:
            return await self._with_journal(
                lambda journal: journal.using(lambda session: plan_script(session, script, self.policy))
            )
        except DatabaseUnreachable:
            return make_plan(script, policy=self.policy)

    async def locks(self) -> list[Blocker]:
        async def read(session: Session) -> list[Blocker]:
            return await lock_report(session, [], [session.get_server_pid()])

        return await self._with_journal(lambda journal: journal.using(read))


def _runnable(record: MigrationRecord) -> bool:
    """Whether a submission starts (or joins) a run: not once it succeeded, and not while an
    operator's pause or cancel stands (resume is how to go on)."""
    if record.state == "succeeded":
        return False
    code = (record.error or {}).get("code")
    return not (record.state in ("paused", "cancelled") and code in _STOPPED_AS_ASKED)


async def _record_and_plane(
    journal: Journal, migration_id: str
) -> tuple[MigrationRecord | None, control.ControlPlane | None]:
    return await journal.migration(migration_id), await control.control_plane(journal, migration_id)


async def _open_quietly(dsn: str) -> Journal | None:
    try:
        return await Journal.open(dsn, APPLICATION_NAME)
    except _UNAVAILABLE:
        return None


def _fan_out(metrics: EventSink, journal: JournalEventSink) -> EventSink:
    """Both sinks; an event the journal cannot take (the database is away) is dropped, never
    allowed to fail the step that reported it (the engine is retrying through exactly that)."""

    async def sink(event: Event) -> None:
        await deliver(metrics, event)
        try:
            await journal(event)
        except _UNAVAILABLE as exc:
            log.warning("event %s not journaled: %s", event.kind.value, type(exc).__name__)

    return sink


def _cut(task: asyncio.Task[None]) -> None:
    """Cancel a run's task once: a second cancel would land in the journal write that records
    why it stopped (the coordinator's clean-up), leaving the migration marked running."""
    if not task.cancelling():
        task.cancel()
