"""Prometheus metrics of one daemon, fed from the engine's events (never from a database query:
a scrape reads counters in memory, so a slow or unreachable database cannot slow it down).

Names are prefixed ``zdmproxy_`` and carry their unit; durations are histograms. No label is
unbounded: a migration id is never a label, and blockers are counted by application_name only
for the first ``MAX_APPLICATIONS`` names seen (the rest as ``other``).
"""

from __future__ import annotations

import time
from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from zdmproxy.engine.events import Event, EventKind, EventSink

MAX_APPLICATIONS = 20
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Steps take from milliseconds (an ADD COLUMN) to hours (an index build on a big table).
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
STATES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
# The health signals a backfill names when it holds back (engine/health.py, Signal.name): the
# label's only values besides "other", so it stays bounded whatever a message says.
THROTTLE_SIGNALS = ("replica lag", "archive backlog", "autovacuum", "blocked sessions")


class Metrics:
    """The daemon's metrics, in a registry of their own (one per daemon, also in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.attempts = Counter(
            "zdmproxy_attempts", "Attempts of steps, by how they ended", ["outcome"], registry=r
        )
        self.retries = Counter("zdmproxy_retries", "Attempts that were retries of a failed one", registry=r)
        self.step_duration = Histogram(
            "zdmproxy_step_duration_seconds",
            "Time from a step's start to its end, pre-flight waits and retries included",
            ["outcome"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.lock_wait = Histogram(
            "zdmproxy_lock_wait_seconds",
            "Time a step waited for conflicting transactions before it asked for its locks",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.queued = Counter(
            "zdmproxy_sessions_queued_behind_us",
            "Sessions seen queued behind a lock request of ours when an attempt ended",
            registry=r,
        )
        self.blockers = Counter(
            "zdmproxy_blockers_seen",
            f"Sessions seen in a step's way, by application_name (the first {MAX_APPLICATIONS} names; "
            "then 'other')",
            ["application_name"],
            registry=r,
        )
        self.backfill_rows = Counter(
            "zdmproxy_backfill_rows",
            "Rows walked by backfill batches (a resumed backfill counts its rows before the stop again)",
            registry=r,
        )
        self.backfill_rate = Gauge(
            "zdmproxy_backfill_rows_per_second",
            "Rate of the backfill that reported last (rows per second over its run so far)",
            registry=r,
        )
        self.backfill_throttled = Counter(
            "zdmproxy_backfill_throttled",
            "Times a backfill was held back or slowed, by health signal (engine/health.py's names; "
            "'other': refused live knobs and anything unnamed)",
            ["signal"],
            registry=r,
        )
        self.migrations = Gauge(
            "zdmproxy_migrations",
            "Migrations this daemon was given, by their last known state",
            ["state"],
            registry=r,
        )
        for state in STATES:
            self.migrations.labels(state).set(0)
        self._states: dict[str, str] = {}
        self._applications: set[str] = set()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def migration_state(self, migration_id: str, state: str) -> None:
        """What this daemon last knew of a migration's state (the gauge counts ids by state)."""
        self._states[migration_id] = state
        tally = Tally(self._states.values())
        for name in STATES:
            self.migrations.labels(name).set(tally[name])

    def sink(self) -> EventSink:
        """An EventSink for one migration's run: it counts and times what the engine reports."""
        step_started: dict[int, float] = {}
        waiting_since: dict[int, float] = {}
        rows_done: dict[int, int] = {}  # per backfill step: progress events carry running totals

        def record(event: Event) -> None:
            now = time.monotonic()
            if event.kind is EventKind.STEP_STARTED:
                step_started[event.step] = now
            elif event.kind is EventKind.WAITING_FOR_BLOCKERS:
                waiting_since.setdefault(event.step, now)
            elif event.kind is EventKind.ATTEMPT_STARTED:
                if event.step in waiting_since:
                    self.lock_wait.observe(now - waiting_since.pop(event.step))
                if (event.attempt or 1) > 1:
                    self.retries.inc()
            elif event.kind is EventKind.ATTEMPT_FAILED:
                self.attempts.labels(event.outcome or "failed").inc()
                self.queued.inc(event.queued_behind_us or 0)
            elif event.kind in (EventKind.STEP_SUCCEEDED, EventKind.STEP_FAILED):
                outcome = "succeeded" if event.kind is EventKind.STEP_SUCCEEDED else "failed"
                if event.kind is EventKind.STEP_SUCCEEDED:
                    self.attempts.labels("succeeded").inc()
                if event.step in step_started:
                    self.step_duration.labels(outcome).observe(now - step_started.pop(event.step))
            elif event.kind is EventKind.BACKFILL_THROTTLED:
                for signal in [name for name in THROTTLE_SIGNALS if name in event.message] or ["other"]:
                    self.backfill_throttled.labels(signal).inc()
            if event.progress is not None:
                done = event.progress.rows_done
                self.backfill_rows.inc(max(0, done - rows_done.get(event.step, 0)))
                rows_done[event.step] = done
                if event.progress.rows_per_s is not None:
                    self.backfill_rate.set(event.progress.rows_per_s)
            for blocker in event.blockers:
                self.blockers.labels(self._application(blocker.application_name)).inc()

        return record

    def _application(self, name: str) -> str:
        if name in self._applications:
            return name
        if len(self._applications) < MAX_APPLICATIONS:
            self._applications.add(name)
            return name
        return "other"
