"""The relations a statement names or reads, resolved against the catalog facts.

Shared by every classifier: names as written become qualified names when the
facts know them; a query reads its FROM relations with ACCESS SHARE, their
children unless written with ONLY, and through a view the relations of the
view's own query (the rewriter locks them when it expands the view).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pglast import ast, parse_sql
from pglast.visitors import Visitor

from zdmproxy.sql.effects import EffectsBuilder
from zdmproxy.sql.facts import CatalogFacts, RelationInfo
from zdmproxy.sql.locks import LockMode, RelationName
from zdmproxy.sql.names import range_var_name
from zdmproxy.sql.routing import pruned_children
from zdmproxy.sql.trees import PARTITIONS, Tree

# Views on views on views: deeper nesting than this is not followed (PostgreSQL has no limit,
# but a chain this long in a migration is unheard of; the note says so if it happens).
MAX_VIEW_DEPTH = 16


def resolved(facts: CatalogFacts, written: RelationName) -> tuple[RelationName, RelationInfo | None]:
    """The relation's qualified name when the facts know it, and what they know."""
    info = facts.resolve(written)
    return (info.name if info is not None else written), info


def named_tree(facts: CatalogFacts, node: ast.RangeVar | None, *, reaches: str | None = None) -> Tree:
    """A relation named by ``node`` and the children it reaches unless written with ONLY.

    ``reaches=PARTITIONS`` is for statements that recurse into partitions but
    not into inheritance children (CREATE INDEX, triggers).
    """
    name, info = resolved(facts, range_var_name(node))
    recurse = node is not None and bool(node.inh)
    if reaches == PARTITIONS:
        recurse = recurse and (info is None or info.is_partitioned)
        return Tree(name, info, recurse, reaches=PARTITIONS)
    return Tree(name, info, recurse)


def read_relations(
    node: ast.Node | tuple[Any, ...],
    facts: CatalogFacts,
    out: EffectsBuilder,
    skip: ast.RangeVar | None = None,
    *,
    mode: LockMode = LockMode.ACCESS_SHARE,
    executed: bool = True,
) -> None:
    """``mode`` (ACCESS SHARE unless told) on every relation the statement reads, and their
    children unless ONLY; through a view, the relations its query reads.

    A relation in the FROM list of a query with no WHERE and no LIMIT is read in
    full: that is the one case the tree alone proves (INSERT ... SELECT * FROM
    old). With a WHERE clause the planner may still choose a full scan; that
    the catalogue cannot know.

    ``executed=False`` is for statements that only parse a query (CREATE VIEW, a
    rule's actions, a policy's expressions, WITH NO DATA): parse analysis locks
    the relations named, but neither their children (the planner expands those)
    nor what a view reads (the rewriter expands views), and reads nothing.
    """
    if not executed:
        visitor = range_var_visitor(node)
        for rel in visitor.every:
            if rel is not skip:
                # A data-modifying WITH query's target is opened for writing even when only parsed.
                written = id(rel) in visitor.write_targets
                out.lock(
                    resolved(facts, range_var_name(rel))[0],
                    max(mode, LockMode.ROW_EXCLUSIVE) if written else mode,
                )
        return
    _read(node, facts, out, skip, mode, False, depth=0)


def _read(
    node: ast.Node | tuple[Any, ...],
    facts: CatalogFacts,
    out: EffectsBuilder,
    skip: ast.RangeVar | None,
    mode: LockMode,
    whole: bool,
    depth: int,
) -> None:
    """``whole``: the query is a view read in full, so its FROM relations are read in full
    whatever its own WHERE says (a view's filter rarely matches an index)."""
    visitor = range_var_visitor(node)
    for rel in visitor.every:
        if rel is skip:
            continue
        if id(rel) in visitor.write_targets:
            # Written by a data-modifying WITH query, which the DML classifier locks in full.
            out.lock(resolved(facts, range_var_name(rel))[0], max(mode, LockMode.ROW_EXCLUSIVE))
            continue
        found = named_tree(facts, rel)
        where = visitor.filtered.get(id(rel))
        if where is not None and found.partitioned and found.info is not None and found.recurse:
            names = {str(rel.relname), *([str(rel.alias.aliasname)] if rel.alias else [])}
            kept = pruned_children(where, found.info, names)
            found = dataclasses.replace(found, info=dataclasses.replace(found.info, children=kept))
        rel_mode = max(mode, LockMode.ROW_SHARE) if id(rel) in visitor.row_locked else mode
        found.lock(out, rel_mode)
        read_policies(found.info, facts, out, depth)
        in_full = whole or id(rel) in visitor.read_in_full
        if in_full:
            found.scan(out)
        query = view_query(found.info)
        if query is not None:
            if depth >= MAX_VIEW_DEPTH:
                out.note(f"views nested deeper than {MAX_VIEW_DEPTH} levels are not followed")
                continue
            # The view itself is no storage: what is read in full is decided by its query.
            if found.name in out.scans:
                out.scans.remove(found.name)
            _read(query, facts, out, None, rel_mode, in_full, depth + 1)


def read_policies(
    info: RelationInfo | None, facts: CatalogFacts, out: EffectsBuilder, depth: int = 0
) -> None:
    """A table under row security: its policies' expressions run with the statement, and what
    their subqueries read is read (ACCESS SHARE)."""
    if info is None or depth >= MAX_VIEW_DEPTH:
        return
    for expression in info.policy_expressions:
        query = parse_sql(f"SELECT {expression}")[0].stmt
        assert query is not None
        _read(query, facts, out, None, LockMode.ACCESS_SHARE, False, depth + 1)


