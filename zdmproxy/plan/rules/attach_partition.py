"""ATTACH PARTITION without reading a table under a lock that stops traffic.

As written, ATTACH takes ShareUpdateExclusiveLock on the parent (12+) but AccessExclusiveLock on
the partition and on the parent's default partition, and under those locks reads every row of
the partition (do they fit the bound?) and of the default partition (does it hold rows that now
belong to the new partition?). PostgreSQL skips each read when valid CHECK constraints already
prove it. So the plan proves it first, with reads that block nobody:

1. ``ADD CONSTRAINT … CHECK (<the bound's constraint>) NOT VALID`` on the partition (brief
   AccessExclusiveLock, no scan), and ``CHECK (NOT (<it>)) NOT VALID`` on the default partition;
2. ``VALIDATE CONSTRAINT`` each (ShareUpdateExclusiveLock: reads and writes go on);
3. the ATTACH as written, which now reads nothing;
4. the helper checks dropped (brief), so the end state is the statement's.

Before all that, each index of the parent is built on the partition CONCURRENTLY, under the name
the ATTACH would give it: the ATTACH attaches an equal index it finds instead of building one
under its lock. A parent whose indexes back constraints (PRIMARY KEY, UNIQUE, EXCLUDE) runs as
written: the partition would need the constraint too.

Covered: LIST bounds and RANGE bounds on one column (sql/partition_bounds.py writes exactly the
constraint PostgreSQL derives). A HASH or multi-column RANGE bound, a DEFAULT partition being
attached, or a partition (or default partition) that is partitioned itself runs as written.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType
from pglast.stream import RawStream

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.rules.concurrent_index import fresh, same_index
from zdmproxy.plan.rules.context import RuleContext, StepBuilder
from zdmproxy.sql.facts import RelationInfo
from zdmproxy.sql.index_names import choose_index_name
from zdmproxy.sql.locks import RelationName
from zdmproxy.sql.names import quote_ident, quote_relation, range_var_name
from zdmproxy.sql.naming import make_object_name
from zdmproxy.sql.partition_bounds import attach_check, outside


def attach_with_proven_bound(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.AlterTableStmt) or len(node.cmds or ()) != 1:
        return None
    (cmd,) = node.cmds or ()
    if cmd.subtype != AlterTableType.AT_AttachPartition or not isinstance(cmd.def_, ast.PartitionCmd):
        return None
    parent = ctx.facts.resolve(range_var_name(node.relation))
    bound = cmd.def_.bound
    check = attach_check(parent, bound) if parent is not None and bound is not None else None
    if parent is None or check is None:
        return None
    written = range_var_name(cmd.def_.name)
    partition = ctx.facts.resolve(written)
    if partition is not None and partition.relkind != "r":
        return None
    default_info = ctx.facts.resolve(parent.default_partition) if parent.default_partition else None
    if default_info is not None and default_info.relkind != "r":
        return None  # a partitioned default partition: its partitions are checked one by one
    name = partition.name if partition is not None else written
    backed = {c.index or c.name for c in parent.constraints if c.kind in ("p", "u", "x")}
    if any(index.name in backed for index in parent.index_definitions):
        return None  # the partition would need the constraint too: ATTACH builds its index as written
    helper = make_object_name(name.name, None, "zdm_bound")
    steps = ctx.steps()
    _build_parent_indexes(ctx, steps, parent, partition, written)
    proven = [(written, helper, check, f"the rows of {name} fit the new bound")]
    if parent.default_partition is not None:
        default = parent.default_partition
        proven.append(
            (
                default,
                make_object_name(default.name, name.name, "zdm_excl"),
                outside(check),
                f"default partition {default} holds no row of the new bound",
            )
        )
    for table, constraint, expression, what in proven:
        _prove(steps, table, constraint, expression, what)
    steps.add(
        ctx.statement.text,
        Phase.SINGLE,
        f"ATTACH PARTITION: ShareUpdateExclusiveLock on {parent.name}; AccessExclusiveLock on "
        f"{', '.join(str(t) for t, *_ in proven)} only for a moment: the checks just validated "
        "prove the bound, so nothing is read under it",
        revert=f"ALTER TABLE {quote_relation(parent.name)} DETACH PARTITION {quote_relation(name)}",
    )
    for table, constraint, _, _ in proven:
        steps.add(
            f"ALTER TABLE {quote_relation(table)} DROP CONSTRAINT {quote_ident(constraint)}",
            Phase.SINGLE,
            f"drop the helper check {constraint} (brief AccessExclusiveLock, no scan): the "
            "partition bound enforces it from now on",
        )
    return steps.done()


def _build_parent_indexes(
    ctx: RuleContext,
    steps: StepBuilder,
    parent: RelationInfo,
    partition: RelationInfo | None,
    written: RelationName,
) -> None:
    """Each index of the parent the partition lacks, built on it CONCURRENTLY under the name the
    ATTACH would give it: the ATTACH then attaches it instead of building it under its lock.
    One the partition already has (an equal definition) is attached by the ATTACH as it is."""
    name = partition.name if partition is not None else written
    own = partition.index_definitions if partition is not None else ()
    taken = {n.name for n in ctx.facts.names_in_use if n.schema == name.schema}
    for index in parent.index_definitions:
        if any(same_index(mine.definition, index.definition) for mine in own):
            continue
        node = fresh(index.definition, ast.IndexStmt)
        node.relation = ast.RangeVar(
            schemaname=written.schema, relname=written.name, inh=True, relpersistence="p"
        )
        node.idxname = choose_index_name(name.name, node, taken)
        node.concurrent = True
        taken.add(node.idxname)
        built = quote_relation(RelationName(name.schema, node.idxname))
        steps.add(
            str(RawStream()(node)),
            Phase.SINGLE,
            f"the parent's index {index.name} built on {name} CONCURRENTLY beforehand, under the name the "
            "ATTACH would give it: the ATTACH then attaches it instead of building it under its lock",
            revert=f"DROP INDEX CONCURRENTLY IF EXISTS {built}",
        )


def _prove(steps: StepBuilder, table: RelationName, constraint: str, expression: str, what: str) -> None:
    target = f"ALTER TABLE {quote_relation(table)}"
    steps.add(
        f"{target} ADD CONSTRAINT {quote_ident(constraint)} CHECK ({expression}) NOT VALID",
        Phase.SINGLE,
        f"a check that {what}, NOT VALID: brief AccessExclusiveLock on {table}, no scan",
        revert=f"{target} DROP CONSTRAINT IF EXISTS {quote_ident(constraint)}",
    )
    steps.add(
        f"{target} VALIDATE CONSTRAINT {quote_ident(constraint)}",
        Phase.VALIDATE,
        f"prove that {what}: reads {table} under ShareUpdateExclusiveLock (reads and writes go on)",
    )
