"""Obeying an operator's pause or cancel (the journal's control plane) at a safe point.

Any process may record the request (``zdmproxy pause ID``, the HTTP API); the process running
the migration reads it through its Ledger between steps (and the backfill between batches),
so a stop never cuts a step in half unless the operator's own daemon cancels that step.
"""

from __future__ import annotations

from zdmproxy.engine.ledger import Ledger
from zdmproxy.errors import CancelRequested, PauseRequested


async def obey(ledger: Ledger, migration_id: str, next_step: int) -> None:
    """Raise PauseRequested or CancelRequested if an operator asked for it; ``next_step`` is the
    0-based index of the step that would run next (it did not start)."""
    request = (await ledger.controls()).request
    if request == "pause":
        raise PauseRequested(
            f"migration {migration_id!r} paused before step {next_step + 1} as an operator asked; "
            "resume it (`zdmproxy resume ID`, POST /v1/migrations/ID/resume) to go on from there"
        )
    if request == "cancel":
        raise CancelRequested(
            f"migration {migration_id!r} cancelled before step {next_step + 1} as an operator asked; "
            f"the steps before it stay applied, the rest did not run (resume runs them)"
        )
