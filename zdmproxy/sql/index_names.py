"""The name PostgreSQL chooses for an index nobody named, computed without a server.

A plan that builds an index in several steps (CONCURRENTLY, or partition by partition) must
end with the same names the statement as written would have produced, so the end state is
equal. This follows indexcmds.c and namespace code of PostgreSQL 11-18: ``ChooseIndexColumnNames``
(a column's name; for an expression the name parse_utilcmd.c figures from it with
FigureIndexColname, a function's name for instance, else ``expr``; made unique within the
index by a number),
``ChooseIndexNameAddition`` (those names joined with ``_``, key and INCLUDE columns alike),
``makeObjectName`` (the table's name and the addition shortened, the longer first, to fit
NAMEDATALEN - 1 bytes with ``_label``) and ``ChooseRelationName`` (``idx``, then ``idx1``,
``idx2`` ... until the name is free in the schema).
"""

from __future__ import annotations

from collections.abc import Collection

from pglast import ast
from pglast.enums import A_Expr_Kind, MinMaxOp

from zdmproxy.sql.naming import NAMEDATALEN, choose_name, clip, joined_columns


def index_column_names(node: ast.IndexStmt) -> list[str]:
    """``ChooseIndexColumnNames``: one name per key and INCLUDE column, unique within the index."""
    chosen: list[str] = []
    for element in (*(node.indexParams or ()), *(node.indexIncludingParams or ())):
        assert isinstance(element, ast.IndexElem)
        original = element.indexcolname or element.name or figure_name(element.expr) or "expr"
        name, number = original, 0
        while name in chosen:
            number += 1
            suffix = str(number)
            name = clip(original, NAMEDATALEN - 1 - len(suffix)) + suffix
        chosen.append(name)
    return chosen


def choose_index_name(table: str, node: ast.IndexStmt, taken: Collection[str]) -> str:
    """The name PostgreSQL gives ``node``'s index on ``table`` when the statement names none:
    ``taken`` holds the relation names already used in the table's schema."""
    return choose_name(table, joined_columns(index_column_names(node)), "idx", taken)


def figure_name(node: ast.Node | None) -> str | None:
    """``FigureColnameInternal`` for the expressions an index is written with: the name a
    column of ``SELECT <expr>`` would get, or None where PostgreSQL says ``?column?``."""
    if isinstance(node, ast.ColumnRef):
        last = (node.fields or ())[-1]
        return str(last.sval) if isinstance(last, ast.String) else None
    if isinstance(node, ast.FuncCall):
        return str((node.funcname or ())[-1].sval)
    if isinstance(node, ast.TypeCast):
        inner = figure_name(node.arg)
        names = node.typeName.names if node.typeName is not None else ()
        return inner or (str(names[-1].sval) if names else None)
    if isinstance(node, ast.CollateClause):
        return figure_name(node.arg)
    if isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_NULLIF:
        return "nullif"
    if isinstance(node, ast.MinMaxExpr):
        return "greatest" if node.op == MinMaxOp.IS_GREATEST else "least"
    simple = {
        ast.CaseExpr: "case",
        ast.A_ArrayExpr: "array",
        ast.RowExpr: "row",
        ast.CoalesceExpr: "coalesce",
    }
    return simple.get(type(node))
