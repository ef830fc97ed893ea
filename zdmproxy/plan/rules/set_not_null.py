"""ALTER COLUMN … SET NOT NULL without reading the table under AccessExclusiveLock.

As written, SET NOT NULL holds AccessExclusiveLock — every read and write waits — while it reads
every row looking for a NULL. Two ways around the scan, by server version:

- PostgreSQL 18: ``ADD CONSTRAINT <t>_<c>_not_null NOT NULL c NOT VALID`` (brief lock, no scan),
  then ``VALIDATE CONSTRAINT`` (ShareUpdateExclusiveLock: reads and writes go on). The result is
  exactly what SET NOT NULL makes on 18, a valid not-null constraint of the name PostgreSQL
  would have chosen, in two steps rather than four.
- PostgreSQL 12 to 17: a helper ``CHECK (c IS NOT NULL) NOT VALID``, ``VALIDATE`` it (no blocking
  lock), then SET NOT NULL, which finds the valid CHECK and skips its scan, then drop the helper.

A column that needs no scan (already NOT NULL, or a valid CHECK proves it) stays one step: the
lock is brief, and three more acquisitions would only queue traffic more often. A small table
is *not* kept in one step: the catalog's size is an estimate (stale until the next ANALYZE, -1
for a table never vacuumed) and the safe plan costs little on a small table anyway.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, NullTestType

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.rules.altering import (
    add_then_validate,
    alter_sql,
    as_written,
    command,
    constraint_names_taken,
    new_table,
    single_command,
    table_info,
    validate_sql,
)
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.sql import versions
from zdmproxy.sql.names import range_var_name
from zdmproxy.sql.naming import choose_name

HELPER_LABEL = "zdm_not_null"  # the helper CHECK is <table>_<column>_zdm_not_null


def set_not_null_online(ctx: RuleContext) -> tuple[Step, ...] | None:
    found = single_command(ctx, AlterTableType.AT_SetNotNull)
    if found is None:
        return None
    stmt, cmd = found
    column = str(cmd.name)
    if new_table(ctx, stmt):
        return None
    if not ctx.effects.scans:
        return as_written(
            ctx,
            f"column {column} needs no scan (already NOT NULL, or a valid CHECK ({column} IS NOT NULL) "
            "proves it): one brief AccessExclusiveLock, fewer lock acquisitions than any other plan",
        )
    if ctx.version < versions.SET_NOT_NULL_USES_CHECK:
        return None  # before 12 SET NOT NULL always scans: no plan avoids it
    info = table_info(ctx, stmt)
    if not stmt.relation.inh and info is not None and info.children:  # type: ignore[union-attr]
        return None  # ONLY on a parent: a helper would have to reach children the statement does not
    if ctx.version >= versions.NOT_NULL_NOT_VALID:
        return _not_null_not_valid(ctx, stmt, column)
    return _through_check(ctx, stmt, column)


def _not_null_not_valid(ctx: RuleContext, stmt: ast.AlterTableStmt, column: str) -> tuple[Step, ...]:
    info = table_info(ctx, stmt)
    pending = next(
        (
            c.name
            for c in (info.constraints if info is not None else ())
            if c.kind == "n" and not c.validated and column in c.columns
        ),
        None,
    )
    if pending is not None:
        # SET NOT NULL would validate the NOT VALID constraint already there: so does VALIDATE.
        return (
            ctx.steps()
            .add(
                validate_sql(stmt, pending),
                Phase.VALIDATE,
                f"column {column} already has NOT VALID constraint {pending}: VALIDATE CONSTRAINT "
                "checks the rows under ShareUpdateExclusiveLock, as SET NOT NULL would under "
                "AccessExclusiveLock",
            )
            .done()
        )
    table = str(range_var_name(stmt.relation).name)
    name = choose_name(table, column, "not_null", constraint_names_taken(ctx, stmt))
    constraint = ast.Constraint(
        contype=ConstrType.CONSTR_NOTNULL, conname=name, keys=(ast.String(sval=column),)
    )
    return add_then_validate(
        ctx.steps(),
        stmt,
        constraint,
        f"NOT NULL {name} added NOT VALID (PostgreSQL 18): AccessExclusiveLock only for the "
        "catalog change, new rows are checked from now on; the existing rows by the next step",
        f"VALIDATE CONSTRAINT {name} checks the existing rows under ShareUpdateExclusiveLock "
        f"(reads and writes go on); the end state is SET NOT NULL's own: constraint {name}, valid",
    ).done()


def _through_check(ctx: RuleContext, stmt: ast.AlterTableStmt, column: str) -> tuple[Step, ...]:
    table = str(range_var_name(stmt.relation).name)
    helper = choose_name(table, column, HELPER_LABEL, constraint_names_taken(ctx, stmt))
    check = ast.Constraint(
        contype=ConstrType.CONSTR_CHECK,
        conname=helper,
        raw_expr=ast.NullTest(
            arg=ast.ColumnRef(fields=(ast.String(sval=column),)),
            nulltesttype=NullTestType.IS_NOT_NULL,
            argisrow=False,
        ),
    )
    return (
        add_then_validate(
            ctx.steps(),
            stmt,
            check,
            f"helper CHECK ({column} IS NOT NULL) added NOT VALID: AccessExclusiveLock only for the "
            "catalog change, new rows are checked from now on",
            f"VALIDATE CONSTRAINT {helper} reads every row under ShareUpdateExclusiveLock "
            "(reads and writes go on)",
        )
        .add(
            ctx.statement.text,
            Phase.VALIDATE,
            f"SET NOT NULL finds the valid CHECK ({column} IS NOT NULL) and skips its scan "
            "(PostgreSQL 12+): AccessExclusiveLock for the catalog change only",
            revert=alter_sql(stmt, command(AlterTableType.AT_DropNotNull, name=column)),
        )
        .add(
            alter_sql(stmt, command(AlterTableType.AT_DropConstraint, name=helper)),
            Phase.VALIDATE,  # not CONTRACT: nothing breaks without it, so no phase boundary is forced
            f"the helper {helper} is redundant with NOT NULL: dropped (a brief AccessExclusiveLock)",
        )
        .done()
    )
