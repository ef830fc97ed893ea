"""``zdmproxy status`` and ``zdmproxy history``: what the journal holds, for people and scripts.

Both only read: a database without a journal is not given one. It is an empty journal (nothing
applied there yet), said as such: ``history`` lists nothing, ``status DIR`` lists every file as
pending, both exit 0 with the same JSON shape as ever; only ``status ID`` is an error (exit 1),
as for an id the journal does not hold.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from zdmproxy.cli.shared import database_url, err, out, read_script, run_async
from zdmproxy.errors import ExitCode, SqlParseError, UsageError, ZdmError
from zdmproxy.journal import advisory
from zdmproxy.journal.folder import scan, up_section, version_key
from zdmproxy.journal.steps import checksum
from zdmproxy.journal.store import Journal, open_existing
from zdmproxy.settings import load_settings
from zdmproxy.sql.parse import parse_script


class NotRecorded(ZdmError):
    code = "not_recorded"


def status(args: argparse.Namespace) -> int:
    target: str | None = args.target
    if target is not None and Path(target).is_dir():
        return _with_journal(args, lambda journal: _folder_status(journal, Path(target), args.json))
    if target is not None and "/" in target:  # an id never holds one: a folder that is not there
        raise UsageError(f"{target}: no such folder")
    if target is not None:
        return _with_journal(args, lambda journal: _migration_status(journal, target, args.json))
    return _with_journal(args, lambda journal: _history(journal, 1000, args.json, unfinished_only=True))


NO_JOURNAL = "this database has no journal (schema zdmproxy): zdmproxy applied nothing here"


def history(args: argparse.Namespace) -> int:
    return _with_journal(
        args, lambda journal: _history(journal, args.limit, args.json, unfinished_only=False)
    )


def _with_journal(args: argparse.Namespace, show: Callable[[Journal | None], Awaitable[None]]) -> int:
    """Run ``show`` on the database's journal, or on None where there is none yet."""
    with ExitStack() as stack:
        dsn = database_url(args, load_settings(), stack)

        async def run() -> None:
            journal = await open_existing(dsn, "zdmproxy-status")
            try:
                await show(journal)
            finally:
                if journal is not None:
                    await journal.close()

        run_async(run(), dsn=dsn)
    return int(ExitCode.OK)


