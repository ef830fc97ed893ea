"""CREATE INDEX, DROP INDEX and REINDEX run CONCURRENTLY: no lock that stops reads or writes.

As written, CREATE INDEX holds ShareLock (writes wait) for the whole build, DROP INDEX takes
AccessExclusiveLock on the table, and REINDEX holds ShareLock on the table and
AccessExclusiveLock on each index (the planner locks every index, so reads wait too). Their
CONCURRENTLY forms take ShareUpdateExclusiveLock only, run outside a transaction, and end in the
same catalog state: the same index names (an unnamed index gets the name PostgreSQL would have
chosen), the same definitions.

What stays as written, and why: an index on a partitioned table (plan/rules/partitioned_index.py
builds it; DROP INDEX CONCURRENTLY refuses one), DROP INDEX ... CASCADE (CONCURRENTLY refuses
CASCADE), an index behind a constraint (DROP refuses it either way), REINDEX of a system catalog
(no CONCURRENTLY there), of a partitioned table before 14, of an exclusion constraint's index
(concurrent builds do not support them), and REINDEX before 12.
"""

from __future__ import annotations

from typing import TypeVar

from pglast import ast, parse_sql
from pglast.enums import DropBehavior, ObjectType, ReindexObjectType
from pglast.stream import RawStream

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.sql import versions
from zdmproxy.sql.facts import CatalogFacts, RelationInfo
from zdmproxy.sql.index_names import choose_index_name
from zdmproxy.sql.locks import RelationName
from zdmproxy.sql.names import dotted_name, quote_relation, range_var_name

N = TypeVar("N", bound=ast.Node)
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "pg_toast", "information_schema"})


def create_index_concurrently(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.IndexStmt) or node.concurrent:
        return None
    table = ctx.facts.resolve(range_var_name(node.relation))
    if table is not None and table.is_partitioned:
        return None  # partitioned_index builds it partition by partition (or ONLY: instant)
    written = range_var_name(node.relation)
    name, named_how = index_name(node, written, table, ctx)
    node = fresh(ctx.statement.text, ast.IndexStmt)
    node.concurrent = True
    node.idxname = name
    index = RelationName(table.name.schema if table is not None else written.schema, name)
    unknown = (
        f"; if {written} is partitioned (unknown without a database), apply builds it partition by partition"
        if table is None and not ctx.from_catalog
        else ""
    )
    reason = (
        "CREATE INDEX CONCURRENTLY: ShareUpdateExclusiveLock lets reads and writes through while "
        f"the index is built (as written, ShareLock stops writes for the whole build){named_how}{unknown}"
    )
    return (
        ctx.steps()
        .add(
            RawStream()(node),
            Phase.EXPAND,
            reason,
            revert=f"DROP INDEX CONCURRENTLY IF EXISTS {quote_relation(index)}",
        )
        .done()
    )


def index_name(
    node: ast.IndexStmt, table_name: RelationName, table: RelationInfo | None, ctx: RuleContext
) -> tuple[str, str]:
    """The index's name, and how it was chosen (for the reason) when the statement gave none."""
    if node.idxname:
        return node.idxname, ""
    schema = table.name.schema if table is not None else table_name.schema
    taken = {n.name for n in ctx.facts.names_in_use if n.schema == schema}
    name = choose_index_name(table_name.name, node, taken)
    if ctx.from_catalog:
        return name, f"; named {name}, as PostgreSQL would have named it"
    return name, f"; named {name}, as PostgreSQL would if that name is free (unknown without a database)"


def drop_index_concurrently(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.DropStmt) or node.removeType != ObjectType.OBJECT_INDEX or node.concurrent:
        return None
    if node.behavior == DropBehavior.DROP_CASCADE:
        return (
            ctx.steps()
            .add(
                ctx.statement.text,
                Phase.SINGLE,
                "DROP INDEX ... CASCADE runs as written (AccessExclusiveLock on the table, briefly): "
                "DROP INDEX CONCURRENTLY refuses CASCADE; drop the dependent objects first to drop "
                "the index concurrently",
            )
            .done()
        )
    names = [dotted_name(parts) for parts in node.objects or ()]
    if any(_backs_constraint(name, ctx.facts) for name in names):
        return None  # PostgreSQL refuses to drop it (2BP01): let the statement fail as written
    if_exists = " IF EXISTS" if node.missing_ok else ""
    steps = ctx.steps()
    for name in names:
        info = ctx.facts.resolve(name)
        target = quote_relation(name)  # as written: the facts know it by that name
        if info is not None and info.relkind == "I":
            steps.add(
                f"DROP INDEX{if_exists} {target}",
                Phase.SINGLE,
                f"{name} is an index on a partitioned table, which DROP INDEX CONCURRENTLY refuses: "
                "dropped as written (AccessExclusiveLock on the table and its partitions, briefly)",
            )
            continue
        split = "; one index per statement, as CONCURRENTLY requires" if len(names) > 1 else ""
        steps.add(
            f"DROP INDEX CONCURRENTLY{if_exists} {target}",
            Phase.SINGLE,
            "DROP INDEX CONCURRENTLY: ShareUpdateExclusiveLock lets reads and writes through (as "
            f"written, AccessExclusiveLock on the table stops both){split}",
            revert=_recreate(name, info, ctx.facts),
        )
    return steps.done()


