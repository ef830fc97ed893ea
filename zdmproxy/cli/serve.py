"""``zdmproxy serve``: the daemon, an HTTP API for deploy scripts and operators (api/).

``zdmproxy serve --dsn DSN --port N`` works as written; everything also comes from settings
(ZDM_LISTEN_HOST, ZDM_LISTEN_PORT, ZDM_UNIX_SOCKET, ZDM_TOKEN_FILE, ZDM_DATABASE_PASSWORD_FILE).
Logs go to standard error, one line per event, and never hold the database password: the
target is logged as host, port, database and user.
"""

from __future__ import annotations

import argparse
import logging
import os
from contextlib import ExitStack
from pathlib import Path

import uvloop

from zdmproxy.api.auth import read_token
from zdmproxy.api.daemon import Daemon
from zdmproxy.api.server import Listen, check_exposure, serve
from zdmproxy.cli.shared import add_database_arguments, database_target, database_url
from zdmproxy.engine.connector import PASSWORD_FILE_ENV
from zdmproxy.errors import ExitCode
from zdmproxy.settings import load_settings

log = logging.getLogger("zdmproxy.daemon")


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve_parser = commands.add_parser(
        "serve", help="run the daemon: an HTTP API that runs, shows and controls migrations"
    )
    add_database_arguments(serve_parser)
    serve_parser.add_argument("--host", help="address to listen on (default 127.0.0.1; ZDM_LISTEN_HOST)")
    serve_parser.add_argument("--port", type=int, help="TCP port (default 8080; ZDM_LISTEN_PORT)")
    serve_parser.add_argument(
        "--unix-socket", type=Path, help="listen on this unix socket (created 0600) instead of TCP"
    )
    serve_parser.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token clients must send (required beyond loopback; ZDM_TOKEN_FILE)",
    )
    serve_parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    listen = Listen(
        host=args.host or settings.listen_host,
        port=args.port if args.port is not None else settings.listen_port,
        unix_socket=args.unix_socket or settings.unix_socket,
    )
    token_file = args.token_file or settings.token_file
    token = read_token(token_file) if token_file is not None else None
    check_exposure(listen, token)  # before connecting to anything
    if settings.database_password_file is not None:
        os.environ[PASSWORD_FILE_ENV] = str(settings.database_password_file)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with ExitStack() as stack:
        dsn = database_url(args, settings, stack)
        log.info("zdmproxy daemon for %s", database_target(dsn))
        uvloop.run(serve(Daemon(dsn, settings.policy()), listen, token))
    return int(ExitCode.OK)
