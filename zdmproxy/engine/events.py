"""Everything the engine decides, as events: who blocked us, what we cancelled, what we retried.

The CLI renders them, the daemon will journal them and turn them into
metrics; the engine itself never prints.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    STEP_STARTED = "step_started"
    WAITING_FOR_BLOCKERS = "waiting_for_blockers"
    BLOCKER_TERMINATED = "blocker_terminated"
    AUTOVACUUM_CANCELLED = "autovacuum_cancelled"
    DEBRIS_DROPPED = "debris_dropped"
    DETACH_RESUMED = "detach_resumed"
    ATTEMPT_STARTED = "attempt_started"
    ATTEMPT_FAILED = "attempt_failed"
    QUEUED_BEHIND_HELD_LOCK = "queued_behind_held_lock"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    # Migration-level (step -1): another process is running it; we took over a stopped run.
    WAITING_FOR_OTHER_RUN = "waiting_for_other_run"
    TAKING_OVER = "taking_over"
    # A backfill step (engine/backfill.py): how far it got (``Event.progress``), a health signal
    # holding it back (named in the message and in ``progress.throttled_by``), a stop as asked.
    BACKFILL_PROGRESS = "backfill_progress"
    BACKFILL_THROTTLED = "backfill_throttled"
    BACKFILL_PAUSED = "backfill_paused"


@dataclass(frozen=True)
class Blocker:
    """A session in our way, as pg_stat_activity described it when we saw it, or a prepared
    transaction (two-phase commit), which holds its locks with no session at all.

    A prepared transaction has ``pid`` 0, as ``pg_blocking_pids`` reports it: there is no
    backend to cancel or terminate, only COMMIT/ROLLBACK PREPARED by whoever prepared it ends
    it. Its ``gid``, ``owner`` and ``database`` come from pg_prepared_xacts, and ``xact_age_s``
    counts from the moment it was prepared (when it began is not recorded anywhere).
    ``key`` tells blockers apart (prepared transactions all share pid 0).

    ``wraparound`` is set for autovacuum workers only: True when PostgreSQL runs that vacuum to
    prevent wraparound (never cancelled), False when it would cancel it itself, None when it
    could not be told (then it is not cancelled either); see ``blockers.vacuum_for_wraparound``.
    """

    pid: int
    application_name: str
    state: str | None
    backend_type: str | None
    xact_age_s: float | None
    state_age_s: float | None
    query: str
    mode: str | None = None
    relation: str | None = None
    gid: str | None = None
    owner: str | None = None
    database: str | None = None
    wraparound: bool | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], **extra: Any) -> Blocker:
        """From a pg_stat_activity row (or its JSON) with the columns the queries select;
        a row with a ``gid`` (and a NULL pid) is a prepared transaction."""
        return cls(
            pid=row["pid"] or 0,
            application_name=row["application_name"] or "",
            state=row["state"],
            backend_type=row["backend_type"],
            xact_age_s=row["xact_age_s"],
            state_age_s=row["state_age_s"],
            query=row["query"] or "",
            gid=row.get("gid"),
            owner=row.get("prepared_owner"),
            database=row.get("prepared_database"),
            **extra,
        )

    @property
    def prepared(self) -> bool:
        """A prepared transaction: nothing to signal, never terminated or cancelled."""
        return self.gid is not None

    @property
    def key(self) -> int | str:
        """Identity across polls: the pid, or the gid of a prepared transaction (pid 0)."""
        return f"prepared:{self.gid}" if self.gid is not None else self.pid

    @property
    def idle_in_transaction(self) -> bool:
        return (self.state or "").startswith("idle in transaction")

    @property
    def ending(self) -> bool:
        """Seen holding a lock while plainly 'idle': its COMMIT or ROLLBACK is releasing the
        locks as we look. Such a sighting says nothing about why it blocked us."""
        return self.state == "idle" and self.gid is None

    def describe(self) -> str:
        held = f", {self.mode} on {self.relation}" if self.mode and self.relation else ""
        if self.gid is not None:
            ago = f" {_duration(self.xact_age_s)} ago" if self.xact_age_s is not None else ""
            return (
                f"prepared transaction '{self.gid}' ({self.owner}, {self.database}) prepared{ago}"
                f"{held}: it has no session; only COMMIT PREPARED or ROLLBACK PREPARED ends it"
            )
        who = f"pid {self.pid}"
        if self.application_name:
            who += f" app '{self.application_name}'"
        if self.backend_type and self.backend_type != "client backend":
            who += f" ({self.backend_type})"
        if self.idle_in_transaction and self.state_age_s is not None:
            doing = f"{self.state} for {_duration(self.state_age_s)}"
        elif self.state is None:
            doing = "details hidden (grant pg_read_all_stats to the migration role to see them)"
        else:
            doing = self.state
        if self.xact_age_s is not None:
            doing += f", transaction open {_duration(self.xact_age_s)}"
        if self.wraparound:
            doing += ", vacuuming to prevent wraparound (never cancelled)"
        query = " ".join(self.query.split())[:80]
        return f"{who}, {doing}{held}" + (f": {query}" if query else "")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class BackfillProgress:
    """Where a backfill is: rows walked so far, the estimated total (pg_class.reltuples when it
    started; None when unknown), the rate over this run, the estimated time left, the batch
    size it adapted to, and the health signal holding it back now (None: running freely)."""

    rows_done: int
    rows_total_estimate: int | None
    rows_per_s: float | None
    eta_s: float | None
    batch_rows: int
    throttled_by: str | None = None
    # The longest batch so far, BEGIN to COMMIT (ms): how long it held its rows' locks at most.
    longest_batch_ms: float | None = None


@dataclass(frozen=True)
class Event:
    """One decision of the engine, with its data as fields (a journal, metrics or an HTTP event
    stream read these; ``message`` is for people)."""

    kind: EventKind
    step: int  # 0-based index of the step in its plan; -1 for the migration as a whole
    message: str
    attempt: int | None = None
    blockers: tuple[Blocker, ...] = ()
    detail: str = ""
    outcome: str | None = None  # an attempt's or step's Outcome value
    sqlstate: str | None = None
    lock_timeout_ms: float | None = None
    queued_behind_us: int | None = None
    progress: BackfillProgress | None = None  # backfill events only
    at: float = field(default_factory=time.time)


# A sink may be a plain function or a coroutine function (the journal writes events).
EventSink = Callable[[Event], Awaitable[None] | None]


async def deliver(sink: EventSink, event: Event) -> None:
    """Hand ``event`` to ``sink``, awaiting it if the sink is asynchronous."""
    result = sink(event)
    if inspect.isawaitable(result):
        await result


def ignore(event: Event) -> None:
    """The sink for callers that only want the result."""