def _backs_constraint(index: RelationName, facts: CatalogFacts) -> bool:
    info = facts.resolve(index)
    table = table_of(info, facts)
    if table is None:
        return False
    return any(c.kind in ("p", "u", "x") and index.name in (c.index, c.name) for c in table.constraints)


def _recreate(index: RelationName, info: RelationInfo | None, facts: CatalogFacts) -> str | None:
    """The way back from dropping ``index``: its definition, built concurrently (None: unknown)."""
    table = table_of(info, facts)
    if table is None:
        return None
    definition = next((i.definition for i in table.index_definitions if i.name == index.name), None)
    if definition is None:
        return None
    node = fresh(definition, ast.IndexStmt)
    node.concurrent = True
    return str(RawStream()(node))


def reindex_concurrently(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.ReindexStmt) or ctx.version < versions.REINDEX_CONCURRENTLY:
        return None
    if any(p.defname == "concurrently" for p in node.params or ()):
        return None
    if node.kind not in (ReindexObjectType.REINDEX_OBJECT_INDEX, ReindexObjectType.REINDEX_OBJECT_TABLE):
        return None
    written = range_var_name(node.relation)
    info = ctx.facts.resolve(written)
    name = info.name if info is not None else written
    if name.schema in SYSTEM_SCHEMAS:
        return None  # system catalogs cannot be reindexed concurrently
    if info is not None and info.relkind in ("p", "I") and ctx.version < versions.REINDEX_PARTITIONED:
        return None
    if _exclusion_index(name, info, ctx.facts):
        return None
    node = fresh(ctx.statement.text, ast.ReindexStmt)
    node.params = (*(node.params or ()), ast.DefElem(defname="concurrently"))
    what = "its index" if node.kind == ReindexObjectType.REINDEX_OBJECT_INDEX else "each index"
    reason = (
        f"REINDEX CONCURRENTLY: builds {what} anew beside the old under ShareUpdateExclusiveLock, "
        "then swaps (as written, ShareLock on the table and AccessExclusiveLock on its indexes stop "
        "writes and reads)"
    )
    return ctx.steps().add(RawStream()(node), Phase.SINGLE, reason).done()


def _exclusion_index(name: RelationName, info: RelationInfo | None, facts: CatalogFacts) -> bool:
    """Whether REINDEX CONCURRENTLY would refuse (an index) or skip (a table's) exclusion index."""
    if info is None:
        return False
    if info.relkind in ("i", "I"):
        table = table_of(info, facts)
        constraints = table.constraints if table is not None else ()
        return any(c.kind == "x" and name.name in (c.index, c.name) for c in constraints)
    return any(c.kind == "x" for c in info.constraints)


def table_of(index: RelationInfo | None, facts: CatalogFacts) -> RelationInfo | None:
    """The facts of an index's table, found by its qualified name (facts are keyed as written)."""
    if index is None or index.table is None:
        return None
    found = facts.resolve(index.table)
    return found or next((info for info in facts.relations.values() if info.name == index.table), None)


def same_index(definition: str, other: str) -> bool:
    """Whether two CREATE INDEX statements define the same index but for its name and table, as
    far as their parse trees tell (a definition PostgreSQL prints differently from how it was
    written, a constant with its cast for instance, is not recognised: the caller then builds
    one index more than PostgreSQL would have)."""
    return _shape(definition) == _shape(other)


def _shape(definition: str) -> str:
    node = fresh(definition, ast.IndexStmt)
    node.idxname = None
    node.relation = ast.RangeVar(relname="t", inh=True, relpersistence="p")
    node.concurrent = False
    node.if_not_exists = False
    return str(RawStream()(node))


def fresh(sql: str, kind: type[N]) -> N:
    """A new parse tree of ``sql`` to edit (the statement's own tree is shared and stays as is)."""
    (raw,) = parse_sql(sql)
    assert isinstance(raw.stmt, kind)
    return raw.stmt
