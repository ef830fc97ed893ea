"""Reading CatalogFacts from a live server for the relations a script names.

The facts describe the database before the script runs; relations the script
itself creates are unknown to them and get the catalogue's conservative answers.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import asyncpg
from pglast import ast
from pglast.stream import RawStream

from zdmproxy.engine.connector import Session, server_version_num
from zdmproxy.engine.queries import QUERIES
from zdmproxy.plan.model import Plan
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.catalogue import mentioned_relations
from zdmproxy.sql.facts import (
    CatalogFacts,
    ChildInfo,
    ColumnType,
    ConstraintInfo,
    ForeignKey,
    IndexInfo,
    RelationInfo,
    RuleInfo,
)
from zdmproxy.sql.locks import RelationName
from zdmproxy.sql.objects import (
    cascade_roots,
    checked_domains,
    replaced_publications,
    statistics_names,
    typed_table_types,
)
from zdmproxy.sql.parse import Statement, parse_script
from zdmproxy.sql.relations import MAX_VIEW_DEPTH
from zdmproxy.sql.types import function_names, not_null_check_column


async def read_facts(session: Session, statements: Iterable[Statement]) -> CatalogFacts:
    """Facts for every relation the statements name, plus the table of every index they name.

    The index's table is needed to know what dropping or reindexing it locks:
    for an index on a partitioned table that includes every partition.
    """
    statements = list(statements)
    written = list(dict.fromkeys(n for s in statements for n in mentioned_relations(s)))
    relations: dict[RelationName, RelationInfo] = {}
    # A view's query names relations of its own, which reading or writing the view reaches:
    # resolve them too, level by level (views on views), as the rewriter would expand them.
    asked: set[RelationName] = set()
    for _ in range(MAX_VIEW_DEPTH + 1):
        asked.update(written)
        for name, info in zip(written, await _resolve(session, written), strict=True):
            if info is not None:
                relations[name] = info
        in_views = (
            name
            for info in relations.values()
            for query in (
                info.view_definition,
                *(rule.definition for rule in info.rules),
                *(f"SELECT {expression}" for expression in info.policy_expressions),
            )
            if query
            for name in mentioned_relations(parse_script(query)[0])
        )
        # ... and the tables a foreign key's action writes (CASCADE, SET NULL, SET DEFAULT): their
        # own keys fire in turn.
        cascaded = (
            fk.table
            for info in relations.values()
            for fk in info.referenced_by + info.referenced_by_copies + info.referenced_below
            if ForeignKey.action_writes(fk.on_delete) or ForeignKey.action_writes(fk.on_update)
        )
        written = list(dict.fromkeys(name for name in (*in_views, *cascaded) if name not in asked))
        if not written:
            break
    known = {info.name for info in relations.values()}
    # ... and the default partition of a partitioned table: attaching a partition reads it, unless
    # its constraints already exclude the new partition's rows (plan/rules/attach_partition.py).
    others = [i.table for i in relations.values()] + [i.default_partition for i in relations.values()]
    # ... and a partition's parent: dropping the partition locks the parent's default partition too.
    others += [i.partition_of for i in relations.values()]
    tables = list(dict.fromkeys(name for name in others if name is not None and name not in known))
    for name, info in zip(tables, await _resolve(session, tables), strict=True):
        if info is not None:
            relations[name] = info
    functions = sorted({f for s in statements for f in function_names(s.node)})
    volatility = await session.fetch(QUERIES["function_volatility"], functions) if functions else []
    return CatalogFacts(
        server_version_num=await server_version_num(session),
        relations=relations,
        volatile_functions=frozenset(r["proname"] for r in volatility if r["volatile"]),
        known_functions=frozenset(r["proname"] for r in volatility),
        dropped_with=await _dropped_with(session, statements),
        statistics_tables=await _statistics_tables(session, statements),
        publication_tables=await _publication_tables(session, statements),
        domain_tables=await _domain_tables(session, statements),
        typed_tables=await _typed_tables(session, statements),
        statement_rows=await _statement_rows(session, statements),
        names_in_use=await _names_in_use(session, relations.values()),
        constraint_names_in_use=await _names_in_use(session, relations.values(), "constraint_names_near"),
    )


async def _names_in_use(
    session: Session, relations: Iterable[RelationInfo], query: str = "names_near"
) -> frozenset[RelationName]:
    """Names taken near each table's (and partition's) own, which an index PostgreSQL names
    after the table could collide with (sql/index_names.py); with ``constraint_names_near``,
    the constraint names a constraint named after the table could collide with (sql/naming.py)."""
    tables = [
        name
        for info in relations
        if info.relkind in ("r", "p", "m")
        for name in (info.name, *(child.name for child in info.children))
    ]
    if not tables:
        return frozenset()
    rows = await session.fetch(
        QUERIES[query],
        [str(t.schema) for t in tables],
        [t.name[:_NAME_PREFIX] for t in tables],
    )
    return frozenset(RelationName(r["nspname"], r["relname"]) for r in rows)


# Characters of a table's name every index name chosen after it keeps (makeObjectName keeps at
# least ~28 bytes of it; a character takes up to 4).
_NAME_PREFIX = 6


async def _dropped_with(
    session: Session, statements: list[Statement]
) -> dict[tuple[str, str], tuple[RelationName, ...]]:
    """For each DROP SCHEMA / TYPE / DOMAIN ... CASCADE: the tables and views it reaches."""
    found: dict[tuple[str, str], tuple[RelationName, ...]] = {}
    for root in dict.fromkeys(r for s in statements for r in cascade_roots(s.node)):
        rows = await session.fetch(QUERIES["dropped_with"], *root)
        kept = [row for row in rows if row["relkind"] in ("r", "p", "v", "m", "f")]
        found[root] = tuple(RelationName(row["nspname"], row["relname"]) for row in kept)
    return found


async def _statement_rows(session: Session, statements: list[Statement]) -> dict[str, int]:
    """How many rows each UPDATE or DELETE with a WHERE would change, as the planner estimates
    it (EXPLAIN plans, never runs; its brief ROW EXCLUSIVE lock waits only a moment, in a
    transaction of its own: ``session`` is outside any). A statement that cannot be planned yet
    (its table is created earlier in the script) has none."""
    found: dict[str, int] = {}
    for statement in statements:
        node = statement.node
        if not isinstance(node, ast.UpdateStmt | ast.DeleteStmt) or node.whereClause is None:
            continue
        as_json = ast.DefElem(defname="format", arg=ast.String(sval="json"))
        explain = ast.ExplainStmt(query=node, options=(as_json,))
        await session.execute("BEGIN")
        try:
            await session.execute(QUERIES["explain_lock_timeout"])
            plan = json.loads(await session.fetchval(str(RawStream()(explain))))
        except asyncpg.PostgresError:
            continue
        finally:
            await session.execute("ROLLBACK")
        found[statement.text] = int(plan[0]["Plan"]["Plans"][0]["Plan Rows"])  # below ModifyTable
    return found


async def _statistics_tables(
    session: Session, statements: list[Statement]
) -> dict[RelationName, RelationName]:
    """The table of each statistics object a DROP STATISTICS names."""
    found: dict[RelationName, RelationName] = {}
    for stats in dict.fromkeys(n for s in statements for n in statistics_names(s.node)):
        row = await session.fetchrow(QUERIES["statistics_table"], stats.schema, stats.name)
        if row is not None:
            found[stats] = RelationName(row["nspname"], row["relname"])
    return found


async def _publication_tables(
    session: Session, statements: list[Statement]
) -> dict[str, tuple[RelationName, ...]]:
    """The tables of each publication an ALTER PUBLICATION ... SET TABLE replaces."""
    found: dict[str, tuple[RelationName, ...]] = {}
    for name in dict.fromkeys(n for s in statements for n in replaced_publications(s.node)):
        rows = await session.fetch(QUERIES["publication_tables"], name)
        found[name] = tuple(RelationName(r["nspname"], r["relname"]) for r in rows)
    return found


async def _domain_tables(
    session: Session, statements: list[Statement]
) -> dict[str, tuple[RelationName, ...]]:
    """The tables each ALTER DOMAIN that checks its columns locks and reads."""
    found: dict[str, tuple[RelationName, ...]] = {}
    for name in dict.fromkeys(n for s in statements for n in checked_domains(s.node)):
        rows = await session.fetch(QUERIES["domain_tables"], name)
        found[name] = tuple(RelationName(r["nspname"], r["relname"]) for r in rows)
    return found


async def _typed_tables(
    session: Session, statements: list[Statement]
) -> dict[str, tuple[tuple[RelationName, str], ...]]:
    """The typed tables (and their children) each ALTER TYPE ... CASCADE alters."""
    found: dict[str, tuple[tuple[RelationName, str], ...]] = {}
    for name in dict.fromkeys(n for s in statements for n in typed_table_types(s.node)):
        rows = await session.fetch(QUERIES["typed_tables"], name)
        found[name] = tuple((RelationName(r["nspname"], r["relname"]), r["relkind"]) for r in rows)
    return found


async def _resolve(session: Session, names: list[RelationName]) -> list[RelationInfo | None]:
    """One RelationInfo per name, in order; None where the name resolves to nothing."""
    found: list[RelationInfo | None] = [None] * len(names)
    if names:
        rows = await session.fetch(
            QUERIES["resolve_relations"], [n.schema for n in names], [n.name for n in names]
        )
        for row in rows:
            found[row["ord"] - 1] = await _relation_info(session, row)
    return found


def _name(schema: str | None, name: str | None) -> RelationName | None:
    return RelationName(schema, name) if name is not None else None


async def _relation_info(session: Session, row: Any) -> RelationInfo:
    oid = row["oid"]
    indexes = await session.fetch(QUERIES["relation_indexes"], oid)
    constraints = await session.fetch(QUERIES["relation_constraints"], oid)
    fk_children = await session.fetch(QUERIES["relation_fk_children"], oid)
    fk_descendants = await session.fetch(QUERIES["relation_fk_descendants"], oid)
    triggers = await session.fetch(QUERIES["relation_triggers"], oid)
    row_triggers = (
        await session.fetch(QUERIES["relation_row_triggers"], oid) if row["relkind"] == "p" else None
    )
    rules = await session.fetch(QUERIES["relation_rules"], oid) if row["relkind"] in ("r", "p", "v") else []
    policies = await session.fetch(QUERIES["relation_policies"], oid) if row["relkind"] in ("r", "p") else []
    columns = await session.fetch(QUERIES["relation_columns"], oid)
    views = await session.fetch(QUERIES["relation_views"], oid)
    keys = await session.fetch(QUERIES["relation_foreign_keys"], oid)
    primary_key = await session.fetchrow(QUERIES["relation_primary_key"], oid)
    children = (
        await session.fetch(QUERIES["relation_children"], oid) if row["relkind"] in ("r", "p", "f") else []
    )
    cons = tuple(
        ConstraintInfo(
            name=c["conname"],
            kind=c["contype"],
            validated=c["convalidated"],
            referenced=_name(c["ref_schema"], c["ref_name"]) if c["contype"] == "f" else None,
            not_null_column=not_null_check_column(c["check_expr"]) if c["check_expr"] else None,
            no_inherit=c["connoinherit"],
            definition=c["definition"],
            columns=tuple(c["columns"]),
            index=c["index_name"],
        )
        for c in constraints
    )
    return RelationInfo(
        name=RelationName(row["nspname"], row["relname"]),
        relkind=row["relkind"],
        table=_name(row["index_table_schema"], row["index_table_name"]),
        indexes=tuple(RelationName(i["nspname"], i["relname"]) for i in indexes),
        constraints=cons,
        fk_parents=tuple(dict.fromkeys(c.referenced for c in cons if c.referenced is not None)),
        fk_children=tuple(RelationName(c["nspname"], c["relname"]) for c in fk_children),
        fk_descendants=tuple(RelationName(c["nspname"], c["relname"]) for c in fk_descendants),
        triggers=tuple((t["tgname"], frozenset(t["events"])) for t in triggers),
        default_partition=_name(row["default_partition_schema"], row["default_partition_name"]),
        columns={c["attname"]: _column_facts(c) for c in columns},
        rows_estimate=max(int(row["rows_estimate"]), 0),
        total_bytes=row["total_bytes"],
        views=tuple(dict.fromkeys(RelationName(v["nspname"], v["relname"]) for v in views)),
        column_views=_column_views(views),
        children=tuple(
            ChildInfo(
                RelationName(c["nspname"], c["relname"]),
                c["relkind"],
                c["depth"],
                c["bound"],
                parents=tuple(RelationName(schema, name) for schema, name in c["parents"]),
                columns=frozenset(c["columns"]),
                own_columns=frozenset(c["own_columns"]),
                total_bytes=c["total_bytes"],
                free_indexes=tuple(IndexInfo(name, definition) for name, definition in c["free_indexes"]),
                partition_key=c["partition_key"],
                indexes=tuple(RelationName(c["nspname"], index) for index in c["indexes"]),
            )
            for c in children
        ),
        partition_of=_name(row["partition_of_schema"], row["partition_of_name"]),
        row_triggers=None if row_triggers is None else {t["tgname"]: t["tgisinternal"] for t in row_triggers},
        view_definition=row["view_definition"],
        partition_key=row["partition_key"],
        ancestors=tuple(RelationName(schema, name) for schema, name in row["ancestors"]),
        instead=row["instead"],
        instead_of=frozenset(e for t in triggers if t["instead_of"] for e in t["events"]),
        policy_expressions=tuple(e for p in policies for e in (p["qual"], p["with_check"]) if e is not None),
        rules=tuple(
            RuleInfo(r["rulename"], r["event"], r["is_instead"], r["conditional"], r["definition"])
            for r in rules
        ),
        foreign_keys=tuple(_foreign_key(k) for k in keys if k["direction"] == "outgoing"),
        referenced_by=tuple(_foreign_key(k) for k in keys if k["direction"] == "incoming"),
        foreign_key_copies=tuple(_foreign_key(k) for k in keys if k["direction"] == "outgoing_copy"),
        referenced_by_copies=tuple(_foreign_key(k) for k in keys if k["direction"] == "incoming_copy"),
        referenced_below=tuple(_foreign_key(k) for k in keys if k["direction"] == "incoming_below"),
        primary_key=tuple(primary_key["columns"]) if primary_key else (),
        index_definitions=tuple(IndexInfo(i["relname"], i["definition"]) for i in indexes),
    )


def _foreign_key(row: Any) -> ForeignKey:
    return ForeignKey(
        name=row["conname"],
        table=RelationName(row["table_schema"], row["table_name"]),
        columns=tuple(row["columns"]),
        referenced=RelationName(row["ref_schema"], row["ref_name"]),
        referenced_columns=tuple(row["referenced_columns"]),
        on_delete=row["on_delete"],
        on_update=row["on_update"],
        indexed=row["indexed"],
        table_partitions=tuple(ChildInfo(RelationName(n, r), k) for n, r, k in row["table_partitions"]),
        referenced_partitions=tuple(
            ChildInfo(RelationName(n, r), k) for n, r, k in row["referenced_partitions"]
        ),
        checks_enabled=row["checks_enabled"],
        actions_enabled=row["actions_enabled"],
    )


def _column_facts(row: Any) -> ColumnType:
    """A column's type, nullability, default, identity and generation."""
    return dataclasses.replace(
        _column_type(row["typname"], row["atttypmod"], row["attnotnull"]),
        default=row["default_expr"],
        identity=row["identity"],
        generated=row["generated"],
        sql_type=row["sql_type"],
        owned_sequence=row["owned_sequence"],
    )


def _column_type(typname: str, typmod: int, not_null: bool = False) -> ColumnType:
    """Decode atttypmod the way format_type() does for the types whose widening is free."""
    if typmod < 0:
        return ColumnType(typname, not_null=not_null)
    if typname in ("varchar", "bpchar"):
        return ColumnType(typname, (typmod - 4,), not_null)
    if typname == "numeric":
        return ColumnType(typname, ((typmod - 4) >> 16, (typmod - 4) & 0xFFFF), not_null)
    return ColumnType(typname, (typmod,), not_null)


def _column_views(rows: list[Any]) -> dict[str, tuple[RelationName, ...]]:
    by_column: dict[str, list[RelationName]] = {}
    for row in rows:
        if row["attname"] is not None:
            by_column.setdefault(row["attname"], []).append(RelationName(row["nspname"], row["relname"]))
    return {column: tuple(names) for column, names in by_column.items()}


async def plan_script(session: Session, script: str, policy: MigrationPolicy | None = None) -> Plan:
    """The plan of ``script`` for the database behind ``session``, from its catalog."""
    return make_plan(script, await read_facts(session, parse_script(script)), policy)
