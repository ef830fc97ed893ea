"""A large UPDATE or DELETE becomes a batched backfill (engine/backfill.py).

``UPDATE t SET n = 0`` on a big table is one transaction holding every row lock it took until
it ends: any application write to one of those rows waits for all of it, and the replicas get
the whole change at once. Batched over the primary key, each batch is a short transaction and
the walk is throttled by the replicas' lag.

It applies to an UPDATE or DELETE of a table the catalog shows larger than
``backfill_dml_min_rows`` (or of unknown size: without a database the safe plan is chosen),
without a WHERE clause, or with one whose estimated rows (EXPLAIN, read with the facts) exceed
the threshold. Only where the keyset rewrite keeps the statement's meaning; stepped aside (run
as written) otherwise:

- ``WITH``, ``RETURNING``, ``FROM``/``USING`` (a join), ``WHERE CURRENT OF``, ``ONLY``, an
  alias on the table;
- a sub-query anywhere (it would see the rows earlier batches changed);
- an assignment to a primary key column (rows would move along the walk) or to a part of a
  column (``a[1] = ...``, ``(a, b) = ...``);
- a table with triggers on the event (a statement-level trigger would fire once per batch),
  or the catalog shows it without a primary key.

A batched statement is not atomic: other sessions see the rows change batch by batch, which
is what "online" means here; a script that needs the whole change at once must say so by
running it in its own maintenance window.
"""

from __future__ import annotations

from pglast import ast
from pglast.visitors import Visitor

from zdmproxy.plan.model import Backfill, Phase, Step
from zdmproxy.plan.rules.column_swap import deparse
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.sql.names import quote_ident, range_var_name


class _Subqueries(Visitor):
    found = False

    def visit_SubLink(self, ancestors: object, node: ast.SubLink) -> None:
        self.found = True


def _has_subquery(node: ast.Node | None) -> bool:
    if node is None:
        return False
    finder = _Subqueries()
    finder(node)
    return finder.found


def large_dml_in_batches(ctx: RuleContext) -> tuple[Step, ...] | None:
    node = ctx.statement.node
    if isinstance(node, ast.UpdateStmt):
        event, joined = "UPDATE", node.fromClause
    elif isinstance(node, ast.DeleteStmt):
        event, joined = "DELETE", node.usingClause
    else:
        return None
    relation = node.relation
    if (
        relation is None
        or not relation.inh
        or relation.alias is not None
        or node.withClause is not None
        or node.returningClause is not None
        or joined
        or isinstance(node.whereClause, ast.CurrentOfExpr)
        or _has_subquery(node.whereClause)
    ):
        return None
    name = range_var_name(relation)
    info = ctx.facts.resolve(name)
    if ctx.from_catalog:
        if info is None or not info.primary_key or info.triggers_on(event):
            return None
        # A table never analyzed reads 0 rows in pg_class: its size says more (64 bytes a row,
        # a row's smallest footprint with its header and line pointer: an overestimate).
        table_rows = info.rows_estimate or (info.total_bytes or 0) // 64
        rows = ctx.facts.statement_rows.get(ctx.statement.text) if node.whereClause else table_rows
        if rows is None or rows <= ctx.policy.backfill_dml_min_rows:
            return None
    elif node.whereClause is not None:
        return None  # without a database nothing says it is large
    assignments: str | None = None
    if isinstance(node, ast.UpdateStmt):
        targets = list(node.targetList or ())
        key = set(info.primary_key) if info is not None else set()
        if any(
            not isinstance(t, ast.ResTarget)
            or t.indirection
            or isinstance(t.val, ast.MultiAssignRef)
            or t.name in key
            or _has_subquery(t.val)
            for t in targets
        ):
            return None
        assignments = ", ".join(f"{quote_ident(str(t.name))} = {deparse(t.val)}" for t in targets)
    predicate = deparse(node.whereClause) if node.whereClause is not None else None
    known = info is not None and ctx.from_catalog
    size = f"~{info.rows_estimate} rows" if info is not None and known else "a table of unknown size"
    return (
        ctx.steps()
        .add(
            ctx.statement.text,
            Phase.BACKFILL,
            f"{event} of {size} in short keyset batches over the primary key, throttled by the "
            "replicas' lag, instead of one transaction holding every row lock to its end",
            backfill=Backfill(
                info.name if info is not None else name,
                info.primary_key if info is not None else (),
                assignments,
                predicate,
            ),
        )
        .done()
    )
