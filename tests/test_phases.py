"""Expand/contract phases on a real PostgreSQL: ``apply --phase expand``, then both application
versions working, then ``apply --phase contract``; ``rollback`` after an expand; the order of
phases enforced; each rule's end state equal to the statement as written; and a type change
under write traffic that never holds a client up and keeps every value written meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
from equivalence import check_equivalent, plan_for, snapshot
from helpers import run_cli, zdmproxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from step_locks import check_step_locks
from traffic import LockSampler, Traffic

from zdmproxy.plan.model import Phase
from zdmproxy.plan.verdict import blocks_traffic
from zdmproxy.policy import MigrationPolicy

USERS = """
CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL CHECK (name <> ''), score int NOT NULL DEFAULT 0);
CREATE INDEX users_name_idx ON users (name);
INSERT INTO users (id, name, score) SELECT g, 'user ' || g, g FROM generate_series(100, 299) g;
"""
RENAME = "ALTER TABLE users RENAME COLUMN name TO full_name"
WIDEN = "ALTER TABLE users ALTER COLUMN score TYPE bigint"


async def _apply(dsn: str, tmp_path: Path, migration_id: str, sql: str, *options: str) -> tuple[int, str]:
    result = await run_cli("apply", "--dsn", dsn, "--id", migration_id, *options, sql=sql, tmp_path=tmp_path)
    return result.code, result.stderr


async def _status(dsn: str, migration_id: str) -> dict[str, object]:
    result = await zdmproxy("status", "--dsn", dsn, migration_id, "--json")
    assert result.code == 0, result.stderr
    migration: dict[str, object] = result.json()["migration"]  # type: ignore[assignment]
    return migration


async def test_rename_expand_then_contract_with_both_versions_in_between(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(USERS)
        code, stderr = await _apply(dsn, tmp_path, "rename", RENAME, "--phase", "expand")
        assert code == 0, stderr
        assert "contract" in stderr, stderr
        status = await _status(dsn, "rename")
        assert (status["state"], status["phase"]) == ("paused", "expand")
        code, stderr = await _apply(dsn, tmp_path, "rename", RENAME, "--phase", "expand")
        assert code == 0 and "expand phase already done" in stderr, stderr  # nothing ran again

        # The old application version reads and writes name, the new one full_name: both work,
        # and each sees what the other wrote.
        await conn.execute("INSERT INTO users (id, name) VALUES (1001, 'old writer')")
        await conn.execute("INSERT INTO users (id, full_name) VALUES (1002, 'new writer')")
        await conn.execute("UPDATE users SET name = 'old update' WHERE id = 101")
        await conn.execute("UPDATE users SET full_name = 'new update' WHERE id = 102")
        rows = await conn.fetch(
            "SELECT id, name, full_name FROM users WHERE id IN (101, 102, 1001, 1002) ORDER BY id"
        )
        assert [tuple(r) for r in rows] == [
            (101, "old update", "old update"),
            (102, "new update", "new update"),
            (1001, "old writer", "old writer"),
            (1002, "new writer", "new writer"),
        ]
        assert await conn.fetchval("SELECT count(*) FROM users WHERE full_name IS DISTINCT FROM name") == 0

        code, stderr = await _apply(dsn, tmp_path, "rename", RENAME, "--phase", "contract")
        assert code == 0, stderr
        status = await _status(dsn, "rename")
        assert (status["state"], status["phase"]) == ("succeeded", "contract")
        columns = await conn.fetch(
            "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attname"
        )
        assert [tuple(c) for c in columns] == [("full_name", True), ("id", True), ("score", True)]
        assert await conn.fetchval("SELECT full_name FROM users WHERE id = 1002") == "new writer"
        assert await conn.fetchval("SELECT count(*) FROM users") == 202
        assert "full_name" in await conn.fetchval("SELECT pg_get_indexdef('users_name_idx'::regclass)")
    finally:
        await conn.close()


async def test_the_tables_own_trigger_adjusts_a_value_before_it_is_copied(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(USERS)
        await conn.execute(
            "CREATE FUNCTION tidy() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.name := lower(NEW.name); RETURN NEW; END $$;"
            # named to fire after a trigger called zdm_... (BEFORE triggers fire in name order)
            "CREATE TRIGGER zz_tidy_name BEFORE INSERT OR UPDATE ON users "
            "FOR EACH ROW EXECUTE FUNCTION tidy()"
        )
        code, stderr = await _apply(dsn, tmp_path, "rename", RENAME, "--phase", "expand")
        assert code == 0, stderr
        await conn.execute("INSERT INTO users (id, name) VALUES (1001, 'MiXeD')")
        assert await conn.fetchval("SELECT full_name FROM users WHERE id = 1001") == "mixed"
    finally:
        await conn.close()


async def test_rollback_after_expand_leaves_the_original_schema_and_data(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(USERS)
        before = await snapshot(conn)
        code, stderr = await _apply(dsn, tmp_path, "widen", WIDEN, "--phase", "expand")
        assert code == 0, stderr
        # The application keeps working on the old column meanwhile; its writes survive the rollback.
        await conn.execute("UPDATE users SET score = -5 WHERE id = 107")
        await conn.execute("DELETE FROM users WHERE id = 200")
        await conn.execute("INSERT INTO users (id, name, score) VALUES (200, 'user 200', 200)")
        assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%zdm_sync%'") == 1

        result = await zdmproxy("rollback", "--dsn", dsn, "widen")
        assert result.code == 0, result.stderr
        await conn.execute("UPDATE users SET score = 107 WHERE id = 107")  # undo the test's own write
        assert await snapshot(conn) == before
        status = await _status(dsn, "widen")
        assert (status["state"], status["phase"]) == ("cancelled", "rollback")

        # Applied again afterwards, it starts over and ends as the statement as written.
        code, stderr = await _apply(dsn, tmp_path, "widen", WIDEN)
        assert code == 0, stderr
        assert (
            await conn.fetchval(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'users'::regclass AND attname = 'score'"
            )
            == "bigint"
        )
        assert (await _status(dsn, "widen"))["state"] == "succeeded"
    finally:
        await conn.close()


async def test_rollback_after_a_failed_backfill_leaves_the_original(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(USERS)
        await conn.execute("ALTER TABLE users ADD COLUMN code text; UPDATE users SET code = id::text")
        await conn.execute("UPDATE users SET code = 'x' WHERE id = 250")  # no integer: the cast fails
        before = await snapshot(conn)
        code, stderr = await _apply(
            dsn, tmp_path, "cast", "ALTER TABLE users ALTER COLUMN code TYPE int USING code::int"
        )
        assert code == 1 and "invalid input syntax" in stderr, stderr
        result = await zdmproxy("rollback", "--dsn", dsn, "cast")
        assert result.code == 0, result.stderr
        assert await snapshot(conn) == before
    finally:
        await conn.close()


async def test_drop_column_expand_then_rollback_restores_not_null(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(USERS)
        await conn.execute("ALTER TABLE users ADD COLUMN legacy int; UPDATE users SET legacy = id")
        await conn.execute("ALTER TABLE users ALTER COLUMN legacy SET NOT NULL")
        before = await snapshot(conn)
        drop = "ALTER TABLE users DROP COLUMN legacy"
        code, stderr = await _apply(dsn, tmp_path, "drop", drop, "--phase", "expand")
        assert code == 0, stderr
        # The new application version inserts without the column; the old one still reads it.
        await conn.execute("INSERT INTO users (id, name) VALUES (5000, 'new code')")
        await conn.execute("DELETE FROM users WHERE id = 5000")
        result = await zdmproxy("rollback", "--dsn", dsn, "drop")
        assert result.code == 0, result.stderr
        assert await snapshot(conn) == before
        code, stderr = await _apply(dsn, tmp_path, "drop", drop, "--allow-destructive")
        assert code == 0, stderr
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_attribute WHERE attname = 'legacy' AND NOT attisdropped"
            )
            == 0
        )
    finally:
        await conn.close()


async def test_contract_before_expand_and_rollback_after_contract_refused(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(USERS)
        code, stderr = await _apply(dsn, tmp_path, "early", WIDEN, "--phase", "contract")
        assert code == 3, stderr
        assert "--phase expand" in stderr and "first" in stderr, stderr
        assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%zdm_sync%'") == 0

        code, stderr = await _apply(dsn, tmp_path, "early", WIDEN)
        assert code == 0, stderr
        result = await zdmproxy("rollback", "--dsn", dsn, "early")
        assert result.code == 3, result.stderr
        assert "contract phase has run" in result.stderr, result.stderr
    finally:
        await conn.close()


EQUIVALENCE = """
CREATE TABLE t (id int PRIMARY KEY, c int NOT NULL DEFAULT 3 CHECK (c > 0), b text, u int UNIQUE,
                note varchar(10), gone int NOT NULL);
