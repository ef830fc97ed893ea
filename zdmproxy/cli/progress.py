"""What ``apply`` shows while it runs, and the one question it may ask first.

The engine's events are rendered as short lines on standard error (a CI log keeps them all).
On a terminal, a live panel under those lines shows what is happening *now*: the step that is
running and for how long, the session it is waiting for, and a backfill's bar with its rate and
ETA. ``NO_COLOR`` or a standard error that is not a terminal gives the plain lines alone, so
logs never fill with redraws. A run in a daemon is shown the same way: its event stream (SSE)
is read back into the engine's Events (``ServerSentEvents``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.prompt import Confirm
from rich.text import Text

from zdmproxy.cli.shared import err
from zdmproxy.engine.events import BackfillProgress, Blocker, Event, EventKind, EventSink
from zdmproxy.plan.model import Step


def confirm_destructive(steps: Sequence[Step], yes: bool) -> bool:
    """Whether the person at the terminal agreed to run ``steps`` (destructive ones).

    Only a terminal is asked (standard input and standard error both terminals); ``--yes`` is
    the answer given in advance. Without a terminal nothing is asked and False is returned: a
    script must say ``--allow-destructive`` itself, as before, and the engine refuses otherwise.
    """
    if not (sys.stdin.isatty() and err.is_terminal):
        return False
    if yes:
        return True
    err.print(f"[bold red]{len(steps)} destructive statement(s)[/bold red] (data cannot be brought back):")
    for step in steps:
        sql = " ".join(step.sql.split())[:160]
        err.print(f"  {escape(sql)}  [dim]({escape(str(step.destructive))})[/dim]")
    try:
        answer = Confirm.ask("Run them?", console=err, default=False)
    except EOFError:  # Ctrl-D: no answer is no
        answer = False
    if not answer:
        err.print("[dim]not confirmed: destructive statements stay refused[/dim]")
    return answer


def live_wanted(console: Console) -> bool:
    """A live display only where a person watches: a terminal, and colour not switched off."""
    return console.is_terminal and not console.is_dumb_terminal and "NO_COLOR" not in os.environ


# A backfill reports every second; a log gets one of those lines per this many seconds.
PLAIN_PROGRESS_EVERY_S = 10.0


@contextmanager
def event_display(console: Console = err, *below: RenderableType) -> Iterator[EventSink]:
    """The sink for a run's events: plain lines, plus a live panel on a terminal (with ``below``
    under it: the demo's client latency)."""
    if not live_wanted(console):
        yield PlainLines(console)
        return
    panel = LivePanel(console)
    live = Live(
        Group(panel, *below), console=console, refresh_per_second=8, transient=True, redirect_stdout=False
    )
    panel.refresh = live.refresh  # a bar's last position is drawn before its step's end erases it
    with live:
        yield panel.handle


class PlainLines:
    """One short line per decision; attempts are shown only when one failed, backfill progress
    once per ``PLAIN_PROGRESS_EVERY_S`` (and when it is done)."""

    def __init__(self, console: Console = err) -> None:
        self._console = console
        self._progress_at = -PLAIN_PROGRESS_EVERY_S

    def __call__(self, event: Event) -> None:
        if _interim(event):
            now = time.monotonic()
            if now - self._progress_at < PLAIN_PROGRESS_EVERY_S:
                return
            self._progress_at = now
        line = _line(event)
        if line is not None:
            self._console.print(line)


def _interim(event: Event) -> bool:
    """A backfill's progress on the way (not its final "backfill done" report)."""
    return event.kind is EventKind.BACKFILL_PROGRESS and not event.message.startswith("backfill done")


def _line(event: Event) -> str | None:
    if event.step < 0:  # about the migration as a whole: another process runs it, a takeover
        return f"[yellow]{escape(event.message)}[/yellow]"
    number = f"[{event.step + 1}]"
    if event.kind is EventKind.STEP_STARTED:
        sql = " ".join(event.message.split())
        return f"[bold]{escape(number)} {escape(sql[:120])}[/bold]\n    [dim]{escape(event.detail)}[/dim]"
    if event.kind is EventKind.STEP_FAILED or (
        event.kind is EventKind.ATTEMPT_STARTED and event.attempt == 1
    ):
        return None  # a failure is printed once, as the command's error, after the summary
    style = {
        EventKind.WAITING_FOR_BLOCKERS: "yellow",
        EventKind.BLOCKER_TERMINATED: "red",
        EventKind.AUTOVACUUM_CANCELLED: "yellow",
        EventKind.ATTEMPT_FAILED: "yellow",
        EventKind.DEBRIS_DROPPED: "yellow",
        EventKind.DETACH_RESUMED: "yellow",
        EventKind.STEP_SUCCEEDED: "green",
        EventKind.BACKFILL_THROTTLED: "yellow",
        EventKind.BACKFILL_PAUSED: "yellow",
    }.get(event.kind, "dim")
    mark = "✓ " if event.kind is EventKind.STEP_SUCCEEDED else ""
    return f"    [{style}]{mark}{escape(event.message)}[/{style}]"


