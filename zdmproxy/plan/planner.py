"""From a script to a Plan.

Today every statement becomes one step that runs as written, guarded by the
engine (pre-flight, timeouts, watchdog, retries). Rewrite rules that split a
dangerous statement into expand/backfill/validate/contract steps plug in
here, per statement, and produce several Steps instead of one.
"""

from __future__ import annotations

from zdmproxy.plan.destructive import destructive_reason
from zdmproxy.plan.model import Phase, Plan, PlannedStatement, Step
from zdmproxy.sql import versions
from zdmproxy.sql.catalogue import classify
from zdmproxy.sql.effects import Effects
from zdmproxy.sql.facts import CatalogFacts
from zdmproxy.sql.learn import learn
from zdmproxy.sql.locks import LockMode
from zdmproxy.sql.parse import Statement, parse_script


def make_plan(script: str, facts: CatalogFacts | None = None) -> Plan:
    facts = facts or CatalogFacts()
    from_catalog = facts.server_version_num is not None
    version = facts.server_version_num or versions.DEFAULT_VERSION_NUM
    planned = []
    for statement in parse_script(script):
        effects = classify(statement, facts, version)
        planned.append(PlannedStatement(statement, effects, (_as_written(statement, effects),)))
        facts = learn(facts, statement)
    return Plan(tuple(planned), version, from_catalog=from_catalog)


def _as_written(statement: Statement, effects: Effects) -> Step:
    return Step(
        sql=statement.text,
        phase=Phase.SINGLE,
        transactional=effects.transactional,
        locks=effects.locks,
        rewrites=effects.rewrites,
        scans=effects.scans,
        reason=describe(effects),
        destructive=destructive_reason(statement.node),
    )


def describe(effects: Effects) -> str:
    """One line a reviewer can act on: what is locked, what it blocks, for how long."""
    held = [lock for lock in effects.locks if not lock.created]
    if not held:
        return f"{effects.kind}: takes no lock on existing tables"
    strongest = max(held, key=lambda lock: lock.mode)
    where = ", ".join(str(lock.relation) for lock in held if lock.mode == strongest.mode)
    text = f"{effects.kind}: {strongest.mode.pg_name} on {where} blocks {strongest.mode.blocks()}"
    if effects.rewrites:
        text += "; rewrites " + ", ".join(map(str, effects.rewrites)) + " while holding it"
    elif effects.scans:
        text += "; scans " + ", ".join(map(str, effects.scans)) + " while holding it"
    elif strongest.mode.conflicts_with(LockMode.ROW_EXCLUSIVE):
        text += " briefly (no scan, no rewrite)"
    if not effects.transactional:
        text += "; runs outside a transaction"
    return text
