"""The lock catalogue: which locks a statement takes, what it rewrites and scans.

``classify`` is pure: it reads a parse tree, the server version, and catalog
facts handed in by the caller. Statement kinds it does not know are not
guessed optimistically: they are reported as taking ACCESS EXCLUSIVE on every
relation they name, with a note saying so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import CmdType, ConstrType, DropBehavior, ObjectType, ReindexObjectType

from zdmproxy.errors import UnsupportedStatement
from zdmproxy.sql import decisions, foreign_keys, objects, partition_bounds, versions, views
from zdmproxy.sql.alter_table import (
    check_default_partition,
    classify_alter_table,
    lock_typed_tables,
    row_triggers_named,
)
from zdmproxy.sql.effects import Effects, EffectsBuilder
from zdmproxy.sql.facts import CatalogFacts, RuleInfo
from zdmproxy.sql.locks import LockMode, RelationName
from zdmproxy.sql.names import dotted_name, enum_words, range_var_name
from zdmproxy.sql.parse import Statement
from zdmproxy.sql.relations import named_tree, range_vars, read_policies, read_relations, resolved, view_query
from zdmproxy.sql.routing import pruned_children, routed_partitions
from zdmproxy.sql.trees import PARTITIONS, Tree

AS = LockMode.ACCESS_SHARE
RE = LockMode.ROW_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
S = LockMode.SHARE
SRE = LockMode.SHARE_ROW_EXCLUSIVE
AEL = LockMode.ACCESS_EXCLUSIVE

# Each classifier takes the node type it is registered for in _CLASSIFIERS.
Classifier = Callable[[Any, CatalogFacts, int], EffectsBuilder]


def classify(
    statement: Statement, facts: CatalogFacts | None = None, version_num: int | None = None
) -> Effects:
    """The effects of running ``statement`` as written on a server of ``version_num``."""
    facts = facts or CatalogFacts()
    version = version_num or facts.server_version_num or versions.DEFAULT_VERSION_NUM
    node = statement.node
    classifier = _CLASSIFIERS.get(type(node), _unknown)
    return classifier(node, facts, version).build()


def _alter_table(node: ast.AlterTableStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    return classify_alter_table(node, facts, version)


def _rename(node: ast.RenameStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    if node.relation is None:
        return EffectsBuilder(kind=f"RENAME {enum_words(node.renameType)}")
    target = facts.qualify(range_var_name(node.relation))
    out = EffectsBuilder(kind=f"RENAME {enum_words(node.renameType)}")
    if node.renameType == ObjectType.OBJECT_ATTRIBUTE:
        # A composite type's attribute: the type alone (it fails if a typed table uses it), or,
        # with CASCADE, every typed table and its children too, as ALTER TYPE ... CASCADE does.
        out.lock(target, AEL, kind="type")
        lock_typed_tables(out, facts, node, rewrites=False)
        return out
    if node.renameType == ObjectType.OBJECT_TRIGGER:
        # A trigger on a partitioned table is renamed on every partition too (its copies, and the
        # partitions are locked whether the trigger is row- or statement-level).
        out.lock(target, AEL)
        named_tree(facts, node.relation, reaches=PARTITIONS).lock_children(out, AEL)
        return out
    is_index = node.renameType == ObjectType.OBJECT_INDEX
    # Renaming an index takes only SHARE UPDATE EXCLUSIVE since PostgreSQL 12.
    out.lock(target, SUE if is_index else AEL, kind="index" if is_index else "table")
    # (RENAME CONSTRAINT leaves relationType unset; a view's columns have no children.)
    renames_inherited = node.renameType == ObjectType.OBJECT_TABCONSTRAINT or (
        node.renameType == ObjectType.OBJECT_COLUMN and node.relationType == ObjectType.OBJECT_TABLE
    )
    found = named_tree(facts, node.relation)
    if renames_inherited and node.renameType == ObjectType.OBJECT_TABCONSTRAINT and found.info is not None:
        # Only a constraint the children have a copy of is renamed there too.
        con = found.info.constraint(node.subname or "")
        renames_inherited = con is None or con.inherited
    if renames_inherited:
        # Columns and CHECK constraints are inherited: without ONLY, every child renames them too.
        found.lock_children(out, AEL)
    return out


def _create_index(node: ast.IndexStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    # Indexes are not inherited: only a partitioned table passes the index on (to every partition).
    tree = named_tree(facts, node.relation, reaches=PARTITIONS)
    table = tree.name
    out = EffectsBuilder(kind="CREATE INDEX CONCURRENTLY" if node.concurrent else "CREATE INDEX")
    if node.concurrent:
        out.transactional = False
        if not node.idxname:
            raise UnsupportedStatement(
                "CREATE INDEX CONCURRENTLY without an index name: a failed build leaves an "
                "INVALID index that zdmproxy must find and drop before retrying; name the index"
            )
        if tree.partitioned:
            raise UnsupportedStatement(
                f"CREATE INDEX CONCURRENTLY on partitioned table {table} is not supported by "
                "PostgreSQL: create the index CONCURRENTLY on each partition, then CREATE INDEX ON "
                "ONLY the parent and ALTER INDEX ... ATTACH PARTITION each partition's index"
            )
        out.lock(table, SUE)
        out.scan(table)
    else:
        tree.lock(out, S)
        tree.scan(out)
        out.note("CREATE INDEX blocks writes for the whole build; CREATE INDEX CONCURRENTLY does not")
    if node.idxname:
        out.lock(RelationName(table.schema, node.idxname), AEL, kind="index", created=True)
    return out


def _drop(node: ast.DropStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    kind = node.removeType
    out = EffectsBuilder(kind=f"DROP {enum_words(kind)}{' CONCURRENTLY' if node.concurrent else ''}")
    cascade = node.behavior == DropBehavior.DROP_CASCADE
    if kind in (ObjectType.OBJECT_SCHEMA, ObjectType.OBJECT_TYPE, ObjectType.OBJECT_DOMAIN):
        _drop_with_dependents(node, facts, out)
        return out
    for parts in node.objects or ():
        if not objects.is_name(parts):  # a function's signature, a cast's types ...
            if cascade:
                out.not_catalogued(_CASCADE_NOT_FOLLOWED.format(kind=enum_words(kind)))
            continue
        name, info = resolved(facts, dotted_name(parts))
        if kind == ObjectType.OBJECT_INDEX:
            mode = SUE if node.concurrent else AEL
            out.lock(name, mode, kind="index")
            if info is not None and info.table is not None:
                out.lock(info.table, mode)
                table_info = facts.resolve(info.table)
                if info.relkind == "I" and table_info is not None:
                    # An index on a partitioned table takes its partitions' indexes with it.
                    Tree(info.table, table_info, recurse=True).lock_children(out, mode)
            else:
                out.note(f"the table of index {name} is unknown without a database; it is locked too")
        elif kind in (
            ObjectType.OBJECT_TABLE,
            ObjectType.OBJECT_VIEW,
            ObjectType.OBJECT_MATVIEW,
        ):
            out.lock(name, AEL)
            if info is None:
                out.note(f"{name}: tables it references by foreign key are locked too (unknown here)")
                if kind == ObjectType.OBJECT_TABLE:
                    out.note(
                        f"{name} is unknown without a database: if it is partitioned its partitions "
                        "are dropped too, and if it is a partition its parent is locked as well"
                    )
                continue
            for parent in info.fk_parents:
                out.lock(parent, AEL)
            if cascade:
                for child in info.fk_children:
                    out.lock(child, AEL)
                for view in info.views:
                    out.lock(view, AEL)  # dropped with it
                # ... and what depends on those, recursively (views on views), as the catalog says.
                for root in objects.cascade_roots(node):
                    for dependent in facts.dropped_with.get(root, ()):
                        out.lock(dependent, AEL)
            if info.views:
                views = ", ".join(map(str, info.views))
                out.note(
                    f"{name} is used by {views}: CASCADE drops them too"
                    if cascade
                    else f"{name} is used by {views}: DROP fails without CASCADE"
                )
            # Partitions go with their partitioned table; inheritance children only with CASCADE.
            Tree(name, info, recurse=info.is_partitioned or cascade).lock_children(out, AEL)
            if info.partition_of is not None:
                # The parent's partition descriptor changes: dropping a partition blocks its readers,
                # and widens the parent's default partition (its constraint changes, no row is read).
                out.lock(info.partition_of, AEL)
                siblings = facts.resolve(info.partition_of)
                if siblings is None:
                    out.note(f"the default partition of {info.partition_of}, if any, is locked too")
                elif siblings.default_partition is not None and siblings.default_partition != name:
                    out.lock(siblings.default_partition, AEL)
        elif kind in objects.TABLE_OBJECTS:
            # A trigger, rule or policy is dropped under ACCESS EXCLUSIVE on its table.
            table = objects.object_relation(kind, parts)
            if table is not None:
                table_name, table_info = resolved(facts, table)
                out.lock(table_name, AEL)
                on_partitions = table_info is None or table_info.is_partitioned
                if kind == ObjectType.OBJECT_TRIGGER and row_triggers_named(table_info, None, name.name):
                    # A row-level trigger's copies on the partitions are dropped with it.
                    Tree(table_name, table_info, on_partitions, reaches=PARTITIONS).lock_children(out, AEL)
        elif kind in (ObjectType.OBJECT_SEQUENCE, ObjectType.OBJECT_FOREIGN_TABLE):
            out.lock(name, AEL)
        elif kind == ObjectType.OBJECT_STATISTIC_EXT:
            table = facts.statistics_tables.get(dotted_name(parts))
            if table is None:
                out.not_catalogued("the table of a statistics object is unknown without a database")
            else:
                out.lock(table, SUE)
        elif cascade:
            out.not_catalogued(_CASCADE_NOT_FOLLOWED.format(kind=enum_words(kind)))
    if node.concurrent:
        out.transactional = False
    return out


_CASCADE_NOT_FOLLOWED = (
    "DROP {kind} ... CASCADE drops whatever depends on it (columns, tables, triggers, views), "
    "which the catalogue does not follow for this kind of object; drop the dependents first"
)


def _drop_with_dependents(node: ast.DropStmt, facts: CatalogFacts, out: EffectsBuilder) -> None:
    """DROP SCHEMA / TYPE / DOMAIN: without CASCADE it fails unless nothing depends on the object
    (so it locks no table); with CASCADE every relation that is dropped, loses a column, a
    constraint, a trigger, a rule or a policy, or is the other table of a dropped foreign key, is
    locked ACCESS EXCLUSIVE, as the catalog's dependencies say."""
    for root in objects.cascade_roots(node):
        relations = facts.dropped_with.get(root)
        if relations is None:
            out.not_catalogued(
                f"DROP {root[0].upper()} {root[1]} CASCADE: what depends on it is unknown without a database"
            )
            continue
        for relation in relations:
            out.lock(relation, AEL)
        if relations:
            out.note(f"CASCADE drops or alters {', '.join(map(str, relations))}")


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
    tree = Tree(name, info, recurse=info is not None and info.is_partitioned, reaches=PARTITIONS)
    if tree.partitioned:
        # Each partition is reindexed in a transaction of its own (PostgreSQL 14+), its indexes too.
        out.transactional = False
        tree.lock_children(out, table_mode)
        for child in tree.children:
            for index in child.indexes:
                out.lock(index, index_mode, kind="index")
    tree.scan(out)
    for index in info.indexes if info is not None else ():
        out.lock(index, index_mode, kind="index")
    if not concurrent:
        out.note("the planner locks every index of the table, so REINDEX blocks reads as well")
    return out


