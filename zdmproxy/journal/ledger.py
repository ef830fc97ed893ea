"""The engine's Ledger (zdmproxy.engine.ledger) kept in the journal."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from zdmproxy import __version__
from zdmproxy.engine.attempt import AttemptRecord
from zdmproxy.engine.connector import Session
from zdmproxy.engine.outcomes import Outcome
from zdmproxy.errors import MigrationBusy, ZdmError
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

    ``claim`` takes the run lock on a step session; ``start`` marks the run as
    begun (once the caller decided there is something to run); every later
    claim (a reconnect) only records which backend holds the lock now.
    """

    def __init__(self, journal: Journal, migration_id: str, caller: Caller) -> None:
        self.journal = journal
        self.migration_id = migration_id
        self.caller = caller
        self.key = advisory.migration_key(migration_id)
        self.run = 0  # migrations.runs of this run, once started

    async def claim(self, session: Session) -> None:
        if not await advisory.try_lock(session, self.key):
            holder = await advisory.holder(self.journal.session, self.key)
            raise MigrationBusy(
                f"migration {self.migration_id!r} is being run by "
                + (holder.describe() if holder else "another process")
            )
        if self.run:
            await self._claimed(session, new_run=False)

    async def start(self, session: Session) -> None:
        """Mark the migration running under this process, on the claimed ``session``."""
        await self._claimed(session, new_run=True)

    async def _claimed(self, session: Session, *, new_run: bool) -> None:
        caller = self.caller
        self.run = int(
            await session.fetchval(
                QUERIES["migration_claimed"],
                self.migration_id,
                new_run,
                caller.application_name,
                caller.host,
                caller.pid,
                caller.version,
            )
        )

    async def step_started(self, index: int) -> bool:
        return await self.journal.step_started(self.migration_id, index) == "running"

    def commit_statement(self, index: int) -> tuple[str, tuple[Any, ...]] | None:
        return QUERIES["step_succeeded"], (self.migration_id, index)

    async def step_committed(self, index: int) -> bool:
        return await self.journal.step_state(self.migration_id, index) == "succeeded"

    async def step_succeeded(self, index: int) -> None:
        await self.journal.step_succeeded(self.migration_id, index)

    async def step_failed(self, index: int, outcome: Outcome, error: ZdmError) -> None:
        await self.journal.step_failed(self.migration_id, index, outcome.value, error)

    async def attempt_ended(self, index: int, record: AttemptRecord) -> None:
        await self.journal.attempt(self.migration_id, index, self.run, record)
