"""The lock catalogue for statements built on queries: views, materialized views,
CREATE TABLE AS / SELECT INTO, rules, policies, and LOCK TABLE (which reaches
through views).

What they lock follows from when PostgreSQL touches the query: parse analysis
(CREATE VIEW, a rule's actions, a policy's expressions, ``WITH NO DATA``)
locks the relations named and nothing below them; running it (CREATE TABLE
AS, REFRESH) locks what the planner and the rewriter expand too, and reads.
Checked against pg_locks by tests/test_lock_catalogue.py.
"""

from __future__ import annotations

from pglast import ast, parse_sql
from pglast.enums import ObjectType

from zdmproxy.sql.effects import EffectsBuilder
from zdmproxy.sql.facts import CatalogFacts
from zdmproxy.sql.locks import LockMode
from zdmproxy.sql.names import range_var_name
from zdmproxy.sql.relations import (
    MAX_VIEW_DEPTH,
    named_tree,
    range_var_visitor,
    read_relations,
    resolved,
    view_query,
)

AS = LockMode.ACCESS_SHARE
RE = LockMode.ROW_EXCLUSIVE
EXCLUSIVE = LockMode.EXCLUSIVE
AEL = LockMode.ACCESS_EXCLUSIVE


def classify_view(node: ast.ViewStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    """CREATE [OR REPLACE] VIEW: ACCESS EXCLUSIVE on the view, ACCESS SHARE on what its query names."""
    out = EffectsBuilder(kind="CREATE OR REPLACE VIEW" if node.replace else "CREATE VIEW")
    name, info = resolved(facts, range_var_name(node.view))
    out.lock(name, AEL, created=info is None)
    assert node.query is not None
    read_relations(node.query, facts, out, executed=False)
    return out


def classify_create_table_as(
    node: ast.CreateTableAsStmt, facts: CatalogFacts, version: int
) -> EffectsBuilder:
    """CREATE TABLE / MATERIALIZED VIEW ... AS: the query runs (unless WITH NO DATA) into a new relation."""
    matview = node.objtype == ObjectType.OBJECT_MATVIEW
    out = EffectsBuilder(kind="CREATE MATERIALIZED VIEW" if matview else "CREATE TABLE AS")
    assert node.into is not None and node.query is not None
    out.lock(facts.qualify(range_var_name(node.into.rel)), AEL, created=True)
    read_relations(node.query, facts, out, executed=not node.into.skipData)
    return out


def classify_select_into(node: ast.SelectStmt, facts: CatalogFacts, out: EffectsBuilder) -> None:
    """SELECT ... INTO new_table: a CREATE TABLE AS in older clothes."""
    assert node.intoClause is not None
    out.kind = "SELECT INTO"
    out.lock(facts.qualify(range_var_name(node.intoClause.rel)), AEL, created=True)


def classify_refresh(node: ast.RefreshMatViewStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    """REFRESH MATERIALIZED VIEW: the view's query runs again.

    A plain refresh fills new storage under ACCESS EXCLUSIVE (readers wait for
    the whole query); CONCURRENTLY keeps the storage, takes EXCLUSIVE (readers
    go on) and merges the differences.
    """
    out = EffectsBuilder(kind="REFRESH MATERIALIZED VIEW" + (" CONCURRENTLY" if node.concurrent else ""))
    name, info = resolved(facts, range_var_name(node.relation))
    out.lock(name, EXCLUSIVE if node.concurrent else AEL)
    if info is None or not info.view_definition:
        out.not_catalogued(f"materialized view {name} is unknown without a database: its query is unknown")
        return out
    if not node.concurrent:
        out.rewrite(name, reads=False)
        for index in info.indexes:
            out.lock(index, AEL, kind="index")
    if node.skipData:
        return out  # emptied: the query is not even parsed
    query = parse_sql(info.view_definition)[0].stmt
    assert query is not None
    read_relations(query, facts, out)
    return out


def classify_rule(node: ast.RuleStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    """CREATE RULE: ACCESS EXCLUSIVE on the table; the actions are parsed, which locks their
    targets ROW EXCLUSIVE and what they read ACCESS SHARE."""
    out = EffectsBuilder(kind="CREATE RULE")
    out.lock(facts.qualify(range_var_name(node.relation)), AEL)
    for action in node.actions or ():
        target = getattr(action, "relation", None)
        if isinstance(target, ast.RangeVar):
            out.lock(facts.qualify(range_var_name(target)), RE)
        read_relations(action, facts, out, skip=target, executed=False)
    if node.whereClause is not None:
        read_relations(node.whereClause, facts, out, executed=False)
    return out


def classify_policy(
    node: ast.CreatePolicyStmt | ast.AlterPolicyStmt, facts: CatalogFacts, version: int
) -> EffectsBuilder:
    """CREATE / ALTER POLICY: ACCESS EXCLUSIVE on the table, ACCESS SHARE on what its expressions read."""
    out = EffectsBuilder(kind="CREATE POLICY" if isinstance(node, ast.CreatePolicyStmt) else "ALTER POLICY")
    out.lock(facts.qualify(range_var_name(node.table)), AEL)
    for expr in (node.qual, node.with_check):
        if expr is not None:
            read_relations(expr, facts, out, executed=False)
    return out


def classify_lock(node: ast.LockStmt, facts: CatalogFacts, version: int) -> EffectsBuilder:
    """LOCK TABLE: exactly the mode written, on the children too unless ONLY; a view is locked
    with the relations its query reads, whatever ONLY says."""
    mode = LockMode(node.mode or LockMode.ACCESS_EXCLUSIVE)
    out = EffectsBuilder(kind=f"LOCK TABLE IN {mode.sql_name} MODE")
    for rel in node.relations or ():
        found = named_tree(facts, rel)
        found.lock(out, mode)
        _lock_view_relations(view_query(found.info), facts, out, mode)
    return out


def _lock_view_relations(
    query: ast.Node | None, facts: CatalogFacts, out: EffectsBuilder, mode: LockMode, depth: int = 0
) -> None:
    if query is None or depth > MAX_VIEW_DEPTH:
        return
    for rel in range_var_visitor(query).every:
        name, info = resolved(facts, range_var_name(rel))
        out.lock(name, mode)
        _lock_view_relations(view_query(info), facts, out, mode, depth + 1)


def view_base(info_query: ast.Node | None) -> ast.RangeVar | None:
    """The one relation an automatically updatable view writes to: its query's single FROM item."""
    if not isinstance(info_query, ast.SelectStmt) or not info_query.fromClause:
        return None
    first = info_query.fromClause[0]
    return first if len(info_query.fromClause) == 1 and isinstance(first, ast.RangeVar) else None
