"""A partition bound as the CHECK expression PostgreSQL derives from it.

ATTACH PARTITION reads every row of the partition (and of the default partition) under
AccessExclusiveLock to prove they fit the bound, unless valid CHECK constraints already imply
it (PartConstraintImpliedByRelConstraint). A CHECK written as PostgreSQL's own partition
constraint (get_qual_for_list / get_qual_for_range: ``key IS NOT NULL AND key >= lo AND key <
hi``, ``key = ANY (ARRAY[...])``), with the bound's values cast to the key column's type, is one
it proves. For the default partition the constraint to prove is the negation.

Only what this module can write exactly is covered: LIST, and RANGE on one column; a HASH
bound (whose constraint calls satisfies_hash_partition with the parent's oid), a multi-column
RANGE and DEFAULT give None.
"""

from __future__ import annotations

from pglast import ast, parse_sql
from pglast.stream import RawStream

from zdmproxy.sql.facts import RelationInfo
from zdmproxy.sql.names import quote_ident


def attach_check(parent: RelationInfo | None, bound: ast.PartitionBoundSpec) -> str | None:
    """The constraint a partition attached to ``parent`` with ``bound`` must satisfy, or None
    when the key (unknown, several columns, an expression) or the bound is not covered."""
    if parent is None or parent.partition_key is None:
        return None
    columns, expressions = key_columns(parent.partition_key)
    if expressions or len(columns) != 1:
        return None
    column = parent.columns.get(columns[0])
    return bound_check(columns[0], column.typname if column is not None else None, bound)


def key_select(partition_key: str) -> ast.SelectStmt:
    """A partition key's columns and expressions as the target list of a SELECT."""
    inside = partition_key[partition_key.index("(") + 1 : partition_key.rindex(")")]
    (raw,) = parse_sql(f"SELECT {inside}")
    assert isinstance(raw.stmt, ast.SelectStmt)
    return raw.stmt


def implied(info: RelationInfo | None, expression: str) -> bool:
    """Whether a valid CHECK of ``info`` is exactly ``expression``: PostgreSQL then skips the scan."""
    return info is not None and any(
        c.kind == "c" and c.validated and same_expression(c.definition, expression) for c in info.constraints
    )


def key_columns(partition_key: str) -> tuple[list[str], bool]:
    """The columns of a partition key as pg_get_partkeydef prints it (``LIST (kind)`` -> kind),
    and whether it has expressions as well."""
    columns, expressions = [], False
    for target in key_select(partition_key).targetList or ():
        value = target.val
        fields = value.fields if isinstance(value, ast.ColumnRef) else None
        if fields is not None and len(fields) == 1:
            columns.append(str(fields[0].sval))
        else:
            expressions = True
    return columns, expressions


def bound_check(column: str, typname: str | None, bound: ast.PartitionBoundSpec) -> str | None:
    """The partition constraint of ``bound`` on key ``column`` (of type ``typname``), or None."""
    key = quote_ident(column)
    if bound.is_default or bound.strategy not in ("l", "r"):
        return None
    if bound.strategy == "l":
        values = [datum for datum in bound.listdatums or () if not _is_null(datum)]
        with_null = len(values) < len(bound.listdatums or ())
        listed = f"{key} = ANY (ARRAY[{', '.join(_value(v, typname) for v in values)}])" if values else None
        if with_null:
            return f"{key} IS NULL OR {listed}" if listed else f"{key} IS NULL"
        return f"{key} IS NOT NULL AND {listed}"
    lower, upper = bound.lowerdatums or (), bound.upperdatums or ()
    if len(lower) != 1 or len(upper) != 1:
        return None
    parts = [f"{key} IS NOT NULL"]
    if not _infinite(lower[0]):
        parts.append(f"{key} >= {_value(lower[0], typname)}")
    if not _infinite(upper[0]):
        parts.append(f"{key} < {_value(upper[0], typname)}")
    return " AND ".join(parts)


def outside(check: str) -> str:
    """What the default partition must hold to keep no row of a new partition: NOT (check)."""
    return f"NOT ({check})"


def same_expression(definition: str | None, expression: str) -> bool:
    """Whether a constraint's definition (``CHECK (expr)``) checks exactly ``expression``."""
    if definition is None or not definition.upper().startswith("CHECK"):
        return False
    inner = definition[definition.index("(") + 1 : definition.rindex(")")]
    return _canonical(inner) == _canonical(expression)


def _canonical(expression: str) -> str:
    (raw,) = parse_sql(f"SELECT {expression}")
    assert raw.stmt is not None
    return str(RawStream()(raw.stmt))


def _is_null(datum: ast.Node) -> bool:
    return isinstance(datum, ast.A_Const) and bool(datum.isnull)


def _infinite(datum: ast.Node) -> bool:
    """MINVALUE / MAXVALUE, which the grammar leaves as column references."""
    return isinstance(datum, ast.ColumnRef)


def _value(datum: ast.Node, typname: str | None) -> str:
    text = str(RawStream()(datum))
    return f"({text})::{quote_ident(typname)}" if typname else text
