"""What the constraint rules share: one ALTER TABLE subcommand in, ALTER TABLE SQL out, and the
name PostgreSQL would give a constraint written without one.

Generated statements are built by editing the statement's own tree and deparsing it with
pglast, so the table is spelled exactly as written (schema, quoting, ONLY, IF EXISTS).
"""

from __future__ import annotations

import copy
import dataclasses

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, DropBehavior, ObjectType
from pglast.stream import RawStream

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.rules.context import RuleContext, StepBuilder
from zdmproxy.plan.rules.long_lock import refuse_long_lock
from zdmproxy.sql.facts import CatalogFacts, ChildInfo, RelationInfo
from zdmproxy.sql.locks import RelationName
from zdmproxy.sql.names import range_var_name
from zdmproxy.sql.naming import check_column, choose_name, joined_columns

# How the statement spells each kind of constraint a rule of this package handles.
CONSTRAINT_WORDS: dict[ConstrType | None, str] = {
    ConstrType.CONSTR_CHECK: "CHECK",
    ConstrType.CONSTR_FOREIGN: "FOREIGN KEY",
    ConstrType.CONSTR_UNIQUE: "UNIQUE",
    ConstrType.CONSTR_PRIMARY: "PRIMARY KEY",
}
_LABELS: dict[ConstrType | None, str] = {ConstrType.CONSTR_CHECK: "check", ConstrType.CONSTR_FOREIGN: "fkey"}


def single_command(
    ctx: RuleContext, subtype: AlterTableType
) -> tuple[ast.AlterTableStmt, ast.AlterTableCmd] | None:
    """The statement and its one subcommand, when it is an ALTER TABLE of exactly one ``subtype``."""
    node = ctx.statement.node
    if not isinstance(node, ast.AlterTableStmt) or node.objtype != ObjectType.OBJECT_TABLE:
        return None
    cmds = node.cmds or ()
    if len(cmds) != 1 or not isinstance(cmds[0], ast.AlterTableCmd) or cmds[0].subtype != subtype:
        return None
    return node, cmds[0]


def alter_sql(stmt: ast.AlterTableStmt, *cmds: ast.AlterTableCmd) -> str:
    """``stmt`` with ``cmds`` as its subcommands, as SQL."""
    altered = copy.copy(stmt)
    altered.cmds = cmds
    return str(RawStream()(altered)).strip()


def command(
    subtype: AlterTableType,
    *,
    name: str | None = None,
    def_: ast.Node | None = None,
    missing_ok: bool = False,
) -> ast.AlterTableCmd:
    return ast.AlterTableCmd(
        subtype=subtype, name=name, def_=def_, behavior=DropBehavior.DROP_RESTRICT, missing_ok=missing_ok
    )


def table_info(ctx: RuleContext, stmt: ast.AlterTableStmt) -> RelationInfo | None:
    return ctx.facts.resolve(range_var_name(stmt.relation))


def new_table(ctx: RuleContext, stmt: ast.AlterTableStmt) -> bool:
    """The catalog was read and does not know the table: the script creates it, so it holds no
    rows anybody waits for and a rewrite would only add steps."""
    return ctx.from_catalog and table_info(ctx, stmt) is None


def constraint_names_taken(ctx: RuleContext, stmt: ast.AlterTableStmt) -> set[str]:
    """The names a new constraint of the table must avoid: the schema's constraint names near the
    table's name, and those the script added before this statement (learned into the facts)."""
    info = table_info(ctx, stmt)
    schema = info.name.schema if info is not None else stmt.relation.schemaname  # type: ignore[union-attr]
    taken = {n.name for n in ctx.facts.constraint_names_in_use if n.schema == schema}
    return taken | {c.name for c in info.constraints} if info is not None else taken


def relation_names_taken(ctx: RuleContext, stmt: ast.AlterTableStmt) -> set[str]:
    """What an index backing a new constraint must avoid: relation and constraint names."""
    info = table_info(ctx, stmt)
    schema = info.name.schema if info is not None else stmt.relation.schemaname  # type: ignore[union-attr]
    return names_in_schema(ctx.facts, schema) | constraint_names_taken(ctx, stmt)


def names_in_schema(facts: CatalogFacts, schema: str | None) -> set[str]:
    """The relation and constraint names of ``schema`` the catalog was read for (those near the
    names of the tables the script names, their partitions included)."""
    return {n.name for n in facts.names_in_use | facts.constraint_names_in_use if n.schema == schema}


