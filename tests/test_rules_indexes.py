"""CREATE / DROP / REINDEX run CONCURRENTLY, and an index on a partitioned table is built
partition by partition (plan/rules/concurrent_index.py, plan/rules/partitioned_index.py).

Pure cases first (make_plan with facts built here), then on PostgreSQL 15 and 18: the end state
equals the statement's as written (tests/equivalence.py), every step locks what it says
(tests/step_locks.py), and writers are never held up while a partitioned table is indexed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg
import pytest
from equivalence import check_equivalent, plan_for, run_plan, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast import ast
from step_locks import check_step_locks
from traffic import LockSampler, Traffic

from zdmproxy.errors import UnsupportedStatement
from zdmproxy.plan.model import Step
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.facts import CatalogFacts, ChildInfo, ColumnType, ConstraintInfo, IndexInfo, RelationInfo
from zdmproxy.sql.index_names import choose_index_name
from zdmproxy.sql.locks import LockMode, RelationName
from zdmproxy.sql.names import quote_ident
from zdmproxy.sql.parse import parse_script

T = RelationName("public", "t")
EV = RelationName("public", "ev")


def rel(name: str) -> RelationName:
    return RelationName("public", name)


FACTS = CatalogFacts(
    server_version_num=150000,
    relations={
        RelationName(None, "t"): RelationInfo(
            name=T,
            relkind="r",
            constraints=(
                ConstraintInfo("t_pkey", "p", True, index="t_pkey"),
                ConstraintInfo("t_no_overlap", "x", True, index="t_no_overlap"),
            ),
            index_definitions=(IndexInfo("t_a_idx", "CREATE INDEX t_a_idx ON public.t USING btree (a)"),),
        ),
        RelationName(None, "t_a_idx"): RelationInfo(name=rel("t_a_idx"), relkind="i", table=T),
        RelationName(None, "t_pkey"): RelationInfo(name=rel("t_pkey"), relkind="i", table=T),
        RelationName(None, "t_no_overlap"): RelationInfo(name=rel("t_no_overlap"), relkind="i", table=T),
        RelationName(None, "plain"): RelationInfo(name=rel("plain"), relkind="r"),
        RelationName(None, "ev_id_idx"): RelationInfo(name=rel("ev_id_idx"), relkind="I", table=EV),
        RelationName(None, "ev"): RelationInfo(
            name=EV,
            relkind="p",
            partition_key="LIST (kind)",
            columns={"id": ColumnType("int8"), "kind": ColumnType("int4")},
            children=(
                ChildInfo(rel("ev_1"), "r", 1, "FOR VALUES IN (1)", parents=(EV,)),
                ChildInfo(rel("ev_2"), "p", 1, "FOR VALUES IN (2)", parents=(EV,)),
                ChildInfo(rel("ev_2a"), "r", 2, "FOR VALUES FROM (1) TO (5)", parents=(rel("ev_2"),)),
            ),
        ),
    },
    names_in_use=frozenset({rel("plain_a_idx"), rel("ev_1_id_idx"), rel("ev_id_idx")}),
)


@dataclass(frozen=True)
class Planned:
    sql: str
    steps: list[str]  # the steps' SQL, in order
    transactional: list[bool] = field(default_factory=list)
    version: int = 150000


PURE_CASES = {
    "create_index_named": Planned(
        "CREATE INDEX t_b_idx ON t (b)", ["CREATE INDEX CONCURRENTLY t_b_idx ON t (b)"], [False]
    ),
    "create_unique_index_unnamed_takes_the_next_free_name": Planned(
        "CREATE UNIQUE INDEX ON plain (a)", ["CREATE UNIQUE INDEX CONCURRENTLY plain_a_idx1 ON plain (a)"]
    ),
    "create_index_keeps_everything_else": Planned(
        "CREATE INDEX IF NOT EXISTS t_x ON t USING gin (tags) WITH (fastupdate = off) WHERE b > 1",
        [
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_x ON t USING gin (tags) "
            "WITH (fastupdate = off) WHERE b > 1"
        ],
    ),
    "create_index_concurrently_stays": Planned(
        "CREATE INDEX CONCURRENTLY t_b_idx ON t (b)", ["CREATE INDEX CONCURRENTLY t_b_idx ON t (b)"]
    ),
    "create_index_on_only_a_partitioned_table_stays": Planned(
        "CREATE INDEX ev_x ON ONLY ev (id)", ["CREATE INDEX ev_x ON ONLY ev (id)"], [True]
    ),
    "drop_index": Planned("DROP INDEX t_a_idx", ['DROP INDEX CONCURRENTLY "t_a_idx"'], [False]),
    "drop_indexes_one_per_statement": Planned(
        "DROP INDEX IF EXISTS t_a_idx, other",
        ['DROP INDEX CONCURRENTLY IF EXISTS "t_a_idx"', 'DROP INDEX CONCURRENTLY IF EXISTS "other"'],
        [False, False],
    ),
    "drop_index_cascade_stays": Planned("DROP INDEX t_a_idx CASCADE", ["DROP INDEX t_a_idx CASCADE"], [True]),
    "drop_constraint_index_stays": Planned("DROP INDEX t_pkey", ["DROP INDEX t_pkey"]),
    "drop_partitioned_index_stays_plain": Planned("DROP INDEX ev_id_idx", ['DROP INDEX "ev_id_idx"']),
    "reindex_table": Planned("REINDEX TABLE plain", ["REINDEX (CONCURRENTLY) TABLE plain"], [False]),
    "reindex_index_keeps_options": Planned(
        "REINDEX (VERBOSE) INDEX t_a_idx", ["REINDEX (VERBOSE, CONCURRENTLY) INDEX t_a_idx"]
    ),
    "reindex_partitioned_table_on_15": Planned("REINDEX TABLE ev", ["REINDEX (CONCURRENTLY) TABLE ev"]),
    "reindex_partitioned_table_on_13_stays": Planned(
        "REINDEX TABLE ev", ["REINDEX TABLE ev"], version=130000
    ),
    "reindex_on_11_stays": Planned("REINDEX TABLE plain", ["REINDEX TABLE plain"], version=110000),
    "reindex_system_catalog_stays": Planned(
        "REINDEX TABLE pg_catalog.pg_class", ["REINDEX TABLE pg_catalog.pg_class"]
    ),
    "reindex_exclusion_index_stays": Planned("REINDEX INDEX t_no_overlap", ["REINDEX INDEX t_no_overlap"]),
    "reindex_table_with_exclusion_index_stays": Planned("REINDEX TABLE t", ["REINDEX TABLE t"]),
    "partitioned_index_per_partition": Planned(
        "CREATE INDEX ON ev (id)",
        [
            "CREATE INDEX ev_id_idx1 ON ONLY ev (id)",
            "CREATE INDEX CONCURRENTLY ev_1_id_idx1 ON public.ev_1 (id)",
            'ALTER INDEX "public"."ev_id_idx1" ATTACH PARTITION "public"."ev_1_id_idx1"',
            "CREATE INDEX ev_2_id_idx ON ONLY public.ev_2 (id)",
            'ALTER INDEX "public"."ev_id_idx1" ATTACH PARTITION "public"."ev_2_id_idx"',
            "CREATE INDEX CONCURRENTLY ev_2a_id_idx ON public.ev_2a (id)",
            'ALTER INDEX "public"."ev_2_id_idx" ATTACH PARTITION "public"."ev_2a_id_idx"',
        ],
        [True, False, True, True, True, False, True],
    ),
}


def steps_of(case: Planned) -> list[tuple[str, bool]]:
    facts = CatalogFacts(**{**FACTS.__dict__, "server_version_num": case.version})
    plan = make_plan(case.sql, facts)
    return [(step.sql, step.transactional) for step in plan.steps]


@pytest.mark.parametrize("case_id", list(PURE_CASES))
def test_rule_plans(case_id: str) -> None:
    case = PURE_CASES[case_id]
    got = steps_of(case)
    assert [sql for sql, _ in got] == case.steps
    if case.transactional:
        assert [tx for _, tx in got] == case.transactional


def test_every_step_that_builds_has_its_way_back() -> None:
    plan = make_plan("CREATE INDEX ON ev (id); CREATE INDEX t_b_idx ON t (b); DROP INDEX t_a_idx", FACTS)
    reverts = [step.revert for step in plan.steps]
    assert reverts[0] == 'DROP INDEX IF EXISTS "public"."ev_id_idx1"'
    assert reverts[1] == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."ev_1_id_idx1"'
    assert (
        reverts[2] == 'DROP INDEX IF EXISTS "public"."ev_id_idx1"'
    )  # an attached index goes with its parent
    assert reverts[-2] == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."t_b_idx"'
    assert reverts[-1] == "CREATE INDEX CONCURRENTLY t_a_idx ON public.t (a)"


def test_no_step_stops_writes() -> None:
    plan = make_plan("CREATE INDEX ON ev (id); CREATE INDEX t_b_idx ON t (b); REINDEX TABLE plain", FACTS)
    for step in plan.steps:
        held = [lock for lock in step.locks if not lock.created and lock.kind == "table"]
        scanned = set(step.scans)
        assert all(
            lock.mode <= LockMode.SHARE_UPDATE_EXCLUSIVE for lock in held if lock.relation in scanned
        ), step


def test_an_equal_index_on_a_partition_is_attached_not_built_again() -> None:
    info = FACTS.relations[RelationName(None, "ev")]
    ev_1 = ChildInfo(
        rel("ev_1"),
        "r",
        1,
        "FOR VALUES IN (1)",
        parents=(EV,),
        free_indexes=(
            IndexInfo(
                "ev_1_partial", "CREATE INDEX ev_1_partial ON public.ev_1 USING btree (id) WHERE (id > 0)"
            ),
            IndexInfo("ev_1_by_id", "CREATE INDEX ev_1_by_id ON public.ev_1 USING btree (id)"),
        ),
    )
    facts = CatalogFacts(
        server_version_num=150000,
        relations={RelationName(None, "ev"): RelationInfo(**{**info.__dict__, "children": (ev_1,)})},
    )
    assert [s.sql for s in make_plan("CREATE INDEX ev_i ON ev (id)", facts).steps] == [
        "CREATE INDEX ev_i ON ONLY ev (id)",
        'ALTER INDEX "public"."ev_i" ATTACH PARTITION "public"."ev_1_by_id"',
    ]


def test_partitions_below_a_reused_index_are_left_alone() -> None:
    info = FACTS.relations[RelationName(None, "ev")]
    children = (
        ChildInfo(
            rel("ev_2"),
            "p",
            1,
            "FOR VALUES IN (2)",
            parents=(EV,),
            free_indexes=(
                IndexInfo("ev_2_by_id", "CREATE INDEX ev_2_by_id ON ONLY public.ev_2 USING btree (id)"),
            ),
        ),
        ChildInfo(rel("ev_2a"), "p", 2, "FOR VALUES FROM (1) TO (5)", parents=(rel("ev_2"),)),
        ChildInfo(rel("ev_2a1"), "r", 3, "FOR VALUES IN (1)", parents=(rel("ev_2a"),)),
    )
    facts = CatalogFacts(
        server_version_num=150000,
        relations={RelationName(None, "ev"): RelationInfo(**{**info.__dict__, "children": children})},
    )
    assert [s.sql for s in make_plan("CREATE INDEX ev_i ON ev (id)", facts).steps] == [
        "CREATE INDEX ev_i ON ONLY ev (id)",
        'ALTER INDEX "public"."ev_i" ATTACH PARTITION "public"."ev_2_by_id"',
    ]


def test_unique_index_without_the_partition_key_is_refused_with_what_to_do() -> None:
    with pytest.raises(UnsupportedStatement, match="add kind to the index"):
        make_plan("CREATE UNIQUE INDEX ON ev (id)", FACTS)
    info = FACTS.relations[RelationName(None, "ev")]
    sub = ChildInfo(rel("ev_2"), "p", 1, "FOR VALUES IN (2)", parents=(EV,), partition_key="RANGE (day)")
    facts = CatalogFacts(
        server_version_num=150000,
        relations={RelationName(None, "ev"): RelationInfo(**{**info.__dict__, "children": (sub,)})},
    )
    with pytest.raises(UnsupportedStatement, match=r"partitioned table public\.ev_2 .* add day"):
        make_plan("CREATE UNIQUE INDEX ON ev (id, kind)", facts)
    assert len(make_plan("CREATE UNIQUE INDEX ON ev (id, kind, day)", facts).steps) == 3


def test_foreign_partitions_leave_the_statement_as_written() -> None:
    foreign = ChildInfo(rel("ev_f"), "f", 1, "FOR VALUES IN (9)", parents=(EV,))
    info = FACTS.relations[RelationName(None, "ev")]
    facts = CatalogFacts(
        server_version_num=150000,
        relations={RelationName(None, "ev"): RelationInfo(**{**info.__dict__, "children": (foreign,)})},
    )
    assert [s.sql for s in make_plan("CREATE INDEX ON ev (id)", facts).steps] == ["CREATE INDEX ON ev (id)"]


def test_without_a_database_the_chosen_name_says_it_is_an_assumption() -> None:
    (step,) = make_plan("CREATE INDEX ON t (a)").steps
    assert step.sql == "CREATE INDEX CONCURRENTLY t_a_idx ON t (a)"
    assert "unknown without a database" in step.reason


# --- on PostgreSQL 15 and 18 ---------------------------------------------------------------

TABLE = """
CREATE TABLE t (id bigint PRIMARY KEY, a int, b text, c int);
INSERT INTO t SELECT g, g % 100, md5(g::text), g FROM generate_series(1, 2000) g;
CREATE INDEX t_a_idx ON t (a);
CREATE INDEX t_b_c_idx ON t (b, c);
CREATE TABLE t_a_b_idx (x int);  -- a relation holding the name PostgreSQL would choose first
"""
LONG = "a_partitioned_table_with_a_name_long_enough_to_be_cut_short"
PARTITIONED = f"""
CREATE TABLE ev (id bigint, kind int, day int, note text) PARTITION BY LIST (kind);
CREATE TABLE ev_1 PARTITION OF ev FOR VALUES IN (1);
CREATE TABLE ev_2 PARTITION OF ev FOR VALUES IN (2) PARTITION BY RANGE (day);
CREATE TABLE ev_2_early PARTITION OF ev_2 FOR VALUES FROM (1) TO (15);
CREATE TABLE ev_2_late PARTITION OF ev_2 FOR VALUES FROM (15) TO (32);
CREATE TABLE ev_other PARTITION OF ev DEFAULT;
CREATE TABLE ev_9 PARTITION OF ev FOR VALUES IN (9) PARTITION BY LIST (id);  -- no partitions yet
CREATE TABLE {LONG}_1 PARTITION OF ev FOR VALUES IN (3);
CREATE TABLE {LONG}_2 PARTITION OF ev FOR VALUES IN (4);
INSERT INTO ev SELECT g, 1 + g % 6, 1 + g % 31, md5(g::text) FROM generate_series(1, 3000) g;
CREATE TABLE ev_1_id_idx (x int);
"""

EQUIVALENT = {
    "create_index_unnamed_name_taken": (TABLE, "CREATE INDEX ON t (a, b)"),
    "create_unique_index_expression_include_partial": (
        TABLE,
        "CREATE UNIQUE INDEX ON t (lower(b), (c + 1)) INCLUDE (a) WHERE c > 10",
    ),
    "create_index_named": (TABLE, "CREATE INDEX t_c ON t USING hash (c)"),
    "create_index_on_a_materialized_view_name_taken": (
        TABLE + "CREATE MATERIALIZED VIEW mv AS SELECT id, a FROM t; CREATE TABLE mv_a_idx (x int);",
        "CREATE INDEX ON mv (a)",
    ),
    "drop_two_indexes": (TABLE, "DROP INDEX t_a_idx, t_b_c_idx"),
    "reindex_table": (TABLE, "REINDEX TABLE t"),
    "reindex_index": (TABLE, "REINDEX INDEX t_a_idx"),
    "partitioned_index_unnamed": (PARTITIONED, "CREATE INDEX ON ev (id)"),
    "reindex_partitioned_table": (PARTITIONED + "CREATE INDEX ev_id ON ev (id);", "REINDEX TABLE ev"),
    "partitioned_unique_index_named": (PARTITIONED, "CREATE UNIQUE INDEX ev_key ON ev (id, kind, day)"),
    "partitioned_index_expression_partial": (PARTITIONED, "CREATE INDEX ON ev (lower(note)) WHERE id > 5"),
    "partitioned_index_reuses_equal_ones": (
        PARTITIONED
        + "CREATE INDEX ev_1_by_id ON ev_1 (id); CREATE INDEX ev_2_by_id ON ev_2 (id);"
        + "CREATE INDEX ev_other_partial ON ev_other (id) WHERE id > 0;",
        "CREATE INDEX ON ev (id)",
    ),
}


@pytest.mark.parametrize("case_id", list(EQUIVALENT))
async def test_end_state_equals_the_statement_as_written(dsn: str, case_id: str) -> None:
    setup, statement = EQUIVALENT[case_id]
    plan = await check_equivalent(dsn, setup, statement)
    for step in plan.steps:  # what each step reads, it reads under a lock that lets writes through
        held = {lock.relation: lock.mode for lock in step.locks}
        assert all(held[table] <= LockMode.SHARE_UPDATE_EXCLUSIVE for table in step.scans), step


LOCK_CASES = {
    "create_index": (TABLE, "CREATE INDEX ON t (c)"),
    "drop_index": (TABLE, "DROP INDEX t_a_idx"),
    "drop_two_indexes": (TABLE, "DROP INDEX t_a_idx, t_b_c_idx"),
    "reindex_table": (TABLE, "REINDEX TABLE t"),
    "reindex_index": (TABLE, "REINDEX INDEX t_b_c_idx"),
    "partitioned_index_reusing_one": (
        PARTITIONED + "CREATE INDEX ev_1_by_id ON ev_1 (id);",
        "CREATE INDEX ON ev (id)",
    ),
    "partitioned_index": (PARTITIONED, "CREATE UNIQUE INDEX ON ev (id, kind, day)"),
    "reindex_partitioned_table": (PARTITIONED + "CREATE INDEX ev_id ON ev (id);", "REINDEX TABLE ev"),
}


@pytest.mark.parametrize("case_id", list(LOCK_CASES))
async def test_each_step_locks_what_it_says(dsn: str, case_id: str) -> None:
    setup, statement = LOCK_CASES[case_id]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(setup + "ANALYZE;")
    finally:
        await conn.close()
    plan = await plan_for(dsn, statement)
    assert await check_step_locks(
        dsn, plan, _table_of_step, partition_by_partition=case_id.endswith("partitioned_table")
    )


def _table_of_step(step: Step) -> str:
    """A non-transactional step waits for transactions that used its table: the blocker reads it."""
    return next(str(lock.relation) for lock in step.locks if lock.kind == "table")


WRITERS = """
CREATE TABLE items (id bigint, kind int, a int, n int NOT NULL DEFAULT 0, pad text) PARTITION BY HASH (id);
CREATE TABLE items_0 PARTITION OF items FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE items_1 PARTITION OF items FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO items SELECT g, g % 7, g % 1000, 0, repeat(md5(g::text), 4) FROM generate_series(1, 200000) g;
CREATE INDEX items_id ON items (id);
ANALYZE items;
"""


async def test_writers_are_never_held_up_while_a_partitioned_table_is_indexed(dsn: str) -> None:
    """8 clients read and write while the index is built on every partition: no one waits for
    the build's locks longer than the queue budget (pg_locks says who waited behind whom)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(WRITERS)
    finally:
        await conn.close()
    policy = MigrationPolicy(deadline_s=60, queue_budget_ms=100)
    async with Traffic(dsn, "items", 200_000) as traffic, LockSampler(dsn) as sampler:
        start = time.monotonic()
        plan = await run_plan(dsn, "CREATE INDEX items_pad ON items (pad, a)", policy)
        finished = time.monotonic()
        await traffic.settle()
    assert not traffic.errors
    longest = sampler.longest_wait_behind("zdmproxy", start, finished)
    assert longest <= policy.queue_budget_ms + policy.watchdog_interval_ms, (
        f"a client waited {longest:.0f} ms"
    )
    conn = await asyncpg.connect(dsn)
    try:
        valid = await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_pad'::regclass"
        )
    finally:
        await conn.close()
    assert valid is True
    assert any("CONCURRENTLY" in step.sql for step in plan.steps)


