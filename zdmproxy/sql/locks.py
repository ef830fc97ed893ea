"""PostgreSQL's table-level lock modes and their conflict table, as data.

Modes are named exactly as ``pg_locks.mode`` names them and ordered from the
weakest to the strongest, so ``max()`` over modes gives the strongest request.
The conflict table is the one in PostgreSQL's "Explicit Locking" chapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class LockMode(IntEnum):
    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def pg_name(self) -> str:
        """The name ``pg_locks.mode`` uses, e.g. ``AccessExclusiveLock``."""
        return "".join(part.capitalize() for part in self.name.split("_")) + "Lock"

    @property
    def sql_name(self) -> str:
        """The name ``LOCK TABLE ... IN <mode> MODE`` takes, e.g. ``ACCESS EXCLUSIVE``."""
        return self.name.replace("_", " ")

    @classmethod
    def from_pg_name(cls, name: str) -> LockMode:
        return _BY_PG_NAME[name]

    def conflicts_with(self, other: LockMode) -> bool:
        return other in _CONFLICTS[self]

    def blocks(self) -> str:
        """What application traffic this mode stops, for humans reading a plan."""
        if self is LockMode.ACCESS_EXCLUSIVE:
            return "reads and writes"
        if self.conflicts_with(LockMode.ROW_EXCLUSIVE):
            return "writes"
        if self.conflicts_with(LockMode.SHARE_UPDATE_EXCLUSIVE):
            return "no reads or writes (only DDL, VACUUM and ANALYZE)"
        return "no reads or writes (only DDL)"


_M = LockMode
_CONFLICTS: dict[LockMode, frozenset[LockMode]] = {
    _M.ACCESS_SHARE: frozenset({_M.ACCESS_EXCLUSIVE}),
    _M.ROW_SHARE: frozenset({_M.EXCLUSIVE, _M.ACCESS_EXCLUSIVE}),
    _M.ROW_EXCLUSIVE: frozenset({_M.SHARE, _M.SHARE_ROW_EXCLUSIVE, _M.EXCLUSIVE, _M.ACCESS_EXCLUSIVE}),
    _M.SHARE_UPDATE_EXCLUSIVE: frozenset(
        {
            _M.SHARE_UPDATE_EXCLUSIVE,
            _M.SHARE,
            _M.SHARE_ROW_EXCLUSIVE,
            _M.EXCLUSIVE,
            _M.ACCESS_EXCLUSIVE,
        }
    ),
    _M.SHARE: frozenset(
        {
            _M.ROW_EXCLUSIVE,
            _M.SHARE_UPDATE_EXCLUSIVE,
            _M.SHARE_ROW_EXCLUSIVE,
            _M.EXCLUSIVE,
            _M.ACCESS_EXCLUSIVE,
        }
    ),
    _M.SHARE_ROW_EXCLUSIVE: frozenset(
        {
            _M.ROW_EXCLUSIVE,
            _M.SHARE_UPDATE_EXCLUSIVE,
            _M.SHARE,
            _M.SHARE_ROW_EXCLUSIVE,
            _M.EXCLUSIVE,
            _M.ACCESS_EXCLUSIVE,
        }
    ),
    _M.EXCLUSIVE: frozenset(
        {
            _M.ROW_SHARE,
            _M.ROW_EXCLUSIVE,
            _M.SHARE_UPDATE_EXCLUSIVE,
            _M.SHARE,
            _M.SHARE_ROW_EXCLUSIVE,
            _M.EXCLUSIVE,
            _M.ACCESS_EXCLUSIVE,
        }
    ),
    _M.ACCESS_EXCLUSIVE: frozenset(LockMode),
}
_BY_PG_NAME = {mode.pg_name: mode for mode in LockMode}


@dataclass(frozen=True, order=True)
class RelationName:
    """A relation as written or resolved; ``schema`` is None when only the catalog could tell."""

    schema: str | None
    name: str

    def __str__(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class LockRequest:
    """One table-level lock a statement takes: on a table, an index, or a relation it creates.

    ``created`` marks relations the statement itself creates: they are locked
    but nobody else can be waiting for them, and they cannot be locked first.
    """

    relation: RelationName
    mode: LockMode
    kind: str = "table"  # "table" or "index"
    created: bool = False

    def as_dict(self) -> dict[str, str]:
        return {"relation": str(self.relation), "mode": self.mode.pg_name}


def strongest(requests: list[LockRequest]) -> list[LockRequest]:
    """Keep one request per relation, the strongest, in first-seen order."""
    best: dict[RelationName, LockRequest] = {}
    for req in requests:
        seen = best.get(req.relation)
        if seen is None or req.mode > seen.mode:
            best[req.relation] = req if seen is None else _replace_mode(seen, req.mode)
    return list(best.values())


def _replace_mode(req: LockRequest, mode: LockMode) -> LockRequest:
    return LockRequest(req.relation, mode, req.kind, req.created)
