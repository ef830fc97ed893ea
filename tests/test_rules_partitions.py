"""ATTACH PARTITION behind validated bound checks, DETACH PARTITION CONCURRENTLY
(plan/rules/attach_partition.py, plan/rules/detach_partition.py).

Pure cases first, then on PostgreSQL 15 and 18: the end state equals the statement's as written,
each step locks what it says, and no step reads a table in full under a lock that stops traffic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from equivalence import check_equivalent, plan_for, run_plan, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from step_locks import check_step_locks, read_under_traffic_lock

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.planner import make_plan
from zdmproxy.sql.facts import CatalogFacts, ChildInfo, ColumnType, RelationInfo
from zdmproxy.sql.locks import LockMode, RelationName

EV = RelationName("public", "ev")
LOGS = RelationName("public", "logs")
OTHER = RelationName("public", "ev_other")


def rel(name: str) -> RelationName:
    return RelationName("public", name)


FACTS = CatalogFacts(
    server_version_num=150000,
    relations={
        RelationName(None, "ev"): RelationInfo(
            name=EV,
            relkind="p",
            partition_key="LIST (kind)",
            columns={"kind": ColumnType("int4")},
            default_partition=OTHER,
            children=(
                ChildInfo(rel("ev_1"), "r", 1, "FOR VALUES IN (1)", parents=(EV,)),
                ChildInfo(OTHER, "r", 1, "DEFAULT", parents=(EV,)),
            ),
        ),
        OTHER: RelationInfo(name=OTHER, relkind="r"),
        RelationName(None, "logs"): RelationInfo(
            name=LOGS,
            relkind="p",
            partition_key="RANGE (day)",
            columns={"day": ColumnType("date")},
            children=(ChildInfo(rel("logs_1"), "r", 1, "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')"),),
        ),
        RelationName(None, "pairs"): RelationInfo(
            name=rel("pairs"), relkind="p", partition_key="RANGE (a, b)", columns={}
        ),
        RelationName(None, "hashed"): RelationInfo(
            name=rel("hashed"), relkind="p", partition_key="HASH (id)"
        ),
        RelationName(None, "ev_2"): RelationInfo(name=rel("ev_2"), relkind="r"),
        RelationName(None, "logs_2"): RelationInfo(name=rel("logs_2"), relkind="r"),
    },
)


@dataclass(frozen=True)
class Planned:
    sql: str
    steps: list[str]
    version: int = 150000


CASES = {
    "attach_list_with_default": Planned(
        "ALTER TABLE ev ATTACH PARTITION ev_2 FOR VALUES IN (2, NULL)",
        [
            'ALTER TABLE "ev_2" ADD CONSTRAINT "ev_2_zdm_bound" '
            'CHECK ("kind" IS NULL OR "kind" = ANY (ARRAY[(2)::"int4"])) NOT VALID',
            'ALTER TABLE "ev_2" VALIDATE CONSTRAINT "ev_2_zdm_bound"',
            'ALTER TABLE "public"."ev_other" ADD CONSTRAINT "ev_other_ev_2_zdm_excl" '
            'CHECK (NOT ("kind" IS NULL OR "kind" = ANY (ARRAY[(2)::"int4"]))) NOT VALID',
            'ALTER TABLE "public"."ev_other" VALIDATE CONSTRAINT "ev_other_ev_2_zdm_excl"',
            "ALTER TABLE ev ATTACH PARTITION ev_2 FOR VALUES IN (2, NULL)",
            'ALTER TABLE "ev_2" DROP CONSTRAINT "ev_2_zdm_bound"',
            'ALTER TABLE "public"."ev_other" DROP CONSTRAINT "ev_other_ev_2_zdm_excl"',
        ],
    ),
    "attach_range_open_ended": Planned(
        "ALTER TABLE logs ATTACH PARTITION logs_2 FOR VALUES FROM ('2026-02-01') TO (MAXVALUE)",
        [
            'ALTER TABLE "logs_2" ADD CONSTRAINT "logs_2_zdm_bound" '
            """CHECK ("day" IS NOT NULL AND "day" >= ('2026-02-01')::"date") NOT VALID""",
            'ALTER TABLE "logs_2" VALIDATE CONSTRAINT "logs_2_zdm_bound"',
            "ALTER TABLE logs ATTACH PARTITION logs_2 FOR VALUES FROM ('2026-02-01') TO (MAXVALUE)",
            'ALTER TABLE "logs_2" DROP CONSTRAINT "logs_2_zdm_bound"',
        ],
    ),
    "attach_two_column_range_stays": Planned(
        "ALTER TABLE pairs ATTACH PARTITION p1 FOR VALUES FROM (1, 1) TO (2, 2)",
        ["ALTER TABLE pairs ATTACH PARTITION p1 FOR VALUES FROM (1, 1) TO (2, 2)"],
    ),
    "attach_hash_stays": Planned(
        "ALTER TABLE hashed ATTACH PARTITION h0 FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
        ["ALTER TABLE hashed ATTACH PARTITION h0 FOR VALUES WITH (MODULUS 2, REMAINDER 0)"],
    ),
    "attach_default_stays": Planned(
        "ALTER TABLE logs ATTACH PARTITION logs_2 DEFAULT",
        ["ALTER TABLE logs ATTACH PARTITION logs_2 DEFAULT"],
    ),
    "detach": Planned(
        "ALTER TABLE logs DETACH PARTITION logs_1",
        [
            'ALTER TABLE "logs" DETACH PARTITION "logs_1" CONCURRENTLY',
            'ALTER TABLE "logs_1" DROP CONSTRAINT "logs_1_day_check"',  # CONCURRENTLY keeps the bound
        ],
    ),
    "detach_with_a_default_partition_stays": Planned(
        "ALTER TABLE ev DETACH PARTITION ev_1", ["ALTER TABLE ev DETACH PARTITION ev_1"]
    ),
    "detach_on_13_stays": Planned(
        "ALTER TABLE logs DETACH PARTITION logs_1",
        ["ALTER TABLE logs DETACH PARTITION logs_1"],
        version=130000,
    ),
    "detach_concurrently_stays": Planned(
        "ALTER TABLE logs DETACH PARTITION logs_1 CONCURRENTLY",
        ["ALTER TABLE logs DETACH PARTITION logs_1 CONCURRENTLY"],
    ),
}


def plan_steps(case: Planned) -> tuple[Step, ...]:
    facts = CatalogFacts(**{**FACTS.__dict__, "server_version_num": case.version})
    return make_plan(case.sql, facts).steps


@pytest.mark.parametrize("case_id", list(CASES))
def test_rule_plans(case_id: str) -> None:
    case = CASES[case_id]
    assert [step.sql for step in plan_steps(case)] == case.steps


def test_attach_reads_nothing_under_its_locks() -> None:
    """The catalogue knows the validated checks prove the bound: the ATTACH scans nothing."""
    steps = plan_steps(CASES["attach_list_with_default"])
    (attach,) = [s for s in steps if "ATTACH" in s.sql]
    assert attach.scans == ()
    assert {lock.relation: lock.mode for lock in attach.locks} == {
        EV: LockMode.SHARE_UPDATE_EXCLUSIVE,
        rel("ev_2"): LockMode.ACCESS_EXCLUSIVE,
        OTHER: LockMode.ACCESS_EXCLUSIVE,
    }
    for step in steps:
        if step.scans:  # the only reads: the VALIDATEs, which let reads and writes through
            assert step.phase is Phase.VALIDATE
            assert all(lock.mode == LockMode.SHARE_UPDATE_EXCLUSIVE for lock in step.locks)
    assert attach.revert == 'ALTER TABLE "public"."ev" DETACH PARTITION "public"."ev_2"'


def test_detach_knows_its_way_back_and_runs_outside_a_transaction() -> None:
    step, _ = plan_steps(CASES["detach"])
    assert step.transactional is False
    assert step.revert == (
        """ALTER TABLE "public"."logs" ATTACH PARTITION "logs_1" """
        "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')"
    )
    assert {lock.relation: lock.mode for lock in step.locks}[LOGS] == LockMode.SHARE_UPDATE_EXCLUSIVE


def test_without_a_database_detach_says_what_it_cannot_know() -> None:
    (step,) = make_plan("ALTER TABLE logs DETACH PARTITION logs_1").steps  # no key known: no drop
    assert "CONCURRENTLY" in step.sql and "default partition, unknown here" in step.reason


# --- on PostgreSQL 15 and 18 ---------------------------------------------------------------

LISTED = """
CREATE TABLE ev (id bigint, kind int, note text) PARTITION BY LIST (kind);
CREATE TABLE ev_1 PARTITION OF ev FOR VALUES IN (1);
CREATE TABLE ev_other PARTITION OF ev DEFAULT;
INSERT INTO ev SELECT g, 1 + g % 2 * 6, md5(g::text) FROM generate_series(1, 2000) g;
CREATE INDEX ev_id ON ev (id);
CREATE TABLE ev_2 (id bigint, kind int, note text);
INSERT INTO ev_2 SELECT g, 2 + g % 2, 'x' FROM generate_series(1, 2000) g;
"""
RANGED = """
CREATE TABLE logs (id bigint, day date, big bigint, tag text) PARTITION BY RANGE (day);
CREATE TABLE logs_1 PARTITION OF logs FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
INSERT INTO logs SELECT g, date '2026-01-01' + g % 31, g, 't' FROM generate_series(1, 2000) g;
CREATE TABLE logs_2 (id bigint, day date, big bigint, tag text);
INSERT INTO logs_2 SELECT g, date '2026-02-01' + g % 28, g, 't' FROM generate_series(1, 2000) g;
CREATE TABLE by_big (id bigint, big bigint) PARTITION BY RANGE (big);
CREATE TABLE by_big_1 PARTITION OF by_big FOR VALUES FROM (MINVALUE) TO (1000);
CREATE TABLE by_big_2 (id bigint, big bigint);
INSERT INTO by_big_2 SELECT g, 1000 + g FROM generate_series(1, 2000) g;
CREATE TABLE by_tag (id bigint, tag text) PARTITION BY LIST (tag);
CREATE TABLE by_tag_other PARTITION OF by_tag DEFAULT;
INSERT INTO by_tag SELECT g, 'other' || g % 3 FROM generate_series(1, 2000) g;
CREATE TABLE by_tag_a (id bigint, tag text);
INSERT INTO by_tag_a SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 2000) g;
"""

STATEMENTS = {
    "attach_list_with_default": (LISTED, "ALTER TABLE ev ATTACH PARTITION ev_2 FOR VALUES IN (2, 3)"),
    "attach_range_date": (
        RANGED,
        "ALTER TABLE logs ATTACH PARTITION logs_2 FOR VALUES FROM ('2026-02-01') TO ('2026-03-01')",
    ),
    "attach_range_bigint_to_maxvalue": (
        RANGED,
        "ALTER TABLE by_big ATTACH PARTITION by_big_2 FOR VALUES FROM (1000) TO (MAXVALUE)",
    ),
    "attach_list_text_with_default": (
        RANGED,
        "ALTER TABLE by_tag ATTACH PARTITION by_tag_a FOR VALUES IN ('a', 'b')",
    ),
    "attach_partition_with_an_equal_index_already": (
        LISTED + "CREATE INDEX ev_2_mine ON ev_2 (id);",
        "ALTER TABLE ev ATTACH PARTITION ev_2 FOR VALUES IN (2, 3)",
    ),
    "detach": (RANGED, "ALTER TABLE logs DETACH PARTITION logs_1"),
    "detach_with_default": (LISTED, "ALTER TABLE ev DETACH PARTITION ev_1"),
}


@pytest.mark.parametrize("case_id", list(STATEMENTS))
async def test_end_state_equals_the_statement_as_written(dsn: str, case_id: str) -> None:
    setup, statement = STATEMENTS[case_id]
    await check_equivalent(dsn, setup, statement)


@pytest.mark.parametrize("case_id", list(STATEMENTS))
async def test_each_step_locks_what_it_says_and_nothing_is_read_under_a_traffic_lock(
    dsn: str, case_id: str
) -> None:
    setup, statement = STATEMENTS[case_id]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(setup + "ANALYZE;")
    finally:
        await conn.close()
    plan = await plan_for(dsn, statement)
    scanned = await check_step_locks(dsn, plan, _parent_of)
    assert read_under_traffic_lock(plan, scanned) == []
    if "ATTACH" in statement:  # the bound was proven: by the VALIDATEs, which block nobody
        assert any(scanned), "the tables were never read: the test proves nothing"
    if case_id == "detach":  # the parent's readers and writers never wait (the locks checked above)
        parent = {
            lock.mode for step in plan.steps for lock in step.locks if str(lock.relation) == "public.logs"
        }
        assert parent == {LockMode.SHARE_UPDATE_EXCLUSIVE}


def _parent_of(step: Step) -> str:
    """DETACH CONCURRENTLY waits for the transactions that use the parent: the blocker reads it."""
    return str(step.locks[0].relation)


@pytest.mark.parametrize("case_id", ["attach_list_with_default", "attach_range_date", "detach"])
async def test_the_way_back_restores_the_tables(dsn: str, case_id: str) -> None:
    """Every step's revert, newest first, as ``zdmproxy rollback`` runs them."""
    setup, statement = STATEMENTS[case_id]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(setup)
        before = await snapshot(conn)
        plan = await run_plan(dsn, statement)
        assert await snapshot(conn) != before
        for step in reversed(plan.steps):
            if step.revert:
                await conn.execute(step.revert)
        assert await snapshot(conn) == before
    finally:
        await conn.close()


