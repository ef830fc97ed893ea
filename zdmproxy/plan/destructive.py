"""Which statements lose data: they run only when the caller says so explicitly."""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType, ObjectType

_DROPS_DATA = {
    ObjectType.OBJECT_TABLE: "drops a table and its rows",
    ObjectType.OBJECT_SCHEMA: "drops a schema and everything in it",
    ObjectType.OBJECT_MATVIEW: "drops a materialized view",
}


def destructive_reason(node: ast.Node) -> str | None:
    """Why running ``node`` loses data, or None when it does not."""
    if isinstance(node, ast.TruncateStmt):
        return "TRUNCATE removes every row"
    if isinstance(node, ast.DropStmt):
        return _DROPS_DATA.get(node.removeType) if node.removeType is not None else None
    if isinstance(node, ast.AlterTableStmt):
        dropped = [str(c.name) for c in node.cmds or () if c.subtype == AlterTableType.AT_DropColumn]
        if dropped:
            return "drops column " + ", ".join(dropped) + " and its data"
    if isinstance(node, ast.DeleteStmt) and node.whereClause is None:
        return "DELETE without WHERE removes every row"
    return None
