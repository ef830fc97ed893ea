"""Constraints added without a long lock (plan/rules/not_valid.py, unique_using_index.py,
set_not_null.py) and named as PostgreSQL names them (sql/naming.py).

Pure cases first (make_plan with facts built here, so each fails when its rule is taken out of
the registry), then on PostgreSQL 15 and 18: the end state equals the statement's as written
(tests/equivalence.py), also for tables and statements hypothesis makes up; every step locks
what it says (tests/step_locks.py); and under write traffic on a 200k-row table, SET NOT NULL
and ADD FOREIGN KEY never keep a client waiting longer than the budget, where the statements as
written queue every client for their whole scan.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg
import pytest
from equivalence import check_equivalent, fresh_public_schema, plan_for, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from step_locks import check_step_locks
from traffic import LockSampler, Traffic

from zdmproxy.engine.runner import Runner
from zdmproxy.plan.model import Phase
from zdmproxy.plan.phases import expand_end
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.facts import CatalogFacts, ChildInfo, ColumnType, ConstraintInfo, RelationInfo
from zdmproxy.sql.locks import LockMode, RelationName
from zdmproxy.sql.naming import check_column, choose_name, joined_columns, make_object_name
from zdmproxy.sql.parse import parse_script

T = RelationName("public", "t")
PT = RelationName("public", "pt")
P = RelationName("public", "p")
LONG = "l" * 58  # a table name long enough that every generated name is truncated


def rel(name: str) -> RelationName:
    return RelationName("public", name)


def facts(version: int, **extra: object) -> CatalogFacts:
    """Tables t (a nullable, b NOT NULL), p (referenced), pt (partitioned), t2 (has t_a_check)."""
    table = RelationInfo(
        name=T,
        relkind="r",
        columns={
            "id": ColumnType("int4", not_null=True),
            "a": ColumnType("int4"),
            "b": ColumnType("int4", not_null=True),
        },
        constraints=(ConstraintInfo("t_pkey", "p", True, index="t_pkey", columns=("id",)),),
        total_bytes=10**9,
    )
    partitioned = RelationInfo(
        name=PT,
        relkind="p",
        columns={"id": ColumnType("int4"), "k": ColumnType("int4")},
        children=(ChildInfo(rel("pt1"), "r", 1, "FOR VALUES IN (1)", parents=(PT,), total_bytes=10**9),),
    )
    return CatalogFacts(
        server_version_num=version,
        relations={
            RelationName(None, "t"): table,
            RelationName(None, "p"): RelationInfo(name=P, relkind="r", total_bytes=10**9),
            RelationName(None, "pt"): partitioned,
        },
        constraint_names_in_use=frozenset({rel("t_a_check"), rel("t_pkey")}),
        names_in_use=frozenset({rel("t_pkey")}),
        **extra,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class PlanCase:
    sql: str
    steps: list[tuple[str, Phase]]
    version: int = 150000
    reason_has: str = ""  # in the first step's reason
    extra: dict[str, object] = field(default_factory=dict)


E, V, S = Phase.EXPAND, Phase.VALIDATE, Phase.SINGLE
PLAN_CASES: dict[str, PlanCase] = {
    # not_valid.py
    "check_named_after_its_one_column_and_uniquified": PlanCase(
        "ALTER TABLE t ADD CHECK (a > 0)",
        [
            ("ALTER TABLE t ADD CONSTRAINT t_a_check1 CHECK (a > 0) NOT VALID", E),
            ("ALTER TABLE t VALIDATE CONSTRAINT t_a_check1", V),
        ],
    ),
    "check_on_two_columns_is_table_check": PlanCase(
        "ALTER TABLE ONLY t ADD CHECK (a > b) NO INHERIT",
        [
            ("ALTER TABLE ONLY t ADD CONSTRAINT t_check CHECK (a > b) NO INHERIT NOT VALID", E),
            ("ALTER TABLE ONLY t VALIDATE CONSTRAINT t_check", V),
        ],
    ),
    "foreign_key_keeps_its_name_and_actions": PlanCase(
        "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a, b) REFERENCES p (x, y) ON DELETE CASCADE",
        [
            (
                "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a, b) REFERENCES p (x, y) "
                "ON DELETE CASCADE NOT VALID",
                E,
            ),
            ("ALTER TABLE t VALIDATE CONSTRAINT fk", V),
        ],
    ),
    "already_not_valid_stays_as_written": PlanCase(
        "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID",
        [("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID", S)],
    ),
    "foreign_key_on_partitioned_table_15_partition_by_partition": PlanCase(
        "ALTER TABLE pt ADD FOREIGN KEY (id) REFERENCES p",
        [
            ("ALTER TABLE public.pt1 ADD CONSTRAINT pt_id_fkey FOREIGN KEY (id) REFERENCES p NOT VALID", E),
            ("ALTER TABLE public.pt1 VALIDATE CONSTRAINT pt_id_fkey", V),
            ("ALTER TABLE pt ADD CONSTRAINT pt_id_fkey FOREIGN KEY (id) REFERENCES p", E),
        ],
        reason_has="refuses NOT VALID there (42809; 18 allows it)",
    ),
    "foreign_key_on_partitioned_table_18_not_valid": PlanCase(
        "ALTER TABLE pt ADD FOREIGN KEY (id) REFERENCES p",
        [
            ("ALTER TABLE pt ADD CONSTRAINT pt_id_fkey FOREIGN KEY (id) REFERENCES p NOT VALID", E),
            ("ALTER TABLE pt VALIDATE CONSTRAINT pt_id_fkey", V),
        ],
        version=180000,
    ),
    "inline_check_and_references_become_constraints": PlanCase(
        "ALTER TABLE t ADD COLUMN c int DEFAULT 1 REFERENCES p CHECK (c > 0)",
        [
            ("ALTER TABLE t ADD COLUMN c integer DEFAULT 1", E),
            ("ALTER TABLE t ADD CONSTRAINT t_c_fkey FOREIGN KEY (c) REFERENCES p NOT VALID", E),
            ("ALTER TABLE t VALIDATE CONSTRAINT t_c_fkey", V),
            ("ALTER TABLE t ADD CONSTRAINT t_c_check CHECK (c > 0) NOT VALID", E),
            ("ALTER TABLE t VALIDATE CONSTRAINT t_c_check", V),
        ],
        reason_has="split out of ADD COLUMN c",
    ),
    "inline_unique_built_concurrently": PlanCase(
        "ALTER TABLE t ADD COLUMN c int UNIQUE",
        [
            ("ALTER TABLE t ADD COLUMN c integer", E),
            ("CREATE UNIQUE INDEX CONCURRENTLY t_c_key ON t (c)", E),
            ("ALTER TABLE t ADD CONSTRAINT t_c_key UNIQUE USING INDEX t_c_key", E),
        ],
    ),
    "inline_references_without_default_checks_nothing": PlanCase(
        "ALTER TABLE t ADD COLUMN c int REFERENCES p",
        [("ALTER TABLE t ADD COLUMN c int REFERENCES p", S)],
    ),
    # unique_using_index.py
    "unique_keeps_include_options_and_deferrable": PlanCase(
        "ALTER TABLE t ADD UNIQUE (a) INCLUDE (b) WITH (fillfactor = 70) DEFERRABLE INITIALLY DEFERRED",
        [
            ("CREATE UNIQUE INDEX CONCURRENTLY t_a_b_key ON t (a) INCLUDE (b) WITH (fillfactor = 70)", E),
            (
                "ALTER TABLE t ADD CONSTRAINT t_a_b_key UNIQUE USING INDEX t_a_b_key "
                "DEFERRABLE INITIALLY DEFERRED",
                E,
            ),
        ],
    ),
    "unique_nulls_not_distinct": PlanCase(
        "ALTER TABLE t ADD CONSTRAINT u UNIQUE NULLS NOT DISTINCT (a)",
        [
            ("CREATE UNIQUE INDEX CONCURRENTLY u ON t (a) NULLS NOT DISTINCT", E),
            ("ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX u", E),
        ],
    ),
    "primary_key_makes_nullable_columns_not_null_first": PlanCase(
        "ALTER TABLE t ADD PRIMARY KEY (a, b)",
        [
            ("ALTER TABLE t ADD CONSTRAINT t_a_not_null NOT NULL a NOT VALID", E),
            ("ALTER TABLE t VALIDATE CONSTRAINT t_a_not_null", V),
            ("CREATE UNIQUE INDEX CONCURRENTLY t_pkey1 ON t (a, b)", E),
            ("ALTER TABLE t ADD CONSTRAINT t_pkey1 PRIMARY KEY USING INDEX t_pkey1", E),
        ],
        version=180000,
    ),
    "unique_on_partitioned_table_partition_by_partition": PlanCase(
        "ALTER TABLE pt ADD UNIQUE (id, k)",
        [
            ("CREATE UNIQUE INDEX CONCURRENTLY pt1_id_k_key ON public.pt1 (id, k)", E),
            ("ALTER TABLE public.pt1 ADD CONSTRAINT pt1_id_k_key UNIQUE USING INDEX pt1_id_k_key", E),
            ("ALTER TABLE pt ADD CONSTRAINT pt_id_k_key UNIQUE (id, k)", E),
        ],
        reason_has="built concurrently",
    ),
    # set_not_null.py
    "set_not_null_15_through_a_helper_check": PlanCase(
        "ALTER TABLE t ALTER COLUMN a SET NOT NULL",
        [
            ("ALTER TABLE t ADD CONSTRAINT t_a_zdm_not_null CHECK (a IS NOT NULL) NOT VALID", E),
            ("ALTER TABLE t VALIDATE CONSTRAINT t_a_zdm_not_null", V),
            ("ALTER TABLE t ALTER COLUMN a SET NOT NULL", V),
            ("ALTER TABLE t DROP CONSTRAINT t_a_zdm_not_null", V),
        ],
    ),
    "set_not_null_18_not_valid": PlanCase(
        "ALTER TABLE t ALTER COLUMN a SET NOT NULL",
        [
            ("ALTER TABLE t ADD CONSTRAINT t_a_not_null NOT NULL a NOT VALID", E),
            ("ALTER TABLE t VALIDATE CONSTRAINT t_a_not_null", V),
        ],
        version=180000,
    ),
    "set_not_null_on_a_not_null_column_stays_one_step": PlanCase(
        "ALTER TABLE t ALTER COLUMN b SET NOT NULL",
        [("ALTER TABLE t ALTER COLUMN b SET NOT NULL", S)],
        reason_has="column b needs no scan",
    ),
    # split_alter.py (more in tests/test_rules_split.py)
    "split_in_postgresql_order": PlanCase(
        "ALTER TABLE t ADD CHECK (x > 0), ADD COLUMN x int, ALTER COLUMN a SET DEFAULT 1",
        [
            ("ALTER TABLE t ADD COLUMN x integer", S),
            ("ALTER TABLE t ADD CONSTRAINT t_x_check CHECK (x > 0) NOT VALID", E),
            ("ALTER TABLE t VALIDATE CONSTRAINT t_x_check", V),
            ("ALTER TABLE t ALTER COLUMN a SET DEFAULT 1", S),
        ],
        reason_has="split out of an ALTER TABLE of 3 subcommands into 3 parts",
    ),
}


@pytest.mark.parametrize("case_id", list(PLAN_CASES))
def test_rule_plans(case_id: str) -> None:
    case = PLAN_CASES[case_id]
    plan = make_plan(case.sql, facts(case.version, **case.extra))
    assert [(step.sql, step.phase) for step in plan.steps] == case.steps
    assert case.reason_has in plan.steps[0].reason
    for step in plan.steps:
        (statement,) = parse_script(step.sql)  # one statement each, that PostgreSQL's parser reads
        assert statement.text == step.sql


def test_every_step_that_adds_has_its_way_back() -> None:
    """What rollback runs: each constraint, index or NOT NULL added has its undo beside it."""
    for case in PLAN_CASES.values():
        for step in make_plan(case.sql, facts(case.version)).steps:
            if step.phase is Phase.EXPAND and step.sql.startswith(("ALTER TABLE", "CREATE")):
                assert step.revert, step.sql
    undo = {
        s.sql: s.revert for s in make_plan("ALTER TABLE t ALTER COLUMN a SET NOT NULL", facts(150000)).steps
    }
    assert undo["ALTER TABLE t ALTER COLUMN a SET NOT NULL"] == "ALTER TABLE t ALTER COLUMN a DROP NOT NULL"


def test_no_step_scans_under_a_lock_that_stops_traffic() -> None:
    """The point of the rules: whatever reads the table holds ShareUpdateExclusiveLock at most."""
    for case_id, case in PLAN_CASES.items():
        if case.steps[0][1] is Phase.SINGLE and len(case.steps) == 1:
            continue  # kept as written, on purpose (the reason says why)
        for step in make_plan(case.sql, facts(case.version)).steps:
            if step.scans:
                assert (
                    max(lock.mode for lock in step.locks if not lock.created)
                    <= LockMode.SHARE_UPDATE_EXCLUSIVE
                ), (
                    case_id,
                    step,
                )


def test_without_a_database_the_safe_plan_says_the_table_is_unknown() -> None:
    (first, _) = make_plan("ALTER TABLE t ADD CHECK (a > 0)").steps
    assert "unknown without a database" in first.reason


@pytest.mark.parametrize(
    ("name1", "name2", "label", "taken", "expected"),
    [
        ("t", "a", "check", set(), "t_a_check"),
        ("t", "a", "check", {"t_a_check", "t_a_check1"}, "t_a_check2"),
        ("t", None, "pkey", {"t_pkey"}, "t_pkey1"),
        # Measured on 15 and 18: the longer name is shortened first, to 63 bytes in all.
        (
            "looooooooooooooooooooooooooooooooooooooooooooooooooooooong",
            "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii",
            "not_null",
            set(),
            "loooooooooooooooooooooooooo_iiiiiiiiiiiiiiiiiiiiiiiiii_not_null",
        ),
        ("é" * 40, "a", "check", set(), "é" * 27 + "_a_check"),  # never half a character
    ],
)
def test_names_as_postgresql_chooses_them(
    name1: str, name2: str | None, label: str, taken: set[str], expected: str
) -> None:
    assert choose_name(name1, name2, label, taken) == expected
    assert len(expected.encode()) <= 63


def test_name_additions() -> None:
    assert joined_columns(["a", "b"]) == "a_b"
    assert len(make_object_name("t", joined_columns(["x" * 60, "y" * 60]), "fkey").encode()) == 63
    (select,) = parse_script("SELECT a > 0 AND t.a < 9")
    assert check_column(select.node.targetList[0].val) == "a"  # type: ignore[attr-defined]
    (select,) = parse_script("SELECT a > b")
    assert check_column(select.node.targetList[0].val) is None  # type: ignore[attr-defined]


# On real servers -------------------------------------------------------------------------------

SETUP = """
CREATE TABLE p (id int PRIMARY KEY);
INSERT INTO p SELECT generate_series(1, 100);
CREATE TABLE t (id int PRIMARY KEY, a int, b int, c text);
INSERT INTO t SELECT g, g % 100 + 1, g, 'x' FROM generate_series(1, 1000) g;
CREATE TABLE t2 (x int, CONSTRAINT t_a_check CHECK (x > 0));
CREATE TABLE pt (id int, k int, v int) PARTITION BY LIST (k);
CREATE TABLE pt1 PARTITION OF pt FOR VALUES IN (1);
CREATE TABLE pt2 PARTITION OF pt FOR VALUES IN (2, 3) PARTITION BY LIST (k);
CREATE TABLE pt2a PARTITION OF pt2 FOR VALUES IN (2);
CREATE TABLE pt2b PARTITION OF pt2 FOR VALUES IN (3);
INSERT INTO pt SELECT g, 1 + g % 3, g FROM generate_series(1, 100) g;
CREATE TABLE base (id int, v int);
CREATE TABLE kid (w int) INHERITS (base);
INSERT INTO base SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO kid SELECT g, g, g FROM generate_series(1, 50) g;
CREATE TABLE {LONG} (id int, {LONG}_column int);
INSERT INTO {LONG} SELECT g, g FROM generate_series(1, 20) g;
ANALYZE;
""".replace("{LONG}", LONG)

EQUIVALENT: dict[str, str] = {
    "check_uniquified": "ALTER TABLE t ADD CHECK (a > 0)",
    "check_inherited": "ALTER TABLE base ADD CHECK (v > 0)",
    "check_partitioned": "ALTER TABLE pt ADD CONSTRAINT pos CHECK (id > 0)",
    "foreign_key": "ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES p ON DELETE SET NULL",
    "foreign_key_partitioned": "ALTER TABLE pt ADD FOREIGN KEY (id) REFERENCES p",
    "inline_constraints": "ALTER TABLE t ADD COLUMN d int DEFAULT 5 REFERENCES p CHECK (d > 0)",
    "inline_unique": "ALTER TABLE t ADD COLUMN u int UNIQUE CHECK (u > 0)",
    "unique_include": "ALTER TABLE t ADD UNIQUE (b) INCLUDE (a) DEFERRABLE INITIALLY DEFERRED",
    "unique_nulls_not_distinct": "ALTER TABLE t ADD CONSTRAINT b_u UNIQUE NULLS NOT DISTINCT (b)",
    "primary_key_after_drop": "ALTER TABLE t DROP CONSTRAINT t_pkey, ADD PRIMARY KEY (b)",
    "unique_partitioned": "ALTER TABLE pt ADD UNIQUE (id, k) INCLUDE (v)",
    "primary_key_partitioned": "ALTER TABLE pt ADD PRIMARY KEY (id, k)",
    "set_not_null": "ALTER TABLE t ALTER COLUMN b SET NOT NULL",
    "set_not_null_inherited": "ALTER TABLE base ALTER COLUMN v SET NOT NULL",
    "set_not_null_partitioned": "ALTER TABLE pt ALTER COLUMN id SET NOT NULL",
    "quoted_names": 'ALTER TABLE "Mixed Case" ADD CHECK ("Val" > 0), ALTER COLUMN "Val" SET NOT NULL',
    "long_names": f"ALTER TABLE {LONG} ADD CHECK ({LONG}_column > 0), ADD UNIQUE ({LONG}_column), "
    f"ALTER COLUMN {LONG}_column SET NOT NULL",
}
# Cases that run as written, before which version (None: on every version), and what says why.
AS_WRITTEN: dict[str, tuple[int | None, str]] = {}
# Kept out of SETUP: the lock catalogue's helpers name relations unquoted.
MIXED_CASE = """
CREATE TABLE "Mixed Case" (id int PRIMARY KEY, "Val" int);
INSERT INTO "Mixed Case" SELECT g, g FROM generate_series(1, 20) g;
"""
LONG_LOCKS_ALLOWED = MigrationPolicy(deadline_s=60, allow_long_locks=True)  # the partitioned cases


@pytest.mark.parametrize("case_id", list(EQUIVALENT))
async def test_end_state_equals_the_statement_as_written(dsn: str, case_id: str) -> None:
    setup = SETUP + (MIXED_CASE if case_id == "quoted_names" else "")
    plan = await check_equivalent(dsn, setup, EQUIVALENT[case_id], policy=LONG_LOCKS_ALLOWED)
    kept = AS_WRITTEN.get(case_id)
    if kept is not None and (kept[0] is None or plan.server_version_num < kept[0]):
        assert [step.sql for step in plan.steps] == [EQUIVALENT[case_id]]
        assert kept[1] in plan.steps[0].reason
    else:
        assert len(plan.steps) > 1, "no rule applied"


@pytest.mark.parametrize(
    "case_id",
    [
        "inline_unique",
        "foreign_key_partitioned",
        "unique_partitioned",
        "primary_key_partitioned",
        "check_uniquified",
        "foreign_key",
        "inline_constraints",
        "unique_include",
        "primary_key_after_drop",
        "set_not_null",
        "set_not_null_inherited",
        "set_not_null_partitioned",
        "long_names",
    ],
)
async def test_each_step_locks_what_it_says(dsn: str, case_id: str) -> None:
    await check_steps_on(dsn, SETUP, EQUIVALENT[case_id])


async def check_steps_on(dsn: str, setup: str, sql: str) -> None:
    """Plan ``sql`` on a database made by ``setup``, then run each step checking its locks against
    pg_locks and its scans against the statistics: none missed, none claimed that did not happen
    (the referenced table ``p`` excepted: it is read in full or probed, as the planner likes)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(setup)
    finally:
        await conn.close()
    plan = await plan_for(dsn, sql)
    assert len(plan.steps) > 1, "no rule applied"
    scanned = await check_step_locks(dsn, plan)
    for step, read in zip(plan.steps, scanned, strict=True):
        assert {str(r) for r in step.scans} - read <= {"public.p"}, step.sql


