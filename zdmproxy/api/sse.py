"""The event stream of one migration (server-sent events), read from the journal.

Each event carries its journal id as the SSE ``id``: a client that reconnects with
``Last-Event-ID`` (after a network cut, or to another daemon after this one restarted) gets
exactly the events after it. State changes are sent as ``event: state`` without an id (they
are re-read, not replayed). The stream ends once the migration succeeded, failed or was
cancelled and every event before that was sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from zdmproxy.api.daemon import ENDED, Daemon
from zdmproxy.errors import DatabaseUnreachable

HEARTBEAT_S = 15.0


def _message(data: dict[str, Any], *, event: str, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def event_stream(daemon: Daemon, migration_id: str, after: int) -> AsyncIterator[bytes]:
    state: str | None = None
    quiet_s = 0.0
    while not daemon.stopping.is_set():
        try:
            # The state first, then the events: an end read here comes with every event before it.
            record = await daemon.record(migration_id)
            events = await daemon.events(migration_id, after)
        except DatabaseUnreachable:
            events, record = [], None  # a blip: keep the stream open, try again
        for event in events:
            after = event.id
            data = {
                "id": event.id,
                "run": event.run,
                "step": event.step_index,
                "kind": event.kind,
                "message": event.message,
                "fields": event.fields,
                "at": event.at,
            }
            yield _message(data, event=event.kind, event_id=event.id)
        if record is not None and record.state != state:
            state = record.state
            yield _message({"state": state, "error": record.error}, event="state")
        if record is not None and record.state in ENDED and not events:
            return
        if events:
            quiet_s = 0.0
            continue
        if quiet_s >= HEARTBEAT_S:
            yield b": keep-alive\n\n"
            quiet_s = 0.0
        await asyncio.sleep(daemon.poll_s)
        quiet_s += daemon.poll_s
