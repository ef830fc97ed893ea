"""``zdmproxy apply``: a SQL file (with --id) or a folder of versioned files, each migration once.

Exit codes are part of the interface (README, "Exit codes") so a Kubernetes
Job can retry only 69 (unreachable) and 75 (lock budget ran out).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from rich.markup import escape

from zdmproxy.cli.control import apply_through_daemon, client_for
from zdmproxy.cli.flags import flag_name, model_overrides
from zdmproxy.cli.progress import confirm_destructive, event_display
from zdmproxy.cli.shared import database_url, err, out, read_script, report_error, run_async
from zdmproxy.engine.events import EventSink
from zdmproxy.engine.outcomes import Outcome
from zdmproxy.engine.runner import MigrationReport
from zdmproxy.errors import ConfigError, ExitCode, UsageError, ZdmError
from zdmproxy.journal.coordinator import Applied, Coordinator, Request, Result
from zdmproxy.journal.folder import MigrationFile, check_against_journal, check_id, scan, up_section
from zdmproxy.journal.ledger import Caller
from zdmproxy.journal.steps import checksum
from zdmproxy.journal.store import Journal
from zdmproxy.plan.model import Step
from zdmproxy.plan.phases import RunPhase
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy, shown
from zdmproxy.settings import Settings, load_settings
from zdmproxy.sql.parse import parse_script


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    flags = model_overrides(args)
    policy = _policy(settings, flags)
    # Read, name-check, parse and plan everything before touching any database: a file that
    # would be refused (BEGIN/COMMIT, SET ...) or holds nothing must not start a server or
    # wait for a connection first.
    batch = _batch(args)
    refused = batch.destructive and not policy.allow_destructive
    if refused and confirm_destructive(batch.destructive, args.yes):
        policy = _policy(settings, {**flags, "allow_destructive": True})
        flags = {**flags, "allow_destructive": True}
    daemon = client_for(settings, None, None) if args.dsn is None and not args.embedded else None
    if daemon is not None:  # ZDM_DAEMON_URL: the running daemon applies them, its journal records them
        return apply_through_daemon(daemon, batch.requests, flags, args.phase, as_json=args.json)
    with ExitStack() as stack:
        dsn = database_url(args, settings, stack, embedded=args.embedded)
        runs: list[tuple[MigrationReport, Applied | None]] = []
        try:
            with event_display() as sink:
                run_async(_apply_async(dsn, batch, policy, args, runs, sink), dsn=dsn)
        except ZdmError as exc:
            if args.json:  # one document on stdout: the report, with the error in it
                out.print_json(json.dumps({**_runs_dict(batch, runs), "error": exc.as_dict()}, default=str))
            if runs:
                _print_summary(*runs[-1], planned=batch.steps[len(runs) - 1])
            else:
                _print_not_started(batch)
            report_error(exc, json_output=False)
            return int(exc.exit_code)
        except (KeyboardInterrupt, asyncio.CancelledError):
            if runs:
                _print_summary(*runs[-1], planned=batch.steps[len(runs) - 1])
                err.print(f"[red]interrupted[/red]: {_interrupted(runs[-1][0])}")
            else:
                err.print("[red]interrupted[/red] before any step ran")
            return int(ExitCode.CANCELLED)
        if args.json:
            out.print_json(json.dumps(_runs_dict(batch, runs), default=str))
    return int(ExitCode.OK)


def _policy(settings: Settings, flags: dict[str, object]) -> MigrationPolicy:
    """The configured policy with the command's flags on top.

    The environment and config file were checked by load_settings (a bad value there names its
    ZDM_ variable, exit 78), so what fails here came from the command line: it is named as the
    user typed it (``--queue-budget-ms``), a usage error (exit 2) like argparse's own.
    """
    try:
        return settings.policy(**flags)
    except ConfigError as exc:
        problems = []
        for name, value in flags.items():
            try:
                MigrationPolicy.model_validate({name: value})
            except ValidationError as bad:
                reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in bad.errors())
                problems.append(f"{flag_name(name)} {shown(value)}: {reason}")  # -5, not -5.0
        if not problems:  # only the combination is wrong: say which flags took part
            given = ", ".join(flag_name(name) for name in flags)
            problems.append(f"{exc.message.removeprefix('bad configuration: ')} (with {given})")
        raise UsageError("; ".join(problems)) from None


@dataclass(frozen=True)
class _Batch:
    """What one ``apply`` was asked to run: one file with --id, or a folder's files, and how
    many steps each plans without a database (so a run that never reached one still reports
    the real count)."""

    requests: tuple[Request, ...]
    steps: tuple[int, ...]
    folder: tuple[MigrationFile, ...] | None = None  # None: a single FILE
    destructive: tuple[Step, ...] = ()  # the steps that need allow_destructive (or a yes)


def _batch(args: argparse.Namespace) -> _Batch:
    if args.path != "-" and Path(args.path).is_dir():
        if args.id:
            raise UsageError(
                f"--id is for a FILE; the files of folder {args.path} are named by their file names"
            )
        files = tuple(scan(Path(args.path)))
        requests = []
        planned = []
        for file in files:
            script = up_section(read_script(str(file.path)), str(file.path))
            planned.append(_planned(script))
            if not planned[-1]:  # as for a FILE: an empty file is a mistake, not a migration
                raise UsageError(
                    f"{file.path}: holds no SQL statement (only whitespace or comments): nothing to "
                    "apply, and once recorded as applied it could never be filled in"
                )
            requests.append(Request(file.migration_id, script, file.version_text, file.path.name))
        return _Batch(tuple(requests), tuple(map(len, planned)), files, _destructive(*planned))
    if args.path != "-" and not Path(args.path).exists():  # a mistyped folder is not a FILE without --id
        raise UsageError(f"{args.path}: no such file or folder")
    if args.out_of_order:
        raise UsageError("--out-of-order is for a folder of versioned files")
    if not args.id:
        raise UsageError(
            "apply FILE needs --id ID (the migration's id; a folder's files are named by their names)"
        )
    script = up_section(read_script(args.path), args.path)
    steps = _planned(script)
    if not steps:
        # Decided: a usage error, not a quiet exit 0. A deploy job handed an empty file almost
        # always has the wrong path or a generator that failed; success would hide it.
        raise UsageError(
            f"{args.path}: holds no SQL statement (only whitespace or comments): nothing to apply"
        )
    return _Batch((Request(check_id(args.id), script),), (len(steps),), None, _destructive(steps))


def _planned(script: str) -> tuple[Step, ...]:
    """Parse and plan ``script`` without a database: a syntax error or a statement zdmproxy
    refuses (BEGIN/COMMIT, SET, COPY ...) is reported here, before any connection is made."""
    return make_plan(script).steps


def _destructive(*plans: tuple[Step, ...]) -> tuple[Step, ...]:
    return tuple(step for steps in plans for step in steps if step.destructive)


async def _apply_async(
    dsn: str,
    batch: _Batch,
    policy: MigrationPolicy,
    args: argparse.Namespace,
    runs: list[tuple[MigrationReport, Applied | None]],
    sink: EventSink,
) -> None:
    # SIGTERM (a Kubernetes pod stopping) ends the run like Ctrl-C: the running step's
    # connection closes, so PostgreSQL rolls it back, and the summary is still printed.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    journal = await Journal.open(dsn, "zdmproxy-journal")
    try:
        checks = {r.migration_id: checksum(parse_script(r.script)) for r in batch.requests}

        async def check(files: Sequence[MigrationFile]) -> list[str]:
            return check_against_journal(
                files,
                checks,
                await journal.versioned([f.migration_id for f in files]),
                out_of_order=args.out_of_order,
                ignore_missing=args.ignore_missing or len(files) < len(batch.folder or ()),
            )

        if batch.folder is not None and (future := await check(batch.folder)):
            err.print(
                f"[dim]{len(future)} applied migration(s) newer than this folder's newest file "
                f"(a newer release's: {escape(', '.join(future))}) are left as they are[/dim]"
            )
        coordinator = Coordinator(
            dsn,
            journal,
            policy,
            Caller("zdmproxy apply"),
            sink=sink,
            wait_timeout_s=args.wait_timeout_s,
        )
        for number, request in enumerate(batch.requests):
            if batch.folder is not None:  # again, just before: another deploy may have run meanwhile
                await check(batch.folder[number : number + 1])
            report = MigrationReport(request.migration_id)
            runs.append((report, None))
            phase = RunPhase(args.phase) if args.phase else None
            applied = await coordinator.apply(dataclasses.replace(request, phase=phase), report)
            runs[-1] = (report, applied)
            _print_summary(report, applied)
    finally:
        await journal.close()


def _interrupted(report: MigrationReport) -> str:
    if not report.steps:  # waiting for another process's run of it, or not begun: nothing of ours
        return (
            f"no step of {escape(report.migration_id)} ran in this process (it was waiting for "
            "another process running it, or had not begun): nothing to roll back; re-run the same "
            "command to wait again or resume"
        )
    last = report.steps[-1] if report.steps else None
    running = last if last is not None and last.outcome is not Outcome.SUCCEEDED else None
    if running is not None and not running.step.transactional:
        return (
            "the running CONCURRENTLY step may have left an INVALID index behind; "
            "re-run the same command: it checks the catalog, drops it and resumes"
        )
    return "the running step was rolled back; re-run the same command to resume"


def _print_not_started(batch: _Batch) -> None:
    """The run stopped before its first migration began (no database, none reachable...)."""
    if batch.folder is None:
        name = batch.requests[0].migration_id
        err.print(f"{escape(name)}: none of its {batch.steps[0]} step(s) ran")
    else:
        total = sum(batch.steps)
        err.print(f"none of the {len(batch.requests)} migration(s) ({total} step(s)) ran")


def _print_summary(report: MigrationReport, applied: Applied | None = None, *, planned: int = 0) -> None:
    name = report.migration_id
    if applied is None and not report.planned:
        return  # nothing of ours ran (another process's outcome, or a refusal): the error says it
    if applied is not None and applied.result is not Result.APPLIED:
        record = applied.record
        when = f"at {record.finished_at:%Y-%m-%d %H:%M:%S %Z}" if record.finished_at else ""
        how = "already applied" if applied.result is Result.ALREADY_APPLIED else "applied while we waited"
        if record.state == "paused" and record.phase == "expand":
            how = "expand phase already done"  # the contract is still to come
        err.print(f"{escape(name)}: {how} {when} by {escape(record.by())}; nothing ran here")
        return
    # 0 when it stopped before the runner planned against the database: the count planned
    # without one is the real count still (one step per statement, refusals already made).
    planned = report.planned or planned
    for step in report.steps:
        for line in step.blocked_summary():
            err.print(f"step {step.index + 1}: {escape(line)}")
    done = [s for s in report.steps if s.outcome is Outcome.SUCCEEDED]
    before = report.start_at  # applied by earlier runs
    # Every step to the plan's end: a run paused or cancelled between steps ran only some of them,
    # each successfully.
    complete = bool(planned) and before + len(done) == planned
    if (report.succeeded and complete) or (planned and before == planned):
        resumed = f" ({before} of them by an earlier run)" if before else ""
        err.print(f"{escape(name)}: all {planned} step(s) applied{resumed}")
        if applied is not None and applied.record.state == "paused" and applied.record.phase == "expand":
            err.print(
                f"{escape(name)}: expand phase done; once no application version needs the old "
                f"schema, run `zdmproxy apply --phase contract` (or `zdmproxy rollback {escape(name)}`)"
            )
        return
    err.print(f"{escape(name)}: {before + len(done)} of {planned} step(s) applied")
    if before + len(done) < planned and report.steps:
        failed = report.steps[len(done)] if len(done) < len(report.steps) else None
        if failed is not None:
            err.print(
                f"the journal remembers them: re-running the same command resumes at step "
                f"{failed.index + 1} ({escape(' '.join(failed.step.sql.split())[:80])})"
            )


def _runs_dict(batch: _Batch, runs: list[tuple[MigrationReport, Applied | None]]) -> dict[str, object]:
    """A FILE's report is one object; a folder's is the list of its files' reports."""
    reports = [
        {
            **_report_dict(report),
            # applied: the journal's word (it also covers steps run by earlier runs or others)
            "succeeded": applied.record.state == "succeeded" if applied else False,
            "phase": applied.record.phase if applied else None,
            "result": applied.result.value if applied else None,
        }
        for report, applied in runs
    ]
    if batch.folder is None:
        return reports[0] if reports else {"id": batch.requests[0].migration_id, "steps": []}
    return {"migrations": reports}


def _report_dict(report: MigrationReport) -> dict[str, object]:
    return {
        "id": report.migration_id,
        "succeeded": report.succeeded,
        "steps": [
            {
                "sql": s.step.sql,
                "outcome": s.outcome.value if s.outcome else None,
                "blocked": s.blocked_summary(),
                "terminated": [b.pid for b in s.terminated],
                "debris_dropped": s.debris_dropped,
                "attempts": [
                    {
                        "number": a.number,
                        "started_at": a.started_at,
                        "ended_at": a.ended_at,
                        "outcome": a.outcome.value if a.outcome else None,
                        "sqlstate": a.error.sqlstate if a.error else None,
                        "message": a.error.message if a.error else None,
                        "lock_timeout_ms": a.lock_timeout_ms,
                        "queued_behind_us": a.queued_behind_us,
                        "blockers": [b.describe() for b in a.blockers],
                    }
                    for a in s.attempts
                ],
            }
            for s in report.steps
        ],
    }