# --- index names, generated: PostgreSQL's choice against ours ---------------------------------

NAME = st.text(alphabet="abz_é0", min_size=1, max_size=30)  # up to 60 bytes: é takes two
ELEMENTS = {
    "column": '"{c}"',
    "function": 'lower("{c}")',
    "operator": "(\"{c}\" || 'x')",
    "cast": '("{c}"::varchar)',
    "coalesce": "coalesce(\"{c}\", 'x')",
    "case": "(CASE WHEN \"{c}\" = 'a' THEN 1 END)",
}


@st.composite
def unnamed_indexes(draw: st.DrawFn) -> tuple[str, list[str], str]:
    """A table (its name, its text columns) and a CREATE INDEX on it without a name."""
    table = draw(NAME)
    columns = draw(st.lists(NAME, min_size=1, max_size=4, unique=True))
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(sorted(ELEMENTS)), st.sampled_from(columns)), min_size=1, max_size=4
        )
    )
    include = draw(st.lists(st.sampled_from(columns), max_size=2, unique=True))
    written = ", ".join(ELEMENTS[kind].format(c=column) for kind, column in keys)
    including = f" INCLUDE ({', '.join(quote_ident(c) for c in include)})" if include else ""
    return table, columns, f"CREATE INDEX ON {quote_ident(table)} ({written}){including}"


