"""DETACH PARTITION runs CONCURRENTLY where PostgreSQL allows it.

As written, DETACH takes AccessExclusiveLock on the parent: every query on the partitioned
table waits for it, and behind it while it waits. ``DETACH PARTITION … CONCURRENTLY`` (14+)
takes ShareUpdateExclusiveLock on the parent, waits for the transactions that use it without
holding any lock meanwhile, and ends in the same state. It runs outside a transaction, alone
in its ALTER TABLE, and is refused when the parent has a default partition: then the statement
runs as written. An interrupted run leaves the partition pending detach; the engine finishes it
with ``DETACH … FINALIZE`` (engine/debris.py). CONCURRENTLY keeps the old bound on the detached
table as a CHECK constraint, which the statement as written does not: a last step drops it.
"""

from __future__ import annotations

from pglast import ast, parse_sql
from pglast.enums import AlterTableType

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.sql import versions
from zdmproxy.sql.facts import RelationInfo
from zdmproxy.sql.locks import RelationName
from zdmproxy.sql.names import quote_ident, quote_relation, range_var_name
from zdmproxy.sql.naming import check_column, choose_name
from zdmproxy.sql.partition_bounds import attach_check, implied, key_select


def detach_concurrently(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if not isinstance(node, ast.AlterTableStmt) or len(node.cmds or ()) != 1:
        return None
    (cmd,) = node.cmds or ()
    part = cmd.def_
    if cmd.subtype != AlterTableType.AT_DetachPartition or not isinstance(part, ast.PartitionCmd):
        return None
    if part.concurrent or ctx.version < versions.DETACH_PARTITION_CONCURRENTLY:
        return None
    written = range_var_name(node.relation)
    parent = ctx.facts.resolve(written)
    parent_name = parent.name if parent is not None else written
    partition = ctx.facts.resolve(range_var_name(part.name))
    partition_name = partition.name if partition is not None else range_var_name(part.name)
    if parent is not None and parent.default_partition is not None:
        return (
            ctx.steps()
            .add(
                ctx.statement.text,
                Phase.SINGLE,
                f"DETACH PARTITION as written (AccessExclusiveLock on {parent_name}, briefly): "
                f"CONCURRENTLY is refused because {parent_name} has a default partition "
                f"({parent.default_partition})",
            )
            .done()
        )
    bound = next(
        (
            child.bound
            for child in (parent.children if parent is not None else ())
            if child.name == partition_name
            or (partition_name.schema is None and child.name.name == partition_name.name)
        ),
        None,
    )
    unknown = (
        ""
        if parent is not None
        else " (PostgreSQL refuses it if the table has a default partition, unknown here)"
    )
    steps = ctx.steps()
    steps.add(
        # As written: the facts know the tables by these names.
        f"ALTER TABLE {quote_relation(written)} DETACH PARTITION "
        f"{quote_relation(range_var_name(part.name))} CONCURRENTLY",
        Phase.SINGLE,
        f"DETACH PARTITION CONCURRENTLY: ShareUpdateExclusiveLock on {parent_name} lets reads and "
        f"writes through (as written, AccessExclusiveLock stops both){unknown}",
        revert=f"ALTER TABLE {quote_relation(parent_name)} ATTACH PARTITION "
        f"{quote_relation(partition_name)} {bound}"
        if bound
        else None,
    )
    added = _bound_check_name(parent, partition, partition_name, bound, ctx)
    if added is not None:
        steps.add(
            f"ALTER TABLE {quote_relation(range_var_name(part.name))} DROP CONSTRAINT {quote_ident(added)}",
            Phase.SINGLE,
            f"DETACH ... CONCURRENTLY keeps the old bound on {partition_name} as CHECK {added}, the "
            "statement as written does not: dropped (brief AccessExclusiveLock on the detached table)",
        )
    return steps.done()


def _bound_check_name(
    parent: RelationInfo | None,
    partition: RelationInfo | None,
    name: RelationName,
    bound: str | None,
    ctx: RuleContext,
) -> str | None:
    """The CHECK constraint DETACH ... CONCURRENTLY adds to the partition (DetachAddConstraintIfNeeded):
    named as an unnamed CHECK on the key's column would be; none when an existing valid CHECK
    already implies the bound, or when the key is unknown."""
    if parent is None or parent.partition_key is None or bound is None:
        return None
    (alter,) = parse_sql(f"ALTER TABLE p ATTACH PARTITION c {bound}")
    assert isinstance(alter.stmt, ast.AlterTableStmt)
    (cmd,) = alter.stmt.cmds or ()
    spec = cmd.def_.bound if isinstance(cmd.def_, ast.PartitionCmd) else None
    check = attach_check(parent, spec) if spec is not None else None
    if check is not None and implied(partition, check):
        return None
    own = {c.name for c in partition.constraints} if partition is not None else set()
    taken = own | {n.name for n in ctx.facts.constraint_names_in_use if n.schema == name.schema}
    return choose_name(name.name, check_column(key_select(parent.partition_key)), "check", taken)
