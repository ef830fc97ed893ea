"""The command line: ``zdmproxy plan`` and ``zdmproxy apply``.

Exit codes are part of the interface (README, "Exit codes") so a Kubernetes
Job can retry only 69 (unreachable) and 75 (lock budget ran out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import uvloop
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from zdmproxy import __version__
from zdmproxy.engine.catalog import read_facts
from zdmproxy.engine.connector import connect
from zdmproxy.engine.events import Event, EventKind
from zdmproxy.engine.outcomes import Outcome
from zdmproxy.engine.runner import MigrationReport, Runner
from zdmproxy.errors import ExitCode, UsageError, ZdmError
from zdmproxy.plan.model import Plan
from zdmproxy.plan.planner import make_plan
from zdmproxy.settings import load_settings
from zdmproxy.sql.facts import CatalogFacts
from zdmproxy.sql.parse import parse_script

# soft_wrap: messages are read by scripts and CI logs too; never break a line mid-message.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ZdmError as exc:
        _report_error(exc, json_output=getattr(args, "json", False))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        return int(ExitCode.CANCELLED)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zdmproxy", description="Run PostgreSQL schema changes without lock-queue outages."
    )
    parser.add_argument("--version", action="version", version=f"zdmproxy {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    plan = commands.add_parser("plan", help="show the locks, rewrites and steps of a SQL file")
    plan.add_argument("file", help="SQL file, or - for standard input")
    plan.add_argument("--dsn", help="resolve schemas, constraints and sizes from this database")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON (DESIGN.md contract)")
    plan.set_defaults(handler=_plan)

    apply = commands.add_parser("apply", help="run a SQL file through the lock-aware engine")
    apply.add_argument("file", help="SQL file, or - for standard input")
    apply.add_argument("--id", required=True, help="migration id (names the connections, dedupes runs)")
    apply.add_argument(
        "--dsn", help="target database (default: ZDM_DATABASE_URL, else a throwaway embedded server)"
    )
    apply.add_argument("--allow-destructive", action="store_true", help="permit DROP TABLE, TRUNCATE ...")
    apply.add_argument("--queue-budget-ms", type=float, help="longest wait we may cause (default 100)")
    apply.add_argument("--lock-timeout-ms", type=float, help="hard bound on one lock wait (default 1000)")
    apply.add_argument("--statement-timeout-s", type=float, help="bound on one transactional step")
    apply.add_argument("--deadline-s", type=float, help="total time a step may keep trying (default 900)")
    apply.add_argument(
        "--terminate-idle-blockers-after-s",
        type=float,
        help="opt-in: terminate sessions idle in transaction longer than this that block a step",
    )
    apply.add_argument("--json", action="store_true", help="print the attempts report as JSON")
    apply.set_defaults(handler=_apply)
    return parser


def _read(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"{file}: no such file")
    return path.read_text(encoding="utf-8")


def _plan(args: argparse.Namespace) -> int:
    script = _read(args.file)
    dsn = args.dsn
    plan = uvloop.run(_plan_with_catalog(script, dsn)) if dsn else make_plan(script)
    if args.json:
        out.print_json(json.dumps(plan.as_dict()))
    else:
        _print_plan(plan)
    return int(ExitCode.OK)


async def _plan_with_catalog(script: str, dsn: str) -> Plan:
    statements = parse_script(script)  # a syntax error is reported before connecting
    session = await connect(dsn, "zdmproxy:plan")
    try:
        facts: CatalogFacts = await read_facts(session, statements)
    finally:
        await session.close()
    return make_plan(script, facts)


def _print_plan(plan: Plan) -> None:
    source = "from the database catalog" if plan.from_catalog else "without a database (assumptions noted)"
    out.print(f"[bold]Plan[/bold] for PostgreSQL {plan.server_version_num // 10000}, {source}")
    for number, planned in enumerate(plan.statements, start=1):
        effects = planned.effects
        out.print(f"\n[bold]{number}.[/bold] line {planned.statement.line}: {escape(planned.statement.text)}")
        table = Table(show_header=True, header_style="dim", box=None, padding=(0, 2))
        table.add_column("relation")
        table.add_column("lock")
        table.add_column("blocks")
        for lock in effects.locks:
            blocks = "nobody (created by this statement)" if lock.created else lock.mode.blocks()
            table.add_row(escape(str(lock.relation)), lock.mode.pg_name, blocks)
        out.print(table)
        for step in planned.steps:
            out.print(f"   [cyan]{step.phase.value}[/cyan]: {escape(step.reason)}")
            if step.destructive:
                out.print(f"   [red]destructive[/red]: {step.destructive} (needs --allow-destructive)")
        for note in effects.notes:
            out.print(f"   [yellow]note[/yellow]: {escape(note)}")


def _apply(args: argparse.Namespace) -> int:
    script = _read(args.file)
    overrides = {
        "allow_destructive": True if args.allow_destructive else None,
        "queue_budget_ms": args.queue_budget_ms,
        "lock_timeout_ms": args.lock_timeout_ms,
        "statement_timeout_s": args.statement_timeout_s,
        "deadline_s": args.deadline_s,
        "terminate_idle_blockers_after_s": args.terminate_idle_blockers_after_s,
    }
    settings = load_settings()
    policy = settings.policy(**{k: v for k, v in overrides.items() if v is not None})
    parse_script(script)  # refuse bad SQL before touching any database
    with ExitStack() as stack:
        dsn = args.dsn or settings.database_url
        if dsn is None:
            from zdmproxy.embedded import throwaway_server

            err.print("[dim]no database configured: using a throwaway embedded PostgreSQL[/dim]")
            dsn = stack.enter_context(throwaway_server())
        report = MigrationReport(args.id)
        runner = Runner(dsn, args.id, policy, sink=_print_event)
        try:
            uvloop.run(_apply_async(runner, script, report))
        except ZdmError as exc:
            if args.json:  # one document on stdout: the report, with the error in it
                out.print_json(json.dumps({**_report_dict(report), "error": exc.as_dict()}))
            _print_summary(report)
            _report_error(exc, json_output=False)
            return int(exc.exit_code)
        except (KeyboardInterrupt, asyncio.CancelledError):
            _print_summary(report)
            err.print(f"[red]interrupted[/red]: {_interrupted(report)}")
            return int(ExitCode.CANCELLED)
        if args.json:
            out.print_json(json.dumps(_report_dict(report)))
        _print_summary(report)
    return int(ExitCode.OK)


def _interrupted(report: MigrationReport) -> str:
    last = report.steps[-1] if report.steps else None
    running = last if last is not None and last.outcome is not Outcome.SUCCEEDED else None
    if running is not None and not running.step.transactional:
        return (
            "the running CONCURRENTLY step may have left an INVALID index behind; "
            "the next run drops it before trying again"
        )
    return "the running step was rolled back; re-run to resume"


async def _apply_async(runner: Runner, script: str, report: MigrationReport) -> None:
    # SIGTERM (a Kubernetes pod stopping) ends the run like Ctrl-C: the running step's
    # connection closes, so PostgreSQL rolls it back, and the summary is still printed.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    plan = await _plan_with_catalog(script, runner.dsn)
    await runner.run(plan, report)


def _print_event(event: Event) -> None:
    """One short line per decision; attempts are shown only when one failed."""
    number = f"[{event.step + 1}]"
    if event.kind is EventKind.STEP_STARTED:
        sql = " ".join(event.message.split())
        err.print(f"[bold]{escape(number)} {escape(sql[:120])}[/bold]")
        err.print(f"    [dim]{escape(event.detail)}[/dim]")
        return
    if event.kind is EventKind.STEP_FAILED or (
        event.kind is EventKind.ATTEMPT_STARTED and event.attempt == 1
    ):
        return  # a failure is printed once, as the command's error, after the summary
    style = {
        EventKind.WAITING_FOR_BLOCKERS: "yellow",
        EventKind.BLOCKER_TERMINATED: "red",
        EventKind.AUTOVACUUM_CANCELLED: "yellow",
        EventKind.ATTEMPT_FAILED: "yellow",
        EventKind.DEBRIS_DROPPED: "yellow",
        EventKind.DETACH_RESUMED: "yellow",
        EventKind.STEP_SUCCEEDED: "green",
    }.get(event.kind, "dim")
    mark = "✓ " if event.kind is EventKind.STEP_SUCCEEDED else ""
    err.print(f"    [{style}]{mark}{escape(event.message)}[/{style}]")


def _print_summary(report: MigrationReport) -> None:
    for step in report.steps:
        for line in step.blocked_summary():
            err.print(f"step {step.index + 1}: {escape(line)}")
    done = [s for s in report.steps if s.outcome is Outcome.SUCCEEDED]
    if report.succeeded and len(done) == report.planned:
        err.print(f"{report.migration_id}: all {report.planned} step(s) applied")
        return
    err.print(f"{report.migration_id}: {len(done)} of {report.planned} step(s) applied")
    if done:
        # Until the journal remembers applied steps, re-running the whole file would repeat them.
        err.print(
            "steps applied so far stay applied; re-run only the statements from step "
            f"{len(done) + 1} on: {escape(report.steps[len(done)].step.sql[:80])}"
        )


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


def _report_error(exc: ZdmError, *, json_output: bool) -> None:
    if json_output:
        out.print_json(json.dumps({"error": exc.as_dict()}))
    err.print(f"[red]error[/red] {escape(f'[{exc.code}]')}: {escape(exc.message)}")
