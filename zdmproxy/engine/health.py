"""The database's health as a backfill sees it: the signals that hold its batches back.

A backfill writes as fast as the primary lets it; what it must not outrun is everything
downstream of the primary. Between batches it reads, from its own connection:

- replication lag, per replica, in bytes (``pg_current_wal_lsn()`` minus what the replica
  replayed, or flushed when it does not replay: pg_receivewal) and in seconds (``replay_lag``);
- the WAL archive backlog, when archiving is on: the segments waiting for ``archive_command``
  (their ``.ready`` files in archive_status, where the role may list them: superuser or
  pg_monitor), else the WAL written since the last segment ``pg_stat_archiver`` says was
  archived;
- an autovacuum worker on the backfilled table (``pg_stat_progress_vacuum``).

Those pause the backfill until they clear. During each batch it also samples the sessions
waiting for a lock the batch holds (a row lock, mostly): one waiting longer than the policy
allows slows the backfill down (smaller batches) instead of pausing it. Each signal is named
the way an operator reads it ("replica lag 48.0 MB > 16.0 MB (standby1)").

Limits of the reading: the replication columns need pg_read_all_stats (or a superuser) and
read NULL otherwise, so no lag is seen; without pg_monitor an archive backlog is seen only once a
segment was archived (``last_archived_wal`` set).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

import asyncpg

from zdmproxy.engine.connector import CONNECTION_LOST, Session
from zdmproxy.engine.queries import QUERIES
from zdmproxy.policy import MigrationPolicy


@dataclass(frozen=True)
class Signal:
    """One reason to hold a backfill back, as its progress names it."""

    name: str  # what it is: "replica lag", "archive backlog", "autovacuum", "blocked sessions"
    message: str  # with the figures: "replica lag 48.0 MB > 16.0 MB (standby1)"


def size(n: float) -> str:
    """Bytes as people read them in a progress line."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


async def pausing_signals(session: Session, table_oid: int, policy: MigrationPolicy) -> list[Signal]:
    """The signals that should pause the backfill of table ``table_oid`` now (empty: go on)."""
    row = await session.fetchrow(QUERIES["backfill_health"], table_oid)
    assert row is not None
    found: list[Signal] = []
    lag_bytes, lag_s = policy.backfill_max_replica_lag_bytes, policy.backfill_max_replica_lag_s
    for replica in json.loads(row["replicas"]):
        name = replica["application_name"] or f"pid {replica['pid']}"
        if lag_bytes is not None and replica["lag_bytes"] is not None and replica["lag_bytes"] > lag_bytes:
            found.append(
                Signal(
                    "replica lag",
                    f"replica lag {size(replica['lag_bytes'])} > {size(lag_bytes)} ({name})",
                )
            )
        if lag_s is not None and replica["lag_s"] is not None and replica["lag_s"] > lag_s:
            message = f"replica replay lag {replica['lag_s']:.1f} s > {lag_s:g} s ({name})"
            found.append(Signal("replica lag", message))
    backlog, limit = row["archive_backlog_bytes"], policy.backfill_max_archive_backlog_bytes
    if limit is not None and backlog is not None and backlog > limit:
        found.append(Signal("archive backlog", f"WAL archive backlog {size(backlog)} > {size(limit)}"))
    if policy.backfill_pause_on_autovacuum and row["autovacuum_pid"] is not None:
        found.append(
            Signal("autovacuum", f"autovacuum (pid {row['autovacuum_pid']}) is working on the table")
        )
    return found


@dataclass
class BlockedSampler:
    """Samples, while one batch runs, the sessions waiting for a lock its backend holds.

    Polls from the health connection at the watchdog's pace, from ``after_ms`` into the batch
    (nobody can have waited longer than that before, so a batch shorter than it costs no
    query); the batch's own watchdog only looks at waits of the batch itself. ``longest_ms``
    is the longest wait seen.
    """

    session: Session
    pid: int
    after_ms: float
    interval_ms: float
    sessions: int = 0
    longest_ms: float = 0.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BlockedSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        with contextlib.suppress(*CONNECTION_LOST, asyncpg.PostgresError, TimeoutError):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.after_ms / 1000)
            while not self._stop.is_set():
                row = await self.session.fetchrow(QUERIES["blocked_behind"], self.pid, timeout=5)
                if row is not None:
                    self.sessions = max(self.sessions, int(row["sessions"]))
                    self.longest_ms = max(self.longest_ms, float(row["waited_ms"]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval_ms / 1000)

    def signal(self, policy: MigrationPolicy) -> Signal | None:
        """Sessions waited behind the batch longer than the policy allows: smaller batches."""
        if self.longest_ms <= policy.backfill_max_blocked_ms:
            return None
        return Signal(
            "blocked sessions",
            f"{self.sessions} session(s) waited behind a batch, up to {self.longest_ms:.0f} ms "
            f"> {policy.backfill_max_blocked_ms:g} ms",
        )
