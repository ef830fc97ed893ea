"""The lock catalogue for ALTER TABLE: one entry per subcommand.

The mode each subcommand takes on the altered table follows PostgreSQL's
``AlterTableGetLockLevel`` (tablecmds.c); the statement takes the strongest
mode of its subcommands. Subcommands with effects beyond that mode (other
tables locked, rewrites, scans) have a handler of their own below. Every
entry is checked against pg_locks on real servers by tests/test_lock_catalogue.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pglast import ast
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType, ObjectType

from zdmproxy.errors import UnsupportedStatement
from zdmproxy.sql import versions
from zdmproxy.sql.effects import EffectsBuilder
from zdmproxy.sql.facts import CatalogFacts, RelationInfo
from zdmproxy.sql.locks import LockMode, RelationName
from zdmproxy.sql.names import range_var_name
from zdmproxy.sql.types import (
    NON_VOLATILE_BUILTINS,
    SERIAL_TYPES,
    VOLATILE_BUILTINS,
    function_names,
    type_change_rewrites,
    type_name,
)

AEL = LockMode.ACCESS_EXCLUSIVE
SRE = LockMode.SHARE_ROW_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE

# Subcommands whose only effect is a lock on the altered relation.
PLAIN_MODES: dict[AT, LockMode] = {
    **dict.fromkeys(
        (
            AT.AT_DropColumn,
            AT.AT_ColumnDefault,
            AT.AT_CookedColumnDefault,
            AT.AT_DropNotNull,
            AT.AT_SetStorage,
            AT.AT_SetCompression,
            AT.AT_DropExpression,
            AT.AT_AddIdentity,
            AT.AT_SetIdentity,
            AT.AT_DropIdentity,
            AT.AT_ChangeOwner,
            AT.AT_AddOf,
            AT.AT_DropOf,
            AT.AT_ReplicaIdentity,
            AT.AT_EnableRowSecurity,
            AT.AT_DisableRowSecurity,
            AT.AT_ForceRowSecurity,
            AT.AT_NoForceRowSecurity,
            AT.AT_EnableRule,
            AT.AT_EnableAlwaysRule,
            AT.AT_EnableReplicaRule,
            AT.AT_DisableRule,
            AT.AT_GenericOptions,
            AT.AT_AlterColumnGenericOptions,
            AT.AT_AddColumnToView,
            AT.AT_DropOids,
            AT.AT_ReplaceRelOptions,
            AT.AT_AlterConstraint,
        ),
        AEL,
    ),
    **dict.fromkeys(
        (
            AT.AT_EnableTrig,
            AT.AT_EnableAlwaysTrig,
            AT.AT_EnableReplicaTrig,
            AT.AT_EnableTrigAll,
            AT.AT_EnableTrigUser,
            AT.AT_DisableTrig,
            AT.AT_DisableTrigAll,
            AT.AT_DisableTrigUser,
        ),
        SRE,
    ),
    **dict.fromkeys(
        (
            AT.AT_SetStatistics,
            AT.AT_SetOptions,
            AT.AT_ResetOptions,
            AT.AT_ClusterOn,
            AT.AT_DropCluster,
            AT.AT_SetRelOptions,
            AT.AT_ResetRelOptions,
        ),
        SUE,
    ),
}
# Subcommands that write the whole table anew under ACCESS EXCLUSIVE.
REWRITING: frozenset[AT] = frozenset(
    {AT.AT_SetTableSpace, AT.AT_SetAccessMethod, AT.AT_SetLogged, AT.AT_SetUnLogged}
)


@dataclass(frozen=True)
class AlterContext:
    """What a subcommand handler may consult: the target, the catalog facts, the server version."""

    out: EffectsBuilder
    facts: CatalogFacts
    version_num: int
    target: RelationName
    target_kind: str
    info: RelationInfo | None

    def other(self, node: ast.RangeVar) -> RelationName:
        return self.facts.qualify(range_var_name(node))


Handler = Callable[[AlterContext, ast.AlterTableCmd], None]


def classify_alter_table(stmt: ast.AlterTableStmt, facts: CatalogFacts, version_num: int) -> EffectsBuilder:
    target_kind = _KIND_BY_OBJECT.get(stmt.objtype, "table")
    written = range_var_name(stmt.relation)
    info = facts.resolve(written)
    target = info.name if info is not None else written
    names = sorted({_SUBCOMMAND_NAMES.get(cmd.subtype, cmd.subtype.name[3:]) for cmd in stmt.cmds})
    out = EffectsBuilder(kind=f"ALTER {target_kind.upper()} " + ", ".join(names))
    ctx = AlterContext(out, facts, version_num, target, target_kind, info)
    for cmd in stmt.cmds:
        handler = _HANDLERS.get(cmd.subtype)
        if handler is not None:
            handler(ctx, cmd)
        elif cmd.subtype in REWRITING:
            out.lock(target, AEL, kind=target_kind)
            out.rewrite(target)
        else:
            out.lock(target, PLAIN_MODES.get(cmd.subtype, AEL), kind=target_kind)
    return out


def _add_column(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    ctx.out.lock(ctx.target, AEL)
    column: ast.ColumnDef = cmd.def_
    why = _new_column_rewrites(ctx, column)
    if why:
        ctx.out.rewrite(ctx.target)
        ctx.out.note(f"column {column.colname}: {why}")
    for con in column.constraints or ():
        if con.contype == ConstrType.CONSTR_FOREIGN:
            ctx.out.lock(ctx.other(con.pktable), SRE)
        elif con.contype in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE) or (
            con.contype == ConstrType.CONSTR_CHECK and not why
        ):
            ctx.out.scan(ctx.target)


def _new_column_rewrites(ctx: AlterContext, column: ast.ColumnDef) -> str | None:
    """Why adding this column rewrites the table, or None when it is a catalog-only change."""
    if type_name(column.typeName) in SERIAL_TYPES:
        return "a serial column's default (nextval) is volatile: the table is rewritten"
    for con in column.constraints or ():
        if con.contype == ConstrType.CONSTR_IDENTITY:
            return "an identity column fills every row: the table is rewritten"
        if con.contype == ConstrType.CONSTR_GENERATED:
            stored = con.generated_kind == "s" or ctx.version_num < versions.VIRTUAL_GENERATED_COLUMNS
            return "a stored generated column is computed for every row" if stored else None
        if con.contype == ConstrType.CONSTR_DEFAULT and con.raw_expr is not None:
            if ctx.version_num < versions.INSTANT_NON_VOLATILE_DEFAULT:
                return "before PostgreSQL 11 any non-null default rewrites the table"
            return _volatile_default(ctx, con.raw_expr)
    return None


def _volatile_default(ctx: AlterContext, expr: ast.Node) -> str | None:
    for name in function_names(expr):
        if name in VOLATILE_BUILTINS or name in ctx.facts.volatile_functions:
            return f"the default calls volatile {name}(): the table is rewritten"
        if name not in NON_VOLATILE_BUILTINS and name not in ctx.facts.known_functions:
            return f"the volatility of {name}() is unknown without a database: a rewrite is assumed"
    return None


def _alter_column_type(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    ctx.out.lock(ctx.target, AEL)
    column: ast.ColumnDef = cmd.def_
    old = ctx.info.columns.get(cmd.name) if ctx.info is not None else None
    if type_change_rewrites(old, column.typeName, column.raw_default is not None):
        ctx.out.rewrite(ctx.target)
        if old is None:
            ctx.out.note(f"column {cmd.name}: its current type is unknown, a rewrite is assumed")
        else:
            ctx.out.note(f"column {cmd.name}: {old.typname} to {type_name(column.typeName)} rewrites")


def _set_not_null(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    ctx.out.lock(ctx.target, AEL)
    if ctx.version_num >= versions.SET_NOT_NULL_USES_CHECK and ctx.info is not None:
        if any(c.validated and c.not_null_column == cmd.name for c in ctx.info.constraints):
            return
    ctx.out.scan(ctx.target)


def _add_constraint(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    con: ast.Constraint = cmd.def_
    validates = not con.skip_validation
    if con.contype == ConstrType.CONSTR_FOREIGN:
        parent = ctx.other(con.pktable)
        ctx.out.lock(ctx.target, SRE)
        ctx.out.lock(parent, SRE)
        if validates:
            ctx.out.scan(ctx.target)
            ctx.out.scan(parent)
        return
    ctx.out.lock(ctx.target, AEL)
    if con.contype in (
        ConstrType.CONSTR_PRIMARY,
        ConstrType.CONSTR_UNIQUE,
        ConstrType.CONSTR_EXCLUSION,
    ):
        if con.indexname:
            index = ctx.facts.qualify(RelationName(ctx.target.schema, con.indexname))
            # The index is renamed to the constraint's name, which takes SHARE UPDATE EXCLUSIVE.
            renamed = bool(con.conname) and con.conname != con.indexname
            ctx.out.lock(index, SUE if renamed else LockMode.ACCESS_SHARE, kind="index")
            if con.contype == ConstrType.CONSTR_PRIMARY:
                ctx.out.scan(ctx.target)
                ctx.out.note("PRIMARY KEY USING INDEX scans the table unless its columns are NOT NULL")
        else:
            ctx.out.scan(ctx.target)
    elif validates:
        ctx.out.scan(ctx.target)


def _validate_constraint(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    ctx.out.lock(ctx.target, SUE)
    ctx.out.scan(ctx.target)
    con = ctx.info.constraint(cmd.name) if ctx.info is not None else None
    if con is None:
        ctx.out.note(
            f"constraint {cmd.name} is unknown without a database: if it is a foreign key, "
            "VALIDATE also takes RowShareLock on the referenced table"
        )
    elif con.referenced is not None:
        ctx.out.lock(con.referenced, LockMode.ROW_SHARE)
        ctx.out.scan(con.referenced)


def _drop_constraint(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    ctx.out.lock(ctx.target, AEL)
    con = ctx.info.constraint(cmd.name) if ctx.info is not None else None
    if con is None:
        ctx.out.note(
            f"constraint {cmd.name} is unknown without a database: if it is a foreign key, "
            "dropping it takes AccessExclusiveLock on the referenced table too"
        )
    elif con.referenced is not None:
        ctx.out.lock(con.referenced, AEL)


def _attach_partition(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    part: ast.PartitionCmd = cmd.def_
    partition = ctx.other(part.name)
    if ctx.target_kind == "index":
        ctx.out.lock(ctx.target, AEL, kind="index")
        ctx.out.lock(partition, AEL, kind="index")
        return
    parent_mode = SUE if ctx.version_num >= versions.ATTACH_PARTITION_SUE else AEL
    ctx.out.lock(ctx.target, parent_mode)
    ctx.out.lock(partition, AEL)
    ctx.out.scan(partition)
    ctx.out.note("the partition scan is skipped when a valid CHECK constraint implies the bound")
    default = ctx.info.default_partition if ctx.info is not None else None
    if default is not None:
        ctx.out.lock(default, AEL)
        ctx.out.scan(default)


def _detach_partition(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    part: ast.PartitionCmd = cmd.def_
    partition = ctx.other(part.name)
    if not part.concurrent:
        ctx.out.lock(ctx.target, AEL)
        ctx.out.lock(partition, AEL)
        default = ctx.info.default_partition if ctx.info is not None else None
        if default is not None:
            ctx.out.lock(default, AEL)  # its implicit constraint changes with the bounds
        return
    if ctx.version_num < versions.DETACH_PARTITION_CONCURRENTLY:
        raise UnsupportedStatement(
            "DETACH PARTITION ... CONCURRENTLY needs PostgreSQL 14 or later; "
            "on this server use a plain DETACH PARTITION (it takes ACCESS EXCLUSIVE on the parent)"
        )
    ctx.out.transactional = False
    ctx.out.lock(ctx.target, SUE)
    ctx.out.lock(partition, AEL)


def _inherit(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    ctx.out.lock(ctx.target, AEL)
    parent_mode = SUE if cmd.subtype == AT.AT_AddInherit else LockMode.ACCESS_SHARE
    ctx.out.lock(ctx.other(cmd.def_), parent_mode)


def _set_expression(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    ctx.out.lock(ctx.target, AEL)
    ctx.out.rewrite(ctx.target)
    ctx.out.note(f"column {cmd.name}: a new STORED expression is computed for every row")


def _detach_finalize(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    part: ast.PartitionCmd = cmd.def_
    ctx.out.lock(ctx.target, SUE)
    ctx.out.lock(ctx.other(part.name), AEL)


_HANDLERS: dict[AT, Handler] = {
    AT.AT_AddColumn: _add_column,
    AT.AT_AlterColumnType: _alter_column_type,
    AT.AT_SetNotNull: _set_not_null,
    AT.AT_AddConstraint: _add_constraint,
    AT.AT_ValidateConstraint: _validate_constraint,
    AT.AT_DropConstraint: _drop_constraint,
    AT.AT_AttachPartition: _attach_partition,
    AT.AT_DetachPartition: _detach_partition,
    AT.AT_DetachPartitionFinalize: _detach_finalize,
    AT.AT_AddInherit: _inherit,
    AT.AT_DropInherit: _inherit,
    AT.AT_SetExpression: _set_expression,
}
_KIND_BY_OBJECT = {
    ObjectType.OBJECT_TABLE: "table",
    ObjectType.OBJECT_INDEX: "index",
    ObjectType.OBJECT_VIEW: "view",
    ObjectType.OBJECT_MATVIEW: "materialized view",
    ObjectType.OBJECT_SEQUENCE: "sequence",
    ObjectType.OBJECT_FOREIGN_TABLE: "foreign table",
}
_SUBCOMMAND_NAMES = {
    AT.AT_AddColumn: "ADD COLUMN",
    AT.AT_DropColumn: "DROP COLUMN",
    AT.AT_AlterColumnType: "ALTER COLUMN TYPE",
    AT.AT_SetNotNull: "SET NOT NULL",
    AT.AT_DropNotNull: "DROP NOT NULL",
    AT.AT_ColumnDefault: "SET/DROP DEFAULT",
    AT.AT_AddConstraint: "ADD CONSTRAINT",
    AT.AT_ValidateConstraint: "VALIDATE CONSTRAINT",
    AT.AT_DropConstraint: "DROP CONSTRAINT",
    AT.AT_AttachPartition: "ATTACH PARTITION",
    AT.AT_DetachPartition: "DETACH PARTITION",
}
