"""Relation names out of parse trees, and the one quoting function for identifiers."""

from __future__ import annotations

from enum import Enum

from pglast import ast

from zdmproxy.sql.locks import RelationName


def range_var_name(node: ast.RangeVar | None) -> RelationName:
    """The name a RangeVar spells; pglast types every field optional, PostgreSQL's grammar does not."""
    assert node is not None, "a statement that names a relation always has its RangeVar"
    return RelationName(node.schemaname or None, str(node.relname))


def dotted_name(parts: tuple[ast.String, ...] | list[ast.String]) -> RelationName:
    """A name written as a list of String nodes (DROP INDEX, DROP TABLE ...)."""
    values = [str(part.sval) for part in parts]
    return RelationName(values[-2] if len(values) > 1 else None, values[-1])


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's quote_ident() would, always."""
    return '"' + name.replace('"', '""') + '"'


def quote_relation(name: RelationName) -> str:
    if name.schema is None:
        return quote_ident(name.name)
    return f"{quote_ident(name.schema)}.{quote_ident(name.name)}"


def enum_words(value: Enum | None, prefix: str = "OBJECT_") -> str:
    """An enum member as the SQL words it stands for: ObjectType.OBJECT_TABLE is "TABLE"."""
    return value.name.removeprefix(prefix).replace("_", " ") if value is not None else "?"
