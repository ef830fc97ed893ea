"""Pre-flight: who holds or awaits a lock that our step's lock requests would queue behind.

Conflicts are decided in Python from the lock-mode table (zdmproxy.sql.locks),
so the SQL stays a plain read of pg_locks joined to pg_stat_activity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from zdmproxy.engine.connector import Session
from zdmproxy.engine.events import Blocker
from zdmproxy.engine.queries import QUERIES
from zdmproxy.sql.locks import LockMode, LockRequest
from zdmproxy.sql.names import quote_relation


@dataclass(frozen=True)
class Target:
    """One of our lock requests, resolved to the relation's oid."""

    oid: int
    request: LockRequest
    relkind: str = "r"  # pg_class.relkind


async def resolve_targets(session: Session, locks: Sequence[LockRequest]) -> list[Target]:
    """Oids of the relations a step locks; relations that do not exist (yet) are skipped."""
    wanted = [lock for lock in locks if not lock.created]
    if not wanted:
        return []
    rows = await session.fetch(QUERIES["relation_oids"], [quote_relation(w.relation) for w in wanted])
    return [
        Target(row["oid"], lock, row["relkind"]) for row, lock in zip(rows, wanted, strict=True) if row["oid"]
    ]


async def find_blockers(
    session: Session, targets: Sequence[Target], own_pids: Sequence[int]
) -> list[Blocker]:
    """Sessions holding, or queued ahead for, a lock that conflicts with one of ours."""
    if not targets:
        return []
    modes = {t.oid: t.request.mode for t in targets}
    rows = await session.fetch(QUERIES["conflicting_locks"], list(modes), list(own_pids))
    found: dict[int, Blocker] = {}
    for row in rows:
        theirs = LockMode.from_pg_name(row["mode"]) if row["mode"] in _PG_NAMES else None
        ours = modes.get(row["relation_oid"])
        if theirs is None or ours is None or not ours.conflicts_with(theirs) or row["pid"] in found:
            continue
        found[row["pid"]] = Blocker.from_row(
            row,
            mode=row["mode"] if row["granted"] else f"waiting for {row['mode']}",
            relation=row["relation"],
        )
    return list(found.values())


async def terminate(session: Session, pid: int) -> bool:
    """End the session; False when not permitted (a superuser's session, for instance)."""
    try:
        return bool(await session.fetchval(QUERIES["terminate"], pid))
    except asyncpg.exceptions.InsufficientPrivilegeError:
        return False


def is_cancellable_autovacuum(blocker: Blocker) -> bool:
    """An autovacuum worker PostgreSQL itself would cancel for a waiting lock request.

    PostgreSQL cancels a (non-wraparound) autovacuum that blocks a lock request once the
    request has waited deadlock_timeout; since zdmproxy waits *without* requesting the lock,
    it does the same on its own, before requesting, instead of queueing traffic for that
    second (POSTGRES-FACTS.md 2.4). Anti-wraparound vacuums are never cancelled.
    """
    return blocker.backend_type == "autovacuum worker" and "to prevent wraparound" not in blocker.query


async def cancel_autovacuum(session: Session, blocker: Blocker) -> bool:
    """Cancel the worker; False when not permitted (needs superuser, or in PostgreSQL 18
    the pg_signal_autovacuum_worker role)."""
    try:
        return bool(await session.fetchval(QUERIES["cancel"], blocker.pid))
    except asyncpg.exceptions.InsufficientPrivilegeError:
        return False


_PG_NAMES = {mode.pg_name for mode in LockMode}
