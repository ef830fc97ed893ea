"""ADD CONSTRAINT … CHECK / FOREIGN KEY → ``… NOT VALID``, then ``VALIDATE CONSTRAINT``.

As written, adding a CHECK holds AccessExclusiveLock (a foreign key ShareRowExclusiveLock on
both tables) while every row is checked: reads (or writes) stop for as long as the table takes
to read. ``NOT VALID`` takes the same lock only for the catalog change, new rows are checked
from then on, and ``VALIDATE CONSTRAINT`` checks the old rows under ShareUpdateExclusiveLock,
which blocks no reads or writes (RowShareLock on the referenced table). The end state is the
same: the same name (PostgreSQL's own choice when none was written), the constraint valid.

A CHECK, REFERENCES, UNIQUE or PRIMARY KEY written inside ``ADD COLUMN`` becomes the column,
then each constraint added by the name PostgreSQL would give it, each through the planner (so
NOT VALID and VALIDATE, or the index built concurrently) — when the statement as written would
read rows at all (an inline foreign key on a new column without a default checks nothing, and
stays as written).
"""

from __future__ import annotations

import copy
import dataclasses

from pglast import ast
from pglast.enums import AlterTableType, ConstrType

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.rules.altering import (
    CONSTRAINT_WORDS,
    add_then_validate,
    alter_sql,
    as_written,
    command,
    constraint_name,
    drop_constraint_sql,
    new_table,
    on_partition,
    partitions_known,
    single_command,
    table_info,
)
from zdmproxy.plan.rules.context import RuleContext, statement_of
from zdmproxy.sql import versions
from zdmproxy.sql.facts import RelationInfo
from zdmproxy.sql.learn import learn
from zdmproxy.sql.locks import LockMode, LockRequest, strongest
from zdmproxy.sql.names import range_var_name

_CHECKED = (ConstrType.CONSTR_CHECK, ConstrType.CONSTR_FOREIGN)
# Inline constraints that read the table under the column's lock: a UNIQUE or PRIMARY KEY builds
# its index there (handed back, it is built concurrently: plan/rules/unique_using_index.py).
_SPLIT = (*_CHECKED, ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY)


def add_constraint_not_valid(ctx: RuleContext) -> tuple[Step, ...] | None:
    found = single_command(ctx, AlterTableType.AT_AddConstraint)
    if found is None or not ctx.effects.scans:
        return None  # nothing is checked under the lock: nothing to gain
    stmt, cmd = found
    con = cmd.def_
    if not isinstance(con, ast.Constraint) or con.contype not in _CHECKED:
        return None
    if con.skip_validation or new_table(ctx, stmt):
        return None  # already NOT VALID (or NOT ENFORCED), or a table the script creates
    info = table_info(ctx, stmt)
    what = CONSTRAINT_WORDS[con.contype]
    if (
        con.contype == ConstrType.CONSTR_FOREIGN
        and info is not None
        and info.is_partitioned
        and ctx.version < versions.FOREIGN_KEY_NOT_VALID_ON_PARTITIONED
    ):
        return _partition_by_partition(ctx, stmt, con, info)
    named = copy.copy(con)
    named.conname = name = constraint_name(ctx, stmt, con)
    unknown = "" if ctx.from_catalog else " (the table is unknown without a database)"
    held = "ShareRowExclusiveLock" if con.contype == ConstrType.CONSTR_FOREIGN else "AccessExclusiveLock"
    return add_then_validate(
        ctx.steps(),
        stmt,
        named,
        f"{what} {name} added NOT VALID: {held} only for the catalog change, new rows are "
        f"checked from now on; the existing rows are checked by the next step{unknown}",
        f"VALIDATE CONSTRAINT {name} checks the existing rows under ShareUpdateExclusiveLock, "
        "which blocks neither reads nor writes",
    ).done()


