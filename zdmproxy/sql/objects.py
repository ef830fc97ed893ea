"""The lock catalogue for statements that address objects by name: COMMENT ON,
GRANT / REVOKE, ALTER ... SET SCHEMA, CREATE STATISTICS, publications, sequences
owned by a column, domains, functions with a SQL-standard body.

PostgreSQL resolves such a name with ``get_object_address``, which locks the
relation the object lives on with a mode chosen by the command: COMMENT takes
SHARE UPDATE EXCLUSIVE on a relation (and on the table of a column), ACCESS
SHARE on the table of a constraint, trigger, rule or policy, and nothing for
objects outside any table. Checked against pg_locks by tests/test_lock_catalogue.py.
"""

from __future__ import annotations

from pglast import ast, parse_sql
from pglast.enums import (
    AlterPublicationAction,
    DropBehavior,
    FunctionParameterMode,
    GrantTargetType,
    ObjectType,
)
from pglast.parser import ParseError

from zdmproxy.sql import versions
from zdmproxy.sql.effects import EffectsBuilder
from zdmproxy.sql.facts import CatalogFacts, RelationInfo
from zdmproxy.sql.locks import LockMode, RelationName
from zdmproxy.sql.names import dotted_name, enum_words, quote_ident, range_var_name
from zdmproxy.sql.relations import (
    MAX_VIEW_DEPTH,
    named_tree,
    range_var_visitor,
    read_relations,
    resolved,
    view_query,
)

AS = LockMode.ACCESS_SHARE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
AEL = LockMode.ACCESS_EXCLUSIVE

# Objects that are relations: the name is the relation's.
RELATION_OBJECTS = frozenset(
    {
        ObjectType.OBJECT_TABLE,
        ObjectType.OBJECT_VIEW,
        ObjectType.OBJECT_MATVIEW,
        ObjectType.OBJECT_INDEX,
        ObjectType.OBJECT_SEQUENCE,
        ObjectType.OBJECT_FOREIGN_TABLE,
    }
)
# Relations whose DROP ... CASCADE follows the catalog's dependencies (views on views ...).
CASCADING_RELATIONS = frozenset(
    {
        ObjectType.OBJECT_TABLE,
        ObjectType.OBJECT_VIEW,
        ObjectType.OBJECT_MATVIEW,
        ObjectType.OBJECT_FOREIGN_TABLE,
    }
)
# Objects that live on a table and are named "<object> ON <table>": the name ends in the object's.
TABLE_OBJECTS = frozenset(
    {
        ObjectType.OBJECT_TABCONSTRAINT,
        ObjectType.OBJECT_TRIGGER,
        ObjectType.OBJECT_RULE,
        ObjectType.OBJECT_POLICY,
    }
)


def is_name(parts: object) -> bool:
    """Whether a DROP's object is a (qualified) name, not a signature or a pair of types (DROP CAST)."""
    return isinstance(parts, (tuple, list)) and bool(parts) and all(isinstance(p, ast.String) for p in parts)


def object_relation(objtype: ObjectType | None, parts: object) -> RelationName | None:
    """The relation an object address names or lives on, or None for objects outside any table."""
    if not isinstance(parts, (tuple, list)) or not parts:
        return None
    names = [p for p in parts if isinstance(p, ast.String)]
    if objtype in RELATION_OBJECTS:
        return dotted_name(names)
    if objtype == ObjectType.OBJECT_COLUMN or objtype in TABLE_OBJECTS:
        return dotted_name(names[:-1]) if len(names) > 1 else None
    return None