@pytest.mark.parametrize(
    "case_id",
    [
        "check_inherited",
        "foreign_key_partitioned",
        "inline_constraints",
        "unique_include",
        "unique_partitioned",
        "primary_key_partitioned",
        "set_not_null",
        "set_not_null_partitioned",
    ],
)
async def test_the_way_back_restores_the_schema(dsn: str, pg_server: object, case_id: str) -> None:
    """What ``rollback`` does after the expand phase: each step's revert, newest first, leaves
    the tables as they were before the plan."""
    if case_id == "primary_key_partitioned" and pg_server.version >= 18:  # type: ignore[attr-defined]
        pytest.xfail(
            "PostgreSQL 18 marks a partition's inherited NOT NULL local when the partition gets a "
            "primary key, and dropping the key does not undo it: the partitions keep NOT NULL"
        )
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SETUP)
        before = await snapshot(conn)
        plan = await plan_for(dsn, EQUIVALENT[case_id])
        expanded = plan.steps[: expand_end(plan.steps)]
        assert any(step.revert for step in expanded), "nothing to undo: no rule applied"
        for step in expanded:
            await conn.execute(step.sql)
        for step in reversed(expanded):
            if step.revert:
                await conn.execute(step.revert)
        assert await snapshot(conn) == before
    finally:
        await conn.close()