CREATE INDEX t_c_idx ON t (c) WHERE c > 5;
CREATE UNIQUE INDEX t_cb_idx ON t (c, b);
CREATE INDEX t_lower_idx ON t (lower(note));
INSERT INTO t SELECT g, g, 'x' || g, g, 'n' || g, g FROM generate_series(100, 399) g;
CREATE TABLE s (id serial PRIMARY KEY, v text);
SELECT setval('s_id_seq', 100, false);
INSERT INTO s (v) SELECT 'v' || g FROM generate_series(1, 50) g;
"""


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE t ALTER COLUMN c TYPE bigint",
        "ALTER TABLE t ALTER COLUMN c TYPE bigint USING c * 10 + length(b)",
        "ALTER TABLE t ALTER COLUMN u TYPE numeric(12, 2)",
        "ALTER TABLE t ALTER COLUMN id TYPE bigint",
        "ALTER TABLE s ALTER COLUMN id TYPE bigint",
        "ALTER TABLE t ALTER COLUMN note TYPE varchar(5) USING left(note, 5)",
        "ALTER TABLE t RENAME COLUMN c TO c2",
        "ALTER TABLE t RENAME COLUMN note TO remark",
        "ALTER TABLE t DROP COLUMN gone",
        "ALTER TABLE t DROP COLUMN c",
    ],
)
async def test_each_rule_ends_as_the_statement_as_written(dsn: str, statement: str) -> None:
    policy = MigrationPolicy(deadline_s=60, allow_destructive=True)
    plan = await check_equivalent(dsn, EQUIVALENCE, statement, policy=policy, column_order=False)
    # The rule took the statement (switched off, each of these is one step as written).
    assert Phase.CONTRACT in {step.phase for step in plan.steps}, [s.sql for s in plan.steps]
    if "DROP COLUMN" not in statement:
        assert not any(step.rewrites for step in plan.steps)
        assert {step.phase for step in plan.steps} >= {Phase.EXPAND, Phase.BACKFILL, Phase.CONTRACT}


@pytest.mark.parametrize("statement", [WIDEN, RENAME, "ALTER TABLE users ALTER COLUMN name TYPE varchar(80)"])
async def test_every_steps_locks_are_what_postgresql_takes_and_none_reads_under_them(
    dsn: str, statement: str
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(USERS)
    finally:
        await conn.close()
    plan = await plan_for(dsn, statement)
    assert len(plan.steps) > 5
    scanned = await check_step_locks(dsn, plan)
    for step, tables in zip(plan.steps, scanned, strict=True):
        held = {str(lock.relation): lock.mode for lock in step.locks}
        assert not [t for t in tables if t in held and blocks_traffic(held[t])], step.sql


@st.composite
def columns_and_changes(draw: st.DrawFn) -> tuple[str, str]:
    """A table whose column x is distinct, repeats or holds NULLs, maybe NOT NULL, with a default, a
    CHECK, indexes (plain, unique, partial, on an expression); and a statement that replaces x."""
    kind = draw(st.sampled_from(["distinct", "repeats", "nulls"]))
    value = {"distinct": "g", "repeats": "g % 7 + 1", "nulls": "CASE WHEN g % 5 = 0 THEN NULL ELSE g END"}[
        kind
    ]
    parts = ["x int"]
    if kind != "nulls" and draw(st.booleans()):
        parts.append("NOT NULL")
    if draw(st.booleans()):
        parts.append("DEFAULT 42")
    if draw(st.booleans()):
        parts.append("CHECK (x > 0)")
    indexes = draw(
        st.lists(
            st.sampled_from(["(x)", "(x, y)", "(x) WHERE x > 3", "((x + 1))", "UNIQUE (x)"]),
            max_size=3,
            unique=True,
        )
    )
    rows = draw(st.integers(0, 400))
    setup = [
        f"CREATE TABLE h (id int PRIMARY KEY, y text, {' '.join(parts)});",
        f"INSERT INTO h SELECT g, 'y' || g, {value} FROM generate_series(100, {99 + rows}) g;",
    ]
    for number, index in enumerate(indexes):
        if index.startswith("UNIQUE"):
            if kind != "repeats":
                setup.append(f"CREATE UNIQUE INDEX h_u{number} ON h {index.removeprefix('UNIQUE ')};")
        else:
            setup.append(f"CREATE INDEX h_i{number} ON h {index};")
    change = draw(
        st.sampled_from(
            [
                "ALTER COLUMN x TYPE bigint",
                "ALTER COLUMN x TYPE numeric(12, 2)",
                "ALTER COLUMN x TYPE bigint USING x * 2 + length(y)",
                "ALTER COLUMN x TYPE smallint",
                "RENAME COLUMN x TO z",
                "DROP COLUMN x",
            ]
        )
    )
    return "\n".join(setup), f"ALTER TABLE h {change}"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=columns_and_changes())
async def test_made_up_columns_end_as_written(dsn: str, case: tuple[str, str]) -> None:
    setup, statement = case
    conn = await asyncpg.connect(dsn)
    try:  # a fresh schema per example: the fixture's database is shared by the examples
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    policy = MigrationPolicy(deadline_s=60, allow_destructive=True)
    plan = await check_equivalent(dsn, setup, statement, policy=policy, column_order=False)
    assert Phase.CONTRACT in {step.phase for step in plan.steps}


ITEMS = """
CREATE TABLE items (id bigint PRIMARY KEY, a int NOT NULL CHECK (a >= 0), n int NOT NULL DEFAULT 0);
CREATE INDEX items_a_idx ON items (a);
INSERT INTO items (id, a) SELECT g, g % 100 FROM generate_series(100000, 299999) g;
ANALYZE items;
"""


async def test_type_change_under_traffic_blocks_nobody_keeps_every_write(dsn: str, tmp_path: Path) -> None:
    setup = await asyncpg.connect(dsn)
    await setup.execute(ITEMS)
    await setup.close()
    written: dict[int, int] = {}
    stop = asyncio.Event()

    async def writer() -> None:
        """Writes the column being changed while zdmproxy works: updates and new rows."""
        conn = await asyncpg.connect(dsn)
        try:
            number = 0
            while not stop.is_set():
                number += 1
                key = 100000 + (number * 7919) % 200000
                await conn.execute("UPDATE items SET a = $2 WHERE id = $1", key, 1000 + number)
                written[key] = 1000 + number
                await conn.execute("INSERT INTO items (id, a) VALUES ($1, $2)", 1000000 + number, number)
                written[1000000 + number] = number
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    budget_ms = 200.0
    statement = "ALTER TABLE items ALTER COLUMN a TYPE bigint"
    async with LockSampler(dsn) as sampler, Traffic(dsn, "items", rows=299999, clients=8) as traffic:
        task = asyncio.create_task(writer())
        start = time.monotonic()
        code, stderr = await _apply(dsn, tmp_path, "widen-a", statement, "--phase", "expand")
        assert code == 0, stderr
        # Expanded: the application still has its int column, a trigger feeds the new one.
        assert (await _status(dsn, "widen-a"))["phase"] == "expand"
        code, stderr = await _apply(
            dsn, tmp_path, "widen-a", statement, "--phase", "contract", "--queue-budget-ms", str(budget_ms)
        )
        assert code == 0, stderr
        await asyncio.sleep(0.2)
        stop.set()
        await task
        end = await traffic.settle()
    waited = sampler.longest_wait_behind("zdmproxy", start, end)
    assert waited < budget_ms * 3, f"a client waited {waited:.0f} ms behind zdmproxy"
    assert not [e for e in traffic.errors if not isinstance(e, asyncpg.InvalidCachedStatementError)]
    conn = await asyncpg.connect(dsn)
    try:
        rows = dict(await conn.fetch("SELECT id, a FROM items WHERE id = ANY($1::bigint[])", list(written)))
        assert rows == written
        assert len(written) > 10
        kind = await conn.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass "
            "AND attname = 'a'"
        )
        assert kind == "bigint"
        assert await conn.fetchval("SELECT count(*) FROM items WHERE a IS NULL") == 0
        valid = await conn.fetch("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_a_idx'::regclass")
        assert [r["indisvalid"] for r in valid] == [True]
        assert await conn.fetchval("SELECT count(*) FROM pg_constraint WHERE conname = 'items_a_check'") == 1
    finally:
        await conn.close()
