"""The one seam between the engine and a PostgreSQL driver.

The engine needs only the few calls in ``Session``; asyncpg's Connection
provides them. Who owns the connection (the CLI, the daemon, or later a
relayed client of the wire-protocol front door) does not matter to the
engine, which is why it takes sessions rather than DSNs where it can.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from zdmproxy.engine.queries import QUERIES
from zdmproxy.errors import ConfigError, DatabaseUnreachable


class Session(Protocol):
    # ``timeout`` is the client's own bound on one call (seconds): a network that drops packets
    # silently must not hang a step past its deadline.
    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str: ...
    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...
    async def fetchval(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...
    def get_server_pid(self) -> int: ...
    def is_closed(self) -> bool: ...
    async def close(self) -> None: ...


# What a lost connection looks like from asyncpg: reconnect and re-check, never give up on these.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    # asyncpg's protocol left mid-operation by a connection the server ended under it
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
)


# Session settings are SET after connecting (queries.sql: keepalives, client_connection_check),
# not sent in the startup packet: PostgreSQL before 14 and PgBouncer refuse unknown startup
# parameters, and the connection would look unreachable.
# Every connection: the server probes a silent client, so a dropped network becomes a closed
# socket on its side within about half a minute (the client bounds its own calls with timeouts).
# The session steps run on: if zdmproxy dies (kill -9, a lost node) while a step runs, its
# backend must not go on changing the schema unseen: the server checks every second whether the
# client is still there (PostgreSQL 14+), aborts the statement and ends, which also releases the
# migration's run lock held by this session.
# A bound on any call on a connection that is not the step session's statement (catalog reads,
# the journal, pre-flight polls): far above what any of them takes, far below a step's deadline.
COMMAND_TIMEOUT_S = 60.0


PASSWORD_FILE_ENV = "ZDM_DATABASE_PASSWORD_FILE"


def password_from_file() -> str | None:
    """The password in the file ZDM_DATABASE_PASSWORD_FILE names (a mounted secret), read on
    every connect so a rotated password is used from the next connection on; None: the URL's."""
    path = os.environ.get(PASSWORD_FILE_ENV)
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{PASSWORD_FILE_ENV}={path}: cannot read it ({exc.strerror})") from None


async def connect(
    dsn: str, application_name: str, *, timeout: float = 10.0, step_session: bool = False
) -> Session:
    """Open a dedicated connection named for zdmproxy (visible in pg_stat_activity);
    ``step_session`` also has the server check that we are still there (14+)."""
    try:
        conn: Session = await asyncpg.connect(
            dsn,
            timeout=timeout,
            # The step session's statements carry their own bound (statement_timeout + margin).
            command_timeout=None if step_session else COMMAND_TIMEOUT_S,
            server_settings={"application_name": application_name[:63]},
            statement_cache_size=0,
            password=password_from_file(),
        )
    except (
        OSError,
        TimeoutError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.TooManyConnectionsError,
    ) as exc:
        raise DatabaseUnreachable(f"cannot reach the database: {exc}") from exc
    except (ValueError, asyncpg.exceptions.ClientConfigurationError) as exc:
        raise ConfigError(f"the database URL is not valid: {exc}") from exc
    except asyncpg.exceptions.InvalidAuthorizationSpecificationError as exc:
        raise DatabaseUnreachable(f"the database refused the connection: {exc}") from exc
    except asyncpg.exceptions.InvalidCatalogNameError as exc:
        raise DatabaseUnreachable(f"no such database: {exc}") from exc
    except asyncpg.PostgresError as exc:  # e.g. 55000: not accepting connections right now
        raise DatabaseUnreachable(f"the database refused the connection: {exc}") from exc
    await _configure(conn, step_session=step_session)
    return conn


async def _configure(session: Session, *, step_session: bool) -> None:
    with contextlib.suppress(asyncpg.PostgresError):  # a server without them still works
        await session.execute(QUERIES["keepalives"])
        if step_session:
            await session.execute(QUERIES["own_bounds"])
            await session.execute(QUERIES["client_connection_check"])


async def execute_quietly(session: Session, query: str) -> None:
    """Best-effort clean-up (ROLLBACK, RESET) that must never hide the error being handled.

    A broken connection is closed so the runner reconnects for the next attempt.
    """
    if session.is_closed():
        return
    try:
        await session.execute(query)
    except (*CONNECTION_LOST, asyncpg.PostgresError):
        await session.close()


async def server_version_num(session: Session) -> int:
    return int(await session.fetchval(QUERIES["server_version_num"]))
