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
NULL rule, without a scan under a blocking lock). A partitioned table has neither CREATE INDEX
CONCURRENTLY nor USING INDEX: each partition gets its key that way, named as PostgreSQL names a
partition's copy, and the parent's key then attaches them without building or reading anything
(a DEFERRABLE key there, or a tree with a foreign partition, runs as written and says so).
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
    names_in_schema,
    new_table,
    on_partition,
    partitions_known,
    single_command,
    table_info,
)
from zdmproxy.plan.rules.context import RuleContext, StepBuilder, statement_of
from zdmproxy.sql.learn import learn
from zdmproxy.sql.names import quote_ident
from zdmproxy.sql.naming import choose_name, joined_columns
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
        if any(c.relkind not in ("r", "p") for c in info.children):
            return as_written(ctx, f"{what} on partitioned table {info.name} with a foreign partition")
        if con.deferrable:  # each level's constraint trigger locks it too: not built partition-wise here
            return as_written(ctx, f"DEFERRABLE {what} on partitioned table {info.name} runs as written")
        if not stmt.relation.inh:  # type: ignore[union-attr]
            return as_written(ctx, f"{what} on ONLY partitioned table {info.name}: as written")
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
    if info is None or not info.is_partitioned:
        built = dataclasses.replace(ctx, facts=facts).steps()
        _build_then_take_over(built, stmt, con, name)
        return (*steps, *built.done())
    # A partitioned table has neither CONCURRENTLY nor USING INDEX: each partition gets its own key
    # that way, under the name PostgreSQL gives a partition's copy, and the parent's key then
    # attaches them (checked on 15 and 18: no partition is read, every lock is brief).
    parent_now = table_info(dataclasses.replace(ctx, facts=facts), stmt)
    assert parent_now is not None
    facts, leaves = partitions_known(facts, parent_now)
    built = dataclasses.replace(ctx, facts=facts).steps()
    label = "pkey" if con.contype == ConstrType.CONSTR_PRIMARY else "key"
    columns = None if label == "pkey" else joined_columns(_column_names(con))
    chosen: set[str] = {name}
    for leaf in leaves:
        taken = names_in_schema(ctx.facts, leaf.name.schema) | chosen
        leaf_name = choose_name(leaf.name.name, columns, label, taken)
        chosen.add(leaf_name)
        _build_then_take_over(built, on_partition(stmt, leaf.name), con, leaf_name)
    named = copy.copy(con)
    named.conname = name
    built.add(
        alter_sql(stmt, command(AlterTableType.AT_AddConstraint, def_=named)),
        Phase.EXPAND,
        f"{what} {name} on partitioned table {info.name} attaches the partitions' keys built "
        "before: brief locks, no build and no scan",
        revert=drop_constraint_sql(stmt, name),
    )
    *per_partition, parent = built.done()
    # The catalogue cannot see the partitions' keys (the facts list no partition's indexes), so it
    # describes the parent's step as building them all; attaching them reads nothing.
    return (*steps, *per_partition, dataclasses.replace(parent, scans=()))


def _build_then_take_over(
    steps: StepBuilder, stmt: ast.AlterTableStmt, con: ast.Constraint, name: str
) -> StepBuilder:
    """The key's index built concurrently on ``stmt``'s table, then made the key ``name``."""
    what = CONSTRAINT_WORDS[con.contype]
    key = copy.copy(con)
    key.conname = name
    key.indexname = name
    key.keys = key.including = key.options = key.indexspace = None
    key.nulls_not_distinct = False
    return steps.add(
        _index_sql(stmt, con, name),
        Phase.EXPAND,
        f"the {what} index {name} built concurrently: ShareUpdateExclusiveLock, reads and "
        "writes go on during the build",
        revert=f"DROP INDEX CONCURRENTLY IF EXISTS {_index_name(stmt, name)}",
    ).add(
        alter_sql(stmt, command(AlterTableType.AT_AddConstraint, def_=key)),
        Phase.EXPAND,
        f"{what} {name} takes over the index built before: AccessExclusiveLock for the "
        "catalog change only, no build and no scan",
        revert=drop_constraint_sql(stmt, name),
    )


def _column_names(con: ast.Constraint) -> list[str]:
    return [str(k.sval) for k in (*(con.keys or ()), *(con.including or ()))]


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
