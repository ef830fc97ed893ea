"""What a rewrite rule sees, and how it turns SQL it generates into Steps.

A rule is a pure function ``(RuleContext) -> tuple[Step, ...] | None``: None
when it does not apply to the statement, else the ordered steps that replace
it. Rules never guess a step's locks: every SQL they generate goes through the
same lock catalogue as the user's statements (``RuleContext.steps``), with the
catalog facts learned from the steps before it, so the plan's lock lists are
exactly what the catalogue test checks against pg_locks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pglast import parse_sql

from zdmproxy.plan.destructive import destructive_reason
from zdmproxy.plan.model import Backfill, Phase, Step
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.catalogue import classify
from zdmproxy.sql.effects import Effects
from zdmproxy.sql.facts import CatalogFacts
from zdmproxy.sql.learn import learn
from zdmproxy.sql.locks import LockRequest, RelationName, strongest
from zdmproxy.sql.parse import Statement


@dataclass(frozen=True)
class RuleContext:
    """One statement of the script, as written, with everything known about the database.

    ``from_catalog`` is False when the facts are assumptions (no database): a rule whose
    choice depends on a fact it does not have (a table's size, whether a column is
    nullable) must choose the safe plan and say so in the reason, never present a guess
    as a fact. ``replan`` plans another statement as the planner would (a rule that splits
    a statement hands each part back through it).
    """

    statement: Statement
    effects: Effects
    facts: CatalogFacts
    version: int
    policy: MigrationPolicy
    from_catalog: bool
    replan: Callable[[Statement, CatalogFacts], tuple[Step, ...]]

    def steps(self) -> StepBuilder:
        return StepBuilder(self.facts, self.version)


@dataclass
class StepBuilder:
    """Builds a rule's steps in order; each step's locks come from the catalogue, classified
    with what the steps before it teach (a VALIDATE after the NOT VALID that added it)."""

    facts: CatalogFacts
    version: int
    built: list[Step] = field(default_factory=list)

    def add(
        self,
        sql: str,
        phase: Phase,
        reason: str,
        *,
        revert: str | None = None,
        backfill: Backfill | None = None,
    ) -> StepBuilder:
        statement = statement_of(sql)
        effects = classify(statement, self.facts, self.version)
        self.built.append(
            Step(
                sql=statement.text,
                phase=phase,
                transactional=effects.transactional,
                locks=effects.locks,
                rewrites=effects.rewrites,
                scans=effects.scans,
                reason=reason,
                kind=effects.kind,
                destructive=destructive_reason(statement.node),
                unverified=effects.unverified,
                revert=revert,
                backfill=backfill,
            )
        )
        self.facts = learn(self.facts, statement)
        return self

    def add_transaction(
        self,
        sqls: Sequence[str],
        phase: Phase,
        reason: str,
        *,
        kind: str,
        destructive: str | None,
        revert: str | None = None,
    ) -> StepBuilder:
        """Several generated statements as one step, run in one transaction: a swap that must be
        all or nothing (no application ever sees a column renamed away and its replacement not
        yet in place). Each is classified with the facts the ones before it teach; the step
        takes the strongest lock of each on every relation. ``destructive`` is the rule's own
        word: dropping a column whose values were copied elsewhere loses nothing."""
        locks: list[LockRequest] = []
        rewrites: list[RelationName] = []
        scans: list[RelationName] = []
        unverified: str | None = None
        texts: list[str] = []
        for sql in sqls:
            statement = statement_of(sql)
            effects = classify(statement, self.facts, self.version)
            assert effects.transactional, f"{effects.kind} cannot run in a transaction"
            locks.extend(effects.locks)
            rewrites.extend(r for r in effects.rewrites if r not in rewrites)
            scans.extend(r for r in effects.scans if r not in scans)
            unverified = unverified or effects.unverified
            texts.append(statement.text)
            self.facts = learn(self.facts, statement)
        self.built.append(
            Step(
                sql=";\n".join(texts),
                phase=phase,
                transactional=True,
                locks=tuple(strongest(locks)),
                rewrites=tuple(rewrites),
                scans=tuple(scans),
                reason=reason,
                kind=kind,
                destructive=destructive,
                unverified=unverified,
                revert=revert,
            )
        )
        return self

    def add_planned(self, sql: str, replan: Callable[[Statement, CatalogFacts], tuple[Step, ...]]) -> int:
        """Generated SQL handed to the planner's rules (``RuleContext.replan``: another rule makes
        it online), its steps appended in order; returns the index of the first of them."""
        statement = statement_of(sql)
        first = len(self.built)
        self.built.extend(replan(statement, self.facts))
        self.facts = learn(self.facts, statement)
        return first

    def done(self) -> tuple[Step, ...]:
        return tuple(self.built)


def statement_of(sql: str) -> Statement:
    """One generated statement, parsed (a rule's SQL must be exactly one statement)."""
    (raw,) = parse_sql(sql)
    assert raw.stmt is not None
    return Statement(text=sql.strip().rstrip(";"), position=0, line=1, node=raw.stmt)