def view_query(info: RelationInfo | None) -> ast.Node | None:
    """The query of a view the facts know, parsed; None for anything else."""
    if info is None or info.relkind != "v" or not info.view_definition:
        return None
    return parse_sql(info.view_definition)[0].stmt


class _CteNames(Visitor):
    """The names of a statement's WITH queries, which its FROM clauses may use like tables."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def visit_CommonTableExpr(self, ancestors: object, node: ast.CommonTableExpr) -> None:
        self.names.add(node.ctename or "")


class _RangeVars(Visitor):
    """Every relation a statement names (not CTE names), and which of them a query reads in full."""

    def __init__(self, ctes: set[str]) -> None:
        super().__init__()
        self.found: list[RelationName] = []
        self.every: list[ast.RangeVar] = []  # every occurrence: the same table may be target and source
        self.ctes = ctes
        self.read_in_full: set[int] = set()
        self.write_targets: set[int] = set()  # what a data-modifying WITH query writes
        self.filtered: dict[int, ast.Node] = {}  # the WHERE of a query reading one relation
        self.row_locked: set[int] = set()  # FOR UPDATE / SHARE: ROW SHARE, through views too

    def visit_SelectStmt(self, ancestors: object, node: ast.SelectStmt) -> None:
        if node.whereClause is None and node.limitCount is None:
            for item in node.fromClause or ():
                self.read_in_full.update(id(rel) for rel in _from_item_relations(item))
        for clause in node.lockingClause or ():
            named = {str(getattr(r, "relname", "")) for r in clause.lockedRels or ()}
            for item in node.fromClause or ():
                self.row_locked.update(id(rel) for rel in _locked_relations(item, named))
        items = node.fromClause or ()
        if node.whereClause is not None and len(items) == 1 and isinstance(items[0], ast.RangeVar):
            self.filtered[id(items[0])] = node.whereClause  # the planner prunes its partitions

    def visit_RangeVar(self, ancestors: object, node: ast.RangeVar) -> None:
        name = range_var_name(node)
        target = _is_write_target(ancestors)
        if target:
            self.write_targets.add(id(node))
        if name.schema is None and name.name in self.ctes and not target:
            return
        if ancestors is not None and _is_into_clause(ancestors):
            return  # SELECT ... INTO new_table names a table it creates, not one it reads
        if _in_locking_clause(ancestors):
            return  # FOR UPDATE OF x names a FROM item by its alias, not a table
        self.every.append(node)
        if name not in self.found:
            self.found.append(name)


def _is_write_target(ancestors: object) -> bool:
    """Whether the RangeVar being visited is what an INSERT, UPDATE, DELETE or MERGE writes: a
    table, even when a WITH query has its name (WITH names only FROM items)."""
    parent = getattr(ancestors, "node", None)
    member = getattr(ancestors, "member", None)
    if isinstance(parent, ast.ViewStmt):
        return member == "view"  # CREATE RECURSIVE VIEW v: its query is a WITH RECURSIVE v
    return isinstance(parent, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt) and (
        member == "relation"
    )


def _in_locking_clause(ancestors: object) -> bool:
    parent = getattr(ancestors, "parent", None)
    return isinstance(getattr(parent, "node", None), ast.LockingClause)


def _is_into_clause(ancestors: object) -> bool:
    """Whether the RangeVar being visited is the target of an IntoClause (SELECT INTO, CTAS)."""
    parent = getattr(ancestors, "node", None)
    return isinstance(parent, ast.IntoClause)


def _locked_relations(item: ast.Node | None, named: set[str]) -> list[ast.RangeVar]:
    """The relations a FOR UPDATE / SHARE clause locks in a FROM item (transformLockingClause):
    every table and view when it names none, else those it names by alias or name; a subquery's
    own FROM items with it (a WITH query is not locked)."""
    if isinstance(item, ast.RangeVar):
        name = str(item.alias.aliasname) if item.alias else str(item.relname)
        return [item] if not named or name in named else []
    if isinstance(item, ast.JoinExpr):
        if item.alias is not None and named and str(item.alias.aliasname) in named:
            named = set()
        return _locked_relations(item.larg, named) + _locked_relations(item.rarg, named)
    if isinstance(item, ast.RangeSubselect) and isinstance(item.subquery, ast.SelectStmt):
        alias = str(item.alias.aliasname) if item.alias else None
        if named and alias not in named:
            return []
        return [rel for sub in item.subquery.fromClause or () for rel in _locked_relations(sub, set())]
    return []


def _from_item_relations(item: ast.Node | None) -> list[ast.RangeVar]:
    """The tables a FROM item reads directly: itself, or both sides of a join (not subqueries)."""
    if isinstance(item, ast.RangeVar):
        return [item]
    if isinstance(item, ast.JoinExpr):
        return _from_item_relations(item.larg) + _from_item_relations(item.rarg)
    return []


def range_var_visitor(node: ast.Node | tuple[Any, ...]) -> _RangeVars:
    """The relations ``node`` names, after a first pass that learns its CTE names (the
    visitor may meet a CTE's use in FROM before its definition in WITH)."""
    ctes = _CteNames()
    ctes(node)
    visitor = _RangeVars(ctes.names)
    visitor(node)
    return visitor


def range_vars(node: ast.Node) -> list[RelationName]:
    return range_var_visitor(node).found
