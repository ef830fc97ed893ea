"""DETACH PARTITION runs CONCURRENTLY where PostgreSQL allows it.

As written, DETACH takes AccessExclusiveLock on the parent: every query on the partitioned
table waits for it, and behind it while it waits. ``DETACH PARTITION … CONCURRENTLY`` (14+)
takes ShareUpdateExclusiveLock on the parent, waits for the transactions that use it without
holding any lock meanwhile, and ends in the same state. It runs outside a transaction, alone
in its ALTER TABLE, and is refused when the parent has a default partition: then the statement
runs as written. An interrupted run leaves the partition pending detach; the engine finishes it
with ``DETACH … FINALIZE`` (engine/debris.py).
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.sql import versions
from zdmproxy.sql.names import quote_relation, range_var_name


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
        (c.bound for c in (parent.children if parent is not None else ()) if c.name == partition_name), None
    )
    unknown = (
        ""
        if parent is not None
        else " (PostgreSQL refuses it if the table has a default partition, unknown here)"
    )
    return (
        ctx.steps()
        .add(
            f"ALTER TABLE {quote_relation(parent_name)} DETACH PARTITION {quote_relation(partition_name)} "
            "CONCURRENTLY",
            Phase.SINGLE,
            f"DETACH PARTITION CONCURRENTLY: ShareUpdateExclusiveLock on {parent_name} lets reads and "
            f"writes through (as written, AccessExclusiveLock stops both){unknown}",
            revert=f"ALTER TABLE {quote_relation(parent_name)} ATTACH PARTITION "
            f"{quote_relation(partition_name)} {bound}"
            if bound
            else None,
        )
        .done()
    )
