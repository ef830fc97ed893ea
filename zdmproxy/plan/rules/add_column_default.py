"""ADD COLUMN with a volatile default: add it empty, default new rows, backfill the old ones.

As written, ``ADD COLUMN c uuid DEFAULT gen_random_uuid()`` (or ``clock_timestamp()``, or a
volatile function of the user's) rewrites the whole table, every index too, under
AccessExclusiveLock: reads and writes stop for as long as that takes. The plan instead:

1. ``ADD COLUMN c type`` (nullable, no default): catalog only, an instant AccessExclusiveLock;
2. ``ALTER COLUMN c SET DEFAULT expr``: every row inserted from now on gets its own value;
3. a batched backfill ``UPDATE t SET c = expr WHERE c IS NULL`` over the rows that were there
   (engine/backfill.py: short keyset transactions, checkpointed; the predicate makes a batch
   done twice change nothing);
4. for ``NOT NULL``, ``ALTER COLUMN c SET NOT NULL`` handed back to the planner, whose rule
   for it validates a CHECK first so nothing scans under the strong lock.

The end state is the statement's: same column, type, collation, default and nullability. The
way back of the expand is ``DROP COLUMN``. A non-volatile default is instant as written (11+:
the value is stored once in the catalog) and stays one step.

Stepped aside (run as written): several subcommands (split first by the rule that splits),
``IF NOT EXISTS``, other constraints on the column (CHECK, UNIQUE, REFERENCES, PRIMARY KEY),
identity, generated and serial columns, ``ONLY``, and a table the catalog shows without a
primary key (the backfill walks one).
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType, ConstrType

from zdmproxy.plan.model import Backfill, Phase, Step
from zdmproxy.plan.rules.column_swap import deparse
from zdmproxy.plan.rules.context import RuleContext, statement_of
from zdmproxy.sql.names import quote_ident, quote_relation, range_var_name
from zdmproxy.sql.types import SERIAL_TYPES, type_name

_PLAIN = (ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_NULL)


def add_column_then_backfill(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.AlterTableStmt) or not ctx.effects.rewrites:
        return None  # a non-volatile default rewrites nothing: one instant step as written
    if len(node.cmds or ()) != 1 or node.relation is None or not node.relation.inh:
        return None
    (cmd,) = node.cmds or ()
    column = cmd.def_
    if cmd.subtype != AlterTableType.AT_AddColumn or not isinstance(column, ast.ColumnDef) or cmd.missing_ok:
        return None
    constraints = list(column.constraints or ())
    defaults = [c for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT and c.raw_expr is not None]
    if (
        len(defaults) != 1
        or any(c.contype not in _PLAIN for c in constraints)
        or type_name(column.typeName) in SERIAL_TYPES
        or column.typeName is None
        or column.colname is None
    ):
        return None
    name = range_var_name(node.relation)
    info = ctx.facts.resolve(name)
    if ctx.from_catalog and (info is None or not info.primary_key):
        return None  # no key to walk in batches: as written (the long-lock refusal sees it)
    table = quote_relation(info.name if info is not None else name)
    col = quote_ident(column.colname)
    type_sql = deparse(column.typeName) + (" " + deparse(column.collClause) if column.collClause else "")
    default = deparse(defaults[0].raw_expr)
    build = (
        ctx.steps()
        .add(
            f"ALTER TABLE {table} ADD COLUMN {col} {type_sql}",
            Phase.EXPAND,
            f"add {column.colname} empty first: catalog only, no rewrite under the lock",
            revert=f"ALTER TABLE {table} DROP COLUMN {col}",
        )
        .add(
            f"ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {default}",
            Phase.EXPAND,
            f"rows inserted from now on get {column.colname}'s default",
        )
        .add(
            f"UPDATE {table} SET {col} = {default} WHERE {col} IS NULL",
            Phase.BACKFILL,
            "the rows already there get the default in short keyset batches"
            + ("" if ctx.from_catalog else " (the primary key is read when it runs)"),
            backfill=Backfill(
                info.name if info is not None else name,
                info.primary_key if info is not None else (),
                f"{col} = {default}",
                f"{col} IS NULL",
            ),
        )
    )
    steps = build.done()
    if any(c.contype == ConstrType.CONSTR_NOTNULL for c in constraints):
        not_null = statement_of(f"ALTER TABLE {table} ALTER COLUMN {col} SET NOT NULL")
        steps += ctx.replan(not_null, build.facts)
    return steps
