"""Cleaning up after a failed CONCURRENTLY statement, before it is tried again.

A failed or cancelled CREATE INDEX CONCURRENTLY leaves an INVALID index with
the requested name; a failed REINDEX CONCURRENTLY leaves ``<index>_ccnew`` (or
``_ccnew1``..., and ``_ccold`` when it failed while swapping).
Both must be dropped (concurrently, so no traffic waits) before a retry,
otherwise the retry fails on the name or, with IF NOT EXISTS, silently keeps
the broken index.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from zdmproxy.engine.connector import Session, execute_quietly
from zdmproxy.engine.queries import QUERIES
from zdmproxy.engine.timeouts import RESET_TIMEOUTS, timeouts_sql
from zdmproxy.plan.model import Step
from zdmproxy.sql.names import quote_relation


@dataclass(frozen=True)
class Probe:
    """A catalog query that finds the INVALID leftovers of one failed statement."""

    query: str  # a name in queries.sql
    args: tuple[str | None, ...]


def debris_probes(step: Step) -> list[Probe]:
    """Where a failed run of ``step`` may have left INVALID indexes behind."""
    if step.transactional:
        return []
    created = [lock for lock in step.locks if lock.kind == "index" and lock.created]
    if created:  # CREATE INDEX CONCURRENTLY: the index itself, by its name
        return [Probe("invalid_index", (quote_relation(lock.relation),)) for lock in created]
    if not step.kind.startswith("REINDEX"):
        return []
    indexes = [lock.relation for lock in step.locks if lock.kind == "index"]
    if indexes:
        return [Probe("reindex_debris", (quote_relation(name), name.name)) for name in indexes]
    return [Probe("reindex_debris", (quote_relation(lock.relation), None)) for lock in step.locks]


async def resume_detach(session: Session, step: Step) -> Step | None:
    """The step that finishes an interrupted DETACH PARTITION ... CONCURRENTLY, if there is one.

    An interrupted concurrent detach (a lock timeout included) leaves the partition marked
    detach-pending; running the statement again then fails (55000), and only
    ``DETACH PARTITION ... FINALIZE`` completes it.
    """
    if step.transactional or not step.kind.startswith("ALTER TABLE DETACH PARTITION"):
        return None
    parent, partition = step.locks[0].relation, step.locks[1].relation
    if not await session.fetchval(QUERIES["detach_pending"], quote_relation(partition)):
        return None
    finalize = f"ALTER TABLE {quote_relation(parent)} DETACH PARTITION {quote_relation(partition)} FINALIZE"
    return dataclasses.replace(step, sql=finalize, reason=f"finishes the interrupted detach: {finalize}")


async def leftovers(session: Session, step: Step) -> list[str]:
    """The INVALID indexes a failed run of ``step`` left behind, by name."""
    found: list[str] = []
    for probe in debris_probes(step):
        rows = await session.fetch(QUERIES[probe.query], *probe.args)
        found += [row["name"] for row in rows if row["name"] not in found]
    return found


async def drop_invalid_indexes(session: Session, step: Step, lock_timeout_ms: float) -> list[str]:
    """Drop the INVALID leftovers of ``step``, concurrently; returns what was dropped."""
    found = await leftovers(session, step)
    if not found:
        return []
    await session.execute(timeouts_sql(lock_timeout_ms, local=False))
    try:
        for name in found:  # already quoted where needed: regclass::text output
            await session.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    finally:
        await execute_quietly(session, RESET_TIMEOUTS)
    return found