@dataclass
class _Now:
    step: int
    sql: str
    since: float
    waiting_for: str | None = None


class LivePanel:
    """The live part: the running step, whom it waits for, the backfill bar. Event lines go
    above it (rich prints them over the live region), so the log reads as in plain mode."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._now: _Now | None = None
        self._bar = Progress(
            TextColumn("    backfill"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.completed:,.0f} rows"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            TextColumn("[yellow]{task.fields[held]}"),
            console=console,
        )
        self._backfill: TaskID | None = None
        self.refresh: Callable[[], None] = lambda: None

    def handle(self, event: Event) -> None:
        line = None if _interim(event) else _line(event)  # the bar shows it; "backfill done" stays
        if line is not None:
            self._console.print(line)
        if event.step < 0:
            return
        if event.kind is EventKind.STEP_STARTED:
            self._now = _Now(event.step, " ".join(event.message.split()), time.monotonic())
            self._drop_bar()
        elif self._now is None:
            return
        elif event.kind is EventKind.WAITING_FOR_BLOCKERS:
            described = "; ".join(b.describe() for b in event.blockers[:2]) or event.message
            self._now.waiting_for = described
        elif event.kind is EventKind.ATTEMPT_STARTED:
            self._now.waiting_for = None
        elif event.progress is not None:
            self._now.waiting_for = None
            self.backfill(event.progress)
            self.refresh()
        elif event.kind in (EventKind.STEP_SUCCEEDED, EventKind.STEP_FAILED):
            self._now = None
            self._drop_bar()

    def backfill(self, progress: BackfillProgress) -> None:
        """Move the bar to where the backfill engine says it is (its own rate and ETA: it knows
        the rows done before a resume, which a bar's own timing would count as speed)."""
        total = progress.rows_total_estimate
        if total is not None:
            total = max(total, progress.rows_done)  # an estimate (reltuples) may run short
        rate = f"{progress.rows_per_s:,.0f} rows/s" if progress.rows_per_s else ""
        eta = f"ETA {progress.eta_s:,.0f} s" if progress.eta_s is not None else ""
        held = f"held back: {progress.throttled_by}" if progress.throttled_by else ""
        if self._backfill is None:
            self._backfill = self._bar.add_task("backfill", total=total, rate=rate, eta=eta, held=held)
        self._bar.update(
            self._backfill, completed=progress.rows_done, total=total, rate=rate, eta=eta, held=held
        )

    def _drop_bar(self) -> None:
        if self._backfill is not None:
            self._bar.remove_task(self._backfill)
            self._backfill = None

    def __rich__(self) -> RenderableType:
        if self._now is None:
            return Text("")
        elapsed = time.monotonic() - self._now.since
        parts: list[RenderableType] = [
            Text.assemble(
                ("  ▶ running ", "bold cyan"),
                (f"step {self._now.step + 1} ", "bold"),
                (f"({elapsed:.1f} s) ", "dim"),
                self._now.sql[: max(20, self._console.width - 30)],
            )
        ]
        if self._now.waiting_for is not None:
            parts.append(Text.assemble(("    waiting for ", "yellow"), self._now.waiting_for[:200]))
        if self._backfill is not None:
            parts.append(self._bar)
        return Group(*parts)


class ServerSentEvents:
    """The daemon's event stream (GET /v1/migrations/{id}/events), line by line, back into the
    engine's Events, so a run seen through the daemon renders exactly as one run here. A state
    change (``event: state``) comes out as its state name."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> Event | str | None:
        """An Event or a state once a message is complete (a blank line), else None."""
        if line.startswith("data:"):
            self._data.append(line.removeprefix("data:").strip())
            return None
        if line or not self._data:
            return None  # id:, event:, a comment (keep-alive), or a blank line between nothing
        payload = json.loads("\n".join(self._data))
        self._data = []
        if "kind" not in payload:
            return str(payload.get("state"))
        fields = payload.get("fields") or {}
        blockers = tuple(
            Blocker(**{k: v for k, v in blocker.items() if k != "describe"})
            for blocker in fields.get("blockers", ())
        )
        progress = BackfillProgress(**fields["progress"]) if fields.get("progress") else None
        known = {"attempt", "detail", "outcome", "sqlstate", "lock_timeout_ms", "queued_behind_us"}
        return Event(
            EventKind(payload["kind"]),
            int(payload["step"]),
            payload["message"],
            blockers=blockers,
            progress=progress,
            **{k: v for k, v in fields.items() if k in known},
        )


def follow_events(items: Iterable[Event | str]) -> None:
    """Render a daemon's event stream until the migration settles (its stream ends with a
    success, failure or cancel; a pause leaves it open, so a paused state ends it here)."""
    with event_display() as sink:
        for item in items:
            if isinstance(item, Event):
                sink(item)  # the display's sinks are plain functions
            elif item in ("succeeded", "failed", "cancelled", "paused"):
                return
