"""DROP COLUMN for a rolling deploy: expand lets the new application version stop writing the
column, contract drops it once the old version, which still reads it, is gone.

A NOT NULL column without a default makes every INSERT of the new version (which no longer
names it) fail: expand drops the NOT NULL (its way back sets it again, and fails, as it
should, if the new version has already written rows without it). A nullable column, or one
with a default, needs no expand: only the contract step runs. The contract is the statement as
written, still destructive (it runs only when the caller allows that).

Stepped aside: a column used by a view, in a key, or the table's primary key; ALTER TABLE ONLY;
plans without catalog facts.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.sql.names import quote_ident, quote_relation, range_var_name


def drop_column_in_phases(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.AlterTableStmt) or not ctx.from_catalog or node.relation is None:
        return None
    if len(node.cmds or ()) != 1 or not node.relation.inh:
        return None
    (cmd,) = node.cmds or ()
    written = range_var_name(node.relation)
    info = ctx.facts.resolve(written)
    name = str(cmd.name)
    if cmd.subtype != AlterTableType.AT_DropColumn or info is None or name not in info.columns:
        return None
    column = info.columns[name]
    keys = [*info.foreign_keys, *info.referenced_by]
    if (
        info.column_views.get(name)
        or name in info.primary_key
        or any(name in (*fk.columns, *fk.referenced_columns) for fk in keys)
    ):
        return None
    table = quote_relation(written)
    build = ctx.steps()
    if column.not_null and column.default is None and not column.identity and not column.generated:
        build.add(
            f"ALTER TABLE {table} ALTER COLUMN {quote_ident(name)} DROP NOT NULL",
            Phase.EXPAND,
            f"the new application version may insert rows without {name} (NOT NULL, no default)",
            revert=f"ALTER TABLE {table} ALTER COLUMN {quote_ident(name)} SET NOT NULL",
        )
    return build.add(
        ctx.statement.text,
        Phase.CONTRACT,
        f"drop {name} once no application version reads it (AccessExclusiveLock, briefly: no rewrite)",
    ).done()
