"""How an attempt ended, and whether trying again can help.

Retrying is right when we never got our locks (lock timeout, our own
watchdog cancel, a deadlock, a serialization failure) or lost the connection.
It is wrong for mistakes in the SQL, missing objects, permissions, and for a
statement that timed out while it held its locks and was making progress:
running it again would block traffic for just as long again.
"""

from __future__ import annotations

from enum import StrEnum

import asyncpg

from zdmproxy.engine.connector import CONNECTION_LOST
from zdmproxy.errors import PgErrorInfo


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    LOCK_TIMEOUT = "lock_timeout"
    WATCHDOG_CANCELLED = "watchdog_cancelled"
    LOCK_WAIT_TIMED_OUT = "lock_wait_statement_timeout"
    DEADLOCK = "deadlock"
    SERIALIZATION_FAILURE = "serialization_failure"
    CONNECTION_LOST = "connection_lost"
    STATEMENT_TIMEOUT = "statement_timeout"
    CANCELLED = "cancelled_by_someone_else"
    BLOCKED = "blocked_until_deadline"  # pre-flight waited out the whole deadline
    FAILED = "failed"

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        Outcome.LOCK_TIMEOUT,
        Outcome.WATCHDOG_CANCELLED,
        Outcome.LOCK_WAIT_TIMED_OUT,
        Outcome.DEADLOCK,
        Outcome.SERIALIZATION_FAILURE,
        Outcome.CONNECTION_LOST,
    }
)
_BY_SQLSTATE = {
    "55P03": Outcome.LOCK_TIMEOUT,
    "40P01": Outcome.DEADLOCK,
    "40001": Outcome.SERIALIZATION_FAILURE,
}


# A statement_timeout fires within a few ms of its value (POSTGRES-FACTS.md 2.2); a 57014 that
# comes clearly earlier than the timeout we set was somebody's pg_cancel_backend.
_TIMER_SLACK_MS = 50


def classify_failure(
    exc: BaseException,
    *,
    we_cancelled: bool,
    waiting_for_lock: bool,
    elapsed_ms: float = 0.0,
    statement_timeout_ms: float = 0.0,
) -> Outcome:
    """Name what happened; 57014 is told apart by our own intent and by the clock, never by
    message text: our watchdog's cancel, our statement_timeout, or someone else's cancel."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == "57014":
        if we_cancelled:
            return Outcome.WATCHDOG_CANCELLED
        if elapsed_ms + _TIMER_SLACK_MS < statement_timeout_ms:
            return Outcome.CANCELLED
        return Outcome.LOCK_WAIT_TIMED_OUT if waiting_for_lock else Outcome.STATEMENT_TIMEOUT
    if sqlstate in _BY_SQLSTATE:
        return _BY_SQLSTATE[sqlstate]
    # 25P03/25P04: the server ended an idle-in-transaction or too-long transaction session
    # (FATAL): the connection is gone exactly as if the network had dropped it.
    if isinstance(exc, CONNECTION_LOST) or (sqlstate or "").startswith(("08", "57P", "25P03", "25P04")):
        return Outcome.CONNECTION_LOST
    return Outcome.FAILED


def pg_error_info(exc: BaseException) -> PgErrorInfo:
    # A connection the server closed on purpose carries its FATAL (57P01 terminate or shutdown,
    # 25P03 ...) as the cause of asyncpg's "connection was closed" error: report what it said.
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError) and isinstance(
        exc.__cause__, asyncpg.PostgresError
    ):
        exc = exc.__cause__
    if isinstance(exc, asyncpg.PostgresError):
        position = getattr(exc, "position", None)
        return PgErrorInfo(
            sqlstate=exc.sqlstate,
            message=str(getattr(exc, "message", None) or exc),
            detail=getattr(exc, "detail", None),
            hint=getattr(exc, "hint", None),
            position=int(position) if position else None,
        )
    return PgErrorInfo(sqlstate=getattr(exc, "sqlstate", None), message=str(exc) or type(exc).__name__)
