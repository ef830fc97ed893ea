"""The watchdog: cancel our own lock wait as soon as traffic queues behind it for too long.

lock_timeout stays the hard bound on a wait where the server can enforce it;
the watchdog ends the wait earlier when sessions are actually queued behind
us longer than the budget, and lets us wait longer on a quiet table. It polls
from its own connection at a modest rate (POSTGRES-FACTS.md 3.4: 50 Hz costs
nothing measurable, a tight loop costs 30% of throughput).

What counts is exact: sessions blocked by our backend while it waits for a
*relation* lock (queued behind our request, or behind a lock we already hold
while we ask for the next), or, in a transactional step, for any lock (an
UPDATE waiting for a row an application holds, while writers queue for the
rows it changed: a cancel rolls it all back). A ``CONCURRENTLY`` statement waiting for older
transactions (a virtualxid) blocks no traffic by waiting; sessions queued
behind the ShareUpdateExclusiveLock it holds meanwhile (a manual VACUUM,
other DDL) are a real, long queue that cancelling would only move: they are
reported, not cancelled.

The check and the cancel are one statement (``cancel_if_waiting``): the
signal is sent only while our backend is still waiting for that same lock.
Whether a 57014 was our cancel or a statement timeout is known from our own
intent (``cancelled``), never from the message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from zdmproxy.engine.connector import CONNECTION_LOST, Session
from zdmproxy.engine.events import Blocker
from zdmproxy.engine.queries import QUERIES
from zdmproxy.sql.locks import LockMode

# Called once per attempt with the sessions queued behind a lock we hold while we wait for
# older transactions (reported, never cancelled).
QueueReport = Callable[[tuple[Blocker, ...]], Awaitable[None]]


@dataclass(frozen=True)
class OurWait:
    """The lock our backend is waiting for, as pg_locks shows it."""

    locktype: str
    relation_oid: int | None
    relation: str | None
    mode: str
    waited_ms: float
    tag: str  # the lock's whole identity in pg_locks, for cancel_if_waiting

    @property
    def on_relation(self) -> bool:
        return self.locktype == "relation"

    @property
    def blocks_traffic(self) -> bool:
        """A waiting request for this mode makes later reads or writes queue behind it."""
        return self.on_relation and LockMode.from_pg_name(self.mode).conflicts_with(LockMode.ROW_EXCLUSIVE)


@dataclass
class Watchdog:
    session: Session
    pid: int  # our step backend, from pg_backend_pid() inside its own session
    budget_ms: float
    interval_ms: float
    # Where the server's lock_timeout is long (a CONCURRENTLY statement must be able to wait for
    # older transactions), the watchdog bounds a traffic-blocking relation wait itself.
    wait_limit_ms: float | None = None
    # Cancels the running statement from the client side: used when the watch connection is lost
    # while nothing else bounds a traffic-blocking wait.
    cancel_statement: Callable[[], None] | None = None
    # The step runs in a transaction: a cancel rolls all of it back, so a wait of any kind (a row
    # or transaction lock too) is cancelled once traffic queues behind us past the budget. Only
    # a non-transactional statement waiting for older transactions is reported instead.
    transactional: bool = False
    report_queue: QueueReport | None = None
    cancelled: bool = False
    lost: bool = False  # the watch connection was lost during the attempt
    waiting_for_lock: bool = False  # as of the latest poll
    our_wait: OurWait | None = None
    max_queued: int = 0
    blockers: dict[int | str, Blocker] = field(default_factory=dict)
    reported: bool = False
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def poll_timeout_s(self) -> float:
        """A poll that takes longer than this is a hung connection, not a slow server."""
        return max(2.0, 50 * self.interval_ms / 1000)

    async def __aenter__(self) -> Watchdog:
        self._task = asyncio.create_task(self._run(), name=f"zdmproxy-watchdog-{self.pid}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Let the current poll finish instead of cancelling it (a cancelled asyncpg query sends a
        # cancel request that could land on the watch session's next query), but never wait
        # longer than one poll may take: a hung poll is given up with its connection.
        assert self._task is not None
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.poll_timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *CONNECTION_LOST, asyncpg.PostgresError):
                await self._task
            await _abandon(self.session)

    async def _run(self) -> None:
        interval = self.interval_ms / 1000
        try:
            while not self._stop.is_set():
                await self.poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), interval)
        except (*CONNECTION_LOST, asyncpg.PostgresError, TimeoutError):
            self.lost = True
            # Nobody watches any more: where lock_timeout does not bound a traffic-blocking wait
            # (the watchdog did), end the statement rather than let it queue traffic unseen.
            unbounded = self.wait_limit_ms is not None or (
                self.our_wait is not None and self.our_wait.blocks_traffic
            )
            if unbounded and self.cancel_statement is not None and not self._stop.is_set():
                self.cancelled = True
                self.cancel_statement()
            self.waiting_for_lock = False
            await _abandon(self.session)

    async def poll(self) -> None:
        row = await self.session.fetchrow(QUERIES["watch"], self.pid, timeout=self.poll_timeout_s)
        wait = OurWait(**json.loads(row["our_wait"])) if row is not None and row["our_wait"] else None
        self.our_wait = wait
        self.waiting_for_lock = wait is not None
        if wait is None or row is None:
            return
        for raw in [*json.loads(row["blockers"]), *json.loads(row["prepared_blockers"])]:
            blocker = Blocker.from_row(raw)
            self.blockers[blocker.key] = blocker
        if not wait.on_relation and not self.transactional:
            # Waiting for older transactions: whoever queues behind what we hold is a long,
            # real queue; cancelling would leave debris and the queue would form again.
            if row["queued"] and not self.reported and self.report_queue is not None:
                self.reported = True
                queued = tuple(Blocker.from_row(raw) for raw in json.loads(row["queued_sessions"]))
                await self.report_queue(queued)
            return
        self.max_queued = max(self.max_queued, row["queued"])
        over_budget = row["queued_ms"] > self.budget_ms
        over_limit = (
            self.wait_limit_ms is not None and wait.blocks_traffic and wait.waited_ms > self.wait_limit_ms
        )
        if (over_budget or over_limit) and not self.cancelled:
            # Intent first: the error that comes back must be read as our own cancel. Polling
            # goes on afterwards, so the rest of the attempt stays watched and recorded.
            self.cancelled = True
            if not await self.session.fetchval(
                QUERIES["cancel_if_waiting"], self.pid, wait.tag, wait.mode, timeout=self.poll_timeout_s
            ):
                self.cancelled = False  # it got its lock in the meantime: nothing was cancelled


async def _abandon(session: Session) -> None:
    """Close a watch connection that failed or hung; the runner opens a new one."""
    if not session.is_closed():
        with contextlib.suppress(*CONNECTION_LOST, asyncpg.PostgresError, TimeoutError):
            await asyncio.wait_for(session.close(), 1.0)
