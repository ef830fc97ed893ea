"""An ALTER TABLE with several subcommands, split where that is what makes each part safe.

One subcommand that a rule would run more gently (a CHECK added NOT VALID then validated, a
key built concurrently, a type changed through a new column) cannot be, while it shares a
statement with others: the statement's strongest lock is held for all of it. So such a
subcommand becomes a statement of its own, handed back to the planner. The others stay
together: one lock acquisition beats several, and each acquisition is a moment traffic may
queue. A statement in which no subcommand would be rewritten is left whole.

PostgreSQL does not run subcommands in the order written but in passes (tablecmds.c,
``AlterTablePass``): drops first, then type changes, new columns, constraints and column
attributes, index-backed constraints, and the rest. The parts run in that order, so a
constraint on a column added by the same statement still comes after the column; the
subcommands that stay together are those adjacent in that order. Each part is planned with
what the parts before it teach the catalogue (a constraint they named, a column they added).
"""

from __future__ import annotations

import dataclasses

from pglast import ast
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType, ObjectType

from zdmproxy.plan.model import Step
from zdmproxy.plan.rules.altering import CONSTRAINT_WORDS, alter_sql
from zdmproxy.plan.rules.context import RuleContext, statement_of
from zdmproxy.sql.facts import CatalogFacts
from zdmproxy.sql.learn import learn
from zdmproxy.sql.parse import parse_script

_DROPS = frozenset({AT.AT_DropColumn, AT.AT_DropNotNull, AT.AT_DropConstraint, AT.AT_DropIdentity})
_COLUMN_ATTRIBUTES = frozenset(
    {AT.AT_SetNotNull, AT.AT_SetStatistics, AT.AT_SetStorage, AT.AT_SetOptions, AT.AT_ResetOptions}
)
_INDEX_KEYS = (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_EXCLUSION)


def pass_of(cmd: ast.AlterTableCmd) -> int:
    """When PostgreSQL runs the subcommand within its statement (lower first; ties in written order)."""
    subtype = cmd.subtype
    if subtype in _DROPS or (subtype == AT.AT_ColumnDefault and cmd.def_ is None):
        return 0
    if subtype == AT.AT_AlterColumnType:
        return 1
    if subtype == AT.AT_AddColumn:
        return 2
    if subtype == AT.AT_AddConstraint:
        con = cmd.def_
        return 5 if isinstance(con, ast.Constraint) and con.contype in _INDEX_KEYS else 3
    if subtype in (AT.AT_ColumnDefault, AT.AT_AddIdentity):
        return 3
    if subtype in _COLUMN_ATTRIBUTES:
        return 4
    return 6


def split_subcommands(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.AlterTableStmt) or node.objtype != ObjectType.OBJECT_TABLE:
        return None
    cmds = [cmd for cmd in node.cmds or () if isinstance(cmd, ast.AlterTableCmd)]
    if len(cmds) < 2:
        return None
    rewritten = [_rewritten(ctx, node, cmd) for cmd in cmds]
    if not any(rewritten):
        return None
    ordered = sorted(zip(cmds, rewritten, strict=True), key=lambda pair: pass_of(pair[0]))
    parts: list[list[ast.AlterTableCmd]] = []
    for i, (cmd, alone) in enumerate(ordered):
        if alone or not parts or ordered[i - 1][1]:
            parts.append([cmd])
        else:
            parts[-1].append(cmd)  # next to the one before it in PostgreSQL's order: together
    why = (
        f"split out of an ALTER TABLE of {len(cmds)} subcommands into {len(parts)} parts, in the "
        "order PostgreSQL runs them, because "
        + ", ".join(_kind(cmd) for cmd, alone in ordered if alone)
        + " run safer as steps of their own than under the statement's one lock"
    )
    steps: list[Step] = []
    facts = ctx.facts
    for part in parts:
        planned = ctx.replan(statement_of(alter_sql(node, *part)), facts)
        steps.extend(dataclasses.replace(step, reason=f"{step.reason} ({why})") for step in planned)
        facts = _learned(facts, planned)
    return tuple(steps)


def _rewritten(ctx: RuleContext, node: ast.AlterTableStmt, cmd: ast.AlterTableCmd) -> bool:
    """Whether a rule plans the subcommand, alone, as anything but itself."""
    alone = statement_of(alter_sql(node, cmd))
    steps = ctx.replan(alone, ctx.facts)
    return not (len(steps) == 1 and steps[0].sql == alone.text)


def _learned(facts: CatalogFacts, steps: tuple[Step, ...]) -> CatalogFacts:
    """The facts after ``steps`` ran: what the next part's rules must know (the names they took)."""
    for step in steps:
        for statement in parse_script(step.sql):
            facts = learn(facts, statement)
    return facts


def _kind(cmd: ast.AlterTableCmd) -> str:
    con = cmd.def_
    if cmd.subtype == AT.AT_AddConstraint and isinstance(con, ast.Constraint):
        what = CONSTRAINT_WORDS.get(con.contype, "a constraint")
        return f"ADD {what}"
    words = AT(cmd.subtype).name.removeprefix("AT_") if cmd.subtype is not None else "?"
    column = f" {cmd.name}" if cmd.name else ""
    return {"SetNotNull": "SET NOT NULL", "AlterColumnType": "ALTER COLUMN TYPE"}.get(words, words) + column
