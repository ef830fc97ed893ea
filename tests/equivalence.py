"""Equivalence of a plan with the statement as written: the rewrite rules' contract.

A rule may only change *how* a statement runs, never what the database looks like afterwards.
``check_equivalent`` builds the same tables twice (two databases on one server), runs the
statement as written in one and zdmproxy's plan in the other, and compares catalog snapshots
(columns, types, defaults, nullability, constraints and their validity, indexes and their
validity, triggers and functions, so no helper object is left behind) and the data.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from zdmproxy.engine.catalog import plan_script
from zdmproxy.engine.connector import connect
from zdmproxy.engine.runner import Runner
from zdmproxy.plan.model import Plan
from zdmproxy.policy import MigrationPolicy

# Every user relation and object of schema public, by name; dropped columns left out. Row data is
# compared as sorted to_jsonb text: jsonb orders keys itself, so column order does not matter.
_COLUMNS = """
SELECT c.relname AS rel, a.attname AS name, a.attnum AS num, format_type(a.atttypid, a.atttypmod) AS type,
       pg_get_expr(d.adbin, d.adrelid) AS default, a.attnotnull AS not_null,
       a.attidentity AS identity, a.attgenerated AS generated, a.attcollation AS collation
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
"""
_CONSTRAINTS = """
SELECT c.relname AS rel, k.conname AS name, k.contype::text AS type,
       pg_get_constraintdef(k.oid) AS definition, k.convalidated AS validated
  FROM pg_constraint k
  JOIN pg_class c ON c.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public'
"""
_INDEXES = """
SELECT t.relname AS rel, c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition,
       i.indisvalid AS valid, i.indisready AS ready
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public'
"""
_TRIGGERS = """
SELECT c.relname AS rel, t.tgname AS name, pg_get_triggerdef(t.oid) AS definition
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND NOT t.tgisinternal
"""
_FUNCTIONS = """
SELECT p.proname AS name, pg_get_function_identity_arguments(p.oid) AS args
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
"""
_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1
"""


@dataclass(frozen=True)
class Snapshot:
    """What a schema change may not change, as comparable data."""

    columns: frozenset[tuple[Any, ...]]
    column_order: tuple[tuple[str, tuple[str, ...]], ...]
    constraints: frozenset[tuple[Any, ...]]
    indexes: frozenset[tuple[Any, ...]]
    triggers: frozenset[tuple[Any, ...]]
    functions: frozenset[tuple[Any, ...]]
    data: tuple[tuple[str, str], ...]  # (table, digest of its rows)


def _rows(records: Sequence[asyncpg.Record], *skip: str) -> frozenset[tuple[Any, ...]]:
    return frozenset(tuple(v for k, v in r.items() if k not in skip) for r in records)


async def snapshot(conn: asyncpg.Connection) -> Snapshot:
    columns = await conn.fetch(_COLUMNS)
    order: dict[str, list[tuple[int, str]]] = {}
    for row in columns:
        order.setdefault(row["rel"], []).append((row["num"], row["name"]))
    data = []
    for (table,) in await conn.fetch(_TABLES):
        digest = await conn.fetchval(
            f"SELECT md5(coalesce(string_agg(x, '|' ORDER BY x), '')) "
            f'FROM (SELECT to_jsonb(t)::text AS x FROM public."{table}" t) s'
        )
        data.append((table, digest))
    return Snapshot(
        columns=_rows(columns, "num"),
        column_order=tuple(
            (rel, tuple(name for _, name in sorted(names))) for rel, names in sorted(order.items())
        ),
        constraints=_rows(await conn.fetch(_CONSTRAINTS)),
        indexes=_rows(await conn.fetch(_INDEXES)),
        triggers=_rows(await conn.fetch(_TRIGGERS)),
        functions=_rows(await conn.fetch(_FUNCTIONS)),
        data=tuple(data),
    )


@asynccontextmanager
async def sibling_database(dsn: str) -> AsyncIterator[str]:
    """Another fresh database on the same server as ``dsn``, dropped afterwards."""
    name = f"zdm_twin_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    twin = urlsplit(dsn)._replace(path=f"/{name}").geturl()
    try:
        yield twin
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def fresh_public_schema(dsn: str) -> None:
    """Empty schema public again: for hypothesis examples, which share one test's database."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


async def plan_for(dsn: str, script: str, policy: MigrationPolicy | None = None) -> Plan:
    session = await connect(dsn, "zdmproxy:plan")
    try:
        return await plan_script(session, script, policy)
    finally:
        await session.close()


async def run_plan(dsn: str, script: str, policy: MigrationPolicy | None = None) -> Plan:
    """Plan ``script`` against ``dsn`` and run every step through the engine (no journal)."""
    plan = await plan_for(dsn, script, policy)
    await Runner(dsn, f"eq-{uuid.uuid4().hex[:8]}", policy or MigrationPolicy(deadline_s=60)).run(plan)
    return plan


async def check_equivalent(
    dsn: str,
    setup: str,
    statement: str,
    *,
    policy: MigrationPolicy | None = None,
    column_order: bool = True,
) -> Plan:
    """Run ``setup`` in two databases, then ``statement`` as written in one and zdmproxy's plan in
    the other; assert the snapshots are equal. Returns the plan (for assertions on its steps).

    ``column_order=False`` for expand/contract rewrites, which add the replacing column last
    (the only difference they are allowed: applications name their columns).
    """
    async with sibling_database(dsn) as naive_dsn:
        naive = await asyncpg.connect(naive_dsn)
        ours = await asyncpg.connect(dsn)
        try:
            await naive.execute(setup)
            await ours.execute(setup)
            await naive.execute(statement)
            plan = await run_plan(dsn, statement, policy)
            expected, got = await snapshot(naive), await snapshot(ours)
        finally:
            await naive.close()
            await ours.close()
    for field in ("columns", "constraints", "indexes", "triggers", "functions", "data"):
        want, have = set(getattr(expected, field)), set(getattr(got, field))
        assert have == want, (
            f"{field} differ after the plan of {statement!r}:\n"
            f"  only as written: {sorted(map(str, want - have))}\n"
            f"  only planned:    {sorted(map(str, have - want))}\n"
            f"  steps: {json.dumps([s.sql for s in plan.steps], indent=1)}"
        )
    if column_order:
        assert got.column_order == expected.column_order
    return plan
