"""The engine's Ledger (zdmproxy.engine.ledger) kept in the journal."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from zdmproxy import __version__
from zdmproxy.engine.attempt import AttemptRecord
from zdmproxy.engine.connector import Session
from zdmproxy.engine.ledger import Checkpoint, Controls
from zdmproxy.engine.outcomes import Outcome
from zdmproxy.errors import CancelRequested, MigrationBusy, StopRequested, ZdmError
from zdmproxy.journal import advisory
from zdmproxy.journal.queries import QUERIES
from zdmproxy.journal.store import Journal


@dataclass(frozen=True)
class Caller:
    """Who runs a migration and from where, as the journal records it."""

    application_name: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    version: str = __version__


class JournalLedger:
    """One run of one migration, recorded in the journal.

    ``claim`` takes the run lock on a step session; ``start`` begins a run (once
    the caller decided there is something to run) and gets its number, the
    fencing token every later write of the run is checked against: a run whose
    step session was lost, and which another process took over meanwhile, can
    neither reclaim the migration nor write over the new run's record.
    """

    def __init__(self, journal: Journal, migration_id: str, caller: Caller) -> None:
        self.journal = journal
        self.migration_id = migration_id
        self.caller = caller
        self.key = advisory.migration_key(migration_id)
        self.run = 0  # migrations.runs of this run, once started

    async def claim(self, session: Session) -> None:
        if not await advisory.try_lock(session, self.key):
            holder = await self.journal.using(lambda journal: advisory.holder(journal, self.key))
            raise MigrationBusy(
                f"migration {self.migration_id!r} is being run by "
                + (holder.describe() if holder else "another process")
            )
        if (
            self.run
            and await session.fetchval(QUERIES["migration_reclaimed"], self.migration_id, self.run) is None
        ):
            # Our step session was lost, and another process took the migration over (and maybe
            # finished it) before we got the lock back: it is not ours any more.
            await advisory.unlock(session, self.key)
            raise MigrationBusy(f"migration {self.migration_id!r} was taken over by another process")

    async def start(self, session: Session) -> None:
        """Begin a run of the migration under this process, on the claimed ``session``."""
        caller = self.caller
        self.run = int(
            await session.fetchval(
                QUERIES["migration_started"],
                self.migration_id,
                caller.application_name,
                caller.host,
                caller.pid,
                caller.version,
            )
        )

    async def step_started(self, index: int) -> str:
        before = await self.journal.step_started(self.migration_id, index, self.run)
        if before is not None:
            return before
        if await self.journal.step_state(self.migration_id, index) == "succeeded":
            return "succeeded"
        raise MigrationBusy(f"migration {self.migration_id!r} was taken over by another process")

    def commit_statement(self, index: int) -> tuple[str, tuple[Any, ...]] | None:
        return QUERIES["step_done"], (self.migration_id, index)

    async def step_committed(self, index: int) -> bool:
        return await self.journal.step_state(self.migration_id, index) == "succeeded"

    async def step_succeeded(self, index: int) -> None:
        await self.journal.step_succeeded(self.migration_id, index, self.run)

    async def step_failed(self, index: int, outcome: Outcome, error: ZdmError) -> None:
        await self.journal.step_failed(self.migration_id, index, outcome.value, error, self.run)

    async def attempt_ended(self, index: int, record: AttemptRecord) -> None:
        await self.journal.attempt(self.migration_id, index, self.run, record)

    async def checkpoint(self, index: int) -> Checkpoint | None:
        return await self.journal.checkpoint(self.migration_id, index)

    def checkpoint_statement(self, index: int, checkpoint: Checkpoint) -> tuple[str, tuple[Any, ...]] | None:
        position = json.dumps({"after": list(checkpoint.position), "upper": list(checkpoint.upper)})
        return QUERIES["checkpoint_moved"], (
            self.migration_id,
            index,
            position,
            checkpoint.rows_done,
            checkpoint.rows_total_estimate,
            checkpoint.batch_rows,
            checkpoint.throttled_by,
        )

    async def controls(self) -> Controls:
        return await self.journal.controls(self.migration_id)

    async def finish(self, state: str, error: ZdmError | None = None) -> None:
        """The run's end, recorded only while this run still owns the migration."""
        await self.journal.finish(self.migration_id, state, self.run, error)

    async def finish_phase(self, state: str, phase: str) -> None:
        """The run's end after completing ``phase`` (expand, contract, rollback)."""
        await self.journal.finish_phase(self.migration_id, state, phase, self.run)

    async def stopped(self, stop: StopRequested) -> None:
        """The run obeyed an operator's pause or cancel: recorded, and the request cleared."""
        await self.journal.stopped_as_asked(self.migration_id, stop, self.run)

    async def interrupted(self) -> None:
        """The run's task was cancelled (SIGTERM, or an operator's cancel of the running step):
        a cancel the journal holds is recorded as obeyed, anything else as a stop another
        process takes over."""
        if (await self.controls()).request == "cancel":
            await self.stopped(
                CancelRequested(
                    f"migration {self.migration_id!r} cancelled during a step as an operator asked; "
                    "that step was rolled back or is resumable (resume re-checks it)"
                )
            )
        else:
            await self.finish("cancelled")
