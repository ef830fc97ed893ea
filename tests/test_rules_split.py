"""An ALTER TABLE of several subcommands split where that makes each part safe
(plan/rules/split_alter.py).

Pure cases first (make_plan with facts built here): a statement none of whose subcommands a
rule rewrites stays whole; a rewritten subcommand becomes steps of its own; the rest stay
together; parts run in the order PostgreSQL runs subcommands, each named as PostgreSQL would
have named it in the one statement. Then on PostgreSQL 15 and 18: the end state equals the
statement's as written, for fixed and for hypothesis-made statements, and each step locks what
it says.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from equivalence import check_equivalent, fresh_public_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rules_constraints import check_steps_on

from zdmproxy.plan.model import Phase
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.facts import CatalogFacts, ColumnType, ConstraintInfo, RelationInfo
from zdmproxy.sql.locks import LockMode, RelationName

T = RelationName("public", "t")
FACTS = {
    version: CatalogFacts(
        server_version_num=version,
        relations={
            RelationName(None, "t"): RelationInfo(
                name=T,
                relkind="r",
                columns={
                    "id": ColumnType("int4", not_null=True),
                    "a": ColumnType("int4"),
                    "b": ColumnType("int4"),
                    "z": ColumnType("int4"),
                },
                constraints=(ConstraintInfo("t_pkey", "p", True, index="t_pkey", columns=("id",)),),
                total_bytes=10**9,
            ),
            RelationName(None, "p"): RelationInfo(name=RelationName("public", "p"), relkind="r"),
        },
        constraint_names_in_use=frozenset({RelationName("public", "t_pkey")}),
        names_in_use=frozenset({RelationName("public", "t_pkey")}),
    )
    for version in (150000, 180000)
}


@dataclass(frozen=True)
class SplitCase:
    sql: str
    steps: list[str]
    version: int = 180000


E, V, S = Phase.EXPAND, Phase.VALIDATE, Phase.SINGLE
WHOLE = (
    "ALTER TABLE t ADD COLUMN x int, ALTER COLUMN a SET DEFAULT 1, ADD CONSTRAINT c CHECK (a > 0) NOT VALID"
)
CASES: dict[str, SplitCase] = {
    "nothing_rewritten_stays_whole": SplitCase(WHOLE, [WHOLE]),
    "the_rest_stays_together": SplitCase(
        "ALTER TABLE t ALTER COLUMN a SET DEFAULT 1, DROP COLUMN z, ADD CHECK (a > 0)",
        [
            "ALTER TABLE t DROP COLUMN z, ALTER COLUMN a SET DEFAULT 1",
            "ALTER TABLE t ADD CONSTRAINT t_a_check CHECK (a > 0) NOT VALID",
            "ALTER TABLE t VALIDATE CONSTRAINT t_a_check",
        ],
    ),
    "a_column_before_the_constraint_on_it": SplitCase(
        "ALTER TABLE t ADD FOREIGN KEY (x) REFERENCES p, ADD COLUMN x int",
        [
            "ALTER TABLE t ADD COLUMN x integer",
            "ALTER TABLE t ADD CONSTRAINT t_x_fkey FOREIGN KEY (x) REFERENCES p NOT VALID",
            "ALTER TABLE t VALIDATE CONSTRAINT t_x_fkey",
        ],
    ),
    "names_as_in_one_statement": SplitCase(
        "ALTER TABLE t ADD CHECK (a > 0), ADD CHECK (a < 10)",
        [
            "ALTER TABLE t ADD CONSTRAINT t_a_check CHECK (a > 0) NOT VALID",
            "ALTER TABLE t VALIDATE CONSTRAINT t_a_check",
            "ALTER TABLE t ADD CONSTRAINT t_a_check1 CHECK (a < 10) NOT VALID",
            "ALTER TABLE t VALIDATE CONSTRAINT t_a_check1",
        ],
    ),
    "not_null_before_the_key_that_needs_it": SplitCase(
        "ALTER TABLE t DROP CONSTRAINT t_pkey, ADD PRIMARY KEY (a), ALTER COLUMN a SET NOT NULL",
        [
            "ALTER TABLE t DROP CONSTRAINT t_pkey",
            "ALTER TABLE t ADD CONSTRAINT t_a_not_null NOT NULL a NOT VALID",
            "ALTER TABLE t VALIDATE CONSTRAINT t_a_not_null",
            "CREATE UNIQUE INDEX CONCURRENTLY t_pkey ON t (a)",
            "ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_pkey",
        ],
    ),
    "only_and_if_exists_in_every_part": SplitCase(
        "ALTER TABLE IF EXISTS ONLY t ADD CHECK (b > 0), ALTER COLUMN b SET STATISTICS 100",
        [
            "ALTER TABLE IF EXISTS ONLY t ADD CONSTRAINT t_b_check CHECK (b > 0) NOT VALID",
            "ALTER TABLE IF EXISTS ONLY t VALIDATE CONSTRAINT t_b_check",
            "ALTER TABLE IF EXISTS ONLY t ALTER COLUMN b SET STATISTICS 100",
        ],
    ),
    "15_not_null_through_its_helper": SplitCase(
        "ALTER TABLE t ALTER COLUMN b SET NOT NULL, ALTER COLUMN a SET DEFAULT 0",
        [  # a default is set in an earlier pass than NOT NULL (tablecmds.c)
            "ALTER TABLE t ALTER COLUMN a SET DEFAULT 0",
            "ALTER TABLE t ADD CONSTRAINT t_b_zdm_not_null CHECK (b IS NOT NULL) NOT VALID",
            "ALTER TABLE t VALIDATE CONSTRAINT t_b_zdm_not_null",
            "ALTER TABLE t ALTER COLUMN b SET NOT NULL",
            "ALTER TABLE t DROP CONSTRAINT t_b_zdm_not_null",
        ],
        version=150000,
    ),
}


@pytest.mark.parametrize("case_id", list(CASES))
def test_split_plans(case_id: str) -> None:
    case = CASES[case_id]
    plan = make_plan(case.sql, FACTS[case.version])
    assert [step.sql for step in plan.steps] == case.steps
    if len(case.steps) > 1:
        assert all("split out of an ALTER TABLE" in step.reason for step in plan.steps)
        assert "run safer as steps of their own" in plan.steps[0].reason


def test_a_split_keeps_each_parts_phases_and_way_back() -> None:
    steps = make_plan("ALTER TABLE t ADD CHECK (a > 0), ALTER COLUMN a SET DEFAULT 1", FACTS[180000]).steps
    assert [(s.phase, s.revert) for s in steps] == [
        (E, "ALTER TABLE t DROP CONSTRAINT IF EXISTS t_a_check"),
        (V, None),
        (S, None),
    ]


def test_no_part_scans_under_a_lock_that_stops_traffic() -> None:
    for case in CASES.values():
        for step in make_plan(case.sql, FACTS[case.version]).steps:
            if step.scans:
                assert (
                    max(lock.mode for lock in step.locks if not lock.created)
                    <= LockMode.SHARE_UPDATE_EXCLUSIVE
                )


# On real servers -------------------------------------------------------------------------------

SETUP = """
CREATE TABLE p (id int PRIMARY KEY);
INSERT INTO p SELECT generate_series(1, 100);
CREATE TABLE t (id int PRIMARY KEY, a int, b int, z int);
INSERT INTO t SELECT g, g % 9 + 1, g, g FROM generate_series(1, 1000) g;
ANALYZE;
"""
DESTRUCTIVE = MigrationPolicy(deadline_s=60, allow_destructive=True)  # DROP COLUMN z is meant
EQUIVALENT: dict[str, str] = {
    "rest_together": "ALTER TABLE t ALTER COLUMN a SET DEFAULT 1, DROP COLUMN z, ADD CHECK (a > 0)",
    "column_then_key": "ALTER TABLE t ADD FOREIGN KEY (x) REFERENCES p, ADD COLUMN x int",
    "two_checks": "ALTER TABLE t ADD CHECK (a > 0), ADD CHECK (a < 10), ADD CHECK (b + 9 > a)",
    "new_primary_key": "ALTER TABLE t DROP CONSTRAINT t_pkey, ADD PRIMARY KEY (b), "
    "ALTER COLUMN b SET NOT NULL",
    "drop_and_add_same_name": "ALTER TABLE t ADD COLUMN z text DEFAULT 'q' CHECK (z <> ''), DROP COLUMN z",
    "everything": "ALTER TABLE t ADD UNIQUE (b), ALTER COLUMN a SET NOT NULL, "
    "ADD FOREIGN KEY (a) REFERENCES p, ALTER COLUMN z SET STATISTICS 50, ADD COLUMN y int DEFAULT 3",
}


@pytest.mark.parametrize("case_id", list(EQUIVALENT))
async def test_end_state_equals_the_statement_as_written(dsn: str, case_id: str) -> None:
    plan = await check_equivalent(dsn, SETUP, EQUIVALENT[case_id], policy=DESTRUCTIVE)
    assert len(plan.steps) > 2, "not split"


@pytest.mark.parametrize("case_id", ["rest_together", "new_primary_key", "everything"])
async def test_each_step_locks_what_it_says(dsn: str, case_id: str) -> None:
    await check_steps_on(dsn, SETUP, EQUIVALENT[case_id])


# Either rewritten by a rule or not; every one succeeds on SETUP's data in any combination.
SUBCOMMANDS = (
    "ADD CHECK (a > 0)",
    "ADD CHECK (b + 9 > a)",
    "ADD FOREIGN KEY (a) REFERENCES p",
    "ALTER COLUMN b SET NOT NULL",
    "ADD UNIQUE (b)",
    "ADD COLUMN n int DEFAULT 7 CHECK (n > 0)",
    "ADD COLUMN m text",
    "ALTER COLUMN a SET DEFAULT 2",
    "DROP COLUMN z",
    "ALTER COLUMN b SET STATISTICS 10",
    "ADD CONSTRAINT kept CHECK (b > 0) NOT VALID",
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subcommands=st.lists(st.sampled_from(SUBCOMMANDS), min_size=2, max_size=5, unique=True))
async def test_made_up_statements_end_as_written(dsn: str, subcommands: list[str]) -> None:
    await fresh_public_schema(dsn)
    await check_equivalent(dsn, SETUP, "ALTER TABLE t " + ", ".join(subcommands), policy=DESTRUCTIVE)
