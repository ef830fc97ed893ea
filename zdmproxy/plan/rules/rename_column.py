"""RENAME COLUMN for a rolling deploy: expand/contract, so old and new application versions run
at once (plan/rules/column_swap.py).

As written the rename is instant, but the application version still running breaks at that
moment: it reads and writes the old name. Expand adds a column with the new name, a trigger
that copies every write to whichever side it did not touch (old code writes the old column,
new code the new one), and a backfill; ``apply --phase expand`` stops there, the new version is
deployed, and ``apply --phase contract`` drops the old column in one short transaction that
gives the new one the old one's default, NOT NULL, CHECKs and indexes (under their old names,
as the rename would keep them). Applications connect as before; no view schema, no search_path.

Left as written (instant; the version still reading the old name breaks) for the same reasons
as a type change (column_swap.refusal): a column in a key or view, identity or generated
columns, and so on.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import ObjectType

from zdmproxy.plan.model import Step
from zdmproxy.plan.rules.column_swap import Swap, refusal, swap_steps
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.sql.names import range_var_name


def rename_column_in_phases(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.RenameStmt) or node.renameType != ObjectType.OBJECT_COLUMN:
        return None
    if not ctx.from_catalog or node.relationType != ObjectType.OBJECT_TABLE or node.relation is None:
        return None
    written = range_var_name(node.relation)
    info = ctx.facts.resolve(written)
    old, new = str(node.subname), str(node.newname)
    if info is None or not node.relation.inh or old == new or refusal(info, old) is not None:
        return None  # as written: instant, and a version still reading the old name breaks
    type_sql = info.columns[old].sql_type
    assert type_sql is not None  # refusal() checked it
    swap = Swap(table=info, written=written, old=old, new=new, staging=new, type_sql=type_sql, both_ways=True)
    return swap_steps(ctx, swap, f"rename {old} to {new}")
