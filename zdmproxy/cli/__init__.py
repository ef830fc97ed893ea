"""The command line: ``zdmproxy plan``, ``apply``, ``status`` and ``history``.

Exit codes are part of the interface (README, "Exit codes") so a Kubernetes
Job can retry only 69 (unreachable) and 75 (lock budget ran out); each
command lives in its own module, this one only parses arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from zdmproxy import __version__
from zdmproxy.cli import apply as apply_command
from zdmproxy.cli import control as control_commands
from zdmproxy.cli import demo as demo_command
from zdmproxy.cli import journal as journal_commands
from zdmproxy.cli import locks as locks_command
from zdmproxy.cli import plan as plan_command
from zdmproxy.cli import rollback as rollback_command
from zdmproxy.cli import serve as serve_command
from zdmproxy.cli.flags import Parser, add_model_flags, print_completion
from zdmproxy.cli.shared import add_database_arguments, err, report_error
from zdmproxy.errors import ExitCode, ZdmError
from zdmproxy.plan.phases import RunPhase


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ZdmError as exc:
        report_error(exc, json_output=getattr(args, "json", False))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        return int(ExitCode.CANCELLED)


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="zdmproxy", description="Run PostgreSQL schema changes without lock-queue outages.")
    parser.add_argument("--version", action="version", version=f"zdmproxy {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    plan = commands.add_parser("plan", help="show the locks, rewrites and steps of a SQL file")
    plan.add_argument("file", help="SQL file, or - for standard input")
    plan.add_argument("--dsn", help="resolve schemas, constraints and sizes from this database")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON (DESIGN.md contract)")
    plan.set_defaults(handler=plan_command.run)

    apply = commands.add_parser(
        "apply",
        help="run a SQL file (with --id) or a folder of versioned files through the engine, once",
    )
    apply.add_argument("path", metavar="FILE|DIR", help="SQL file (- for standard input), or a folder")
    apply.add_argument("--id", help="migration id of a FILE (a folder's files are named by their file names)")
    add_database_arguments(apply)
    apply.add_argument(
        "--embedded", action="store_true", help="run on a throwaway embedded PostgreSQL (for the demo)"
    )
    apply.add_argument(
        "--out-of-order", action="store_true", help="apply a folder's files older than the newest applied"
    )
    apply.add_argument(
        "--ignore-missing",
        action="store_true",
        help="accept applied migrations whose files were removed from the folder",
    )
    apply.add_argument(
        "--wait-timeout-s",
        type=float,
        help="give up (exit 4) after waiting this long for another process running the same migration",
    )
    apply.add_argument(
        "--yes", action="store_true", help="on a terminal, run destructive statements without asking"
    )
    add_model_flags(apply, title="policy (each flag overrides its ZDM_ variable and the config file)")
    apply.add_argument(
        "--phase",
        choices=[p.value for p in RunPhase],
        help="run only this phase of an expand/contract plan (default: every phase, the script as written)",
    )
    apply.add_argument("--json", action="store_true", help="print the attempts report as JSON")
    apply.set_defaults(handler=apply_command.run)

    status = commands.add_parser("status", help="what the journal holds for a migration id or a folder")
    status.add_argument("target", metavar="ID|DIR", nargs="?", help="a migration id, or a folder of files")
    add_database_arguments(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=journal_commands.status)

    rollback = commands.add_parser(
        "rollback", help="undo the expand phase of a migration that was not contracted"
    )
    rollback.add_argument("id", metavar="ID", help="the migration id")
    add_database_arguments(rollback)
    add_model_flags(rollback, title="policy (each flag overrides its ZDM_ variable and the config file)")
    rollback.add_argument("--json", action="store_true", help="print JSON")
    rollback.set_defaults(handler=rollback_command.run)

    history = commands.add_parser("history", help="the migrations the journal holds, newest first")
    add_database_arguments(history)
    history.add_argument("--limit", type=int, default=50, help="how many")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=journal_commands.history)
    locks = commands.add_parser(
        "locks", help="who holds or waits for locks on some tables now (prepared transactions too)"
    )
    locks.add_argument("tables", nargs="*", metavar="TABLE", help="default: every table someone waits for")
    add_database_arguments(locks)
    locks.add_argument("--json", action="store_true", help="print JSON")
    locks.set_defaults(handler=locks_command.run)
    serve_command.add_command(commands)
    demo_command.add_command(commands)
    control_commands.add_commands(commands)

    completion = commands.add_parser(
        "completion", help='print a shell completion script: eval "$(zdmproxy completion bash)"'
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(handler=lambda args: print_completion(parser, args.shell))
    return parser
