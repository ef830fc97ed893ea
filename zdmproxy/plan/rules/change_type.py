"""ALTER COLUMN ... TYPE that rewrites the table becomes expand/contract (plan/rules/column_swap.py).

As written it holds AccessExclusiveLock while every row is rewritten (and every index on the
table rebuilt): reads and writes stop for minutes on a large table. A binary-coercible change
(varchar(20) to varchar(50) or text, numeric widened) rewrites nothing: the catalogue says so
and the statement stays one instant step. Anything else is replaced by a new column of the new
type filled by a sync trigger and a batched backfill, swapped in by one short transaction.

Left as written, the reason said (and refused on a large table, as any long lock is):
several subcommands in one statement (split first by the rule that splits them), a column in a
foreign key or a view, identity and generated columns, a partitioned or
inherited table, a table without a primary key, an exclusion or deferrable constraint on it,
and plans without catalog facts (the column's indexes and constraints must be known to rebuild
them).
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType

from zdmproxy.plan.model import Step
from zdmproxy.plan.rules.column_swap import (
    Swap,
    deparse,
    object_name,
    refusal,
    refused_as_written,
    swap_steps,
)
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.sql.names import range_var_name
from zdmproxy.sql.types import type_name


def change_type_online(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.AlterTableStmt) or not ctx.from_catalog or not ctx.effects.rewrites:
        return None
    if len(node.cmds or ()) != 1 or node.relation is None or not node.relation.inh:
        return None
    (cmd,) = node.cmds or ()
    column = cmd.def_
    if cmd.subtype != AlterTableType.AT_AlterColumnType or not isinstance(column, ast.ColumnDef):
        return None
    written = range_var_name(node.relation)
    info = ctx.facts.resolve(written)
    name = str(cmd.name)
    if info is None or column.typeName is None:
        return None
    refused = refusal(info, name)
    if refused is not None:
        return refused_as_written(ctx, f"no expand/contract: {refused}")
    type_sql = deparse(column.typeName) + (" " + deparse(column.collClause) if column.collClause else "")
    swap = Swap(
        table=info,
        written=written,
        old=name,
        new=name,
        staging=object_name(name, "zdm_new"),
        type_sql=type_sql,
        forward=column.raw_default,
    )
    return swap_steps(ctx, swap, f"{name} to {type_name(column.typeName)}")
