"""The watchdog: cancel our own lock wait as soon as traffic queues behind it for too long.

lock_timeout stays the hard bound on a wait; the watchdog ends the wait
earlier when sessions are actually queued behind us longer than the budget,
and lets us wait longer on a quiet table. It polls from its own connection
at a modest rate (POSTGRES-FACTS.md 3.4: 50 Hz costs nothing measurable, a
tight loop costs 30% of throughput) and cancels only while our backend is
still waiting for a lock, never a statement that already got its locks.
Whether a 57014 was our cancel or a statement timeout is known from our own
intent (``cancelled``), never from the message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

import asyncpg

from zdmproxy.engine.connector import CONNECTION_LOST, Session
from zdmproxy.engine.events import Blocker
from zdmproxy.engine.queries import QUERIES


@dataclass
class Watchdog:
    session: Session
    pid: int
    budget_ms: float
    interval_ms: float
    cancelled: bool = False
    waiting_for_lock: bool = False  # as of the latest poll
    max_queued: int = 0
    blockers: dict[int, Blocker] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Watchdog:
        self._task = asyncio.create_task(self._run(), name=f"zdmproxy-watchdog-{self.pid}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Let the current poll finish instead of cancelling it: a cancelled asyncpg query sends
        # a cancel request that could land on the watch session's next query.
        assert self._task is not None
        self._stop.set()
        await self._task

    async def _run(self) -> None:
        interval = self.interval_ms / 1000
        try:
            while not self._stop.is_set():
                await self.poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), interval)
        except (*CONNECTION_LOST, asyncpg.PostgresError):
            # Losing the watch connection must not fail the attempt: lock_timeout still
            # bounds the wait. The runner reconnects the watcher for the next attempt.
            self.waiting_for_lock = False
            await self.session.close()

    async def poll(self) -> None:
        row = await self.session.fetchrow(QUERIES["watch"], self.pid)
        if row is None:
            self.waiting_for_lock = False
            return
        self.waiting_for_lock = row["wait_event_type"] == "Lock"
        self.max_queued = max(self.max_queued, row["queued"])
        for raw in json.loads(row["blockers"]):
            self.blockers[raw["pid"]] = Blocker.from_row(raw)
        if self.waiting_for_lock and row["queued_ms"] > self.budget_ms and not self.cancelled:
            # Intent first: the error that comes back must be read as our own cancel. Polling
            # goes on afterwards, so the rest of the attempt stays watched and recorded.
            self.cancelled = True
            if not await self.session.fetchval(QUERIES["cancel_if_waiting"], self.pid):
                self.cancelled = False  # it got its lock in the meantime: nothing was cancelled