def _show(table: Table) -> None:
    """A table at its natural width: on a terminal as wide as the screen allows; in a log
    (CI, kubectl logs) never cut to 80 columns with an ellipsis in the middle of a state."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(width=10_000, highlight=False, soft_wrap=True).print(table)


def _dump(data: object) -> None:
    out.print_json(json.dumps(data, default=str))


def _ago(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f} s"


async def _migration_status(journal: Journal | None, migration_id: str, as_json: bool) -> None:
    if journal is None:
        raise NotRecorded(f"no migration {migration_id!r}: {NO_JOURNAL}")
    record = await journal.migration(migration_id)
    if record is None:
        raise NotRecorded(f"no migration {migration_id!r} in the journal (`zdmproxy history` lists them)")
    steps = await journal.steps(migration_id)
    attempts = await journal.attempts(migration_id)
    state = record.state
    holder = None
    if state == "running":
        key = advisory.migration_key(migration_id)
        holder = await journal.using(lambda session: advisory.holder(session, key))
        state = (
            f"running, by {holder.describe()}"
            if holder
            else "stopped while running (no process holds it any more: the next apply resumes it)"
        )
    if record.phase == "expand" and record.state == "paused":
        state += ", phase expand done (contract pending: apply --phase contract, or rollback)"
    elif record.phase is not None:
        state += f", phase {record.phase}"
    if as_json:
        _dump(
            {
                # held_by: the backend holding the run lock, null when nobody does: a 'running'
                # migration nobody holds stopped (its process died) and the next apply resumes it.
                "migration": {k: v for k, v in record.__dict__.items() if k != "sql"}
                | {"sql": record.sql, "held_by": holder.describe() if holder else None},
                "steps": [
                    {k: v for k, v in s.__dict__.items() if k != "step"} | {"reason": s.step.reason}
                    for s in steps
                ],
                "attempts": attempts,
            }
        )
        return
    out.print(
        f"[bold]{escape(record.id)}[/bold]: {escape(state)}, run {record.runs} time(s), last by "
        f"{escape(record.by())}"
        + (f", took {_ago(record.duration_s)}" if record.duration_s is not None else "")
    )
    table = Table(box=None, padding=(0, 2), header_style="dim")
    for column in ("step", "phase", "state", "took", "attempts", "sql"):
        table.add_column(column)
    for step in steps:
        tried = [a for a in attempts if a["step_index"] == step.index]
        table.add_row(
            str(step.index + 1),
            step.phase,
            step.state,
            _ago(step.duration_s),
            str(len(tried)),
            escape(" ".join(step.sql.split())[:80]),
        )
    _show(table)
    for step in steps:
        blockers = {b["describe"] for a in attempts if a["step_index"] == step.index for b in a["blockers"]}
        for blocker in sorted(blockers):
            out.print(f"   step {step.index + 1} was blocked by {escape(blocker)}")
        if step.error:
            out.print(f"   [red]step {step.index + 1} failed[/red]: {escape(str(step.error.get('message')))}")


async def _folder_status(journal: Journal | None, directory: Path, as_json: bool) -> None:
    files = scan(directory)
    ids = [file.migration_id for file in files]
    recorded = {row["id"]: row for row in await journal.versioned(ids)} if journal is not None else {}
    if journal is None and not as_json:
        err.print(f"{NO_JOURNAL}: every file is pending")
    # One row per file, then per recorded migration whose file is gone (file null). state is the
    # journal's (pending: not recorded); file_changed: the file's SQL is not what was recorded.
    rows: list[dict[str, Any]] = []
    for file in files:
        row = recorded.get(file.migration_id)
        rows.append(
            {
                "file": str(file.path.relative_to(directory)),
                "id": file.migration_id,
                "version": file.version_text,
                "state": "pending" if row is None else row["state"],
                "file_changed": row is not None and row["checksum"] != _file_checksum(file.path),
            }
        )
    known = {file.migration_id for file in files}
    gone = [row for row in recorded.values() if row["id"] not in known]  # each has a version
    for row in sorted(gone, key=lambda r: version_key(r["version"])):
        rows.append(
            {
                "file": None,
                "id": row["id"],
                "version": row["version"],
                "state": row["state"],
                "file_changed": False,
            }
        )
    if as_json:
        _dump({"folder": str(directory), "migrations": rows})
        return
    table = Table(box=None, padding=(0, 2), header_style="dim")
    for column in ("version", "file", "state"):
        table.add_column(column)
    for row in rows:
        state = row["state"] + (" (file changed since)" if row["file_changed"] else "")
        state += " (no file)" if row["file"] is None else ""
        table.add_row(row["version"], escape(row["file"] or row["id"]), state)
    _show(table)


def _file_checksum(path: Path) -> str | None:
    """The checksum apply would record for the file; None if it no longer parses (so it differs)."""
    try:
        return checksum(parse_script(up_section(read_script(str(path)), str(path))))
    except (SqlParseError, UsageError):
        return None


async def _history(journal: Journal | None, limit: int, as_json: bool, *, unfinished_only: bool) -> None:
    rows = await journal.history(limit) if journal is not None else []
    if unfinished_only:
        rows = [r for r in rows if r["state"] != "succeeded"]
    if as_json:
        _dump({"migrations": rows})
        return
    if journal is None:
        err.print(NO_JOURNAL)
        return
    if not rows:
        err.print("nothing unfinished in the journal" if unfinished_only else "the journal is empty")
        return
    table = Table(box=None, padding=(0, 2), header_style="dim")
    for column in ("id", "state", "steps", "attempts", "took", "finished", "by"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            escape(row["id"]),
            row["state"],
            f"{row['steps_done']}/{row['steps']}",
            str(row["attempts"]),
            _ago(row["duration_s"]),
            f"{row['finished_at']:%Y-%m-%d %H:%M:%S}" if row["finished_at"] else "",
            escape(" on ".join(p for p in (row["application_name"], row["client_host"]) if p)),
        )
    _show(table)
    for row in rows:
        if row["error"]:
            out.print(f"[red]{escape(row['id'])}[/red]: {escape(str(row['error'].get('message')))}")