# Property: made-up tables and constraint statements ---------------------------------------------

COLUMNS = ("c1", "c2", "c3")


@st.composite
def tables_and_statements(draw: st.DrawFn) -> tuple[str, str]:
    """A table whose columns are distinct, or repeat, or hold NULLs, and one ALTER TABLE of one to
    three constraint subcommands that the data satisfies (as written, it succeeds)."""
    kinds = {c: draw(st.sampled_from(["distinct", "repeats", "nulls"])) for c in COLUMNS}
    values = {
        "distinct": "g",
        "repeats": "g % 7 + 1",
        "nulls": "CASE WHEN g % 5 = 0 THEN NULL ELSE g END",
    }
    rows = draw(st.integers(1, 300))
    setup = (
        "CREATE TABLE ref (id int PRIMARY KEY); INSERT INTO ref SELECT generate_series(1, 400);\n"
        f"CREATE TABLE h (id int PRIMARY KEY, {', '.join(f'{c} int' for c in COLUMNS)});\n"
        f"INSERT INTO h SELECT g, {', '.join(values[kinds[c]] for c in COLUMNS)} "
        f"FROM generate_series(1, {rows}) g;"
    )
    options = []
    for c in COLUMNS:
        options += [
            f"ADD CHECK ({c} > 0)",
            f"ADD CHECK ({c} >= {c} - 1)",
            f"ADD FOREIGN KEY ({c}) REFERENCES ref",
        ]
        if kinds[c] != "nulls":
            options.append(f"ALTER COLUMN {c} SET NOT NULL")
        if kinds[c] != "repeats":
            options.append(f"ADD UNIQUE ({c})")
    subcommands = draw(st.lists(st.sampled_from(options), min_size=1, max_size=3, unique=True))
    return setup, "ALTER TABLE h " + ", ".join(subcommands)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=tables_and_statements())