def constraint_name(ctx: RuleContext, stmt: ast.AlterTableStmt, con: ast.Constraint) -> str:
    """The constraint's name: as written, or the one PostgreSQL would choose (``t_a_check``,
    ``t_a_b_fkey``, ``t_a_key``, ``t_pkey``, with 1, 2 … when taken)."""
    if con.conname:
        return str(con.conname)
    table = str(range_var_name(stmt.relation).name)
    if con.contype == ConstrType.CONSTR_PRIMARY:
        return choose_name(table, None, "pkey", relation_names_taken(ctx, stmt))
    if con.contype == ConstrType.CONSTR_UNIQUE:
        columns = [str(k.sval) for k in (*(con.keys or ()), *(con.including or ()))]
        return choose_name(table, joined_columns(columns), "key", relation_names_taken(ctx, stmt))
    assert con.contype in _LABELS, f"no generated name for {con.contype}"
    if con.contype == ConstrType.CONSTR_CHECK:
        assert con.raw_expr is not None
        column = check_column(con.raw_expr)
    else:
        column = joined_columns(str(a.sval) for a in con.fk_attrs or ())
    return choose_name(table, column, _LABELS[con.contype], constraint_names_taken(ctx, stmt))


def as_written(ctx: RuleContext, reason: str) -> tuple[Step, ...]:
    """The statement as one step, with the reason a rule that cannot make it safer gives; refused
    as any long lock no rule made online is (plan/rules/long_lock.py), the reason added."""
    refused = refuse_long_lock(ctx)
    if refused:
        return tuple(dataclasses.replace(step, reason=f"{step.reason}; {reason}") for step in refused)
    return ctx.steps().add(ctx.statement.text, Phase.SINGLE, reason).done()


def drop_constraint_sql(stmt: ast.AlterTableStmt, name: str) -> str:
    """The way back from adding constraint ``name`` (IF EXISTS: a later undo may have dropped it)."""
    return alter_sql(stmt, command(AlterTableType.AT_DropConstraint, name=name, missing_ok=True))


def validate_sql(stmt: ast.AlterTableStmt, name: str) -> str:
    return alter_sql(stmt, command(AlterTableType.AT_ValidateConstraint, name=name))


def add_then_validate(
    steps: StepBuilder, stmt: ast.AlterTableStmt, constraint: ast.Constraint, added: str, validated: str
) -> StepBuilder:
    """``constraint`` (named) added NOT VALID, its way back beside it, then validated: the two
    steps every constraint rule of this package is made of. ``added`` and ``validated`` are the
    steps' reasons."""
    name = str(constraint.conname)
    not_valid = copy.copy(constraint)
    not_valid.skip_validation = True
    not_valid.initially_valid = False
    not_valid.is_enforced = True
    return steps.add(
        alter_sql(stmt, command(AlterTableType.AT_AddConstraint, def_=not_valid)),
        Phase.EXPAND,
        added,
        revert=drop_constraint_sql(stmt, name),
    ).add(validate_sql(stmt, name), Phase.VALIDATE, validated)


def partitions_known(facts: CatalogFacts, info: RelationInfo) -> tuple[CatalogFacts, list[ChildInfo]]:
    """The partitions of ``info`` that hold rows, and ``facts`` that know each as far as the tree
    tells (kind, parent, the parent's columns): a rule that works partition by partition gets its
    steps classified, and learned from, as on a known table."""
    leaves = [child for child in info.children if child.has_storage]
    known = {
        RelationName(leaf.name.schema, leaf.name.name): RelationInfo(
            name=leaf.name,
            relkind=leaf.relkind,
            partition_of=leaf.parents[0] if leaf.parents else None,
            columns=dict(info.columns),
        )
        for leaf in leaves
    }
    return dataclasses.replace(facts, relations={**known, **facts.relations}), leaves


def on_partition(stmt: ast.AlterTableStmt, partition: RelationName) -> ast.AlterTableStmt:
    """``stmt`` aimed at one partition, schema-qualified."""
    aimed = copy.copy(stmt)
    aimed.relation = ast.RangeVar(
        schemaname=partition.schema, relname=partition.name, inh=True, relpersistence="p"
    )
    return aimed
