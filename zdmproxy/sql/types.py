"""Two questions the catalogue must answer about expressions and types.

Does a new column's default force a table rewrite (is it volatile)? Does a
column type change rewrite the table (is it binary-coercible)? Both answers
are conservative when unsure: assuming a rewrite can only make zdmproxy more
careful, never cause an outage.
"""

from __future__ import annotations

from pglast import ast, parse_sql
from pglast.enums import NullTestType
from pglast.visitors import Visitor

from zdmproxy.sql.facts import ColumnType

# Built-in volatile functions commonly used as column defaults.
VOLATILE_BUILTINS = frozenset(
    {
        "random",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "setseed",
        "txid_current",
        "random_normal",
    }
)
# Built-in non-volatile functions commonly used as defaults (evaluated once by ADD COLUMN).
NON_VOLATILE_BUILTINS = frozenset(
    {
        "now",
        "transaction_timestamp",
        "statement_timestamp",
        "current_setting",
        "lower",
        "upper",
        "coalesce",
        "to_char",
        "jsonb_build_object",
        "json_build_object",
        "jsonb_build_array",
        "array_fill",
        "make_interval",
        "md5",
        "length",
        "concat",
    }
)
SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})


class _FunctionNames(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def visit_FuncCall(self, ancestors: object, node: ast.FuncCall) -> None:
        self.names.append(str((node.funcname or ())[-1].sval).lower())


def function_names(expr: ast.Node) -> list[str]:
    """Names (without schema) of every function an expression calls."""
    finder = _FunctionNames()
    finder(expr)
    return finder.names


def type_name(node: ast.TypeName | None) -> str:
    assert node is not None, "a column definition always has a type"
    return str((node.names or ())[-1].sval).lower()


def type_modifiers(node: ast.TypeName) -> tuple[int, ...] | None:
    """Integer type modifiers as written, or None when one is not a plain integer."""
    mods: list[int] = []
    for mod in node.typmods or ():
        value = getattr(getattr(mod, "val", None), "ival", None)
        if not isinstance(value, int):
            return None
        mods.append(value)
    return tuple(mods)


def type_change_rewrites(old: ColumnType | None, new: ast.TypeName | None, has_using: bool) -> bool:
    """Whether ALTER COLUMN ... TYPE rewrites the table (True when it cannot be ruled out)."""
    if old is None or new is None or has_using:
        return True
    new_name = type_name(new)
    new_mods = type_modifiers(new)
    if new_mods is None or new.arrayBounds:
        return True
    if new_name == old.typname:
        return not _widens(new_name, old.modifiers, new_mods)
    if old.typname == "varchar" and new_name == "text":
        return False
    return not (old.typname == "text" and new_name == "varchar" and not new_mods)


def _widens(typname: str, old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    """True when PostgreSQL treats the typmod change as binary-coercible (no rewrite)."""
    if new == old:
        return True
    if typname == "varchar":
        return not new or (bool(old) and new[0] >= old[0])
    if typname == "numeric":
        if not new:
            return True
        if old:
            (old_p, old_s), (new_p, new_s) = _numeric(old), _numeric(new)
            return new_s == old_s and new_p >= old_p
    return False


def _numeric(mods: tuple[int, ...]) -> tuple[int, int]:
    """numeric(p) means numeric(p, 0)."""
    return (mods[0], mods[1] if len(mods) > 1 else 0)


def not_null_check_column(check_expr: str) -> str | None:
    """The column of a CHECK whose expression is exactly ``col IS NOT NULL``, else None.

    Such a validated CHECK lets SET NOT NULL skip its full-table scan (PostgreSQL 12+).
    """
    select = parse_sql(f"SELECT {check_expr}")[0].stmt
    assert isinstance(select, ast.SelectStmt) and select.targetList
    expr = select.targetList[0].val
    if (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype == NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
        and expr.arg.fields is not None
        and len(expr.arg.fields) == 1
    ):
        return str(expr.arg.fields[0].sval)
    return None