async def test_made_up_constraints_end_as_written(dsn: str, case: tuple[str, str]) -> None:
    setup, statement = case
    await fresh_public_schema(dsn)
    plan = await check_equivalent(dsn, setup, statement)
    assert all(
        max(lock.mode for lock in s.locks if not lock.created) <= LockMode.SHARE_UPDATE_EXCLUSIVE
        for s in plan.steps
        if s.scans
    ), [s.sql for s in plan.steps]


# Under traffic -------------------------------------------------------------------------------------

BUDGET_MS = 100
WATCHDOG_INTERVAL_MS = 20
MARGIN_MS = 400  # Python clients on 2 busy cores: scheduling noise; the exact bound is on pg_locks
BIG = """
CREATE TABLE ref (id int PRIMARY KEY);
INSERT INTO ref SELECT generate_series(1, 1000);
CREATE TABLE items (id int PRIMARY KEY, a int, n int NOT NULL DEFAULT 0, r int, s int, r2 int,
                    pad text);
INSERT INTO items SELECT g, g, 0, g % 1000 + 1, g, g % 1000 + 1, repeat('x', 1200)
  FROM generate_series(1, 200000) g;
ANALYZE;
"""


async def _run(dsn: str, sql: str, migration: str) -> None:
    async with asyncio.timeout(90):
        plan = await plan_for(dsn, sql)
        assert len(plan.steps) > 1, "the rule did not apply"
        await Runner(dsn, migration, MigrationPolicy(queue_budget_ms=BUDGET_MS, deadline_s=60)).run(plan)


