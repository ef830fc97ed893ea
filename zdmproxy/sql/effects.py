"""What running one statement does to the database, as the lock catalogue sees it."""

from __future__ import annotations

from dataclasses import dataclass, field

from zdmproxy.sql.locks import LockMode, LockRequest, RelationName, strongest


@dataclass(frozen=True)
class Effects:
    """The contract of one statement: its locks, rewrites, scans and transaction needs.

    ``locks`` holds one request per relation (the strongest mode it takes
    there); ``notes`` says where the answer rests on an assumption because the
    catalog was not available, so a plan never hides a guess. ``unverified`` is
    set, with the reason, when the catalogue does not know what the statement
    locks at all: its ``locks`` are then empty rather than guessed, and ``apply``
    runs it only when the caller allows unverified locks.
    """

    kind: str
    locks: tuple[LockRequest, ...]
    rewrites: tuple[RelationName, ...] = ()
    scans: tuple[RelationName, ...] = ()
    transactional: bool = True
    notes: tuple[str, ...] = ()
    unverified: str | None = None


@dataclass
class EffectsBuilder:
    """Accumulates effects while a statement's parts are classified one by one."""

    kind: str
    transactional: bool = True
    locks: list[LockRequest] = field(default_factory=list)
    rewrites: list[RelationName] = field(default_factory=list)
    scans: list[RelationName] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unverified: str | None = None

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

    def not_catalogued(self, reason: str) -> None:
        """The catalogue cannot tell what this statement locks: say why, and claim no lock.

        A guessed lock would be taken by ``apply`` itself (LOCK TABLE before the
        statement), so a guess of ACCESS EXCLUSIVE causes the outage it guards against.
        """
        if self.unverified is None:
            self.unverified = reason

    def note_triggers(self, names: list[str], event: str) -> None:
        """Triggers run code: what their functions lock is not predicted, and said."""
        if names:
            self.note(
                f"{event} fires trigger{'s' if len(names) > 1 else ''} {', '.join(names)}: what "
                "its function locks is not predicted (it runs under the same timeouts and watchdog)"
            )

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def build(self) -> Effects:
        return Effects(
            kind=self.kind,
            locks=() if self.unverified else tuple(strongest(self.locks)),
            rewrites=tuple(self.rewrites),
            scans=tuple(self.scans),
            transactional=self.transactional,
            notes=tuple(self.notes),
            unverified=self.unverified,
        )