def _create_table(node: ast.CreateStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    table = facts.qualify(range_var_name(node.relation))
    out = EffectsBuilder(kind="CREATE TABLE")
    out.lock(table, AEL, created=True)
    for element in node.tableElts or ():
        constraints = element.constraints if isinstance(element, ast.ColumnDef) else (element,)
        for con in constraints or ():
            if isinstance(con, ast.Constraint) and con.contype == ConstrType.CONSTR_FOREIGN:
                out.lock(facts.qualify(range_var_name(con.pktable)), SRE)
    for element in node.tableElts or ():
        if isinstance(element, ast.TableLikeClause):
            # LIKE reads the source's definition (columns, and what INCLUDING asks for).
            out.lock(facts.qualify(range_var_name(element.relation)), AS)
    for parent in node.inhRelations or ():
        parent_name, parent_info = resolved(facts, range_var_name(parent))
        out.lock(parent_name, AEL if node.partbound is not None else SUE)
        if node.partbound is not None and not node.partbound.is_default:
            check = partition_bounds.attach_check(parent_info, node.partbound)
            check_default_partition(out, facts, parent_info, check)
    return out


def _truncate(node: ast.TruncateStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind="TRUNCATE")
    for rel in node.relations or ():
        tree = named_tree(facts, rel)
        tree.lock(out, AEL)
        # New, empty storage: nothing of the old rows is read, so a TRUNCATE is no scan.
        tree.rewrite(out, reads=False)
        if tree.info is not None:
            out.note_triggers(tree.info.triggers_on("TRUNCATE"), "TRUNCATE")
        if node.behavior == DropBehavior.DROP_CASCADE and tree.info is not None:
            # Emptying a referenced table empties its referencing tables, and theirs, in turn.
            for child in tree.info.fk_descendants:
                out.lock(child, AEL)
                out.rewrite(child, reads=False)
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
        tree = named_tree(facts, rel.relation)
        mode = AEL if full else SUE
        out.lock(tree.name, mode)
        if tree.partitioned or tree.info is None:
            # VACUUM and ANALYZE of a partitioned table process every partition.
            tree.lock_children(out, mode)
        elif not node.is_vacuumcmd:
            # ANALYZE of an inheritance parent also samples the children for the tree's statistics.
            child_mode = SUE if version >= versions.ANALYZE_LOCKS_CHILDREN_SUE else AS
            tree.lock_children(out, child_mode)
        vacuumed = tree if tree.partitioned else Tree(tree.name, tree.info, recurse=False)
        if full:
            vacuumed.rewrite(out)
        elif node.is_vacuumcmd:
            vacuumed.scan(out)
    if not node.rels:
        out.note("without a table list every table of the database is processed")
    return out


def _cluster(node: ast.ClusterStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind="CLUSTER")
    if node.relation is None:
        out.transactional = False
        out.note("a bare CLUSTER reclusters every previously clustered table")
        return out
    name = facts.qualify(range_var_name(node.relation))
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


def _dml(
    node: ast.UpdateStmt | ast.DeleteStmt | ast.InsertStmt, facts: CatalogFacts, version: int, depth: int = 0
) -> EffectsBuilder:
    verb = {ast.UpdateStmt: "UPDATE", ast.DeleteStmt: "DELETE", ast.InsertStmt: "INSERT"}[type(node)]
    out = EffectsBuilder(kind=verb)
    _write(node, verb, node.relation, facts, version, out, depth, as_written=True)
    read_relations(node, facts, out, skip=node.relation)
    _with_writes(node, facts, version, out, depth)
    return out


def _with_writes(node: ast.Node, facts: CatalogFacts, version: int, out: EffectsBuilder, depth: int) -> None:
    """A data-modifying WITH query (allowed at the top level only) runs as a statement of its
    own, with all it fires: its locks join the statement's."""
    with_clause = getattr(node, "withClause", None)
    for cte in (with_clause.ctes or ()) if with_clause is not None else ():
        query = cte.ctequery if isinstance(cte, ast.CommonTableExpr) else None
        if isinstance(query, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
            _merge_effects(_dml(query, facts, version, depth + 1), out)
        elif isinstance(query, ast.MergeStmt):
            _merge_effects(_merge(query, facts, version), out)


def _merge_effects(done: EffectsBuilder, out: EffectsBuilder) -> None:
    out.locks.extend(done.locks)
    for scanned in done.scans:
        out.scan(scanned)
    for note in done.notes:
        out.note(note)
    if done.unverified:
        out.not_catalogued(done.unverified)


# Rules whose actions fire rules: PostgreSQL stops infinite recursion with an error; deeper
# chains than this are not followed (and said so).
MAX_RULE_DEPTH = 10


def _write(
    node: ast.UpdateStmt | ast.DeleteStmt | ast.InsertStmt | ast.MergeStmt,
    verb: str,
    relation: ast.RangeVar | None,
    facts: CatalogFacts,
    version: int,
    out: EffectsBuilder,
    depth: int,
    *,
    as_written: bool,
) -> None:
    """The locks of writing ``relation`` (the statement's target, or the base relation a view
    passes the write to: ``as_written`` False, the statement's column names are the view's)."""
    name, info = resolved(facts, range_var_name(relation))
    rules = info.rules_on(verb) if info is not None else []
    for rule in rules:
        _rule_actions(rule, facts, version, out, depth)
    query = view_query(info)
    if any(rule.instead and not rule.conditional for rule in rules):
        # The rewriter puts the rules' actions in the statement's place: its target is locked
        # by parse analysis only, and an UPDATE's or DELETE's OLD rows are read from it.
        out.lock(name, RE)
        if query is not None and verb != "INSERT":
            read_relations(query, facts, out)
        return
    if query is not None:
        out.lock(name, RE)
        instead_of = info.instead_of if info is not None and info.instead_of is not None else None
        if (instead_of is None and info is not None and info.instead and not rules) or (
            instead_of is not None and verb in instead_of
        ):
            out.not_catalogued(f"{name} has an INSTEAD OF {verb} trigger: what it runs is unknown")
            return
        base = views.view_base(query)
        if base is None:
            out.not_catalogued(f"{name} is not automatically updatable: the write fails or runs a rule")
            return
        read_relations(query, facts, out, skip=base)
        _write(node, verb, base, facts, version, out, depth, as_written=False)
        return
    if verb == "INSERT":
        target = Tree(name, info, recurse=False)
        out.lock(name, RE)
        if info is not None and info.is_partitioned:
            assert isinstance(node, ast.InsertStmt)
            routed = routed_partitions(node, info) if as_written else None
            for partition in routed if routed is not None else [c.name for c in info.children]:
                out.lock(partition, RE)
            if routed is None:
                out.note(
                    f"rows inserted into {name} lock the partitions they are routed to (RowExclusiveLock), "
                    "which the catalogue cannot tell for these rows: it claims them all"
                )
    else:
        # The planner expands the parent into every child it cannot prune, and locks them all.
        target = named_tree(facts, relation)
        if as_written and relation is not None and target.partitioned and target.info is not None:
            assigned = frozenset(str(t.name) for t in getattr(node, "targetList", None) or ())
            names = {str(relation.relname), *([str(relation.alias.aliasname)] if relation.alias else [])}
            kept = pruned_children(getattr(node, "whereClause", None), target.info, names, assigned)
            target = dataclasses.replace(target, info=dataclasses.replace(target.info, children=kept))
        target.lock(out, RE)
    foreign_keys.dml_locks(node, target.info, out, columns_known=as_written, facts=facts)
    read_policies(target.info, facts, out)
    if target.info is not None:
        out.note_triggers(target.info.triggers_on(verb), verb)
    if verb != "DELETE" and target.info is not None:
        # A row written straight into a partition is checked against its bounds, which reads
        # every ancestor's partitioning (when this backend has not cached it yet).
        for ancestor in target.info.ancestors:
            out.lock(ancestor, AS)
    if verb != "INSERT" and getattr(node, "whereClause", None) is None:
        target.scan(out)
        out.note(f"{verb} without WHERE touches every row in one transaction: batch it")
    if target.children and getattr(node, "whereClause", None) is not None:
        out.note(
            f"children of {target.name} the planner prunes for the WHERE clause are not locked: the "
            "catalogue prunes partitions for column = constant and IS NULL on the partition key only"
        )


def _rule_actions(rule: RuleInfo, facts: CatalogFacts, version: int, out: EffectsBuilder, depth: int) -> None:
    """A rule's actions run as statements of their own: the rewriter locks their targets ROW
    EXCLUSIVE and what they read ACCESS SHARE, and they fire what such statements fire."""
    if depth >= MAX_RULE_DEPTH:
        out.not_catalogued(f"rule {rule.name}: rules firing rules deeper than {MAX_RULE_DEPTH} levels")
        return
    created = parse_sql(rule.definition)[0].stmt
    assert isinstance(created, ast.RuleStmt)
    if created.whereClause is not None:
        read_relations(created.whereClause, facts, out)
    for action in created.actions or ():
        if isinstance(action, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
            done = _dml(action, facts, version, depth + 1)
        elif isinstance(action, ast.SelectStmt):
            done = _select(action, facts, version)
        elif isinstance(action, ast.NotifyStmt):
            continue
        else:
            out.not_catalogued(f"rule {rule.name} runs {type(action).__name__}")
            continue
        _merge_effects(done, out)
    out.note(f"rule {rule.name} runs its actions with the {rule.event}")


def _select(node: ast.SelectStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind="SELECT")
    if node.intoClause is not None:
        views.classify_select_into(node, facts, out)
    read_relations(node, facts, out)
    _with_writes(node, facts, version, out, 0)
    return out


def _create_trigger(node: ast.CreateTrigStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind="CREATE TRIGGER")
    # A row-level trigger on a partitioned table is cloned onto every partition; a statement-level
    # one is not, and inheritance children get none.
    tree = named_tree(facts, node.relation, reaches=PARTITIONS)
    if node.row:
        tree.lock(out, SRE)
    else:
        out.lock(tree.name, SRE)
    if node.constrrel is not None:
        # CREATE CONSTRAINT TRIGGER ... FROM other: the other table is looked up, ACCESS SHARE.
        out.lock(facts.qualify(range_var_name(node.constrrel)), AS)
    return out


def _no_table_locks(kind: str) -> Classifier:
    def classify_(node: ast.Node, facts: CatalogFacts, version: int) -> EffectsBuilder:
        return EffectsBuilder(kind=kind)

    return classify_


def _refuse(reason: str) -> Classifier:
    def classify_(node: ast.Node, facts: CatalogFacts, version: int) -> EffectsBuilder:
        raise UnsupportedStatement(reason)

    return classify_


def _not_catalogued(reason: str) -> Classifier:
    def classify_(node: ast.Node, facts: CatalogFacts, version: int) -> EffectsBuilder:
        out = EffectsBuilder(kind=type(node).__name__.removesuffix("Stmt"))
        out.not_catalogued(reason)
        return out

    return classify_


def _unknown(node: ast.Node, facts: CatalogFacts, version: int) -> EffectsBuilder:
    """A statement type nobody decided (a newer pglast): no lock is guessed, apply refuses it."""
    out = _not_catalogued(f"{type(node).__name__} is not in the lock catalogue")(node, facts, version)
    relations = range_vars(node)
    if relations:
        out.note("it names " + ", ".join(str(facts.qualify(r)) for r in relations))
    return out


def _create_schema(node: ast.CreateSchemaStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind="CREATE SCHEMA")
    if node.schemaElts:
        out.not_catalogued("CREATE SCHEMA with elements: write each element as a statement of its own")
    return out


def _create_foreign_table(
    node: ast.CreateForeignTableStmt, facts: CatalogFacts, version: int
) -> EffectsBuilder:
    assert node.base is not None
    out = _create_table(node.base, facts, version)
    out.kind = "CREATE FOREIGN TABLE"
    return out


def _merge(node: ast.MergeStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    """MERGE: ROW EXCLUSIVE on the target (and its children unless ONLY), ACCESS SHARE on the source."""
    out = EffectsBuilder(kind="MERGE")
    writes = any(clause.commandType != CmdType.CMD_NOTHING for clause in node.mergeWhenClauses or ())
    name, info = resolved(facts, range_var_name(node.relation))
    query = view_query(info)
    if query is not None:
        # A view (17+): written through like UPDATE; with only DO NOTHING it is only read.
        if version < versions.MERGE_INTO_VIEWS:
            out.note(f"PostgreSQL before 17 refuses MERGE into view {name}")
        if writes:
            _write(node, "UPDATE", node.relation, facts, version, out, 0, as_written=False)
            read_relations(query, facts, out)  # joined with the source in full, as a table would be
        else:
            out.lock(name, RE)
            read_relations(query, facts, out)
        read_relations(node, facts, out, skip=node.relation)
        _with_writes(node, facts, version, out, 0)
        return out
    target = named_tree(facts, node.relation)
    target.lock(out, RE)
    read_relations(node, facts, out, skip=node.relation)
    _with_writes(node, facts, version, out, 0)
    foreign_keys.merge_locks(node, target.info, out, facts)
    if target.info is not None:
        for event in ("INSERT", "UPDATE", "DELETE"):
            out.note_triggers(target.info.triggers_on(event), event)
    # A MERGE joins the whole target with the whole source: both are read in full.
    target.scan(out)
    source = node.sourceRelation
    if isinstance(source, ast.RangeVar):
        named_tree(facts, source).scan(out)
    return out


CATALOGUED: dict[type[ast.Node], Classifier] = {
    ast.AlterTableStmt: _alter_table,
    ast.RenameStmt: _rename,
    ast.IndexStmt: _create_index,
    ast.DropStmt: _drop,
    ast.ReindexStmt: _reindex,
    ast.CreateStmt: _create_table,
    ast.CreateForeignTableStmt: _create_foreign_table,
    ast.TruncateStmt: _truncate,
    ast.VacuumStmt: _vacuum,
    ast.ClusterStmt: _cluster,
    ast.AlterEnumStmt: _alter_enum,
    ast.UpdateStmt: _dml,
    ast.DeleteStmt: _dml,
    ast.InsertStmt: _dml,
    ast.MergeStmt: _merge,
    ast.SelectStmt: _select,
    ast.CreateTrigStmt: _create_trigger,
    ast.CreateSchemaStmt: _create_schema,
    ast.ViewStmt: views.classify_view,
    ast.CreateTableAsStmt: views.classify_create_table_as,
    ast.RefreshMatViewStmt: views.classify_refresh,
    ast.RuleStmt: views.classify_rule,
    ast.CreatePolicyStmt: views.classify_policy,
    ast.AlterPolicyStmt: views.classify_policy,
    ast.LockStmt: views.classify_lock,
    ast.CommentStmt: objects.classify_comment,
    ast.GrantStmt: objects.classify_grant,
    ast.AlterObjectSchemaStmt: objects.classify_set_schema,
    ast.CreateStatsStmt: objects.classify_create_statistics,
    ast.CreatePublicationStmt: objects.classify_publication,
    ast.AlterPublicationStmt: objects.classify_publication,
    ast.CreateSeqStmt: objects.classify_sequence,
    ast.AlterSeqStmt: objects.classify_sequence,
    ast.CreateFunctionStmt: objects.classify_function,
    ast.AlterDomainStmt: objects.classify_domain,
}
_CLASSIFIERS: dict[type, Classifier] = {
    **CATALOGUED,
    **{kind: _no_table_locks(name) for kind, name in decisions.LOCK_FREE.items()},
    **{kind: _refuse(reason) for kind, reason in decisions.REFUSED.items()},
    **{kind: _not_catalogued(reason) for kind, reason in decisions.NOT_CATALOGUED.items()},
}


def mentioned_relations(statement: Statement) -> list[RelationName]:
    """Every relation a statement names, as written: what the catalog must be asked about."""
    found = range_vars(statement.node)
    if isinstance(statement.node, ast.DropStmt):
        found += [dotted_name(p) for p in statement.node.objects or () if objects.is_name(p)]
        kind = statement.node.removeType
        tables = (objects.object_relation(kind, p) for p in statement.node.objects or ())
        found += [t for t in tables if t is not None]
    found += objects.owned_by(statement.node)
    for body_statement in objects.function_body(statement.node):  # a LANGUAGE sql string body
        found += range_vars(body_statement)
    if isinstance(statement.node, ast.CommentStmt):
        commented = objects.object_relation(statement.node.objtype, statement.node.object)
        found += [commented] if commented is not None else []
    if isinstance(statement.node, ast.AlterTableStmt):
        schema = range_var_name(statement.node.relation).schema
        for cmd in statement.node.cmds or ():
            con = cmd.def_
            if isinstance(con, ast.Constraint) and con.indexname:
                found.append(RelationName(schema, con.indexname))
    return list(dict.fromkeys(found))