# --- bounds, generated: the ATTACH never reads a table under its lock ------------------------

# A key type: its values, and how one is written as a literal.
KEY_TYPES: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], str]]] = {
    "int": (st.integers(-1000, 1000), str),
    "bigint": (st.integers(-(2**40), 2**40), str),
    "text": (st.text(alphabet="abcxyz", min_size=1, max_size=4), lambda v: f"'{v}'"),
    "date": (st.dates(), lambda v: f"'{v.isoformat()}'"),
    "numeric": (
        st.decimals(-1000, 1000, places=2, allow_nan=False, allow_infinity=False),
        lambda v: f"'{v}'",
    ),
}


@st.composite
def bounds(draw: st.DrawFn) -> tuple[str, str, str, list[str], list[str]]:
    """A key type, the partition strategy, a bound, values inside it and values outside it."""
    kind = draw(st.sampled_from(sorted(KEY_TYPES)))
    values, literal = KEY_TYPES[kind]
    pool = sorted(set(draw(st.lists(values, min_size=3, max_size=6, unique=True))))
    if draw(st.booleans()):
        inside = pool[: draw(st.integers(1, len(pool) - 1))]
        outside = [v for v in pool if v not in inside]
        with_null = draw(st.booleans())
        bound = f"FOR VALUES IN ({', '.join([literal(v) for v in inside] + (['NULL'] if with_null else []))})"
        return (
            kind,
            "LIST",
            bound,
            [literal(v) for v in inside] + (["NULL"] if with_null else []),
            [literal(v) for v in outside],
        )
    low, high = draw(st.integers(0, len(pool) - 2)), None
    high = draw(st.integers(low + 1, len(pool) - 1))
    open_low, open_high = draw(st.booleans()), draw(st.booleans())
    lower = "MINVALUE" if open_low else literal(pool[low])
    upper = "MAXVALUE" if open_high else literal(pool[high])
    inside = [v for i, v in enumerate(pool) if (open_low or i >= low) and (open_high or i < high)]
    outside = [v for v in pool if v not in inside]
    return (
        kind,
        "RANGE",
        f"FOR VALUES FROM ({lower}) TO ({upper})",
        [literal(v) for v in inside],
        [literal(v) for v in outside],
    )


