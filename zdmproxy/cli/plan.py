"""``zdmproxy plan``: the locks, rewrites and steps of a SQL file, with or without a database."""

from __future__ import annotations

import argparse
import json

from rich.markup import escape
from rich.table import Table

from zdmproxy.cli.shared import out, read_script, run_async
from zdmproxy.engine.catalog import plan_script
from zdmproxy.engine.connector import connect
from zdmproxy.errors import ExitCode
from zdmproxy.plan.model import Plan
from zdmproxy.plan.planner import make_plan
from zdmproxy.sql.parse import parse_script


def run(args: argparse.Namespace) -> int:
    script = read_script(args.file)
    dsn = args.dsn
    plan = run_async(_plan_with_catalog(script, dsn), dsn=dsn) if dsn else make_plan(script)
    if args.json:
        out.print_json(json.dumps(plan.as_dict()))
    else:
        _print_plan(plan)
    return int(ExitCode.OK)


async def _plan_with_catalog(script: str, dsn: str) -> Plan:
    parse_script(script)  # a syntax error is reported before connecting
    session = await connect(dsn, "zdmproxy:plan")
    try:
        return await plan_script(session, script)
    finally:
        await session.close()


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
