"""The lock catalogue: which locks a statement takes, what it rewrites and scans.

``classify`` is pure: it reads a parse tree, the server version, and catalog
facts handed in by the caller. Statement kinds it does not know are not
guessed optimistically: they are reported as taking ACCESS EXCLUSIVE on every
relation they name, with a note saying so.
"""

from __future__ import annotations

from collections.abc import Callable

from pglast import ast
from pglast.enums import ConstrType, DropBehavior, ObjectType, ReindexObjectType
from pglast.visitors import Visitor

from zdmproxy.errors import UnsupportedStatement
from zdmproxy.sql import versions
from zdmproxy.sql.alter_table import classify_alter_table
from zdmproxy.sql.effects import Effects, EffectsBuilder
from zdmproxy.sql.facts import CatalogFacts
from zdmproxy.sql.locks import LockMode, RelationName
from zdmproxy.sql.names import dotted_name, range_var_name
from zdmproxy.sql.parse import Statement

AS = LockMode.ACCESS_SHARE
RE = LockMode.ROW_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
S = LockMode.SHARE
SRE = LockMode.SHARE_ROW_EXCLUSIVE
AEL = LockMode.ACCESS_EXCLUSIVE

Classifier = Callable[[ast.Node, CatalogFacts, int], EffectsBuilder]


def classify(
    statement: Statement, facts: CatalogFacts | None = None, version_num: int | None = None
) -> Effects:
    """The effects of running ``statement`` as written on a server of ``version_num``."""
    facts = facts or CatalogFacts()
    version = version_num or facts.server_version_num or versions.DEFAULT_VERSION_NUM
    node = statement.node
    classifier = _CLASSIFIERS.get(type(node), _unknown)
    return classifier(node, facts, version).build()


def _q(facts: CatalogFacts, name: RelationName) -> RelationName:
    return facts.qualify(name)


