"""The names PostgreSQL gives constraints and indexes written without one.

A rule that splits ``ADD CONSTRAINT … CHECK (…)`` into ``NOT VALID`` and
``VALIDATE CONSTRAINT`` must name the constraint to validate it, and the name
must be the one the statement as written would have produced (``t_a_check``,
``t_a_check1`` when that is taken, truncated to fit 63 bytes), or the plan
would change the schema it only meant to run more gently. This is
PostgreSQL's own algorithm (``makeObjectName``, ``ChooseConstraintName``,
``ChooseRelationName``, ``ChooseForeignKeyConstraintNameAddition`` and
``ChooseIndexNameAddition`` in src/backend), checked against real servers by
tests/test_rules_constraints.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import count

from pglast import ast
from pglast.visitors import Visitor

NAMEDATALEN = 64  # a name holds NAMEDATALEN - 1 bytes


def clip(name: str, size: int) -> str:
    """The longest prefix of ``name`` of at most ``size`` UTF-8 bytes that ends on a
    character boundary (pg_mbcliplen)."""
    encoded = name.encode()
    if len(encoded) <= size:
        return name
    return encoded[:size].decode(errors="ignore")


def make_object_name(name1: str, name2: str | None, label: str) -> str:
    """``name1_name2_label``, the longer of the two names shortened first so it fits."""
    overhead = len(label.encode()) + 1 + (1 if name2 is not None else 0)
    available = NAMEDATALEN - 1 - overhead
    chars1 = len(name1.encode())
    chars2 = len(name2.encode()) if name2 is not None else 0
    while chars1 + chars2 > available:
        if chars1 > chars2:
            chars1 -= 1
        else:
            chars2 -= 1
    parts = [clip(name1, chars1)]
    if name2 is not None:
        parts.append(clip(name2, chars2))
    return "_".join([*parts, label])


def choose_name(name1: str, name2: str | None, label: str, taken: Iterable[str]) -> str:
    """The first of ``name1_name2_label``, ``…_label1``, ``…_label2`` … not in ``taken``.

    ``taken`` is what PostgreSQL compares with: every constraint name of the
    schema for a CHECK or a foreign key (ChooseConstraintName), and every
    relation and constraint name of the schema for an index (ChooseRelationName).
    """
    used = set(taken)
    name = make_object_name(name1, name2, label)
    for attempt in count(1):
        if name not in used:
            break
        name = make_object_name(name1, name2, f"{label}{attempt}")
    return name


def joined_columns(columns: Iterable[str]) -> str:
    """Column names joined with ``_`` and cut once past 63 bytes, as the foreign-key and
    index name additions are built (the final name is truncated by make_object_name)."""
    joined = ""
    for column in columns:
        if joined:
            joined += "_"
        joined += clip(column, NAMEDATALEN - 1)
        if len(joined.encode()) >= NAMEDATALEN:
            break
    return joined


class _ColumnRefs(Visitor):
    """Every column an expression names; None stands for a whole-row reference (t.*)."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: list[str | None] = []

    def visit_ColumnRef(self, ancestors: object, node: ast.ColumnRef) -> None:
        last = (node.fields or ())[-1]
        self.columns.append(str(last.sval) if isinstance(last, ast.String) else None)


def check_column(expr: ast.Node) -> str | None:
    """The column a CHECK's generated name mentions: its only column, or None when it
    names several, none, or the whole row (PostgreSQL then names it ``<table>_check``)."""
    finder = _ColumnRefs()
    finder(expr)
    distinct = set(finder.columns)
    if len(distinct) != 1:
        return None
    return distinct.pop()