def classify_comment(node: ast.CommentStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    out = EffectsBuilder(kind=f"COMMENT ON {enum_words(node.objtype)}")
    relation = object_relation(node.objtype, node.object)
    if relation is not None:
        mode = AS if node.objtype in TABLE_OBJECTS else SUE
        kind = "index" if node.objtype == ObjectType.OBJECT_INDEX else "table"
        out.lock(facts.qualify(relation), mode, kind=kind)
    return out


def classify_grant(node: ast.GrantStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    """GRANT / REVOKE: no relation lock before 17; from 17 on ACCESS SHARE on each table or
    sequence (it keeps the table's pg_class row steady while the ACL is rewritten)."""
    out = EffectsBuilder(kind="GRANT" if node.is_grant else "REVOKE")
    on_relations = node.objtype in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_SEQUENCE)
    if not on_relations or version < versions.GRANT_LOCKS_RELATION:
        return out
    if node.targtype != GrantTargetType.ACL_TARGET_OBJECT:
        out.not_catalogued(
            "GRANT ON ALL TABLES IN SCHEMA locks every table of the schema, which the catalogue "
            "does not list; name the tables"
        )
        return out
    for rel in node.objects or ():
        if isinstance(rel, ast.RangeVar):
            out.lock(facts.qualify(range_var_name(rel)), AS)
    return out


def classify_set_schema(node: ast.AlterObjectSchemaStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    """ALTER ... SET SCHEMA: ACCESS EXCLUSIVE on a relation moved; nothing for other objects."""
    out = EffectsBuilder(kind=f"ALTER {enum_words(node.objectType)} SET SCHEMA")
    if node.relation is not None and node.objectType in RELATION_OBJECTS:
        out.lock(facts.qualify(range_var_name(node.relation)), AEL)
    return out


def classify_create_statistics(
    node: ast.CreateStatsStmt, facts: CatalogFacts, version: int
) -> EffectsBuilder:
    out = EffectsBuilder(kind="CREATE STATISTICS")
    for rel in node.relations or ():
        if isinstance(rel, ast.RangeVar):
            out.lock(facts.qualify(range_var_name(rel)), SUE)
    return out


def classify_publication(
    node: ast.CreatePublicationStmt | ast.AlterPublicationStmt, facts: CatalogFacts, version: int
) -> EffectsBuilder:
    """Adding tables to a publication (or dropping them) takes SHARE UPDATE EXCLUSIVE on each, and
    on its inheritance children at any depth unless written with ONLY (not on partitions)."""
    creates = isinstance(node, ast.CreatePublicationStmt)
    out = EffectsBuilder(kind="CREATE PUBLICATION" if creates else "ALTER PUBLICATION")
    listed = []
    for spec in node.pubobjects or ():
        table = getattr(getattr(spec, "pubtable", None), "relation", None)
        if isinstance(table, ast.RangeVar):
            listed.append(facts.qualify(range_var_name(table)))
    if replaced_publications(node):
        current = facts.publication_tables.get(str(getattr(node, "pubname", "")))
        if current is None:
            out.not_catalogued(
                "ALTER PUBLICATION ... SET TABLE also locks the tables it takes out of the publication, "
                "which are unknown without a database"
            )
        for table in current or ():
            if table not in listed:
                out.lock(table, SUE)  # taken out of the publication
    for spec in node.pubobjects or ():
        table = getattr(getattr(spec, "pubtable", None), "relation", None)
        if isinstance(table, ast.RangeVar):
            tree = named_tree(facts, table)
            if tree.partitioned:
                out.lock(tree.name, SUE)  # its partitions are published through it, not locked
            else:
                tree.lock(out, SUE)
    # TABLES IN SCHEMA and FOR ALL TABLES name no table: no relation is locked (measured on 15, 18).
    return out


def classify_sequence(
    node: ast.CreateSeqStmt | ast.AlterSeqStmt, facts: CatalogFacts, version: int
) -> EffectsBuilder:
    """CREATE / ALTER SEQUENCE: ACCESS SHARE on the table of an OWNED BY column (the sequence
    itself is new, or not a table anyone queues behind)."""
    creates = isinstance(node, ast.CreateSeqStmt)
    out = EffectsBuilder(kind="CREATE SEQUENCE" if creates else "ALTER SEQUENCE")
    for table in owned_by(node):
        out.lock(facts.qualify(table), AS)
    return out


def typed_table_types(node: ast.Node) -> list[str]:
    """The composite type an ALTER TYPE ... CASCADE (ADD / DROP / ALTER / RENAME ATTRIBUTE) alters
    the typed tables of, quoted and dotted as written; none otherwise."""
    if isinstance(node, ast.AlterTableStmt) and node.objtype == ObjectType.OBJECT_TYPE:
        cascade = any(
            isinstance(cmd, ast.AlterTableCmd) and cmd.behavior == DropBehavior.DROP_CASCADE
            for cmd in node.cmds or ()
        )
        relation = node.relation
    elif isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_ATTRIBUTE:
        cascade, relation = node.behavior == DropBehavior.DROP_CASCADE, node.relation
    else:
        return []
    if not cascade or relation is None:
        return []
    return [".".join(quote_ident(part) for part in (relation.schemaname, relation.relname) if part)]


def replaced_publications(node: ast.Node) -> list[str]:
    """The publication whose table list an ALTER PUBLICATION ... SET replaces (none otherwise)."""
    if (
        isinstance(node, ast.AlterPublicationStmt)
        and node.action == AlterPublicationAction.AP_SetObjects
        and node.pubobjects
        and node.pubname
    ):
        return [str(node.pubname)]
    return []


def owned_by(node: ast.Node) -> list[RelationName]:
    """The table of a sequence's OWNED BY column, as written (none for OWNED BY NONE)."""
    if not isinstance(node, (ast.CreateSeqStmt, ast.AlterSeqStmt)):
        return []
    tables = []
    for option in node.options or ():
        if isinstance(option, ast.DefElem) and option.defname == "owned_by":
            parts = [p for p in option.arg or () if isinstance(p, ast.String)]
            if len(parts) > 1:  # OWNED BY NONE is one word
                tables.append(dotted_name(parts[:-1]))
    return tables


# Argument types that make a SQL function's body unanalysable until it is called.
POLYMORPHIC_TYPES = frozenset(
    {
        "any",
        "anyelement",
        "anyarray",
        "anynonarray",
        "anyenum",
        "anyrange",
        "anymultirange",
        "anycompatible",
        "anycompatiblearray",
        "anycompatiblenonarray",
        "anycompatiblerange",
        "anycompatiblemultirange",
    }
)


def classify_function(node: ast.CreateFunctionStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    """CREATE FUNCTION / PROCEDURE: a SQL body is analysed and rewritten at creation (a
    SQL-standard body always, a LANGUAGE sql string body when no argument is polymorphic, as
    check_function_bodies is on by default): ROW EXCLUSIVE on the target of each INSERT, UPDATE,
    DELETE or MERGE, ACCESS SHARE on what it reads and, through each view, on what the view reads
    (not on children). Any other body is stored as text and locks nothing."""
    out = EffectsBuilder(kind="CREATE PROCEDURE" if node.is_procedure else "CREATE FUNCTION")
    for statement in function_body(node):
        target = getattr(statement, "relation", None)
        if isinstance(statement, _WRITES) and isinstance(target, ast.RangeVar):
            out.lock(facts.qualify(range_var_name(target)), LockMode.ROW_EXCLUSIVE)
        else:
            target = None
        read_relations(statement, facts, out, skip=target, executed=False)
        for rel in range_var_visitor(statement).every:
            if rel is not target:
                _lock_through_views(facts.resolve(range_var_name(rel)), facts, out, depth=0)
    return out


_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


def function_body(node: ast.Node) -> list[ast.Node]:
    """The statements of a function's SQL body that PostgreSQL analyses when it creates it."""
    if not isinstance(node, ast.CreateFunctionStmt):
        return []
    if node.sql_body is not None:
        body = node.sql_body
        items = body[0] if isinstance(body, tuple) and body and isinstance(body[0], tuple) else body
        return [s for s in (items if isinstance(items, tuple) else (items,)) if isinstance(s, ast.Node)]
    options = {o.defname: o.arg for o in node.options or () if isinstance(o, ast.DefElem)}
    language, text = options.get("language"), options.get("as")
    if not isinstance(language, ast.String) or str(language.sval).lower() != "sql":
        return []
    if not isinstance(text, tuple) or len(text) != 1 or not isinstance(text[0], ast.String):
        return []
    for parameter in node.parameters or ():
        mode = getattr(parameter, "mode", None)
        arg_type = getattr(parameter, "argType", None)
        names = (
            [n for n in arg_type.names or () if isinstance(n, ast.String)]
            if isinstance(arg_type, ast.TypeName)
            else []
        )
        polymorphic = bool(names) and str(names[-1].sval) in POLYMORPHIC_TYPES
        if polymorphic and mode not in (
            FunctionParameterMode.FUNC_PARAM_OUT,
            FunctionParameterMode.FUNC_PARAM_TABLE,
        ):
            return []  # analysed only when called, with the actual types
    try:
        return [raw.stmt for raw in parse_sql(str(text[0].sval)) if raw.stmt is not None]
    except ParseError:
        return []  # PostgreSQL refuses the function


def _lock_through_views(
    info: RelationInfo | None, facts: CatalogFacts, out: EffectsBuilder, depth: int
) -> None:
    """The rewriter expands each view the body reads: ACCESS SHARE on what the view's query names."""
    query = view_query(info)
    if query is None or depth > MAX_VIEW_DEPTH:
        return
    for rel in range_var_visitor(query).every:
        name, found = resolved(facts, range_var_name(rel))
        out.lock(name, AS)
        _lock_through_views(found, facts, out, depth + 1)


def classify_domain(node: ast.AlterDomainStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    """ALTER DOMAIN: adding a validated constraint, SET NOT NULL and VALIDATE check every column of
    the domain (and of the domains over it): SHARE on each table or materialized view that has one,
    read in full; the rest changes the type alone."""
    out = EffectsBuilder(kind="ALTER DOMAIN")
    for name in checked_domains(node):
        tables = facts.domain_tables.get(name)
        if tables is None:
            out.not_catalogued(
                "it checks every column of the domain, locking their tables SHARE; which tables use "
                "the domain is unknown without a database"
            )
        for table in tables or ():
            out.lock(table, LockMode.SHARE)
            out.scan(table)
    return out


def checked_domains(node: ast.Node) -> list[str]:
    """The domain an ALTER DOMAIN that checks its columns names (dotted, as written), or none."""
    if not isinstance(node, ast.AlterDomainStmt):
        return []
    con = node.def_
    checks = node.subtype in ("O", "V") or (
        node.subtype == "C" and isinstance(con, ast.Constraint) and not con.skip_validation
    )
    names = [str(part.sval) for part in node.typeName or () if isinstance(part, ast.String)]
    return [".".join(quote_ident(part) for part in names)] if checks and names else []


def cascade_roots(node: ast.Node) -> list[tuple[str, str]]:
    """The objects a DROP ... CASCADE of a schema, type, domain, table or view starts from, as
    ("schema", "type" or "relation", name as PostgreSQL would read it): what the catalog is asked
    to follow dependencies from."""
    if not isinstance(node, ast.DropStmt) or node.behavior != DropBehavior.DROP_CASCADE:
        return []
    roots = []
    for item in node.objects or ():
        if node.removeType == ObjectType.OBJECT_SCHEMA and isinstance(item, ast.String):
            roots.append(("schema", str(item.sval)))
        elif node.removeType in (ObjectType.OBJECT_TYPE, ObjectType.OBJECT_DOMAIN) and isinstance(
            item, ast.TypeName
        ):
            roots.append(("type", _quoted(item.names or ())))
        elif node.removeType in CASCADING_RELATIONS and isinstance(item, (tuple, list)):
            roots.append(("relation", _quoted(item)))
    return roots


def _quoted(parts: tuple[ast.Node, ...] | list[ast.Node]) -> str:
    return ".".join(quote_ident(str(part.sval)) for part in parts if isinstance(part, ast.String))


def statistics_names(node: ast.Node) -> list[RelationName]:
    """The statistics objects a DROP STATISTICS names, as written."""
    if not isinstance(node, ast.DropStmt) or node.removeType != ObjectType.OBJECT_STATISTIC_EXT:
        return []
    return [dotted_name(parts) for parts in node.objects or () if isinstance(parts, (tuple, list))]
