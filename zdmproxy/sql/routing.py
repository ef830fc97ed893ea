"""Which partition an ``INSERT ... VALUES`` row lands in, from the partition bounds the catalog holds.

A row inserted into a partitioned table locks the partition it is routed to
(ROW EXCLUSIVE), and on the way every partitioned partition it passes through.
With constant keys the partition follows from the bounds, as PostgreSQL's tuple
routing finds it: LIST by equality, RANGE by lower <= key < upper compared
column by column (MINVALUE / MAXVALUE unbounded), HASH by the key's hash modulo
each partition's modulus, the DEFAULT partition otherwise; a column left out
is NULL when it has no default. Only what can be decided exactly is decided:
integer keys for RANGE (text order depends on the collation), integer or text
keys for LIST, integer keys for HASH (PostgreSQL's hash functions for int2,
int4 and int8, written here), no expressions, operator classes or collations
of the key's own. Anything else answers None, and the caller says the
partitions are unknown.
"""

from __future__ import annotations

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType, NullTestType

from zdmproxy.sql.facts import ChildInfo, RelationInfo
from zdmproxy.sql.locks import RelationName

Key = int | str | None


def routed_partitions(node: ast.InsertStmt, info: RelationInfo) -> list[RelationName] | None:
    """The partitions of ``info`` the rows of ``node`` land in, or None when they cannot be told."""
    select = node.selectStmt
    rows = select.valuesLists if isinstance(select, ast.SelectStmt) else None
    if not rows or info.partition_key is None:
        return None
    columns = [str(t.name) for t in node.cols or ()] or list(info.columns)
    found: list[RelationName] = []
    for row in rows:
        values: dict[str, Key | _Unknown] = {}
        for column in info.columns:
            if column in columns and columns.index(column) < len(row):
                value = row[columns.index(column)]
                values[column] = (
                    _default(column, info) if isinstance(value, ast.SetToDefault) else _constant(value)
                )
            else:
                values[column] = _default(column, info)
        path = _route_row(values, info.name, info.partition_key, info)
        if path is None:
            return None
        found.extend(p for p in path if p not in found)
    return found


def _default(column: str, info: RelationInfo) -> Key | _Unknown:
    """What a column left out gets: NULL when it has no default, else not told."""
    facts = info.columns.get(column)
    if facts is not None and facts.default is None and not facts.identity and not facts.generated:
        return None
    return _UNKNOWN


def _route_row(
    values: dict[str, Key | _Unknown], parent: RelationName, partition_key: str, info: RelationInfo
) -> list[RelationName] | None:
    """The partitions a row passes through below ``parent`` (a partitioned one is locked too, and
    routes further by its own key), or None. ``[]``: no partition takes it (the INSERT fails)."""
    key = _key(partition_key, info)
    if key is None:
        return None
    strategy, key_columns = key
    row = tuple(values.get(column, _UNKNOWN) for column in key_columns)
    if any(isinstance(v, _Unknown) for v in row):
        return None
    if parent == info.name:
        below = [c for c in info.children if (parent in c.parents if c.parents else c.depth == 1)]
    else:
        below = [c for c in info.children if parent in c.parents]
    if not below:
        return None
    types = [info.columns[c].typname for c in key_columns]
    target = _route(strategy, row, below, types)  # type: ignore[arg-type]
    if isinstance(target, _Unknown):
        return None
    if target is None:
        return []
    if target.relkind != "p":
        return [target.name]
    if not target.partition_key:
        return None
    rest = _route_row(values, target.name, target.partition_key, info)
    return None if rest is None else [target.name, *rest]


class _Unknown:
    """A value or a route the catalogue cannot decide."""


_UNKNOWN = _Unknown()


