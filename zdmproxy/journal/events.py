"""Every engine Event of a run, kept in zdmproxy.events: the HTTP event stream reads them back,
so a client that reconnects (to this daemon after a restart, or to another) misses nothing.

The sink writes on a connection of its own, one event at a time: the run's journal connection
may be in use when the watchdog reports a queue from its own task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zdmproxy.engine.events import Event
from zdmproxy.journal.queries import QUERIES
from zdmproxy.journal.store import Journal


def event_fields(event: Event) -> dict[str, Any]:
    """The event's structured fields as JSON values (blockers with their description)."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(event):
        if f.name in ("kind", "step", "message", "at"):
            continue
        value = getattr(event, f.name)
        if f.name == "blockers":
            value = [{**dataclasses.asdict(b), "describe": b.describe()} for b in value]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if value not in (None, "", []):
            fields[f.name] = value
    return fields


class JournalEventSink:
    """An EventSink for one migration: each event becomes a row of zdmproxy.events."""

    def __init__(self, journal: Journal, migration_id: str) -> None:
        self.journal = journal
        self.migration_id = migration_id
        self._lock = asyncio.Lock()

    async def __call__(self, event: Event) -> None:
        async with self._lock:
            await self.journal.using(
                lambda session: session.execute(
                    QUERIES["insert_event"],
                    self.migration_id,
                    event.step,
                    event.kind.value,
                    event.message,
                    json.dumps(event_fields(event), default=str),
                    event.at,
                )
            )


@dataclass(frozen=True)
class StoredEvent:
    """A row of zdmproxy.events."""

    id: int
    run: int
    step_index: int
    kind: str
    message: str
    fields: dict[str, Any]
    at: datetime


async def events_after(
    journal: Journal, migration_id: str, after: int, limit: int = 500
) -> list[StoredEvent]:
    """The migration's events with an id above ``after`` (0: from the first), oldest first."""
    rows = await journal.using(
        lambda session: session.fetch(QUERIES["events_after"], migration_id, after, limit)
    )
    return [
        StoredEvent(
            row["id"],
            row["run"],
            row["step_index"],
            row["kind"],
            row["message"],
            json.loads(row["fields"]),
            row["at"],
        )
        for row in rows
    ]