def inline_constraints_apart(ctx: RuleContext) -> tuple[Step, ...] | None:
    """ADD COLUMN c … CHECK (…) / REFERENCES …: the column first, then each constraint by the name
    PostgreSQL would give it, each handed back to the planner (so NOT VALID, then VALIDATE)."""
    found = single_command(ctx, AlterTableType.AT_AddColumn)
    if found is None or not ctx.effects.scans or new_table(ctx, found[0]):
        return None
    stmt, cmd = found
    column = cmd.def_
    assert isinstance(column, ast.ColumnDef)
    inline = [c for c in column.constraints or () if isinstance(c, ast.Constraint) and c.contype in _SPLIT]
    if not inline:
        return None
    bare = copy.copy(column)
    bare.constraints = tuple(c for c in column.constraints or () if c not in inline) or None
    add_column = copy.copy(cmd)
    add_column.def_ = bare
    parts = [statement_of(alter_sql(stmt, add_column))]
    facts = learn(ctx.facts, parts[0])
    for con in inline:
        table_con = copy.copy(con)
        if con.contype == ConstrType.CONSTR_FOREIGN:
            table_con.fk_attrs = (ast.String(sval=column.colname),)
        elif con.contype != ConstrType.CONSTR_CHECK:
            table_con.keys = (ast.String(sval=column.colname),)
        # Named now, each after the ones before it, as PostgreSQL names them in one statement.
        table_con.conname = constraint_name(dataclasses.replace(ctx, facts=facts), stmt, table_con)
        parts.append(statement_of(alter_sql(stmt, command(AlterTableType.AT_AddConstraint, def_=table_con))))
        facts = learn(facts, parts[-1])
    steps: list[Step] = []
    facts = ctx.facts
    for part in parts:
        steps.extend(ctx.replan(part, facts))
        facts = learn(facts, part)
    if steps[0].sql == parts[0].text and steps[0].revert is None:
        # The column as written: now the expand its constraints build on, with its way back.
        drop = command(AlterTableType.AT_DropColumn, name=column.colname, missing_ok=True)
        steps[0] = dataclasses.replace(steps[0], phase=Phase.EXPAND, revert=alter_sql(stmt, drop))
    why = (
        f"split out of ADD COLUMN {column.colname}: its inline "
        + " and ".join(sorted({CONSTRAINT_WORDS[c.contype] for c in inline}))
        + " would check every row under the column's AccessExclusiveLock"
    )
    return tuple(dataclasses.replace(step, reason=f"{step.reason} ({why})") for step in steps)


def _partition_by_partition(
    ctx: RuleContext, stmt: ast.AlterTableStmt, con: ast.Constraint, info: RelationInfo
) -> tuple[Step, ...]:
    """A foreign key on a partitioned table before 18, which refuses it NOT VALID (42809): the
    same key NOT VALID and validated on each partition that holds rows, then added on the
    parent, which attaches those copies (they match: same name, columns and actions) and reads
    nothing — measured on 15, checked by tests/test_rules_constraints.py against the statistics."""
    why = (
        f"FOREIGN KEY on partitioned table {info.name}: PostgreSQL {versions.major(ctx.version)} refuses "
        "NOT VALID there (42809; 18 allows it)"
    )
    facts, leaves = partitions_known(ctx.facts, info)
    foreign = any(child.relkind not in ("r", "p") for child in info.children)
    only = not stmt.relation.inh  # type: ignore[union-attr]
    if not leaves or foreign or only:
        return as_written(ctx, f"{why}; with ONLY, no partition, or a foreign one, it runs as written")
    named = copy.copy(con)
    named.conname = name = constraint_name(ctx, stmt, con)
    steps = dataclasses.replace(ctx, facts=facts).steps()
    for leaf in leaves:
        partition = on_partition(stmt, leaf.name)
        add_then_validate(
            steps,
            partition,
            named,
            f"{why}: {name} added NOT VALID on partition {leaf.name} (brief ShareRowExclusiveLock)",
            f"VALIDATE CONSTRAINT {name} checks partition {leaf.name}'s rows under "
            "ShareUpdateExclusiveLock (reads and writes go on)",
        )
    referenced = ctx.facts.qualify(range_var_name(con.pktable))
    steps.add(
        alter_sql(stmt, command(AlterTableType.AT_AddConstraint, def_=named)),
        Phase.EXPAND,
        f"{why}: {name} added on the parent attaches the partitions' validated copies and checks no "
        f"row (briefly ShareRowExclusiveLock on the tree, AccessExclusiveLock on {referenced}, whose "
        "triggers for the copies are replaced)",
        revert=drop_constraint_sql(stmt, name),
    )
    *per_partition, parent = steps.done()
    # The catalogue cannot see the partitions' copies (the facts list no partition's constraints),
    # so it describes the parent's step as a new key: validating every partition, ShareRowExclusive
    # on the referenced table. Attaching the copies instead reads nothing, and replaces their
    # triggers on the referenced table, which takes AccessExclusiveLock there (measured on 15;
    # tests/test_rules_constraints.py checks both against pg_locks and the statistics).
    locks = strongest([*parent.locks, LockRequest(referenced, LockMode.ACCESS_EXCLUSIVE)])
    return (*per_partition, dataclasses.replace(parent, scans=(), locks=tuple(locks)))