def _key(partition_key: str, info: RelationInfo) -> tuple[str, list[str]] | None:
    """(strategy "l", "r" or "h", the key's columns), from pg_get_partkeydef's text; None for
    expressions, and for operator classes and collations of its own (they change the order or
    the hash)."""
    created = parse_sql(f"CREATE TABLE x () PARTITION BY {partition_key}")[0].stmt
    spec = created.partspec if isinstance(created, ast.CreateStmt) else None
    if spec is None or not spec.partParams:
        return None
    columns = []
    for param in spec.partParams:
        if not param.name or param.opclass or param.collation or param.name not in info.columns:
            return None
        columns.append(str(param.name))
    strategy = spec.strategy.value if spec.strategy is not None else ""
    if strategy == "h" and any(info.columns[c].typname not in HASHED for c in columns):
        return None
    return (strategy, columns) if strategy in ("l", "r", "h") else None


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
    strategy: str, row: tuple[Key, ...], partitions: list[ChildInfo], types: list[str]
) -> ChildInfo | _Unknown | None:
    default = None
    for child in partitions:
        if not child.bound:
            return _UNKNOWN
        bound = _bound(child.bound)
        if bound.is_default:
            default = child
            continue
        if strategy == "h":
            if bound.modulus is None or bound.remainder is None:
                return _UNKNOWN
            if not all(v is None or isinstance(v, int) for v in row):
                return _UNKNOWN
            if _row_hash(row, types) % bound.modulus == bound.remainder:
                return child
        elif strategy == "l":
            (value,) = row
            datums = [_constant(d) for d in bound.listdatums or ()]
            if any(d is _UNKNOWN for d in datums) or not _comparable(value, datums):
                return _UNKNOWN
            if value in datums:
                return child
        else:
            if any(v is None for v in row):
                break  # NULL never fits a range: the default partition takes it
            lower, upper = _limit(bound.lowerdatums), _limit(bound.upperdatums)
            if (
                not all(isinstance(v, int) for v in row)
                or isinstance(lower, _Unknown)
                or isinstance(upper, _Unknown)
            ):
                return _UNKNOWN
            if len(lower) != len(row) or len(upper) != len(row):
                return _UNKNOWN
            if _compare(row, lower) >= 0 and _compare(row, upper) < 0:  # type: ignore[arg-type]
                return child
    return default


def _compare(row: tuple[int, ...], limit: list[int | str]) -> int:
    """A row against a range bound, column by column as partition_rbound_cmp does: MINVALUE
    and MAXVALUE ("min", "max") decide at once."""
    for value, datum in zip(row, limit, strict=True):
        if datum == "min":
            return 1
        if datum == "max":
            return -1
        assert isinstance(datum, int)
        if value != datum:
            return -1 if value < datum else 1
    return 0


def _bound(text: str) -> ast.PartitionBoundSpec:
    """A bound as pg_get_expr prints it (FOR VALUES ..., DEFAULT), parsed by PostgreSQL's parser."""
    created = parse_sql(f"CREATE TABLE x PARTITION OF y {text}")[0].stmt
    assert isinstance(created, ast.CreateStmt) and created.partbound is not None
    return created.partbound


def _comparable(value: Key | _Unknown, datums: list[Key | _Unknown]) -> bool:
    kinds = {type(d) for d in datums if d is not None} | ({type(value)} if value is not None else set())
    return len(kinds) <= 1


def _limit(datums: tuple[ast.Node, ...] | None) -> list[int | str] | _Unknown:
    """A range limit, column by column: integers, "min" / "max" for MINVALUE / MAXVALUE."""
    if not datums:
        return _UNKNOWN
    found: list[int | str] = []
    for datum in datums:
        if isinstance(datum, ast.ColumnRef):
            fields = datum.fields or ()
            word = str(fields[0].sval).lower() if fields and isinstance(fields[0], ast.String) else ""
            if word not in ("minvalue", "maxvalue"):
                return _UNKNOWN
            found.append(word[:3])
            continue
        value = _constant(datum)
        if not isinstance(value, int):
            return _UNKNOWN
        found.append(value)
    return found


# Hash partitioning (compute_partition_hash_value): each key column's extended hash function with
# HASH_PARTITION_SEED, combined with hash_combine64; a row goes to the partition whose remainder is
# the hash modulo its modulus. Only the integer types' functions are written here.
HASHED = ("int2", "int4", "int8")
HASH_PARTITION_SEED = 0x7A5B22367996DCFD
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


def _row_hash(row: tuple[Key, ...], types: list[str]) -> int:
    combined = 0
    for value, typname in zip(row, types, strict=True):
        if value is None:
            continue  # a NULL key column is left out of the hash
        assert isinstance(value, int)
        combined = _combine64(combined, _hash_integer(value, typname))
    return combined


def _hash_integer(value: int, typname: str) -> int:
    """hashint2extended / hashint4extended / hashint8extended with the partition seed."""
    if typname == "int8":
        lo, hi = value & _M32, (value >> 32) & _M32
        lo ^= hi if value >= 0 else (~hi & _M32)
        return _hash_uint32_extended(lo, HASH_PARTITION_SEED)
    return _hash_uint32_extended(value & _M32, HASH_PARTITION_SEED)


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & _M32
    a ^= _rot(c, 4)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rot(a, 6)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rot(b, 8)
    b = (b + a) & _M32
    a = (a - c) & _M32
    a ^= _rot(c, 16)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rot(a, 19)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rot(b, 4)
    b = (b + a) & _M32
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    c ^= b
    c = (c - _rot(b, 14)) & _M32
    a ^= c
    a = (a - _rot(c, 11)) & _M32
    b ^= a
    b = (b - _rot(a, 25)) & _M32
    c ^= b
    c = (c - _rot(b, 16)) & _M32
    a ^= c
    a = (a - _rot(c, 4)) & _M32
    b ^= a
    b = (b - _rot(a, 14)) & _M32
    c ^= b
    c = (c - _rot(b, 24)) & _M32
    return a, b, c


