"""The one place zdmproxy writes lock_timeout and statement_timeout."""

from __future__ import annotations

import math


def timeouts_sql(lock_timeout_ms: float, statement_timeout_ms: float | None = None, *, local: bool) -> str:
    """SET (or SET LOCAL) the timeouts: the one place zdmproxy writes them."""
    verb = "SET LOCAL" if local else "SET"
    sql = f"{verb} lock_timeout = {_ms(lock_timeout_ms)}"
    if statement_timeout_ms is not None:
        sql += f"; {verb} statement_timeout = {_ms(statement_timeout_ms)}"
    return sql


RESET_TIMEOUTS = "RESET lock_timeout; RESET statement_timeout"


def _ms(value: float) -> int:
    """A timeout in whole milliseconds for SET; never 0, which would mean no timeout at all."""
    return max(1, math.ceil(value))
