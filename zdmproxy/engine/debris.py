"""Cleaning up after a failed CONCURRENTLY statement, before it is tried again.

A failed or cancelled CREATE INDEX CONCURRENTLY leaves an INVALID index with
the requested name; a failed REINDEX CONCURRENTLY leaves ``<index>_ccnew``.
Both must be dropped (concurrently, so no traffic waits) before a retry,
otherwise the retry fails on the name or, with IF NOT EXISTS, silently keeps
the broken index.
"""

from __future__ import annotations

from zdmproxy.engine.connector import Session
from zdmproxy.engine.queries import QUERIES
from zdmproxy.plan.model import Step
from zdmproxy.sql.locks import RelationName
from zdmproxy.sql.names import quote_relation


def debris_candidates(step: Step) -> list[RelationName]:
    """Index names a failed run of ``step`` may leave behind INVALID."""
    if step.transactional:
        return []
    names = []
    for lock in step.locks:
        if lock.kind != "index":
            continue
        if lock.created:
            names.append(lock.relation)
        else:
            names.append(RelationName(lock.relation.schema, f"{lock.relation.name}_ccnew"))
    return names


async def drop_invalid_indexes(session: Session, step: Step, lock_timeout_ms: float) -> list[str]:
    """Drop the INVALID leftovers of ``step``; returns what was dropped."""
    dropped = []
    for name in debris_candidates(step):
        found = await session.fetchval(QUERIES["invalid_index"], quote_relation(name))
        if found is None:
            continue
        await session.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
        try:
            await session.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote_relation(name)}")
        finally:
            await session.execute("RESET lock_timeout")
        dropped.append(found)
    return dropped
