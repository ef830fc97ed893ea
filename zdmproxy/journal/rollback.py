"""``zdmproxy rollback ID``: undo an expand that was not contracted (the seeds' rollback strategy).

Every expand step carries its way back (``Step.revert``: drop the column, trigger, function,
check or index it added). A rollback runs those of the steps that took effect, newest first,
through the engine like any step (pre-flight, timeouts, watchdog, retries), holding the
migration's run lock so no apply runs at the same time. The reverts are idempotent (IF EXISTS),
so an interrupted rollback is simply run again: the ledger records nothing per revert.
Afterwards the migration is ``cancelled`` in phase ``rollback`` and its steps are pending again:
applying it later starts over. Once a contract step ran the old schema is gone, and rollback refuses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from zdmproxy.engine.catalog import read_facts
from zdmproxy.engine.connector import Session, connect
from zdmproxy.engine.ledger import Controls, NoLedger
from zdmproxy.engine.runner import MigrationReport, Runner
from zdmproxy.errors import NotFound, PhaseOrder, ZdmError
from zdmproxy.journal.coordinator import Coordinator
from zdmproxy.journal.ledger import JournalLedger
from zdmproxy.journal.store import MigrationRecord, StepRecord
from zdmproxy.plan.model import Step
from zdmproxy.plan.phases import expand_end
from zdmproxy.plan.planner import make_plan
from zdmproxy.sql.parse import parse_script


class _RollbackLedger(NoLedger):
    """Holds the migration's run lock (on every step session the runner opens) and obeys the
    operator's controls; records nothing else: the reverts are idempotent, so at-least-once is
    exactly right."""

    def __init__(self, ledger: JournalLedger) -> None:
        self.ledger = ledger

    async def claim(self, session: Session) -> None:
        await self.ledger.claim(session)

    async def controls(self) -> Controls:
        return await self.ledger.controls()


def _took_effect(step: StepRecord) -> bool:
    """Whether the step may have changed the schema: it succeeded, or it is a non-transactional
    one cut off or failed half-way (a CONCURRENTLY build leaves an invalid index behind). A
    transactional step that failed rolled back: a contract swap that failed leaves the expand
    undoable."""
    return step.state == "succeeded" or (not step.transactional and step.state in ("running", "failed"))


def _undone(steps: Sequence[StepRecord]) -> list[StepRecord]:
    """The expand steps to undo, newest first."""
    return [s for s in reversed(steps) if s.step.revert is not None and _took_effect(s)]


async def rollback(coordinator: Coordinator, migration_id: str, report: MigrationReport) -> MigrationRecord:
    """Undo the expand of ``migration_id``; returns the migration as recorded afterwards."""
    journal = coordinator.journal
    if await journal.migration(migration_id) is None:
        raise NotFound(f"no migration {migration_id!r} in the journal (`zdmproxy history` lists them)")
    ledger = JournalLedger(journal, migration_id, coordinator.caller)
    session = await connect(coordinator.dsn, f"zdmproxy:{migration_id}", step_session=True)
    runner: Runner | None = None
    try:
        await ledger.claim(session)  # MigrationBusy while a process runs it
        record = await journal.migration(migration_id)
        assert record is not None
        steps = await journal.steps(migration_id)
        if record.state == "succeeded" or any(
            map(_took_effect, steps[expand_end([s.step for s in steps]) :])
        ):
            raise PhaseOrder(
                f"cannot roll back migration {migration_id!r}: its contract phase has run (the old "
                "schema is gone). Undo it with a new migration"
            )
        reverts = await _revert_steps(session, _undone(steps), coordinator)
        await ledger.start(session)
        runner = Runner(
            coordinator.dsn,
            migration_id,
            coordinator.policy,
            coordinator.sink,
            ledger=_RollbackLedger(ledger),
            session=session,
        )
        try:
            await runner.run_steps(reverts, report, close_session=False)
        except ZdmError as error:
            await ledger.finish("failed", error)
            raise
        await journal.steps_rolled_back(migration_id)
        await ledger.finish_phase("cancelled", "rollback")
    finally:
        if runner is not None:
            await runner.close()
        if not session.is_closed():
            await session.close()
    done = await journal.migration(migration_id)
    assert done is not None
    return done


async def _revert_steps(session: Session, undone: list[StepRecord], coordinator: Coordinator) -> list[Step]:
    """The reverts as engine steps, planned from the catalog as it is now, by the same rules as any
    statement (a SET NOT NULL that undoes a DROP NOT NULL goes through its helper check). They
    only drop what the expand added, so none counts as destructive."""
    script = ";\n".join(s.step.revert or "" for s in undone)
    if not script:
        return []
    facts = await read_facts(session, parse_script(script))
    plan = make_plan(script, facts, coordinator.policy)
    return [
        dataclasses.replace(step, reason=f"undo step {record.index + 1}: {step.reason}", destructive=None)
        for record, planned in zip(undone, plan.statements, strict=True)
        for step in planned.steps
    ]
