"""Pre-flight: who holds or awaits a lock that our step's lock requests would queue behind.

Conflicts are decided in Python from the lock-mode table (zdmproxy.sql.locks),
so the SQL stays a plain read of pg_locks joined to pg_stat_activity and, for the
locks no session holds, pg_prepared_xacts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from zdmproxy.engine.connector import Session
from zdmproxy.engine.events import Blocker
from zdmproxy.engine.queries import QUERIES
from zdmproxy.errors import UsageError
from zdmproxy.sql.locks import LockMode, LockRequest, RelationName
from zdmproxy.sql.names import quote_relation

AUTOVACUUM_WORKER = "autovacuum worker"
WRAPAROUND_MARK = "(to prevent wraparound)"  # how a worker reports it (autovacuum.c autovac_report_activity)


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
    """Sessions holding, or queued ahead for, a lock that conflicts with one of ours, and
    prepared transactions holding one (pid 0: they have no session).

    An autovacuum worker among them comes with ``wraparound`` decided from the catalog
    (``vacuum_for_wraparound``), so ``is_cancellable_autovacuum`` needs no query text.
    """
    if not targets:
        return []
    modes = {t.oid: t.request.mode for t in targets}
    rows = await session.fetch(QUERIES["conflicting_locks"], list(modes), list(own_pids))
    found: dict[int | str, Blocker] = {}
    for row in rows:
        theirs = LockMode.from_pg_name(row["mode"]) if row["mode"] in _PG_NAMES else None
        ours = modes.get(row["relation_oid"])
        if theirs is None or ours is None or not ours.conflicts_with(theirs):
            continue
        blocker = Blocker.from_row(
            row,
            mode=row["mode"] if row["granted"] else f"waiting for {row['mode']}",
            relation=row["relation"],
        )
        found.setdefault(blocker.key, blocker)
    workers = [b.pid for b in found.values() if b.backend_type == AUTOVACUUM_WORKER]
    if workers:
        rows = await session.fetch(QUERIES["autovacuum_wraparound"], workers)
        decided = {row["pid"]: vacuum_for_wraparound(row) for row in rows}
        for key, blocker in found.items():
            if blocker.backend_type == AUTOVACUUM_WORKER:
                wraparound = decided.get(blocker.pid)
                # The worker's own words, when it reported them and we may read them, can only
                # add to the catalog's verdict: they never make a vacuum cancellable.
                if WRAPAROUND_MARK in blocker.query:
                    wraparound = True
                found[key] = replace(blocker, wraparound=wraparound)
    return list(found.values())


async def terminate(session: Session, pid: int) -> bool:
    """End the session; False when not permitted (a superuser's session, for instance), and
    for pid 0, a prepared transaction: it has no backend, and nothing may end it but the
    COMMIT/ROLLBACK PREPARED of whoever prepared it."""
    if pid <= 0:
        return False
    try:
        return bool(await session.fetchval(QUERIES["terminate"], pid))
    except asyncpg.exceptions.InsufficientPrivilegeError:
        return False


def is_cancellable_autovacuum(blocker: Blocker) -> bool:
    """An autovacuum worker PostgreSQL itself would cancel for a waiting lock request.

    PostgreSQL cancels a (non-wraparound) autovacuum that blocks a lock request once the
    request has waited deadlock_timeout; since zdmproxy waits *without* requesting the lock,
    it does the same on its own, before requesting, instead of queueing traffic for that
    second (POSTGRES-FACTS.md 2.4). Anti-wraparound vacuums are never cancelled, and neither is
    a worker whose purpose could not be told (``wraparound`` None): it is waited for.

    Whether the worker is an autovacuum worker at all rests on pg_stat_activity.backend_type,
    which a role without pg_read_all_stats cannot read (it sees NULL, as for the query text):
    such a role never cancels an autovacuum, it waits for it.
    """
    return blocker.backend_type == AUTOVACUUM_WORKER and blocker.wraparound is False


def vacuum_for_wraparound(row: Mapping[str, Any]) -> bool | None:
    """Whether PostgreSQL may be running this autovacuum worker's vacuum to prevent wraparound
    (a row of the ``autovacuum_wraparound`` query); None when the worker's table is unknown.

    The rule is PostgreSQL's own, from autovacuum.c ``relation_needs_vacanalyze`` (the same in
    15 and 18): a table is vacuumed for wraparound when ``age(relfrozenxid)`` exceeds its freeze
    max age, or ``mxid_age(relminmxid)`` its multixact freeze max age. Each limit is the table's
    reloption (``autovacuum_freeze_max_age``, ``autovacuum_multixact_freeze_max_age``; a toast
    table without reloptions of its own uses its main table's) capped by the server setting of
    the same name. The worker then sets PROC_VACUUM_FOR_WRAPAROUND for that vacuum, and
    ProcSleep (proc.c) never cancels a worker with that flag. An analyze runs in a transaction
    of its own without the flag, and PostgreSQL cancels it: a worker the progress views show
    analyzing is cancellable whatever the ages.

    The worker's table comes from pg_stat_progress_vacuum/analyze or, when they do not show it
    (``track_activities`` off hides progress and query text alike, and a role without
    pg_read_all_stats sees no relid), from the ShareUpdateExclusiveLock it holds in pg_locks.

    Where this reads more than the worker did, it errs towards "wraparound" (waiting): the worker
    decided at the start of its pass and the ages only grow since; a table over its limit whose
    worker's phase is unknown counts as wraparound. Where it may read less: the server lowers
    the multixact limit itself when multixact member space runs short
    (``MultiXactMemberFreezeThreshold``), which SQL cannot see; ``find_blockers`` therefore also
    takes the worker's own "(to prevent wraparound)" when its query text is readable.
    """
    if row["relation"] is None:
        return None
    if row["vacuuming"] is False:
        return False
    xid_age, mxid_age = row["xid_age"], row["mxid_age"]
    return bool(
        (xid_age is not None and xid_age > row["freeze_max_age"])
        or (mxid_age is not None and mxid_age > row["multixact_freeze_max_age"])
    )


async def cancel_autovacuum(session: Session, blocker: Blocker) -> bool:
    """Cancel the worker; False when not permitted (needs superuser, or in PostgreSQL 18
    the pg_signal_autovacuum_worker role); never sent to one that is not cancellable."""
    if not is_cancellable_autovacuum(blocker):
        return False
    try:
        return bool(await session.fetchval(QUERIES["cancel"], blocker.pid))
    except asyncpg.exceptions.InsufficientPrivilegeError:
        return False


_PG_NAMES = {mode.pg_name for mode in LockMode}


async def lock_report(session: Session, relations: Sequence[str], own_pids: Sequence[int]) -> list[Blocker]:
    """Everyone holding or queued for a lock on ``relations`` (names as written; none: every
    relation someone is queued for or a prepared transaction holds), prepared transactions
    included: what an ACCESS EXCLUSIVE request would wait for, which is every one of them."""
    query, args = ("relations_by_name", (list(relations),)) if relations else ("contended_relations", ())
    rows = await session.fetch(QUERIES[query], *args)
    missing = [row["name"] for row in rows if row["oid"] is None]
    if missing:
        raise UsageError(f"no such relation: {', '.join(missing)}")
    everything = LockMode.ACCESS_EXCLUSIVE  # conflicts with every mode: keeps every holder
    targets = [Target(row["oid"], LockRequest(RelationName(None, row["name"]), everything)) for row in rows]
    return await find_blockers(session, targets, own_pids)