def _hash_uint32_extended(k: int, seed: int) -> int:
    """hashfn.c's hash_uint32_extended (Bob Jenkins' lookup3 on one 32-bit word)."""
    a = b = c = (0x9E3779B9 + 4 + 3923095) & _M32
    if seed:
        a = (a + (seed >> 32)) & _M32
        b = (b + seed) & _M32
        a, b, c = _mix(a, b, c)
    a = (a + k) & _M32
    a, b, c = _final(a, b, c)
    return (b << 32) | c


def _combine64(a: int, b: int) -> int:
    """hash_combine64."""
    a ^= (b + 0x49A0F4DD15E5A8E3 + (a << 54) + (a >> 7)) & _M64
    return a & _M64


def pruned_children(
    where: ast.Node | None, info: RelationInfo, names: set[str], keep_all: frozenset[str] = frozenset()
) -> tuple[ChildInfo, ...]:
    """The partitions of ``info`` a scan with ``where`` keeps, as the planner prunes them at plan
    time (only those are locked): at each level whose key columns all have a constant in an
    ``AND`` of ``column = constant`` / ``column IS NULL`` (the column unqualified, or qualified
    by one of ``names``), the one partition those values route to; every partition otherwise.
    A key column in ``keep_all`` (an UPDATE sets it) keeps them all."""
    values: dict[str, Key | _Unknown] = {}
    for conjunct in _conjuncts(where):
        found = _equality(conjunct, names)
        if found is not None and not isinstance(found[1], _Unknown):
            values.setdefault(found[0], found[1])
    if not values or info.partition_key is None:
        return info.children
    kept: list[ChildInfo] = []
    _keep(info.name, info.partition_key, info, values, keep_all, kept)
    return tuple(kept)


def _keep(
    parent: RelationName,
    partition_key: str,
    info: RelationInfo,
    values: dict[str, Key | _Unknown],
    keep_all: frozenset[str],
    kept: list[ChildInfo],
) -> None:
    if parent == info.name:
        below = [c for c in info.children if (parent in c.parents if c.parents else c.depth == 1)]
    else:
        below = [c for c in info.children if parent in c.parents]
    key = _key(partition_key, info)
    target: ChildInfo | _Unknown | None = _UNKNOWN
    if key is not None and all(c in values for c in key[1]) and not keep_all & set(key[1]) and below:
        row = tuple(values[c] for c in key[1])
        types = [info.columns[c].typname for c in key[1]]
        target = _route(key[0], row, below, types)  # type: ignore[arg-type]
    chosen = below if isinstance(target, _Unknown) else [target] if target is not None else []
    for child in chosen:
        kept.append(child)
        if child.relkind == "p":
            if child.partition_key and any(child.name in c.parents for c in info.children):
                _keep(child.name, child.partition_key, info, values, keep_all, kept)
            else:  # its partitions are not known by parent: all of them
                kept.extend(c for c in info.children if c.depth > child.depth and c not in kept)


def _conjuncts(where: ast.Node | None) -> list[ast.Node]:
    if isinstance(where, ast.BoolExpr) and where.boolop == BoolExprType.AND_EXPR:
        return [c for arg in where.args or () for c in _conjuncts(arg)]
    return [where] if where is not None else []


def _equality(expr: ast.Node, names: set[str]) -> tuple[str, Key | _Unknown] | None:
    """(column, constant) for ``column = constant`` (either way round) or ``column IS NULL``."""
    if isinstance(expr, ast.NullTest) and expr.nulltesttype == NullTestType.IS_NULL:
        column = _column(expr.arg, names)
        return (column, None) if column is not None else None
    if not isinstance(expr, ast.A_Expr) or expr.kind != A_Expr_Kind.AEXPR_OP or not expr.name:
        return None
    if len(expr.name) != 1 or getattr(expr.name[0], "sval", None) != "=":
        return None
    for one, other in ((expr.lexpr, expr.rexpr), (expr.rexpr, expr.lexpr)):
        column = _column(one, names) if isinstance(one, ast.Node) else None
        if column is not None:
            value = _constant(other) if isinstance(other, ast.Node) else _UNKNOWN
            return None if value is None else (column, value)  # = NULL is never true: not pruned here
    return None


def _column(expr: ast.Node | None, names: set[str]) -> str | None:
    if not isinstance(expr, ast.ColumnRef) or not expr.fields:
        return None
    fields = [getattr(f, "sval", None) for f in expr.fields]
    if any(f is None for f in fields) or len(fields) > 2 or (len(fields) == 2 and fields[0] not in names):
        return None
    return str(fields[-1])
