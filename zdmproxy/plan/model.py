"""Plan and Step: the contract between planning and execution (DESIGN.md, "A plan")."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from zdmproxy.sql.effects import Effects
from zdmproxy.sql.locks import LockRequest, RelationName
from zdmproxy.sql.parse import Statement


class Phase(StrEnum):
    EXPAND = "expand"
    BACKFILL = "backfill"
    VALIDATE = "validate"
    CONTRACT = "contract"
    SINGLE = "single"


@dataclass(frozen=True)
class Backfill:
    """A batched UPDATE (or DELETE) the engine runs in keyset batches (engine/backfill.py),
    each batch one short transaction through the attempt logic, with a checkpoint (the last
    key done) committed in the same transaction.

    ``key`` is the table's primary key, in index order; batches walk it upwards from the
    checkpoint to the upper bound read when the backfill starts, so rows inserted later are
    never chased (the default or the sync trigger covers them) and the backfill terminates.
    ``assignments`` is the SET list as SQL (``"note_new = note::bigint"``), ``predicate`` an
    extra condition every batch keeps (``"note IS NULL"``), as SQL or None.
    """

    table: RelationName
    key: tuple[str, ...]
    assignments: str | None  # None for a DELETE
    predicate: str | None = None

    @property
    def deletes(self) -> bool:
        return self.assignments is None


@dataclass(frozen=True)
class Step:
    """One unit the engine runs and retries on its own: one transaction, or one
    non-transactional statement, or (``backfill`` set) one batched backfill whose every
    batch is such a transaction.

    ``revert`` is the way back: SQL that undoes this step once it has succeeded (pgroll keeps
    Start/Complete/Rollback side by side); ``zdmproxy rollback`` runs the reverts of an
    expand that was not contracted, newest first. None when the step needs no undoing (a
    VALIDATE) or cannot be undone (a contract step: it runs only after the expand is final).
    """

    sql: str
    phase: Phase
    transactional: bool
    locks: tuple[LockRequest, ...]
    rewrites: tuple[RelationName, ...]
    scans: tuple[RelationName, ...]
    reason: str
    kind: str = ""  # what the statement is, as the catalogue names it ("REINDEX CONCURRENTLY")
    destructive: str | None = None  # why the step loses data, when it does
    # Why the lock catalogue cannot say what the step locks, when it cannot: apply refuses
    # such a step unless unverified locks are allowed, and then takes no LOCK TABLE first.
    unverified: str | None = None
    revert: str | None = None
    backfill: Backfill | None = None
    # Why the step stops traffic for as long as it reads a large table, and the online way to
    # get the same result, when no rule could make it online: apply refuses such a step unless
    # long locks are allowed (plan/rules/long_lock.py).
    long_lock: str | None = None

    @property
    def rewrites_table(self) -> bool:
        return bool(self.rewrites)

    @property
    def scans_table(self) -> bool:
        return bool(self.scans)

    def as_dict(self) -> dict[str, object]:
        return {
            "sql": self.sql,
            "kind": self.kind,
            "phase": self.phase.value,
            "transactional": self.transactional,
            "locks": [lock.as_dict() for lock in self.locks],
            "rewrites_table": self.rewrites_table,
            "scans_table": self.scans_table,
            "reason": self.reason,
            "destructive": self.destructive,
            "unverified": self.unverified,
            "revert": self.revert,
            "long_lock": self.long_lock,
            "backfill": None
            if self.backfill is None
            else {
                "table": str(self.backfill.table),
                "key": list(self.backfill.key),
                "assignments": self.backfill.assignments,
                "predicate": self.backfill.predicate,
            },
        }


@dataclass(frozen=True)
class RelationSize:
    """How big a relation the statement touches is, from the catalog (estimates)."""

    relation: RelationName
    rows_estimate: int | None
    total_bytes: int | None

    def describe(self) -> str:
        parts = []
        if self.rows_estimate is not None:
            parts.append(f"~{_count(self.rows_estimate)} rows")
        if self.total_bytes is not None:
            parts.append(_bytes(self.total_bytes))
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {
            "relation": str(self.relation),
            "rows_estimate": self.rows_estimate,
            "total_bytes": self.total_bytes,
        }


def _count(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class PlannedStatement:
    statement: Statement
    effects: Effects
    steps: tuple[Step, ...]
    sizes: tuple[RelationSize, ...] = ()  # known only with a database

    def as_dict(self) -> dict[str, object]:
        return {
            "sql": self.statement.text,
            "position": self.statement.position,
            "line": self.statement.line,
            "kind": self.effects.kind,
            "transactional": self.effects.transactional,
            "locks": [lock.as_dict() for lock in self.effects.locks],
            "rewrites": [str(r) for r in self.effects.rewrites],
            "scans": [str(r) for r in self.effects.scans],
            "notes": list(self.effects.notes),
            "unverified": self.effects.unverified,
            "sizes": [size.as_dict() for size in self.sizes],
            "steps": [step.as_dict() for step in self.steps],
        }


@dataclass(frozen=True)
class Plan:
    statements: tuple[PlannedStatement, ...]
    server_version_num: int
    from_catalog: bool  # facts came from a live database, not assumptions

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(step for planned in self.statements for step in planned.steps)

    def as_dict(self) -> dict[str, object]:
        return {
            "server_version_num": self.server_version_num,
            "from_catalog": self.from_catalog,
            "statements": [planned.as_dict() for planned in self.statements],
        }
