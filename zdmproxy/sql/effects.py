"""What running one statement does to the database, as the lock catalogue sees it."""

from __future__ import annotations

from dataclasses import dataclass, field

from zdmproxy.sql.locks import LockMode, LockRequest, RelationName, strongest


@dataclass(frozen=True)
class Effects:
    """The contract of one statement: its locks, rewrites, scans and transaction needs.

    ``locks`` holds one request per relation (the strongest mode it takes
    there); ``notes`` says where the answer rests on an assumption because the
    catalog was not available, so a plan never hides a guess.
    """

    kind: str
    locks: tuple[LockRequest, ...]
    rewrites: tuple[RelationName, ...] = ()
    scans: tuple[RelationName, ...] = ()
    transactional: bool = True
    notes: tuple[str, ...] = ()


@dataclass
class EffectsBuilder:
    """Accumulates effects while a statement's parts are classified one by one."""

    kind: str
    transactional: bool = True
    locks: list[LockRequest] = field(default_factory=list)
    rewrites: list[RelationName] = field(default_factory=list)
    scans: list[RelationName] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lock(
        self, relation: RelationName, mode: LockMode, *, kind: str = "table", created: bool = False
    ) -> None:
        self.locks.append(LockRequest(relation, mode, kind, created))

    def rewrite(self, relation: RelationName, *, reads: bool = True) -> None:
        """Record new storage for ``relation``; ``reads`` is False when the old rows are not
        read at all (TRUNCATE), so the rewrite is no scan."""
        if relation not in self.rewrites:
            self.rewrites.append(relation)
        if reads:
            self.scan(relation)

    def scan(self, relation: RelationName) -> None:
        if relation not in self.scans:
            self.scans.append(relation)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def build(self) -> Effects:
        return Effects(
            kind=self.kind,
            locks=tuple(strongest(self.locks)),
            rewrites=tuple(self.rewrites),
            scans=tuple(self.scans),
            transactional=self.transactional,
            notes=tuple(self.notes),
        )