@given(case=bounds())
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_a_generated_bound_is_proven_before_the_attach(
    dsn: str, case: tuple[str, str, str, list[str], list[str]]
) -> None:
    asyncio.run(_attach_reads_nothing(dsn, *case))


async def _attach_reads_nothing(
    dsn: str, kind: str, strategy: str, bound: str, inside: list[str], outside: list[str]
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"CREATE TABLE gp (id serial, k {kind}) PARTITION BY {strategy} (k);"
            "CREATE TABLE gp_default PARTITION OF gp DEFAULT;"
            f"CREATE TABLE gp_new (id serial, k {kind});"
            + "".join(f"INSERT INTO gp (k) SELECT {v} FROM generate_series(1, 20);" for v in outside)
            + "".join(f"INSERT INTO gp_new (k) SELECT {v} FROM generate_series(1, 20);" for v in inside)
            + "ANALYZE;"
        )
        statement = f"ALTER TABLE gp ATTACH PARTITION gp_new {bound}"
        plan = await plan_for(dsn, statement)
        assert any("VALIDATE" in step.sql for step in plan.steps), plan.steps  # the rule applied
        scanned = await check_step_locks(dsn, plan)
        assert read_under_traffic_lock(plan, scanned) == [], statement
        assert await conn.fetchval("SELECT count(*) FROM ONLY gp_new") == 20 * len(inside)
        assert await conn.fetchval("SELECT relispartition FROM pg_class WHERE relname = 'gp_new'")
    finally:
        await conn.execute("DROP TABLE IF EXISTS gp, gp_new")
        await conn.close()
