"""Coordination through PostgreSQL's advisory locks, without ever blocking in one.

A backend blocked in ``pg_advisory_lock()`` holds a snapshot for as long as it
waits, and a ``CREATE INDEX CONCURRENTLY`` run by the lock's holder waits for
every old snapshot in the database: the two would wait for each other
forever (Flyway #3497, #3961). So zdmproxy only ever *tries* a lock, and a
waiter polls from an idle connection in autocommit: between polls it holds
no transaction and no snapshot.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from zdmproxy.engine.connector import Session
from zdmproxy.journal.queries import QUERIES


def migration_key(migration_id: str) -> str:
    """The advisory lock a migration's run holds (hashed to 64 bits by the server)."""
    return f"zdmproxy/migration/{migration_id}"


SCHEMA_KEY = "zdmproxy/journal-schema"


@dataclass(frozen=True)
class Holder:
    """The backend holding an advisory lock, as pg_stat_activity names it."""

    pid: int
    application_name: str | None
    client_addr: str | None

    def describe(self) -> str:
        who = f"pid {self.pid}"
        if self.application_name:
            who += f" app '{self.application_name}'"
        if self.client_addr:
            who += f" from {self.client_addr}"
        return who


async def try_lock(session: Session, key: str) -> bool:
    return bool(await session.fetchval(QUERIES["try_lock"], key))


async def unlock(session: Session, key: str) -> None:
    await session.fetchval(QUERIES["unlock"], key)


async def holder(session: Session, key: str) -> Holder | None:
    row = await session.fetchrow(QUERIES["lock_holder"], key)
    if row is None:
        return None
    return Holder(row["pid"], row["application_name"], row["client_addr"])


async def lock(session: Session, key: str, poll_s: float, deadline: float | None = None) -> bool:
    """Take ``key`` on ``session``, polling; False if ``deadline`` (monotonic) passed first."""
    while not await try_lock(session, key):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll_s)
    return True
