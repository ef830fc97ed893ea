"""``zdmproxy rollback ID``: undo the expand phase of a migration that was not contracted.

The reverts run through the engine like any step (journal/rollback.py); the migration ends
``cancelled`` in phase ``rollback``, and applying it again starts from its first step.
"""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack

from rich.markup import escape

from zdmproxy.cli.flags import model_overrides
from zdmproxy.cli.progress import event_display
from zdmproxy.cli.shared import database_url, err, out, run_async
from zdmproxy.engine.events import EventSink
from zdmproxy.engine.runner import MigrationReport
from zdmproxy.errors import ExitCode
from zdmproxy.journal.coordinator import Coordinator
from zdmproxy.journal.ledger import Caller
from zdmproxy.journal.rollback import rollback
from zdmproxy.journal.store import Journal
from zdmproxy.policy import MigrationPolicy
from zdmproxy.settings import load_settings


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    policy = settings.policy(**model_overrides(args))
    with ExitStack() as stack:
        dsn = database_url(args, settings, stack)
        with event_display() as sink:
            undone = run_async(_rollback(dsn, args.id, policy, sink), dsn=dsn)
    if args.json:
        result = {"id": args.id, "state": "cancelled", "phase": "rollback", "reverted": undone}
        out.print_json(json.dumps(result))
    else:
        err.print(f"{escape(args.id)}: rolled back ({undone} step(s) undone); the original schema is back")
    return int(ExitCode.OK)


async def _rollback(dsn: str, migration_id: str, policy: MigrationPolicy, sink: EventSink) -> int:
    journal = await Journal.open(dsn, "zdmproxy-journal")
    try:
        coordinator = Coordinator(dsn, journal, policy, Caller("zdmproxy rollback"), sink=sink)
        report = MigrationReport(migration_id)
        await rollback(coordinator, migration_id, report)
        return len(report.steps)
    finally:
        await journal.close()
