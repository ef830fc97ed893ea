"""Application traffic for behaviour tests: clients doing primary-key reads and writes,
recording the latency every request saw and every error it got."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg


@dataclass
class Sample:
    client: int
    started: float  # time.monotonic()
    latency_s: float


@dataclass
class Traffic:
    dsn: str
    table: str
    rows: int
    clients: int = 8
    pace_s: float = 0.002  # leave CPU for the engine on a 2-core machine
    samples: list[Sample] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    # Every n = n + 1 that succeeded, by row: at the end each row's n must equal its count.
    writes: Counter[int] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Traffic:
        conns = [await asyncpg.connect(self.dsn) for _ in range(self.clients)]
        self._tasks = [asyncio.create_task(self._client(c, i)) for i, c in enumerate(conns)]
        while len(self.samples) < self.clients * 5:  # every client is up and running
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 30)

    async def _client(self, conn: asyncpg.Connection, number: int) -> None:
        rng = random.Random(number)
        read = f"SELECT a FROM {self.table} WHERE id = $1"
        write = f"UPDATE {self.table} SET n = n + 1 WHERE id = $1"
        deadline = time.monotonic() + 120  # bounded even if the test forgets to stop us
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                query = read if rng.random() < 0.5 else write
                started = time.monotonic()
                row = rng.randint(1, self.rows)
                try:
                    if await conn.execute(query, row) == "UPDATE 1":
                        self.writes[row] += 1
                except asyncpg.PostgresError as exc:
                    self.errors.append(exc)
                self.samples.append(Sample(number, started, time.monotonic() - started))
                await asyncio.sleep(self.pace_s)
        finally:
            await conn.close()

    async def settle(self) -> float:
        """Wait until every client finished a request started from now on, so requests that
        were stuck are recorded; returns the moment waited from."""
        mark = time.monotonic()
        async with asyncio.timeout(30):
            while {s.client for s in self.samples[-self.clients * 50 :] if s.started >= mark} != set(
                range(self.clients)
            ):
                await asyncio.sleep(0.01)
        return mark

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.started <= end]

    def max_latency(self, start: float, end: float) -> float:
        """The longest wait of any request started in [start, end] (call ``settle`` first)."""
        return max((s.latency_s for s in self.window(start, end)), default=0.0)


@dataclass
class LockWait:
    """One session seen waiting for a lock, and who it waited behind."""

    at: float  # time.monotonic() of the sample
    pid: int
    application_name: str
    waited_ms: float
    blocked_by: tuple[int, ...]
    blocked_by_apps: tuple[str, ...]


@dataclass
class LockSampler:
    """Samples pg_locks at a high rate: every session waiting for a lock, how long it has
    waited, and whose locks (held or requested) it waits behind. The truth about who waited
    behind whom is PostgreSQL's, not the engine's own report."""

    dsn: str
    interval_s: float = 0.005
    waits: list[LockWait] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    QUERY = """
        SELECT l.pid, coalesce(a.application_name, '') AS application_name,
               (EXTRACT(EPOCH FROM clock_timestamp() - l.waitstart) * 1000)::float8 AS waited_ms,
               pg_blocking_pids(l.pid) AS blocked_by,
               (SELECT coalesce(array_agg(coalesce(b.application_name, '')), '{}')
                  FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(l.pid))) AS apps
          FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE NOT l.granted AND l.pid <> pg_backend_pid()
    """

    async def __aenter__(self) -> LockSampler:
        conn = await asyncpg.connect(self.dsn)
        self._task = asyncio.create_task(self._run(conn))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)

    async def _run(self, conn: asyncpg.Connection) -> None:
        deadline = time.monotonic() + 120
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                rows = await conn.fetch(self.QUERY)
                at = time.monotonic()
                for row in rows:
                    self.waits.append(
                        LockWait(
                            at,
                            row["pid"],
                            row["application_name"],
                            row["waited_ms"] or 0.0,
                            tuple(row["blocked_by"]),
                            tuple(row["apps"]),
                        )
                    )
                await asyncio.sleep(self.interval_s)
        finally:
            await conn.close()

    def longest_wait_behind(self, app_prefix: str, start: float = 0.0, end: float = float("inf")) -> float:
        """The longest any session not named ``app_prefix…`` waited behind one that is (ms),
        among the samples taken in [start, end]."""
        return max(
            (
                w.waited_ms
                for w in self.waits
                if start <= w.at <= end
                and not w.application_name.startswith(app_prefix)
                and any(app.startswith(app_prefix) for app in w.blocked_by_apps)
            ),
            default=0.0,
        )

    def queued_behind(self, app_prefix: str, pid: int) -> list[LockWait]:
        """Every sample of a session named ``app_prefix…`` waiting behind ``pid``."""
        return [w for w in self.waits if w.application_name.startswith(app_prefix) and pid in w.blocked_by]
