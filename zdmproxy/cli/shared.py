"""What every command shares: the two consoles, reading a script, the target database, errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Coroutine
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import uvloop
from rich.console import Console
from rich.markup import escape

from zdmproxy.engine.connector import CONNECTION_LOST
from zdmproxy.errors import ConfigError, DatabaseUnreachable, UsageError, ZdmError
from zdmproxy.settings import Settings

T = TypeVar("T")

# soft_wrap: messages are read by scripts and CI logs too; never break a line mid-message.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", help="target database (default: ZDM_DATABASE_URL or database_url in the config)"
    )


def read_script(file: str) -> str:
    """A SQL file's text (``-`` is standard input); what cannot be read is a usage error.

    A leading UTF-8 byte order mark (Windows editors write one) is an encoding mark, not SQL:
    it is dropped, as Flyway drops it, so the file parses and checksums as without it."""
    if file == "-":
        data = sys.stdin.buffer.read()  # bytes: the locale's decoding would hide a bad byte
        file = "standard input"
    else:
        path = Path(file)
        if path.is_dir():
            raise UsageError(f"{file}: is a directory, not a SQL file")
        if not path.is_file():
            raise UsageError(f"{file}: no such file")
        data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{file}: not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); convert it, e.g. "
            "`iconv -f LATIN1 -t UTF-8`"
        ) from None


def database_url(
    args: argparse.Namespace, settings: Settings, stack: ExitStack, *, embedded: bool = False
) -> str:
    """The target database: a deploy job without one must fail, never migrate nothing and exit 0."""
    dsn = args.dsn or settings.database_url
    if embedded:
        if dsn is not None:
            raise UsageError("--embedded runs on a throwaway server: give it no --dsn or ZDM_DATABASE_URL")
        from zdmproxy.embedded import throwaway_server

        err.print("[dim]using a throwaway embedded PostgreSQL (deleted afterwards)[/dim]")
        return stack.enter_context(throwaway_server())
    if dsn is None:
        raise ConfigError(
            "no database given: pass --dsn postgresql://user@host/db, set ZDM_DATABASE_URL, or set "
            "database_url in the config file (ZDM_CONFIG); `apply --embedded` runs on a throwaway "
            "embedded PostgreSQL instead (the demo)"
        )
    return str(dsn)


def run_async(main: Coroutine[Any, Any, T], *, dsn: str | None = None) -> T:
    """Run a command's coroutine on uvloop; a database connection lost where nothing retries
    it is exit 69 (a Job may retry, the journal resumes), never a traceback. Given ``dsn``, an
    unreachable database is named by host and port (never the password): "connection refused"
    alone does not tell an operator which of their databases a deploy job tried."""
    try:
        return uvloop.run(main)
    except CONNECTION_LOST as exc:
        lost = DatabaseUnreachable(
            f"lost the connection to the database ({exc}); re-run the same command to resume"
        )
        raise _naming(lost, dsn) from exc
    except DatabaseUnreachable as exc:
        raise _naming(exc, dsn) from exc


def _naming(exc: DatabaseUnreachable, dsn: str | None) -> DatabaseUnreachable:
    if dsn is None:
        return exc
    return DatabaseUnreachable(f"{exc.message} ({database_target(dsn)})", pg=exc.pg)


def database_target(dsn: str) -> str:
    """Where a connection URL points, for messages: hosts, ports, database and user, never the
    password. asyncpg's own defaults apply to what the URL leaves out (PGHOST, PGPORT, 5432)."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    user = unquote(userinfo.partition(":")[0]) or query.get("user", [""])[0] or os.environ.get("PGUSER")
    default_port = query.get("port", [""])[0] or os.environ.get("PGPORT") or "5432"
    hosts = []
    for spec in unquote(hostlist).split(","):
        host, port = spec, ""
        if spec.startswith("["):  # [IPv6]:port
            host, _, rest = spec[1:].partition("]")
            port = rest.removeprefix(":")
        elif ":" in spec:
            host, _, port = spec.rpartition(":")
        host = host or query.get("host", [""])[0] or os.environ.get("PGHOST") or "localhost"
        hosts.append(f"host {host} port {port or default_port}")
    database = unquote(parts.path.lstrip("/")) or query.get("database", [""])[0] or user
    described = ", ".join(hosts)
    if database:
        described += f", database {database}"
    if user:
        described += f", user {user}"
    return described


def report_error(exc: ZdmError, *, json_output: bool) -> None:
    if json_output:
        out.print_json(json.dumps({"error": exc.as_dict()}))
    err.print(f"[red]error[/red] {escape(f'[{exc.code}]')}: {escape(exc.message)}")
