"""``zdmproxy locks``: who holds or waits for locks on some tables right now.

What a migration on those tables would wait for, as pre-flight sees it (the same query):
sessions with what they are doing, and prepared transactions, which hold their locks with no
session at all and show nowhere in pg_stat_activity.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from contextlib import ExitStack

from rich.markup import escape

from zdmproxy.cli.shared import database_url, err, out, run_async
from zdmproxy.engine.blockers import lock_report
from zdmproxy.engine.connector import connect
from zdmproxy.engine.events import Blocker
from zdmproxy.errors import ExitCode
from zdmproxy.settings import load_settings


def run(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        dsn = database_url(args, load_settings(), stack)
        found = run_async(_read(dsn, args.tables), dsn=dsn)
    if args.json:
        out.print_json(json.dumps([{**dataclasses.asdict(b), "describe": b.describe()} for b in found]))
        return int(ExitCode.OK)
    if not found:
        err.print("nobody holds or waits for a lock on " + (", ".join(args.tables) or "a contended table"))
        return int(ExitCode.OK)
    for relation in dict.fromkeys(b.relation for b in found):
        out.print(f"[bold]{escape(relation or '?')}[/bold]")
        for blocker in (b for b in found if b.relation == relation):
            out.print(f"   {escape(blocker.describe())}")
    return int(ExitCode.OK)


async def _read(dsn: str, tables: list[str]) -> list[Blocker]:
    session = await connect(dsn, "zdmproxy:locks")
    try:
        return await lock_report(session, tables, [session.get_server_pid()])
    finally:
        await session.close()
