"""CREATE INDEX on a partitioned table, built without ever stopping writes.

As written, the statement builds the index on every partition in one transaction, holding
ShareLock (writes wait) on the whole tree until the last partition is done; CONCURRENTLY is
refused on a partitioned table (0A000). PostgreSQL's documented way round is what this rule
plans: ``CREATE INDEX … ON ONLY parent`` (an invalid index, no build), then for each partition
``CREATE INDEX CONCURRENTLY`` and ``ALTER INDEX parent_idx ATTACH PARTITION partition_idx``.
A sub-partitioned partition gets its own ``ON ONLY`` index, attached to the level above, and
its partitions are handled the same way. When the last partition's index is attached, each
level's index becomes valid by itself (validatePartitionedIndex), bottom up.

The partitions' indexes get the names the statement as written would have given them
(sql/index_names.py, PostgreSQL's ChooseRelationName), so the end state is the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from pglast import ast
from pglast.stream import RawStream

from zdmproxy.errors import UnsupportedStatement
from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.rules.concurrent_index import fresh, index_name, same_index
from zdmproxy.plan.rules.context import RuleContext, StepBuilder
from zdmproxy.sql.facts import CatalogFacts, ChildInfo, RelationInfo
from zdmproxy.sql.index_names import choose_index_name
from zdmproxy.sql.locks import RelationName
from zdmproxy.sql.names import quote_relation, range_var_name
from zdmproxy.sql.partition_bounds import key_columns


def build_per_partition(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.IndexStmt) or node.concurrent or not node.relation or not node.relation.inh:
        return None
    table = ctx.facts.resolve(range_var_name(node.relation))
    if table is None or not table.is_partitioned or not table.children:
        return None  # without partitions the statement builds nothing: instant as written
    if any(child.relkind == "f" for child in table.children):
        return None  # foreign partitions get no index: the parent's would never become valid by attaching
    if node.unique:
        _check_unique_covers_key(node, table)
    parent_index, named_how = index_name(node, table.name, table, ctx)
    top = RelationName(table.name.schema, parent_index)
    if node.if_not_exists and top in ctx.facts.names_in_use:
        return None  # already there: as written it is a no-op
    names = _partition_indexes(ctx, node, table, top)
    steps = StepBuilder(_known_to_catalogue(ctx.facts, table, names), ctx.version)
    drop_all = f"DROP INDEX IF EXISTS {quote_relation(top)}"
    steps.add(
        _index_sql(ctx.statement.text, range_var_name(node.relation), parent_index, only=True),
        Phase.EXPAND,
        f"CREATE INDEX ON ONLY {table.name}: the parent's index, invalid until every partition's "
        f"is attached; no build, ShareLock on the parent only for a moment{named_how}",
        revert=drop_all,
    )
    with_partitions = {child.parents[0] for child in table.children if child.parents}
    for child, parent in _depth_first(table):
        index = names.index_of.get(child.name)
        if index is None:
            continue  # below a partition whose own index was attached: covered already
        above = names.index_of[parent]
        if child.name in names.reused:
            steps.add(
                _attach(above, index),
                Phase.EXPAND,
                f"{child.name} already has an equal index, {index}: attached as it is, as the "
                "statement would (catalog only, no scan)",
            )
            continue
        empty = child.name not in with_partitions
        _add_partition(ctx, steps, child, index, above, top, drop_all, empty=empty)
    return steps.done()


@dataclass(frozen=True)
class _Names:
    """Each partition's index (partitions below a reused index are left out: it covers them), and
    the partitions whose equal index already exists and is attached as it is."""

    index_of: dict[RelationName, RelationName]
    reused: frozenset[RelationName]


def _partition_indexes(
    ctx: RuleContext, node: ast.IndexStmt, table: RelationInfo, top: RelationName
) -> _Names:
    """The index of each partition, in the order the statement as written would create them:
    an equal free index it would attach, else the name ChooseRelationName would give a new one."""
    taken = set(ctx.facts.names_in_use) | {top}
    index_of = {table.name: top}
    reused: set[RelationName] = set()
    for child, parent in _depth_first(table):
        if parent not in index_of or parent in reused:
            continue  # its parent's index covers it
        schema = child.name.schema
        equal = _equal_free_index(ctx.statement.text, child)
        if equal is not None:
            index_of[child.name] = RelationName(schema, equal)
            reused.add(child.name)
            continue
        name = choose_index_name(child.name.name, node, {n.name for n in taken if n.schema == schema})
        index_of[child.name] = RelationName(schema, name)
        taken.add(index_of[child.name])
    return _Names(index_of, frozenset(reused))


def _known_to_catalogue(facts: CatalogFacts, table: RelationInfo, names: _Names) -> CatalogFacts:
    """``facts`` plus what the steps' classification needs and read_facts did not read (it reads
    the relations a script names): the sub-partitioned partitions (an index ON ONLY one builds
    nothing) and every index of the plan with its table (attaching one reads both tables)."""
    kinds = {table.name: "p", **{c.name: c.relkind for c in table.children}}
    return dataclasses.replace(
        facts,
        relations={
            **facts.relations,
            **{c.name: RelationInfo(name=c.name, relkind="p") for c in table.children if c.relkind == "p"},
            **{
                index: RelationInfo(name=index, relkind="I" if kinds[owner] == "p" else "i", table=owner)
                for owner, index in names.index_of.items()
            },
        },
    )


def _equal_free_index(statement: str, child: ChildInfo) -> str | None:
    """The name of an index of ``child`` PostgreSQL would attach instead of building one: valid,
    attached to nothing, and the same definition but for its name."""
    return next((index.name for index in child.free_indexes if same_index(index.definition, statement)), None)


def _attach(parent_index: RelationName, index: RelationName) -> str:
    return f"ALTER INDEX {quote_relation(parent_index)} ATTACH PARTITION {quote_relation(index)}"


def _add_partition(
    ctx: RuleContext,
    steps: StepBuilder,
    child: ChildInfo,
    index: RelationName,
    parent_index: RelationName,
    top: RelationName,
    drop_all: str,
    *,
    empty: bool,
) -> None:
    if child.relkind == "p" and empty:
        steps.add(
            _index_sql(ctx.statement.text, child.name, index.name, only=False, concurrent=False),
            Phase.EXPAND,
            f"{child.name} is partitioned and has no partitions: its index is valid at once, "
            "nothing to build",
            revert=f"DROP INDEX IF EXISTS {quote_relation(index)}",
        )
    elif child.relkind == "p":
        steps.add(
            _index_sql(ctx.statement.text, child.name, index.name, only=True),
            Phase.EXPAND,
            f"{child.name} is partitioned itself: its own index ON ONLY, valid once its "
            "partitions' indexes are attached",
            revert=f"DROP INDEX IF EXISTS {quote_relation(index)}",
        )
    else:
        steps.add(
            _index_sql(ctx.statement.text, child.name, index.name, only=False),
            Phase.EXPAND,
            f"the index on partition {child.name}, built CONCURRENTLY: ShareUpdateExclusiveLock "
            "lets reads and writes through",
            revert=f"DROP INDEX CONCURRENTLY IF EXISTS {quote_relation(index)}",
        )
    steps.add(
        _attach(parent_index, index),
        Phase.EXPAND,
        f"attach {index} to {parent_index} (catalog only, no scan); {top} becomes valid with the last one",
        revert=drop_all,
    )


def _depth_first(table: RelationInfo) -> Iterator[tuple[ChildInfo, RelationName]]:
    """Every partition with the index of its parent level, each level's partitions right after
    it: the order in which the statement as written creates (and names) their indexes."""
    below: dict[RelationName, list[ChildInfo]] = {}
    for child in table.children:
        parent = child.parents[0] if child.parents else table.name
        below.setdefault(parent, []).append(child)

    def walk(parent: RelationName) -> Iterator[tuple[ChildInfo, RelationName]]:
        for child in sorted(below.get(parent, ()), key=lambda c: c.name.name):
            yield child, parent
            yield from walk(child.name)

    yield from walk(table.name)


def _index_sql(
    statement: str, table: RelationName, name: str, *, only: bool, concurrent: bool | None = None
) -> str:
    """The statement's index on ``table`` named ``name``: ON ONLY (no build), CONCURRENTLY, or
    (an empty partitioned table) as written."""
    node = fresh(statement, ast.IndexStmt)
    node.relation = ast.RangeVar(
        schemaname=table.schema, relname=table.name, inh=not only, relpersistence="p"
    )
    node.idxname = name
    node.concurrent = not only if concurrent is None else concurrent
    return str(RawStream()(node))


def _check_unique_covers_key(node: ast.IndexStmt, table: RelationInfo) -> None:
    """PostgreSQL refuses a unique index on a partitioned table that leaves out a column of its
    key, or of a sub-partitioned partition's key (0A000): say so before anything runs (the
    plan would stop half way, at that partition), with what to write instead."""
    indexed = {element.name for element in node.indexParams or () if element.name}
    levels = [(table.name, table.partition_key)] + [
        (child.name, child.partition_key) for child in table.children if child.relkind == "p"
    ]
    for name, key in levels:
        columns, expressions = key_columns(key or "()")
        missing = [column for column in columns if column not in indexed]
        if expressions or missing:
            raise UnsupportedStatement(
                f"a unique index on partitioned table {name} must include every column of its "
                f"partition key ({key}) and the key may hold no expression; PostgreSQL refuses "
                f"it as written too (0A000): add {', '.join(missing) or 'the key columns'} to the index"
            )
