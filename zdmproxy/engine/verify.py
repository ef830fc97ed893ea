"""Did an interrupted non-transactional step finish? Asked of the catalog, never guessed.

A ``CREATE INDEX CONCURRENTLY`` (and the others that cannot run in a
transaction block) commits on its own, so no journal row can commit with it.
The journal records the intent before such a step runs; when a run was cut
off between that intent and the recorded end (a crash, kill -9, a lost
connection), the next run asks here whether the statement's effect is
already in the catalog. ``None`` means the catalog cannot tell, and the
statement is safe to run again (REINDEX, VACUUM, ANALYZE rebuild or recompute
what they already did).
"""

from __future__ import annotations

from zdmproxy.engine.connector import Session
from zdmproxy.engine.queries import QUERIES
from zdmproxy.plan.model import Step
from zdmproxy.sql.names import quote_relation


async def applied(session: Session, step: Step) -> bool | None:
    """Whether ``step``'s effect is in the catalog: True done, False not done, None cannot tell."""
    if step.kind == "CREATE INDEX CONCURRENTLY":
        (index,) = [lock.relation for lock in step.locks if lock.created]  # the catalogue requires a name
        # An INVALID index is a build that did not finish: the debris clean-up drops it first.
        return bool(await session.fetchval(QUERIES["index_validity"], quote_relation(index)))
    if step.kind == "DROP INDEX CONCURRENTLY":
        names = [quote_relation(lock.relation) for lock in step.locks if lock.kind == "index"]
        present = [await session.fetchval(QUERIES["index_validity"], name) for name in names]
        return all(validity is None for validity in present)
    if step.kind.startswith("ALTER TABLE DETACH PARTITION"):
        parent, partition = step.locks[0].relation, step.locks[1].relation
        return not await session.fetchval(
            QUERIES["partition_attached"], quote_relation(partition), quote_relation(parent)
        )
    return None
