"""The control plane in the journal: what operators ask of a migration, from any process.

A request is a row update, never a message to a process: whichever process runs the migration
reads it at its next safe point (engine/controls.py, the backfill's batches), so it works however
many daemons there are and whichever of them received the request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from zdmproxy.journal.queries import QUERIES
from zdmproxy.journal.store import Journal


@dataclass(frozen=True)
class ControlPlane:
    """A migration's phase, pending request and live throttle."""

    phase: str | None
    control: str | None
    throttle: dict[str, Any]


@dataclass(frozen=True)
class BackfillProgress:
    """Where one backfill step got to (from its checkpoint), and its rate and ETA so far."""

    step_index: int
    rows_done: int
    rows_total_estimate: int | None
    batch_rows: int | None
    throttled_by: str | None
    updated_at: datetime
    rate_rows_per_s: float | None
    eta_s: float | None


async def request(journal: Journal, migration_id: str, control: Literal["pause", "cancel"]) -> str | None:
    """Record the request; the migration's state then, or None if it has finished (or is paused
    already: nothing runs that could obey)."""
    state: str | None = await journal.using(
        lambda session: session.fetchval(QUERIES["request_control"], migration_id, control)
    )
    return state


async def resume(journal: Journal, migration_id: str) -> str | None:
    """Clear any request and make a paused, cancelled or failed migration runnable ('queued');
    the new state, or None if it succeeded already (or is not recorded)."""
    state: str | None = await journal.using(
        lambda session: session.fetchval(QUERIES["resume_migration"], migration_id)
    )
    return state


async def set_throttle(journal: Journal, migration_id: str, knobs: dict[str, Any]) -> dict[str, Any] | None:
    """Merge ``knobs`` over the live throttle (None removes a knob); the result, None if no such id."""
    text: str | None = await journal.using(
        lambda session: session.fetchval(QUERIES["set_throttle"], migration_id, json.dumps(knobs))
    )
    return None if text is None else dict(json.loads(text))


async def control_plane(journal: Journal, migration_id: str) -> ControlPlane | None:
    row = await journal.using(lambda session: session.fetchrow(QUERIES["control_plane"], migration_id))
    if row is None:
        return None
    return ControlPlane(row["phase"], row["control"], dict(json.loads(row["throttle"])))


async def backfill_progress(journal: Journal, migration_id: str) -> list[BackfillProgress]:
    rows = await journal.using(lambda session: session.fetch(QUERIES["backfill_progress"], migration_id))
    return [_progress(row) for row in rows]


def _progress(row: Any) -> BackfillProgress:
    done = int(row["rows_done"])
    elapsed = row["elapsed_s"]
    rate = done / elapsed if elapsed and elapsed > 0 else None
    total = row["rows_total_estimate"]
    eta = max(0.0, (total - done) / rate) if rate and total is not None else None
    return BackfillProgress(
        row["step_index"], done, total, row["batch_rows"], row["throttled_by"], row["updated_at"], rate, eta
    )
