"""Which partition an ``INSERT ... VALUES`` row lands in, from the partition bounds the catalog holds.

A row inserted into a partitioned table locks the partition it is routed to
(ROW EXCLUSIVE). With constant keys the partition follows from the bounds, as
PostgreSQL's tuple routing finds it: LIST by equality, RANGE by lower <= key <
upper (MINVALUE / MAXVALUE unbounded), the DEFAULT partition otherwise. Only
what can be decided exactly is decided: one key column, integer keys for
RANGE (text order depends on the collation), integer or text keys for LIST,
one level of partitioning. Anything else answers None, and the caller says
the partitions are unknown.
"""

from __future__ import annotations

from pglast import ast, parse_sql

from zdmproxy.sql.facts import ChildInfo, RelationInfo
from zdmproxy.sql.locks import RelationName

Key = int | str | None


def routed_partitions(node: ast.InsertStmt, info: RelationInfo) -> list[RelationName] | None:
    """The partitions of ``info`` the rows of ``node`` land in, or None when they cannot be told."""
    key = _key(info)
    values = node.selectStmt.valuesLists if isinstance(node.selectStmt, ast.SelectStmt) else None
    if key is None or not values:
        return None
    strategy, column = key
    columns = [str(t.name) for t in node.cols or ()] or list(info.columns)
    if column not in columns:
        return None
    partitions = [child for child in info.children if child.depth == 1]
    found: list[RelationName] = []
    for row in values:
        position = columns.index(column)
        value = _constant(row[position]) if position < len(row) else None
        if isinstance(value, _Unknown):
            return None
        target = _route(strategy, value, partitions)
        if isinstance(target, _Unknown):
            return None
        if target is not None and target not in found:
            found.append(target)
    return found


class _Unknown:
    """A value or a route the catalogue cannot decide."""


_UNKNOWN = _Unknown()


def _key(info: RelationInfo) -> tuple[str, str] | None:
    """(strategy "l" or "r", the one key column), from pg_get_partkeydef's text."""
    if not info.partition_key:
        return None
    created = parse_sql(f"CREATE TABLE x () PARTITION BY {info.partition_key}")[0].stmt
    spec = created.partspec if isinstance(created, ast.CreateStmt) else None
    if spec is None or not spec.partParams or len(spec.partParams) != 1 or not spec.partParams[0].name:
        return None
    params = spec.partParams
    strategy = spec.strategy.value if spec.strategy is not None else ""
    return (strategy, str(params[0].name)) if strategy in ("l", "r") else None


def _constant(expr: ast.Node) -> Key | _Unknown:
    if isinstance(expr, ast.TypeCast) and expr.arg is not None:
        return _constant(expr.arg)
    if not isinstance(expr, ast.A_Const):
        return _UNKNOWN
    if expr.isnull:
        return None
    value = expr.val
    if isinstance(value, ast.Integer):
        return int(value.ival or 0)
    if isinstance(value, ast.String):
        return str(value.sval)
    return _UNKNOWN


def _route(
    strategy: str, value: Key | _Unknown, partitions: list[ChildInfo]
) -> RelationName | _Unknown | None:
    default = None
    for child in partitions:
        if not child.bound:
            return _UNKNOWN
        bound = _bound(child.bound)
        if bound.is_default:
            default = child
            continue
        if strategy == "l":
            datums = [_constant(d) for d in bound.listdatums or ()]
            if any(d is _UNKNOWN for d in datums) or not _comparable(value, datums):
                return _UNKNOWN
            if value in datums:
                return _leaf(child)
        else:
            if value is None:
                break  # NULL never fits a range: the default partition takes it
            lower, upper = _limit(bound.lowerdatums), _limit(bound.upperdatums)
            if not isinstance(value, int) or isinstance(lower, _Unknown) or isinstance(upper, _Unknown):
                return _UNKNOWN
            if (lower is None or lower <= value) and (upper is None or value < upper):
                return _leaf(child)
    return _leaf(default) if default is not None else None


def _bound(text: str) -> ast.PartitionBoundSpec:
    """A bound as pg_get_expr prints it (FOR VALUES ..., DEFAULT), parsed by PostgreSQL's parser."""
    created = parse_sql(f"CREATE TABLE x PARTITION OF y {text}")[0].stmt
    assert isinstance(created, ast.CreateStmt) and created.partbound is not None
    return created.partbound


def _leaf(child: ChildInfo) -> RelationName | _Unknown:
    """A partition that is partitioned again routes further: not followed."""
    return child.name if child.relkind != "p" else _UNKNOWN


def _comparable(value: Key | _Unknown, datums: list[Key | _Unknown]) -> bool:
    kinds = {type(d) for d in datums if d is not None} | ({type(value)} if value is not None else set())
    return len(kinds) <= 1


def _limit(datums: tuple[ast.Node, ...] | None) -> int | _Unknown | None:
    """A one-column range limit: an integer, or None for MINVALUE / MAXVALUE."""
    if not datums or len(datums) != 1:
        return _UNKNOWN
    datum = datums[0]
    if isinstance(datum, ast.ColumnRef):
        return None
    value = _constant(datum)
    return value if isinstance(value, int) else _UNKNOWN