@given(case=unnamed_indexes())
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_an_unnamed_index_gets_the_name_postgresql_gives_it(
    dsn: str, case: tuple[str, list[str], str]
) -> None:
    """The same index created twice: the second name collides with the first and gets a number."""
    asyncio.run(_names_match(dsn, *case))


async def _names_match(dsn: str, table: str, columns: list[str], statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                f"CREATE TABLE {quote_ident(table)} ({', '.join(f'{quote_ident(c)} text' for c in columns)})"
            )
            for _ in range(2):
                taken = {
                    r["relname"]
                    for r in await conn.fetch(
                        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                    )
                }
                await conn.execute(statement)
                made = await conn.fetchval(
                    "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                    "AND relkind = 'i' AND NOT (relname = ANY($1::text[]))",
                    list(taken),
                )
                (node,) = (s.node for s in parse_script(statement))
                assert isinstance(node, ast.IndexStmt)
                assert choose_index_name(table, node, taken) == made, statement
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()


class _Rollback(Exception):
    """Leaves the test's table behind in no example after it."""


async def test_the_way_back_takes_a_partitioned_index_away_again(dsn: str) -> None:
    """Every step's revert, newest first, as ``zdmproxy rollback`` runs them: the parent's index
    and every partition's go, nothing else changes."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(PARTITIONED)
        before = await snapshot(conn)
        plan = await run_plan(dsn, "CREATE INDEX ON ev (id)")
        assert await snapshot(conn) != before
        for step in reversed(plan.steps):
            if step.revert:
                await conn.execute(step.revert)
        assert await snapshot(conn) == before
    finally:
        await conn.close()
