"""What the runner tells whoever keeps the record of a migration (the journal), and asks it back.

The engine knows nothing about where the record lives: the journal
(zdmproxy.journal) implements this protocol against the target database, and
a runner without one (tests, a dry library use) gets ``NO_LEDGER``, which
remembers nothing and so gives at-least-once behaviour after a lost
connection. Every call is made by the runner at a fixed point of a step's
life, so the record can never say more than what happened:

- ``claim`` on every new step session, before anything runs on it: the
  ledger takes the migration's run lock *on that session*, so the lock lives
  exactly as long as the backend that could still be changing the schema;
- ``commit_statement``: SQL the step's own transaction runs just before
  COMMIT, so a transactional step and the row saying it is done commit
  together;
- ``step_committed`` after a lost connection: did that COMMIT happen?
- ``checkpoint`` / ``checkpoint_statement``: where a backfill got to, and the SQL each
  batch's own transaction runs to move it (so a batch and its checkpoint commit together);
- ``controls``: what an operator asked of this migration (pause, cancel, live throttle),
  read between steps and between backfill batches, whichever process asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from zdmproxy.engine.attempt import AttemptRecord
from zdmproxy.engine.connector import Session
from zdmproxy.engine.outcomes import Outcome
from zdmproxy.errors import ZdmError


@dataclass(frozen=True)
class Checkpoint:
    """How far a backfill got: the last key it finished (its primary key's values, in key
    order, as JSON values) and how many rows it walked up to there.

    ``upper`` is the key the backfill stops at, fixed when it first started (rows inserted
    later are covered by the default or the sync trigger), so a resumed run walks the same
    rows; the rest is progress for status and the HTTP API.
    """

    position: tuple[Any, ...]
    rows_done: int
    upper: tuple[Any, ...] = ()
    rows_total_estimate: int | None = None
    batch_rows: int | None = None
    throttled_by: str | None = None


@dataclass(frozen=True)
class Controls:
    """What an operator asked of a running migration (the journal's control plane)."""

    request: Literal["pause", "cancel"] | None = None
    throttle: Mapping[str, Any] = field(default_factory=dict)  # live backfill knobs, by policy name


class Ledger(Protocol):
    async def claim(self, session: Session) -> None:
        """Take the run lock on ``session``; raise MigrationBusy if another process holds it."""

    async def step_started(self, index: int) -> str:
        """Record that step ``index`` is about to run; return the state it had: ``pending``,
        ``running`` (an earlier run began it and never recorded how it ended: a crash, a kill, a
        lost connection), ``failed``, or ``succeeded`` (done already: it must not run). Raise
        MigrationBusy if another process owns the migration now."""

    def commit_statement(self, index: int) -> tuple[str, tuple[Any, ...]] | None:
        """SQL (and its arguments) a transactional step runs inside its transaction before COMMIT."""

    async def step_committed(self, index: int) -> bool:
        """Whether the transaction of step ``index`` committed (asked after a lost connection)."""

    async def step_succeeded(self, index: int) -> None:
        """Record a non-transactional step's success (transactional ones commit their own)."""

    async def step_failed(self, index: int, outcome: Outcome, error: ZdmError) -> None: ...

    async def attempt_ended(self, index: int, record: AttemptRecord) -> None: ...

    async def checkpoint(self, index: int) -> Checkpoint | None:
        """Where the backfill of step ``index`` got to; None when it has not started."""

    def checkpoint_statement(self, index: int, checkpoint: Checkpoint) -> tuple[str, tuple[Any, ...]] | None:
        """SQL (and its arguments) a backfill batch runs inside its transaction before COMMIT."""

    async def controls(self) -> Controls:
        """What an operator asked of this migration now."""


class NoLedger:
    """Remembers nothing: every step runs; after a lost COMMIT it is run again."""

    async def claim(self, session: Session) -> None:
        return None

    async def step_started(self, index: int) -> str:
        return "pending"

    def commit_statement(self, index: int) -> tuple[str, tuple[Any, ...]] | None:
        return None

    async def step_committed(self, index: int) -> bool:
        return False

    async def step_succeeded(self, index: int) -> None:
        return None

    async def step_failed(self, index: int, outcome: Outcome, error: ZdmError) -> None:
        return None

    async def attempt_ended(self, index: int, record: AttemptRecord) -> None:
        return None

    async def checkpoint(self, index: int) -> Checkpoint | None:
        return None

    def checkpoint_statement(self, index: int, checkpoint: Checkpoint) -> tuple[str, tuple[Any, ...]] | None:
        return None

    async def controls(self) -> Controls:
        return Controls()


NO_LEDGER: Ledger = NoLedger()
