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
from typing import TypeVar

from pglast import ast, parse_sql
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType, DropBehavior, ObjectType

from zdmproxy.errors import UnsupportedStatement
from zdmproxy.sql import partition_bounds, versions
from zdmproxy.sql.effects import EffectsBuilder
from zdmproxy.sql.facts import CatalogFacts, RelationInfo
from zdmproxy.sql.foreign_keys import rebuilt_by_type_change
from zdmproxy.sql.locks import LockMode, RelationName
from zdmproxy.sql.names import range_var_name
from zdmproxy.sql.objects import typed_table_types
from zdmproxy.sql.trees import PARTITIONS, Tree, pruned
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
S = LockMode.SHARE

# ENABLE/DISABLE TRIGGER in all its forms: SHARE ROW EXCLUSIVE, like CREATE TRIGGER.
TRIGGER_SUBCOMMANDS: tuple[AT, ...] = (
    AT.AT_EnableTrig,
    AT.AT_EnableAlwaysTrig,
    AT.AT_EnableReplicaTrig,
    AT.AT_EnableTrigAll,
    AT.AT_EnableTrigUser,
    AT.AT_DisableTrig,
    AT.AT_DisableTrigAll,
    AT.AT_DisableTrigUser,
)
# Subcommands whose only effect is a lock on the altered relation.
PLAIN_MODES: dict[AT, LockMode] = {
    **dict.fromkeys(
        (
            AT.AT_ColumnDefault,
            AT.AT_CookedColumnDefault,
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
    **dict.fromkeys(TRIGGER_SUBCOMMANDS, SRE),
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
# Constraints every inheritance child has a copy of (pg_constraint.contype): CHECK, NOT NULL (18).
INHERITED_CONSTRAINTS = frozenset({"c", "n"})
# SET / RESET (storage parameters) takes the strongest mode of the parameters named, each
# parameter's own (reloptions.c, whatever the relation's kind): these take ACCESS EXCLUSIVE
# (a view's options change its queries; the index ones change how it is built or searched) ...
ACCESS_EXCLUSIVE_PARAMETERS = frozenset(
    {
        "check_option",
        "security_barrier",
        "security_invoker",
        "user_catalog_table",
        "autosummarize",
        "pages_per_range",
        "fastupdate",
        "gin_pending_list_limit",
        "buffering",
    }
)
# ... these SHARE UPDATE EXCLUSIVE; a parameter in neither list (an extension's) is taken to be
# ACCESS EXCLUSIVE, as bloom's are.
SHARE_UPDATE_EXCLUSIVE_PARAMETERS = frozenset(
    {
        "autovacuum_enabled",
        "vacuum_truncate",
        "deduplicate_items",
        "fillfactor",
        "autovacuum_vacuum_threshold",
        "autovacuum_vacuum_max_threshold",
        "autovacuum_vacuum_insert_threshold",
        "autovacuum_analyze_threshold",
        "autovacuum_vacuum_cost_limit",
        "autovacuum_freeze_min_age",
        "autovacuum_multixact_freeze_min_age",
        "autovacuum_freeze_max_age",
        "autovacuum_multixact_freeze_max_age",
        "autovacuum_freeze_table_age",
        "autovacuum_multixact_freeze_table_age",
        "log_autovacuum_min_duration",
        "toast_tuple_target",
        "parallel_workers",
        "autovacuum_vacuum_cost_delay",
        "autovacuum_vacuum_scale_factor",
        "autovacuum_vacuum_insert_scale_factor",
        "autovacuum_analyze_scale_factor",
        "vacuum_max_eager_freeze_failure_rate",
        "vacuum_cleanup_index_scale_factor",
        "vacuum_index_cleanup",
    }
)
PARAMETER_SUBCOMMANDS = frozenset({AT.AT_SetRelOptions, AT.AT_ResetRelOptions})
# Subcommands that write the whole table anew under ACCESS EXCLUSIVE.
REWRITING: frozenset[AT] = frozenset(
    {AT.AT_SetTableSpace, AT.AT_SetAccessMethod, AT.AT_SetLogged, AT.AT_SetUnLogged}
)
# Without ONLY, these act on every partition and inheritance child too, with the same mode
# (checked against pg_locks on 15 and 18 where tests/test_lock_catalogue.py has a case, and by
# hand on 16; the rest follow tablecmds.c's ATSimpleRecursion). Measured never to recurse:
# SET (attribute options), SET COMPRESSION, OWNER, REPLICA IDENTITY, ROW LEVEL SECURITY,
# SET (storage parameters); nor do CLUSTER ON, rules and SET LOGGED / UNLOGGED.
RECURSES: frozenset[AT] = frozenset(
    {
        AT.AT_AddColumn,
        AT.AT_DropColumn,
        AT.AT_ColumnDefault,
        AT.AT_CookedColumnDefault,
        AT.AT_DropNotNull,
        AT.AT_SetNotNull,
        AT.AT_SetStatistics,
        AT.AT_SetStorage,
        AT.AT_AlterColumnType,
        AT.AT_DropExpression,
        AT.AT_SetExpression,
        AT.AT_AddConstraint,
        AT.AT_ValidateConstraint,
        AT.AT_DropConstraint,
    }
)
# These recurse into partitions only: triggers, foreign keys and identity are not inherited.
# (Identity recurses from PostgreSQL 17 on; on older servers this over-states, never under-states.)
RECURSES_INTO_PARTITIONS: frozenset[AT] = frozenset(
    {
        *TRIGGER_SUBCOMMANDS,
        AT.AT_AlterConstraint,
        AT.AT_AddIdentity,
        AT.AT_SetIdentity,
        AT.AT_DropIdentity,
    }
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
    inh: bool  # the statement names the table without ONLY

    def other(self, node: ast.Node | tuple[ast.Node, ...] | None) -> RelationName:
        assert isinstance(node, ast.RangeVar)
        return self.facts.qualify(range_var_name(node))

    def tree(self, subtype: AT | None) -> Tree:
        """The target and the children this subcommand reaches (none with ONLY, or for a
        subcommand that never recurses)."""
        if self.target_kind != "table":
            return Tree(self.target, self.info, recurse=False)
        if subtype in RECURSES_INTO_PARTITIONS:
            partitioned = self.info is None or self.info.is_partitioned
            return Tree(self.target, self.info, recurse=self.inh and partitioned, reaches=PARTITIONS)
        return Tree(self.target, self.info, recurse=self.inh and subtype in RECURSES)


Handler = Callable[[AlterContext, ast.AlterTableCmd], None]
N = TypeVar("N", bound=ast.Node)


def _definition(cmd: ast.AlterTableCmd, kind: type[N]) -> N:
    """The subcommand's definition, of the node type its subtype implies (pglast types it loosely)."""
    node = cmd.def_
    assert isinstance(node, kind), f"{cmd.subtype}: expected {kind.__name__}, got {type(node).__name__}"
    return node


def classify_alter_table(stmt: ast.AlterTableStmt, facts: CatalogFacts, version_num: int) -> EffectsBuilder:
    target_kind = _KIND_BY_OBJECT.get(stmt.objtype, "table") if stmt.objtype is not None else "table"
    written = range_var_name(stmt.relation)
    info = facts.resolve(written)
    target = info.name if info is not None else written
    if info is not None and info.relkind == "v":
        target_kind = "view"  # ALTER TABLE on a view is accepted, and acts as ALTER VIEW
    cmds = [c for c in stmt.cmds or () if isinstance(c, ast.AlterTableCmd) and c.subtype is not None]
    if target_kind == "type":
        return _alter_composite_type(stmt, target, cmds, facts)
    names = sorted({_SUBCOMMAND_NAMES.get(_subtype(cmd), _subtype(cmd).name[3:]) for cmd in cmds})
    out = EffectsBuilder(kind=f"ALTER {target_kind.upper()} " + ", ".join(names))
    inh = stmt.relation is not None and bool(stmt.relation.inh)
    ctx = AlterContext(out, facts, version_num, target, target_kind, info, inh=inh)
    for cmd in cmds:
        subtype = _subtype(cmd)
        handler = _HANDLERS.get(subtype)
        if handler is not None:
            handler(ctx, cmd)
        elif subtype in REWRITING:
            out.lock(target, AEL, kind=lock_kind(target_kind))
            out.rewrite(target)
        else:
            mode = PLAIN_MODES.get(subtype, AEL)
            if subtype in PARAMETER_SUBCOMMANDS:
                mode = parameters_mode(cmd.def_)
            out.lock(target, mode, kind=lock_kind(target_kind))
            ctx.tree(subtype).lock_children(out, mode)
    return out


def parameters_mode(options: object) -> LockMode:
    """The mode SET / RESET (parameters) takes: the strongest of the parameters named."""
    names = [o.defname for o in options if isinstance(o, ast.DefElem)] if isinstance(options, tuple) else []
    if names and all(name in SHARE_UPDATE_EXCLUSIVE_PARAMETERS for name in names):
        return SUE
    return AEL


def _alter_composite_type(
    stmt: ast.AlterTableStmt, target: RelationName, cmds: list[ast.AlterTableCmd], facts: CatalogFacts
) -> EffectsBuilder:
    """ALTER TYPE of a composite type (ADD / DROP / ALTER ATTRIBUTE): the type alone, unless CASCADE.

    Without CASCADE it fails if a typed table (CREATE TABLE ... OF type) exists,
    and ALTER ATTRIBUTE TYPE fails whenever a column uses the type; with CASCADE
    every typed table, and every partition or inheritance child below one, is
    altered too, under ACCESS EXCLUSIVE (a column of the type elsewhere is not).
    """
    out = EffectsBuilder(kind="ALTER TYPE (composite)")
    out.lock(target, AEL, kind="type")
    if any(cmd.behavior == DropBehavior.DROP_CASCADE for cmd in cmds):
        retypes = any(cmd.subtype == AT.AT_AlterColumnType for cmd in cmds)
        lock_typed_tables(out, facts, stmt, rewrites=retypes)
        if any(cmd.subtype == AT.AT_DropColumn for cmd in cmds):
            out.not_catalogued(
                "ALTER TYPE ... DROP ATTRIBUTE ... CASCADE also drops what depends on the attribute "
                "(a CHECK or a view on a column of the type, in any table), which the facts do not list"
            )
    return out


def lock_typed_tables(out: EffectsBuilder, facts: CatalogFacts, node: ast.Node, *, rewrites: bool) -> None:
    """ALTER TYPE ... CASCADE: ACCESS EXCLUSIVE on every typed table of the type and below them, as
    the catalog lists them; ``rewrites``: an attribute's type changes, each table with storage is
    assumed rewritten (its old type is not compared)."""
    for name in typed_table_types(node):
        tables = facts.typed_tables.get(name)
        if tables is None:
            out.not_catalogued(
                "ALTER TYPE ... CASCADE alters every typed table of the type, which are unknown "
                "without a database"
            )
            continue
        for table, relkind in tables:
            out.lock(table, AEL)
            if rewrites and relkind == "r":
                out.rewrite(table)
        if rewrites and tables:
            out.note("the typed tables are assumed rewritten: their columns' old type is not compared")


def lock_kind(target_kind: str) -> str:
    """What a lock request calls the relation: an index, or a table (views and the rest alike)."""
    return "index" if target_kind == "index" else "table"


def _subtype(cmd: ast.AlterTableCmd) -> AT:
    assert cmd.subtype is not None
    return cmd.subtype


def _add_column(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    column = _definition(cmd, ast.ColumnDef)
    # A child that already has a column of that name merges it, and the recursion stops there.
    tree = pruned(ctx.tree(cmd.subtype), lambda child: column.colname in child.columns)
    tree.lock(ctx.out, AEL)
    why = _new_column_rewrites(ctx, column)
    if why:
        tree.rewrite(ctx.out)
        ctx.out.note(f"column {column.colname}: {why}")
    for con in column.constraints or ():
        if con.contype == ConstrType.CONSTR_FOREIGN:
            ctx.out.lock(ctx.other(con.pktable), SRE)
        elif con.contype == ConstrType.CONSTR_CHECK and not why:
            tree.scan(ctx.out)  # a CHECK is inherited: every child is checked
        elif con.contype in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
            # The index is built on each partition, but an inheritance child gets none.
            if tree.partitioned:
                tree.scan(ctx.out)
            else:
                _scan_own(ctx)


def _scan_own(ctx: AlterContext) -> None:
    """Scan the target's own rows: nothing for a partitioned table, which has none."""
    Tree(ctx.target, ctx.info, recurse=False).scan(ctx.out)


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
    tree = ctx.tree(cmd.subtype)
    tree.lock(ctx.out, AEL)
    views = _views_using(ctx, cmd.name)
    if views:
        ctx.out.note(
            f"column {cmd.name} is used by {views}: PostgreSQL refuses to change its type (0A000); "
            "drop and recreate the views around the change"
        )
    for fk in rebuilt_by_type_change(ctx.info, cmd.name):
        # The key is dropped and added again, and validated: ACCESS EXCLUSIVE on its other table as
        # well, the referencing table read in full and the referenced one read or probed.
        ctx.out.lock(fk.referenced if fk.table == ctx.target else fk.table, AEL)
        ctx.out.scan(fk.table)
        _scan_referenced(ctx, fk.referenced)
    column = _definition(cmd, ast.ColumnDef)
    old = ctx.info.columns.get(cmd.name or "") if ctx.info is not None else None
    if type_change_rewrites(old, column.typeName, column.raw_default is not None):
        tree.rewrite(ctx.out)
        if old is None:
            ctx.out.note(f"column {cmd.name}: its current type is unknown, a rewrite is assumed")
        else:
            ctx.out.note(f"column {cmd.name}: {old.typname} to {type_name(column.typeName)} rewrites")
    elif column.collClause is not None and (ctx.info is None or ctx.info.indexes):
        # No rewrite, but an index whose collation changes is rebuilt, and a build reads the table.
        tree.scan(ctx.out)
        ctx.out.note(f"column {cmd.name}: indexes on it are rebuilt when its collation changes")


def _direct_children_with_only(ctx: AlterContext) -> None:
    """ALTER TABLE ONLY parent DROP COLUMN / DROP CONSTRAINT still locks the direct children:
    their copies become their own (attinhcount, coninhcount are decremented)."""
    if ctx.inh or ctx.target_kind != "table" or ctx.info is None:
        return
    for child in ctx.info.children:
        if child.depth == 1:
            ctx.out.lock(child.name, AEL)


def _drop_column(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    ctx.out.lock(ctx.target, AEL, kind=lock_kind(ctx.target_kind))
    # A child that holds the column on its own keeps it (one parent fewer): recursion stops there.
    pruned(ctx.tree(cmd.subtype), lambda child: cmd.name in child.own_columns).lock_children(ctx.out, AEL)
    _direct_children_with_only(ctx)
    views = _views_using(ctx, cmd.name)
    if views and cmd.behavior != DropBehavior.DROP_CASCADE:
        ctx.out.note(f"column {cmd.name} is used by {views}: DROP COLUMN fails without CASCADE")
    elif views:
        ctx.out.note(f"column {cmd.name} is used by {views}: CASCADE drops them too")


def _views_using(ctx: AlterContext, column: str | None) -> str:
    """The views that use ``column``, as text for a note ("" when none or unknown)."""
    if ctx.info is None or column is None:
        return ""
    views = ctx.info.column_views.get(column, ())
    return ("view " if len(views) == 1 else "views ") + ", ".join(map(str, views)) if views else ""


def _set_not_null(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    tree = ctx.tree(cmd.subtype)
    tree.lock(ctx.out, AEL)
    if ctx.info is not None and _known_not_null(ctx, ctx.info, cmd.name or ""):
        if _inherited_proof(ctx, ctx.info, cmd.name or ""):
            return  # every child has a valid copy of the CHECK that proves it too
        # The table's own rows need no check; children are checked unless known otherwise.
        for child in tree.children:
            if child.has_storage:
                ctx.out.scan(child.name)
        return
    tree.scan(ctx.out)


def _known_not_null(ctx: AlterContext, info: RelationInfo, column: str) -> bool:
    """Whether SET NOT NULL on ``column`` can skip the scan of the table's own rows.

    It can when the column already is NOT NULL (the command is a no-op) or, on
    PostgreSQL 12+, when a valid CHECK (column IS NOT NULL) proves it.
    """
    known = info.columns.get(column)
    if known is not None and known.not_null:
        return True
    return ctx.version_num >= versions.SET_NOT_NULL_USES_CHECK and any(
        c.validated and c.not_null_column == column for c in info.constraints
    )


def _inherited_proof(ctx: AlterContext, info: RelationInfo, column: str) -> bool:
    """A valid CHECK (column IS NOT NULL) that every child inherited (not NO INHERIT): validating
    it validated the children's copies, so SET NOT NULL reads none of their rows either."""
    return ctx.version_num >= versions.SET_NOT_NULL_USES_CHECK and any(
        c.validated and c.not_null_column == column and not c.no_inherit for c in info.constraints
    )


def _index_columns_not_null(ctx: AlterContext, index: str) -> bool:
    """Whether every column of the table's index ``index`` is known NOT NULL: PRIMARY KEY USING
    INDEX then has nothing to check (its implicit SET NOT NULL is a no-op)."""
    if ctx.info is None:
        return False
    definition = next((i.definition for i in ctx.info.index_definitions if i.name == index), None)
    if definition is None:
        return False
    node = parse_sql(definition)[0].stmt
    assert isinstance(node, ast.IndexStmt)
    names = [element.name for element in node.indexParams or () if isinstance(element, ast.IndexElem)]
    known = [ctx.info.columns.get(name) if name else None for name in names]
    return bool(known) and all(column is not None and column.not_null for column in known)


def _keys_not_null(ctx: AlterContext, con: ast.Constraint) -> bool:
    """Whether every column of the key is known NOT NULL (partitions have their parent's)."""
    columns = [
        ctx.info.columns.get(str(key.sval)) if ctx.info is not None else None for key in con.keys or ()
    ]
    return bool(columns) and all(column is not None and column.not_null for column in columns)


def _add_constraint(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    con = _definition(cmd, ast.Constraint)
    validates = not con.skip_validation
    tree = ctx.tree(cmd.subtype)
    whole_tree = ctx.version_num >= versions.CONSTRAINTS_LOCK_WHOLE_TREE
    if con.contype == ConstrType.CONSTR_FOREIGN:
        parent = ctx.other(con.pktable)
        ctx.out.lock(parent, SRE)
        if tree.partitioned or ctx.info is None:
            # Each partition gets its own copy of the key, and each copy is validated.
            tree.lock(ctx.out, SRE)
            if validates:
                tree.scan(ctx.out)
        else:
            # Foreign keys are not inherited: the children are only locked, and only from 18 on.
            ctx.out.lock(ctx.target, SRE)
            if whole_tree:
                tree.lock_children(ctx.out, SRE)
            if validates:
                _scan_own(ctx)
        if validates:
            _scan_referenced(ctx, parent)
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
            if con.contype == ConstrType.CONSTR_PRIMARY and not _index_columns_not_null(ctx, con.indexname):
                ctx.out.scan(ctx.target)
                ctx.out.note("PRIMARY KEY USING INDEX scans the table unless its columns are NOT NULL")
            return
        primary = con.contype == ConstrType.CONSTR_PRIMARY
        only_sets_not_null = primary and not ctx.inh and ctx.info is not None and not _keys_not_null(ctx, con)
        if only_sets_not_null and (tree.partitioned or ctx.version_num >= versions.NOT_NULL_CONSTRAINTS):
            # ONLY: the key's columns become NOT NULL on the table alone, which every child at any
            # depth must already be (a partition's on 15 too): each is checked under ACCESS EXCLUSIVE.
            Tree(ctx.target, ctx.info, recurse=True).lock_children(ctx.out, AEL)
        if tree.partitioned or ctx.info is None:
            # The index is built on every partition (SHARE, like CREATE INDEX, before 18); a primary
            # key makes its columns NOT NULL there too (ACCESS EXCLUSIVE) unless they already are.
            sets_not_null = primary and not _keys_not_null(ctx, con)
            # A DEFERRABLE key also gets its recheck trigger on each partition (SHARE ROW EXCLUSIVE).
            built = SRE if con.deferrable else S
            tree.lock_children(ctx.out, AEL if sets_not_null or whole_tree else built)
            tree.scan(ctx.out)
        elif primary:
            # The key's columns become NOT NULL in every child, which checks their rows.
            tree.lock_children(ctx.out, AEL)
            tree.scan(ctx.out)
        else:
            if whole_tree:
                tree.lock_children(ctx.out, AEL)
            _scan_own(ctx)
        return
    if con.is_no_inherit:
        # Only the table itself has it and is checked; 17+ still locks the children (the tree is
        # locked before the constraint is looked at).
        if whole_tree:
            tree.lock_children(ctx.out, AEL)
        if validates:
            _scan_own(ctx)
        return
    # CHECK (and NOT NULL on 18): inherited by every child, and checked there too.
    tree.lock_children(ctx.out, AEL)
    if validates and not _not_null_proven(ctx, con, tree):
        tree.scan(ctx.out)


def _not_null_proven(ctx: AlterContext, con: ast.Constraint, tree: Tree) -> bool:
    """A NOT NULL constraint (18) on a table without children whose column a valid CHECK
    (col IS NOT NULL) already proves: like SET NOT NULL, it reads no row (measured on 18)."""
    keys = con.keys or ()
    return (
        con.contype == ConstrType.CONSTR_NOTNULL
        and ctx.info is not None
        and not tree.children
        and len(keys) == 1
        and _known_not_null(ctx, ctx.info, str(keys[0].sval))
    )


def _validate_constraint(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    con = ctx.info.constraint(cmd.name or "") if ctx.info is not None else None
    if con is not None and con.kind in INHERITED_CONSTRAINTS and con.no_inherit:
        # A NO INHERIT check: only the table itself has it; its own rows are checked.
        ctx.out.lock(ctx.target, SUE)
        if not con.validated:
            _scan_own(ctx)
        return
    tree = ctx.tree(cmd.subtype)
    tree.lock(ctx.out, SUE)
    already_valid = con is not None and con.validated
    if not already_valid:  # an already valid constraint is not checked again (nor its other table)
        tree.scan(ctx.out)
    if con is None:
        ctx.out.note(
            f"constraint {cmd.name} is unknown without a database: if it is a foreign key, "
            "VALIDATE also takes RowShareLock on the referenced table"
        )
    elif con.referenced is not None and not already_valid:
        ctx.out.lock(con.referenced, LockMode.ROW_SHARE)
        _scan_referenced(ctx, con.referenced)


def _scan_referenced(ctx: AlterContext, parent: RelationName) -> None:
    """Validating a foreign key reads the referenced table in full or probes it, as the planner likes.

    PostgreSQL checks every referencing row with one anti-join query: a hash or
    merge join reads the referenced table in full, a nested loop probes its key
    once per referencing row (measured: both happen, depending on the data). A
    full read is assumed, and said.
    """
    ctx.out.scan(parent)
    ctx.out.note(
        f"validating the foreign key reads {parent} in full or probes its key once per row, "
        "as the planner chooses; a full read is assumed"
    )


def _drop_not_null(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    ctx.tree(cmd.subtype).lock(ctx.out, AEL)
    if ctx.version_num >= versions.NOT_NULL_CONSTRAINTS:
        # NOT NULL is an inherited constraint from 18 on: ONLY still reaches the direct children.
        _direct_children_with_only(ctx)


def _drop_constraint(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    con = ctx.info.constraint(cmd.name or "") if ctx.info is not None else None
    tree = ctx.tree(cmd.subtype)
    if ctx.info is not None and ctx.info.is_partitioned and not tree.recurse:
        # Every partition, at any depth, is checked not to be in use first (ONLY or not).
        tree = Tree(ctx.target, ctx.info, recurse=True)
    elif con is not None and not con.inherited and not tree.partitioned:
        # Only inherited constraints (CHECK, NOT NULL on 18) recurse into inheritance children; a
        # key, a unique or exclusion constraint, or a NO INHERIT check is the table's alone. (A
        # partitioned table's partitions lose their copies of a key through its dependencies.)
        tree = Tree(ctx.target, ctx.info, recurse=False)
    tree.lock(ctx.out, AEL)
    if con is not None and con.inherited:
        _direct_children_with_only(ctx)
    if con is None:
        ctx.out.note(
            f"constraint {cmd.name} is unknown without a database: if it is a foreign key, "
            "dropping it takes AccessExclusiveLock on the referenced table too"
        )
    elif con.referenced is not None:
        ctx.out.lock(con.referenced, AEL)


def _partition(ctx: AlterContext, part: ast.PartitionCmd) -> Tree:
    """The partition being attached or detached, with its own partitions if it has any."""
    written = range_var_name(part.name)
    info = ctx.facts.resolve(written)
    return Tree(info.name if info is not None else written, info, recurse=True, reaches=PARTITIONS)


def _attach_partition(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    part = _definition(cmd, ast.PartitionCmd)
    if ctx.target_kind == "index":
        # The partitioned index takes SHARE UPDATE EXCLUSIVE (measured on 15 and 18), the one
        # attached to it ACCESS EXCLUSIVE.
        ctx.out.lock(ctx.target, SUE, kind="index")
        ctx.out.lock(ctx.other(part.name), AEL, kind="index")
        # Both indexes' tables are opened (ACCESS SHARE) to check that the definitions match.
        for index in (ctx.info, ctx.facts.resolve(range_var_name(part.name))):
            if index is not None and index.table is not None:
                ctx.out.lock(index.table, LockMode.ACCESS_SHARE)
            else:
                ctx.out.note("the tables of the indexes are unknown without a database; they are read too")
        return
    parent_mode = SUE if ctx.version_num >= versions.ATTACH_PARTITION_SUE else AEL
    ctx.out.lock(ctx.target, parent_mode)
    for ancestor in ctx.info.ancestors if ctx.info is not None else ():
        # Attaching below a partition: its own partition constraint is part of the new one's, and
        # computing it reads every ancestor's bounds (ACCESS SHARE; unless this backend has them
        # cached, which a fresh step's session has not).
        ctx.out.lock(ancestor, LockMode.ACCESS_SHARE)
    partition = _partition(ctx, part)
    ctx.out.lock(partition.name, AEL)
    for child in partition.children:  # a partitioned partition: its partitions are checked too
        ctx.out.lock(child.name, AEL)
    # No scan where a valid CHECK is exactly the bound's constraint (or, on the default
    # partition, its negation): PostgreSQL proves the rows fit from it.
    check = partition_bounds.attach_check(ctx.info, part.bound) if part.bound is not None else None
    if check is None or partition.children or not partition_bounds.implied(partition.info, check):
        partition.scan(ctx.out)
        ctx.out.note("the partition scan is skipped when a valid CHECK constraint implies the bound")
    parent_indexes = len(ctx.info.indexes) if ctx.info is not None else 0
    if partition.info is None or len(partition.info.indexes) < parent_indexes:
        # Each index of the parent the partition lacks is built on it, under the lock.
        partition.scan(ctx.out)
        ctx.out.note("the parent's indexes the partition lacks are built on it under AccessExclusiveLock")
    check_default_partition(ctx.out, ctx.facts, ctx.info, check)


def check_default_partition(
    out: EffectsBuilder, facts: CatalogFacts, parent: RelationInfo | None, check: str | None
) -> None:
    """A new partition of ``parent`` (ATTACH PARTITION, CREATE TABLE ... PARTITION OF) narrows
    its default partition: ACCESS EXCLUSIVE on it and, if it is partitioned, on every partition
    below it, whose rows are read to prove none belongs to the new partition, unless a valid
    CHECK of the default partition already says so (check_default_partition_contents)."""
    default = parent.default_partition if parent is not None else None
    if default is None:
        return
    tree = Tree(default, facts.resolve(default), recurse=True, reaches=PARTITIONS)
    tree.lock(out, AEL)
    outside = partition_bounds.outside(check) if check is not None else None
    if outside is None or not partition_bounds.implied(tree.info, outside):
        tree.scan(out)


def _detach_partition(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    part = _definition(cmd, ast.PartitionCmd)
    partition = _partition(ctx, part)
    if not part.concurrent:
        ctx.out.lock(ctx.target, AEL)
        ctx.out.lock(partition.name, AEL)
        for child in partition.children:
            ctx.out.lock(child.name, AEL)
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
    ctx.out.lock(partition.name, AEL)


def _inherit(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    ctx.out.lock(ctx.target, AEL)
    parent_mode = SUE if cmd.subtype == AT.AT_AddInherit else LockMode.ACCESS_SHARE
    ctx.out.lock(ctx.other(cmd.def_), parent_mode)


def _set_expression(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    tree = ctx.tree(cmd.subtype)
    tree.lock(ctx.out, AEL)
    tree.rewrite(ctx.out)
    ctx.out.note(f"column {cmd.name}: a new STORED expression is computed for every row")


def _enable_disable_trigger(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    """ENABLE / DISABLE TRIGGER: on a partitioned table, a row-level trigger is switched on every
    partition too (their copies); a statement-level trigger has no copies."""
    tree = ctx.tree(cmd.subtype)
    ctx.out.lock(ctx.target, SRE, kind=lock_kind(ctx.target_kind))
    if tree.partitioned and not row_triggers_named(tree.info, cmd.subtype, cmd.name):
        return
    tree.lock_children(ctx.out, SRE)


def row_triggers_named(info: RelationInfo | None, subtype: AT | None, name: str | None) -> bool:
    """Whether the triggers an ENABLE / DISABLE TRIGGER (``subtype``, or a trigger ``name`` with
    subtype None) names include a row-level one (True when the facts do not say)."""
    if info is None or info.row_triggers is None:
        return True
    if subtype in (AT.AT_EnableTrigAll, AT.AT_DisableTrigAll):
        return bool(info.row_triggers)
    if subtype in (AT.AT_EnableTrigUser, AT.AT_DisableTrigUser):
        return not all(info.row_triggers.values())
    return name in info.row_triggers


def _detach_finalize(ctx: AlterContext, cmd: ast.AlterTableCmd) -> None:
    part = _definition(cmd, ast.PartitionCmd)
    ctx.out.lock(ctx.target, SUE)
    ctx.out.lock(ctx.other(part.name), AEL)


_HANDLERS: dict[AT, Handler] = {
    AT.AT_DropColumn: _drop_column,
    AT.AT_AddColumn: _add_column,
    AT.AT_AlterColumnType: _alter_column_type,
    AT.AT_SetNotNull: _set_not_null,
    AT.AT_AddConstraint: _add_constraint,
    AT.AT_ValidateConstraint: _validate_constraint,
    AT.AT_DropConstraint: _drop_constraint,
    AT.AT_DropNotNull: _drop_not_null,
    **dict.fromkeys(TRIGGER_SUBCOMMANDS, _enable_disable_trigger),
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
    ObjectType.OBJECT_TYPE: "type",
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
