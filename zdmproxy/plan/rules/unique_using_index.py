"""ADD CONSTRAINT … UNIQUE / PRIMARY KEY → the index built concurrently, then ``… USING INDEX``.

As written, the constraint's index is built under AccessExclusiveLock: nothing reads or writes
the table for the whole build. ``CREATE UNIQUE INDEX CONCURRENTLY`` builds it under
ShareUpdateExclusiveLock (reads and writes go on), and ``ADD CONSTRAINT … USING INDEX`` then
turns it into the constraint with a brief lock. The index gets the name the constraint will
have (PostgreSQL's own choice when none was written), so nothing is renamed, and INCLUDE,
NULLS NOT DISTINCT, WITH (…), USING INDEX TABLESPACE and DEFERRABLE are carried over: the end
state is the statement's own.

A PRIMARY KEY also makes its columns NOT NULL, which reads the table under the lock when a
column allows NULL: those columns are made NOT NULL first through the planner (the SET NOT
NULL rule, without a scan under a blocking lock). Neither way exists on a partitioned table
(no CREATE INDEX CONCURRENTLY, no USING INDEX there): the statement runs as written, and says so.
"""

from __future__ import annotations

import copy
import dataclasses

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, SortByDir, SortByNulls
from pglast.stream import RawStream

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.rules.altering import (
    CONSTRAINT_WORDS,
    alter_sql,
    as_written,
    command,
    constraint_name,
    drop_constraint_sql,
    new_table,
    single_command,
    table_info,
)
from zdmproxy.plan.rules.context import RuleContext, statement_of
from zdmproxy.sql.learn import learn
from zdmproxy.sql.names import quote_ident
from zdmproxy.sql.parse import Statement

_KEYS = (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY)


def unique_via_concurrent_index(ctx: RuleContext) -> tuple[Step, ...] | None:
    found = single_command(ctx, AlterTableType.AT_AddConstraint)
    if found is None or not ctx.effects.scans:
        return None
    stmt, cmd = found
    con = cmd.def_
    if not isinstance(con, ast.Constraint) or con.contype not in _KEYS or con.indexname:
        return None  # not a key, or already USING INDEX
    if con.without_overlaps or new_table(ctx, stmt):
        return None  # WITHOUT OVERLAPS needs a GiST index and an exclusion; a new table has no rows
    what = CONSTRAINT_WORDS[con.contype]
    info = table_info(ctx, stmt)
    if info is not None and info.is_partitioned:
        return as_written(
            ctx,
            f"{what} on partitioned table {info.name} runs as written (the index is built on "
            "every partition under a lock that blocks writes): PostgreSQL has no CREATE INDEX "
            "CONCURRENTLY and no ADD CONSTRAINT … USING INDEX on a partitioned table",
        )
    name = constraint_name(ctx, stmt, con)
    steps: list[Step] = []
    facts = ctx.facts
    if con.contype == ConstrType.CONSTR_PRIMARY:
        for column in (str(k.sval) for k in con.keys or ()):
            known = info.columns.get(column) if info is not None else None
            if known is None or not known.not_null:
                not_null = _set_not_null(stmt, column)
                steps.extend(ctx.replan(not_null, facts))
                facts = learn(facts, not_null)
    key = copy.copy(con)
    key.conname = name
    key.indexname = name
    key.keys = key.including = key.options = key.indexspace = None
    key.nulls_not_distinct = False
    built = (
        dataclasses.replace(ctx, facts=facts)
        .steps()
        .add(
            _index_sql(stmt, con, name),
            Phase.EXPAND,
            f"the {what} index {name} built concurrently: ShareUpdateExclusiveLock, reads and "
            "writes go on during the build",
            revert=f"DROP INDEX CONCURRENTLY IF EXISTS {_index_name(stmt, name)}",
        )
        .add(
            alter_sql(stmt, command(AlterTableType.AT_AddConstraint, def_=key)),
            Phase.EXPAND,
            f"{what} {name} takes over the index built before: AccessExclusiveLock for the "
            "catalog change only, no build and no scan",
            revert=drop_constraint_sql(stmt, name),
        )
        .done()
    )
    return (*steps, *built)


def _set_not_null(stmt: ast.AlterTableStmt, column: str) -> Statement:
    return statement_of(alter_sql(stmt, command(AlterTableType.AT_SetNotNull, name=column)))


def _index_name(stmt: ast.AlterTableStmt, name: str) -> str:
    """The index's name, in the table's schema when the statement names one."""
    schema = stmt.relation.schemaname if stmt.relation is not None else None
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


def _index_sql(stmt: ast.AlterTableStmt, con: ast.Constraint, name: str) -> str:
    """CREATE UNIQUE INDEX CONCURRENTLY with everything the constraint says about its index."""
    relation = copy.copy(stmt.relation)
    assert relation is not None
    relation.inh = True  # ONLY is for partitioned tables, which never get here
    index = ast.IndexStmt(
        idxname=name,
        relation=relation,
        accessMethod="btree",
        tableSpace=con.indexspace,
        indexParams=tuple(_column(k) for k in con.keys or ()),
        indexIncludingParams=tuple(_column(k) for k in con.including or ()) or None,
        options=con.options,
        unique=True,
        nulls_not_distinct=bool(con.nulls_not_distinct),
        concurrent=True,
    )
    return str(RawStream()(index))


def _column(name: ast.String) -> ast.IndexElem:
    return ast.IndexElem(
        name=str(name.sval),
        ordering=SortByDir.SORTBY_DEFAULT,
        nulls_ordering=SortByNulls.SORTBY_NULLS_DEFAULT,
    )
