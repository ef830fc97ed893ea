"""Reading CatalogFacts from a live server for the relations a script names.

The facts describe the database before the script runs; relations the script
itself creates are unknown to them and get the catalogue's conservative answers.
"""

from __future__ import annotations

from collections.abc import Iterable

from zdmproxy.engine.connector import Session, server_version_num
from zdmproxy.engine.queries import QUERIES
from zdmproxy.sql.catalogue import mentioned_relations
from zdmproxy.sql.facts import CatalogFacts, ColumnType, ConstraintInfo, RelationInfo
from zdmproxy.sql.locks import RelationName
from zdmproxy.sql.parse import Statement
from zdmproxy.sql.types import function_names, not_null_check_column


async def read_facts(session: Session, statements: Iterable[Statement]) -> CatalogFacts:
    statements = list(statements)
    written = list(dict.fromkeys(n for s in statements for n in mentioned_relations(s)))
    relations: dict[RelationName, RelationInfo] = {}
    if written:
        rows = await session.fetch(
            QUERIES["resolve_relations"], [n.schema for n in written], [n.name for n in written]
        )
        for row in rows:
            relations[written[row["ord"] - 1]] = await _relation_info(session, row)
    functions = sorted({f for s in statements for f in function_names(s.node)})
    volatility = await session.fetch(QUERIES["function_volatility"], functions) if functions else []
    return CatalogFacts(
        server_version_num=await server_version_num(session),
        relations=relations,
        volatile_functions=frozenset(r["proname"] for r in volatility if r["volatile"]),
        known_functions=frozenset(r["proname"] for r in volatility),
    )


def _name(schema: str | None, name: str | None) -> RelationName | None:
    return RelationName(schema, name) if name is not None else None


async def _relation_info(session: Session, row: object) -> RelationInfo:
    oid = row["oid"]  # type: ignore[index]
    indexes = await session.fetch(QUERIES["relation_indexes"], oid)
    constraints = await session.fetch(QUERIES["relation_constraints"], oid)
    children = await session.fetch(QUERIES["relation_fk_children"], oid)
    columns = await session.fetch(QUERIES["relation_columns"], oid)
    views = await session.fetch(QUERIES["relation_views"], oid)
    cons = tuple(
        ConstraintInfo(
            name=c["conname"],
            kind=c["contype"],
            validated=c["convalidated"],
            referenced=_name(c["ref_schema"], c["ref_name"]) if c["contype"] == "f" else None,
            not_null_column=not_null_check_column(c["check_expr"]) if c["check_expr"] else None,
        )
        for c in constraints
    )
    return RelationInfo(
        name=RelationName(row["nspname"], row["relname"]),  # type: ignore[index]
        relkind=row["relkind"],  # type: ignore[index]
        table=_name(row["index_table_schema"], row["index_table_name"]),  # type: ignore[index]
        indexes=tuple(RelationName(i["nspname"], i["relname"]) for i in indexes),
        constraints=cons,
        fk_parents=tuple(dict.fromkeys(c.referenced for c in cons if c.referenced is not None)),
        fk_children=tuple(RelationName(c["nspname"], c["relname"]) for c in children),
        default_partition=_name(
            row["default_partition_schema"],
            row["default_partition_name"],  # type: ignore[index]
        ),
        columns={c["attname"]: _column_type(c["typname"], c["atttypmod"]) for c in columns},
        rows_estimate=max(int(row["rows_estimate"]), 0),  # type: ignore[index]
        total_bytes=row["total_bytes"],  # type: ignore[index]
        views=tuple(RelationName(v["nspname"], v["relname"]) for v in views),
    )


def _column_type(typname: str, typmod: int) -> ColumnType:
    """Decode atttypmod the way format_type() does for the types whose widening is free."""
    if typmod < 0:
        return ColumnType(typname)
    if typname in ("varchar", "bpchar"):
        return ColumnType(typname, (typmod - 4,))
    if typname == "numeric":
        return ColumnType(typname, ((typmod - 4) >> 16, (typmod - 4) & 0xFFFF))
    return ColumnType(typname, (typmod,))