def _alter_table(node: ast.AlterTableStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    return classify_alter_table(node, facts, version)


def _rename(node: ast.RenameStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    if node.relation is None:
        return EffectsBuilder(kind=f"RENAME {node.renameType.name[7:]}")
    target = _q(facts, range_var_name(node.relation))
    out = EffectsBuilder(kind=f"RENAME {node.renameType.name[7:]}")
    is_index = node.renameType == ObjectType.OBJECT_INDEX
    # Renaming an index takes only SHARE UPDATE EXCLUSIVE since PostgreSQL 12.
    out.lock(target, SUE if is_index else AEL, kind="index" if is_index else "table")
    return out


def _create_index(node: ast.IndexStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    table = _q(facts, range_var_name(node.relation))
    out = EffectsBuilder(kind="CREATE INDEX CONCURRENTLY" if node.concurrent else "CREATE INDEX")
    out.scan(table)
    if node.concurrent:
        out.transactional = False
        out.lock(table, SUE)
        if not node.idxname:
            raise UnsupportedStatement(
                "CREATE INDEX CONCURRENTLY without an index name: a failed build leaves an "
                "INVALID index that zdmproxy must find and drop before retrying; name the index"
            )
    else:
        out.lock(table, S)
        out.note("CREATE INDEX blocks writes for the whole build; CREATE INDEX CONCURRENTLY does not")
    if node.idxname:
        out.lock(RelationName(table.schema, node.idxname), AEL, kind="index", created=True)
    return out


def _drop(node: ast.DropStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    kind = node.removeType
    out = EffectsBuilder(kind=f"DROP {kind.name[7:]}{' CONCURRENTLY' if node.concurrent else ''}")
    cascade = node.behavior == DropBehavior.DROP_CASCADE
    for parts in node.objects or ():
        if not isinstance(parts, (tuple, list)):
            continue
        written = dotted_name(parts)
        info = facts.resolve(written)
        name = info.name if info is not None else written
        if kind == ObjectType.OBJECT_INDEX:
            mode = SUE if node.concurrent else AEL
            out.lock(name, mode, kind="index")
            if info is not None and info.table is not None:
                out.lock(info.table, mode)
            else:
                out.note(f"the table of index {name} is unknown without a database; it is locked too")
        elif kind in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW):
            out.lock(name, AEL)
            if info is None:
                out.note(f"{name}: tables it references by foreign key are locked too (unknown here)")
                continue
            for parent in info.fk_parents:
                out.lock(parent, AEL)
            if cascade:
                for child in info.fk_children:
                    out.lock(child, AEL)
        else:
            out.lock(name, AEL)
    if node.concurrent:
        out.transactional = False
    return out


def _reindex(node: ast.ReindexStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    concurrent = any(p.defname == "concurrently" for p in node.params or ())
    out = EffectsBuilder(kind="REINDEX CONCURRENTLY" if concurrent else "REINDEX")
    if concurrent:
        out.transactional = False
        if version < versions.REINDEX_CONCURRENTLY:
            raise UnsupportedStatement("REINDEX CONCURRENTLY needs PostgreSQL 12 or later")
    if node.relation is None:  # SCHEMA, DATABASE, SYSTEM
        out.transactional = False
        out.note("REINDEX of a whole schema or database locks every table in turn")
        return out
    written = range_var_name(node.relation)
    info = facts.resolve(written)
    name = info.name if info is not None else written
    table_mode, index_mode = (SUE, SUE) if concurrent else (S, AEL)
    if node.kind == ReindexObjectType.REINDEX_OBJECT_INDEX:
        out.lock(name, index_mode, kind="index")
        if info is not None and info.table is not None:
            out.lock(info.table, table_mode)
            out.scan(info.table)
        else:
            out.note(f"the table of index {name} is unknown without a database; it is locked too")
        return out
    out.lock(name, table_mode)
    out.scan(name)
    for index in info.indexes if info is not None else ():
        out.lock(index, index_mode, kind="index")
    if not concurrent:
        out.note("the planner locks every index of the table, so REINDEX blocks reads as well")
    return out


def _create_table(node: ast.CreateStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    table = _q(facts, range_var_name(node.relation))
    out = EffectsBuilder(kind="CREATE TABLE")
    out.lock(table, AEL, created=True)
    for element in node.tableElts or ():
        constraints = element.constraints if isinstance(element, ast.ColumnDef) else (element,)
        for con in constraints or ():
            if isinstance(con, ast.Constraint) and con.contype == ConstrType.CONSTR_FOREIGN:
                out.lock(_q(facts, range_var_name(con.pktable)), SRE)
    for parent in node.inhRelations or ():
        parent_name = _q(facts, range_var_name(parent))
        out.lock(parent_name, AEL if node.partbound is not None else SUE)
    return out


def _truncate(node: ast.TruncateStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind="TRUNCATE")
    for rel in node.relations:
        written = range_var_name(rel)
        info = facts.resolve(written)
        name = info.name if info is not None else written
        out.lock(name, AEL)
        out.rewrite(name)
        if node.behavior == DropBehavior.DROP_CASCADE and info is not None:
            for child in info.fk_children:
                out.lock(child, AEL)
                out.rewrite(child)
    out.note("TRUNCATE is not MVCC-safe: concurrent snapshots see the table empty")
    return out


def _vacuum(node: ast.VacuumStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    options = {opt.defname for opt in node.options or ()}
    full = "full" in options
    if not node.is_vacuumcmd:
        out = EffectsBuilder(kind="ANALYZE")
    else:
        out = EffectsBuilder(kind="VACUUM FULL" if full else "VACUUM", transactional=False)
    for rel in node.rels or ():
        name = _q(facts, range_var_name(rel.relation))
        out.lock(name, AEL if full else SUE)
        if full:
            out.rewrite(name)
        elif node.is_vacuumcmd:
            out.scan(name)
    if not node.rels:
        out.note("without a table list every table of the database is processed")
    return out


def _cluster(node: ast.ClusterStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind="CLUSTER")
    if node.relation is None:
        out.transactional = False
        out.note("a bare CLUSTER reclusters every previously clustered table")
        return out
    name = _q(facts, range_var_name(node.relation))
    out.lock(name, AEL)
    out.rewrite(name)
    return out


def _alter_enum(node: ast.AlterEnumStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(
        kind="ALTER TYPE ADD VALUE" if node.newVal and not node.oldVal else "ALTER TYPE RENAME VALUE"
    )
    if node.oldVal is None and version < versions.ENUM_ADD_VALUE_IN_TRANSACTION:
        out.transactional = False
    out.note("locks the enum type, not any table; a new value is usable only after COMMIT")
    return out


def _dml(node: ast.Node, facts: CatalogFacts, version: int) -> EffectsBuilder:
    target = _q(facts, range_var_name(node.relation))
    verb = {ast.UpdateStmt: "UPDATE", ast.DeleteStmt: "DELETE", ast.InsertStmt: "INSERT"}[type(node)]
    out = EffectsBuilder(kind=verb)
    out.lock(target, RE)
    for other in _range_vars(node):
        out.lock(_q(facts, other), AS)
    if verb != "INSERT" and getattr(node, "whereClause", None) is None:
        out.scan(target)
        out.note(f"{verb} without WHERE touches every row in one transaction: batch it")
    return out


def _select(node: ast.Node, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind="SELECT")
    for rel in _range_vars(node):
        out.lock(_q(facts, rel), AS)
    return out


def _create_trigger(node: ast.CreateTrigStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind="CREATE TRIGGER")
    out.lock(_q(facts, range_var_name(node.relation)), SRE)
    return out


def _no_table_locks(kind: str) -> Classifier:
    def classify_(node: ast.Node, facts: CatalogFacts, version: int) -> EffectsBuilder:
        return EffectsBuilder(kind=kind)

    return classify_


def _refuse(reason: str) -> Classifier:
    def classify_(node: ast.Node, facts: CatalogFacts, version: int) -> EffectsBuilder:
        raise UnsupportedStatement(reason)

    return classify_


def _unknown(node: ast.Node, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind=type(node).__name__)
    relations = _range_vars(node)
    for rel in relations:
        out.lock(_q(facts, rel), AEL)
    if relations:
        out.note(f"{type(node).__name__} is not in the lock catalogue: ACCESS EXCLUSIVE is assumed")
    return out


class _RangeVars(Visitor):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.found: list[RelationName] = []
        self.ctes: set[str] = set()

    def visit_CommonTableExpr(self, ancestors: object, node: ast.CommonTableExpr) -> None:
        self.ctes.add(node.ctename)

    def visit_RangeVar(self, ancestors: object, node: ast.RangeVar) -> None:
        name = range_var_name(node)
        if name.schema is None and name.name in self.ctes:
            return
        if name not in self.found:
            self.found.append(name)


def _range_vars(node: ast.Node) -> list[RelationName]:
    visitor = _RangeVars()
    visitor(node)
    return visitor.found


_CLASSIFIERS: dict[type, Classifier] = {
    ast.AlterTableStmt: _alter_table,
    ast.RenameStmt: _rename,
    ast.IndexStmt: _create_index,
    ast.DropStmt: _drop,
    ast.ReindexStmt: _reindex,
    ast.CreateStmt: _create_table,
    ast.TruncateStmt: _truncate,
    ast.VacuumStmt: _vacuum,
    ast.ClusterStmt: _cluster,
    ast.AlterEnumStmt: _alter_enum,
    ast.UpdateStmt: _dml,
    ast.DeleteStmt: _dml,
    ast.InsertStmt: _dml,
    ast.SelectStmt: _select,
    ast.CreateTrigStmt: _create_trigger,
    ast.CreateEnumStmt: _no_table_locks("CREATE TYPE"),
    ast.CreateFunctionStmt: _no_table_locks("CREATE FUNCTION"),
    ast.CreateSeqStmt: _no_table_locks("CREATE SEQUENCE"),
    ast.CreateSchemaStmt: _no_table_locks("CREATE SCHEMA"),
    ast.CreateExtensionStmt: _no_table_locks("CREATE EXTENSION"),
    ast.CommentStmt: _no_table_locks("COMMENT"),
    ast.TransactionStmt: _refuse(
        "BEGIN/COMMIT/ROLLBACK in a migration: zdmproxy runs each statement in its own short, "
        "lock-guarded transaction; remove the transaction control statements"
    ),
    ast.VariableSetStmt: _refuse(
        "SET in a migration: zdmproxy sets lock_timeout and statement_timeout itself for every "
        "attempt; configure them with ZDM_LOCK_TIMEOUT / ZDM_STATEMENT_TIMEOUT instead"
    ),
}


def mentioned_relations(statement: Statement) -> list[RelationName]:
    """Every relation a statement names, as written: what the catalog must be asked about."""
    found = _range_vars(statement.node)
    if isinstance(statement.node, ast.DropStmt):
        found += [dotted_name(p) for p in statement.node.objects or () if isinstance(p, tuple)]
    if isinstance(statement.node, ast.AlterTableStmt):
        for cmd in statement.node.cmds:
            con = cmd.def_
            if isinstance(con, ast.Constraint) and con.indexname:
                found.append(RelationName(statement.node.relation.schemaname or None, con.indexname))
    return list(dict.fromkeys(found))