@pytest.mark.parametrize(
    ("ours", "naive"),
    [
        ("ALTER TABLE items ALTER COLUMN s SET NOT NULL", "ALTER TABLE items ALTER COLUMN a SET NOT NULL"),
        (
            "ALTER TABLE items ADD FOREIGN KEY (r) REFERENCES ref",
            "ALTER TABLE items ADD FOREIGN KEY (r2) REFERENCES ref",
        ),
    ],
    ids=["set_not_null", "foreign_key"],
)
async def test_clients_never_wait_behind_the_scan(dsn: str, ours: str, naive: str) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(BIG)
        async with Traffic(dsn, "items", rows=200000) as traffic, LockSampler(dsn) as sampler:
            start = time.monotonic()
            await _run(dsn, ours, "constraint-online")
            finished = time.monotonic()
            ours_max = traffic.max_latency(start, await traffic.settle())

            as_written = await asyncpg.connect(dsn, server_settings={"application_name": "naive"})
            naive_start = time.monotonic()
            await as_written.execute(naive)
            naive_held = time.monotonic() - naive_start
            await traffic.settle()
            await as_written.close()
        columns = await admin.fetch(
            "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass AND attnum > 0"
        )
    finally:
        await admin.close()

    assert traffic.errors == []
    longest = sampler.longest_wait_behind("zdmproxy", start, finished)
    assert longest <= BUDGET_MS + WATCHDOG_INTERVAL_MS, f"a session waited {longest:.0f} ms behind zdmproxy"
    assert ours_max * 1000 < BUDGET_MS + MARGIN_MS, f"a client waited {ours_max * 1000:.0f} ms"
    # The contrast: as written, the statement holds its lock for its whole scan, and clients queue
    # behind it for about that long (80-300 ms here, as fast as the table is read: not asserted).
    waited = sampler.longest_wait_behind("naive")
    assert waited >= naive_held * 1000 / 2, (
        f"as written, the statement took {naive_held * 1000:.0f} ms but queued clients only {waited:.0f} ms"
    )
    if "NOT NULL" in ours:
        assert {r["attname"]: r["attnotnull"] for r in columns}["s"] is True
