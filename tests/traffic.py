"""Application traffic for behaviour tests: clients doing primary-key reads and writes,
recording the latency every request saw and every error it got."""

from __future__ import annotations

import asyncio
import random
import time
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
                try:
                    await conn.execute(query, rng.randint(1, self.rows))
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
