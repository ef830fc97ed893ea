"""From a script to a Plan.

Each statement is offered to the rewrite rules (plan/rules/registry.py) in
order; the first that applies replaces it with its safe steps (expand,
backfill, validate, contract). A statement no rule takes becomes one step
that runs as written, guarded by the engine (pre-flight, timeouts, watchdog,
retries).
"""

from __future__ import annotations

from zdmproxy.plan.destructive import destructive_reason
from zdmproxy.plan.model import Phase, Plan, PlannedStatement, RelationSize, Step
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.plan.rules.registry import RULES
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql import versions
from zdmproxy.sql.catalogue import classify
from zdmproxy.sql.effects import Effects
from zdmproxy.sql.facts import CatalogFacts, RelationInfo
from zdmproxy.sql.learn import learn
from zdmproxy.sql.locks import LockMode, RelationName
from zdmproxy.sql.parse import Statement, parse_script


def make_plan(script: str, facts: CatalogFacts | None = None, policy: MigrationPolicy | None = None) -> Plan:
    facts = facts or CatalogFacts()
    policy = policy or MigrationPolicy.model_validate({})
    from_catalog = facts.server_version_num is not None
    version = facts.server_version_num or versions.DEFAULT_VERSION_NUM
    planned = []
    by_name = {info.name: info for info in facts.relations.values()}

    def plan_statement(statement: Statement, facts: CatalogFacts) -> tuple[Step, ...]:
        effects = classify(statement, facts, version)
        context = RuleContext(statement, effects, facts, version, policy, from_catalog, plan_statement)
        for rule in RULES:
            steps = rule(context)
            if steps:
                return steps
        return (_as_written(statement, effects, _sizes(effects, by_name)),)

    for statement in parse_script(script):
        effects = classify(statement, facts, version)
        sizes = tuple(_sizes(effects, by_name).values())
        planned.append(PlannedStatement(statement, effects, plan_statement(statement, facts), sizes))
        facts = learn(facts, statement)
    return Plan(tuple(planned), version, from_catalog=from_catalog)


def _sizes(effects: Effects, by_name: dict[RelationName, RelationInfo]) -> dict[RelationName, RelationSize]:
    return {
        lock.relation: RelationSize(
            lock.relation, by_name[lock.relation].rows_estimate, by_name[lock.relation].total_bytes
        )
        for lock in effects.locks
        if lock.relation in by_name and by_name[lock.relation].total_bytes is not None
    }


def _as_written(statement: Statement, effects: Effects, sizes: dict[RelationName, RelationSize]) -> Step:
    """The statement as one step: what runs when no rule applies."""
    return Step(
        sql=statement.text,
        phase=Phase.SINGLE,
        transactional=effects.transactional,
        locks=effects.locks,
        rewrites=effects.rewrites,
        scans=effects.scans,
        reason=describe(effects, sizes),
        kind=effects.kind,
        destructive=destructive_reason(statement.node),
        unverified=effects.unverified,
    )


def describe(effects: Effects, sizes: dict[RelationName, RelationSize] | None = None) -> str:
    """One line a reviewer can act on: what is locked, what it blocks, for how long."""
    if effects.unverified:
        return f"{effects.kind}: not in the lock catalogue ({effects.unverified}); its locks are unknown"
    held = [lock for lock in effects.locks if not lock.created]
    if not held:
        return f"{effects.kind}: takes no lock on existing tables"
    strongest = max(held, key=lambda lock: lock.mode)
    where = ", ".join(str(lock.relation) for lock in held if lock.mode == strongest.mode)
    text = f"{effects.kind}: {strongest.mode.pg_name} on {where} blocks {strongest.mode.blocks()}"
    sizes = sizes or {}

    def sized(names: tuple[RelationName, ...]) -> str:
        return ", ".join(
            f"{name} ({sizes[name].describe()})" if name in sizes else str(name) for name in names
        )

    if effects.rewrites:
        text += "; rewrites " + sized(effects.rewrites) + " while holding it"
    elif effects.scans:
        text += "; scans " + sized(effects.scans) + " while holding it"
    elif strongest.mode.conflicts_with(LockMode.ROW_EXCLUSIVE):
        text += " briefly (no scan, no rewrite)"
    if not effects.transactional:
        text += "; runs outside a transaction"
    return text
