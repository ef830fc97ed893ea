"""The backfill rules (ADD COLUMN with a volatile default, a large UPDATE/DELETE) and the batch
statements the engine generates, without a database: table-driven, on hand-made catalog facts.
Their behaviour on real servers, and their equivalence with the statements as written:
test_backfill.py and test_backfill_equivalence.py."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pglast import parse_sql

from zdmproxy.engine.backfill import Walk, live_policy
from zdmproxy.plan.model import Backfill, Phase, Plan
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.facts import CatalogFacts, ColumnType, RelationInfo
from zdmproxy.sql.locks import RelationName

T = RelationName("public", "t")


def facts(rows: int = 1_000_000, key: tuple[str, ...] = ("id",), **extra: object) -> CatalogFacts:
    """A table t (id bigint, n int, note text) as the catalog would describe it."""
    info = RelationInfo(
        name=T,
        relkind="r",
        primary_key=key,
        rows_estimate=rows,
        total_bytes=rows * 100,
        columns={
            "id": ColumnType("int8", not_null=True),
            "n": ColumnType("int4"),
            "note": ColumnType("text"),
        },
        **extra,  # type: ignore[arg-type]
    )
    return CatalogFacts(
        server_version_num=170000,
        relations={RelationName(None, "t"): info, T: info},
        volatile_functions=frozenset({"gen_random_uuid", "clock_timestamp", "random"}),
        known_functions=frozenset({"gen_random_uuid", "clock_timestamp", "random", "now", "lower"}),
        statement_rows={"UPDATE t SET n = 0 WHERE n > 5": 400_000, "DELETE FROM t WHERE id < 10": 9},
    )


def kinds(plan: Plan) -> list[tuple[str, str]]:
    return [(step.phase.value, step.kind) for step in plan.steps]


@dataclass(frozen=True)
class AddCase:
    sql: str
    backfilled: bool
    not_null_steps: bool = False


ADD_COLUMN = [
    AddCase("ALTER TABLE t ADD COLUMN u uuid DEFAULT gen_random_uuid()", backfilled=True),
    AddCase("ALTER TABLE t ADD COLUMN u uuid NOT NULL DEFAULT gen_random_uuid()", True, not_null_steps=True),
    AddCase("ALTER TABLE t ADD COLUMN at timestamptz DEFAULT clock_timestamp()", backfilled=True),
    AddCase('ALTER TABLE t ADD COLUMN s text COLLATE "C" DEFAULT random()::text', backfilled=True),
    # A non-volatile default is instant as written: one step.
    AddCase("ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 0", backfilled=False),
    AddCase("ALTER TABLE t ADD COLUMN c timestamptz DEFAULT now()", backfilled=False),
    # Stepped aside: IF NOT EXISTS, ONLY, identity / serial, several subcommands.
    AddCase("ALTER TABLE t ADD COLUMN IF NOT EXISTS u uuid DEFAULT gen_random_uuid()", backfilled=False),
    AddCase("ALTER TABLE ONLY t ADD COLUMN u uuid DEFAULT gen_random_uuid()", backfilled=False),
    AddCase("ALTER TABLE t ADD COLUMN s bigserial", backfilled=False),
    AddCase("ALTER TABLE t ADD COLUMN i int GENERATED ALWAYS AS IDENTITY", backfilled=False),
]


@pytest.mark.parametrize("case", ADD_COLUMN, ids=[c.sql for c in ADD_COLUMN])
def test_add_column_with_a_volatile_default(case: AddCase) -> None:
    plan = make_plan(case.sql, facts())
    backfills = [s for s in plan.steps if s.backfill is not None]
    if not case.backfilled:
        assert not backfills
        return
    add, default, fill, *rest = plan.steps
    assert add.phase is Phase.EXPAND and not add.rewrites and "DROP COLUMN" in str(add.revert)
    assert default.phase is Phase.EXPAND and "SET DEFAULT" in default.sql and not default.rewrites
    assert fill.phase is Phase.BACKFILL and fill.backfill is not None
    assert fill.backfill.table == T and fill.backfill.key == ("id",)
    assert fill.backfill.predicate is not None and "IS NULL" in fill.backfill.predicate
    assert [lock.mode.pg_name for lock in fill.locks] == ["RowExclusiveLock"]
    # Nothing in the plan rewrites the table or scans it under a lock that stops traffic.
    assert not any(s.rewrites for s in plan.steps)
    assert bool(rest) == case.not_null_steps
    if case.not_null_steps:
        assert "SET NOT NULL" in " ".join(s.sql for s in rest)


def test_add_column_on_a_table_without_a_primary_key_runs_as_written() -> None:
    plan = make_plan("ALTER TABLE t ADD COLUMN u uuid DEFAULT gen_random_uuid()", facts(key=()))
    assert len(plan.steps) == 1 and plan.steps[0].rewrites


def test_add_column_without_a_database_reads_the_key_when_it_runs() -> None:
    plan = make_plan("ALTER TABLE t ADD COLUMN u uuid DEFAULT gen_random_uuid()")
    (fill,) = [s for s in plan.steps if s.backfill is not None]
    assert fill.backfill is not None and fill.backfill.key == ()
    assert "read when it runs" in fill.reason


@dataclass(frozen=True)
class DmlCase:
    sql: str
    backfill: tuple[str | None, str | None] | None  # (assignments, predicate), None: as written
    rows: int = 1_000_000


DML = [
    DmlCase("UPDATE t SET n = 0", ('"n" = 0', None)),
    DmlCase("UPDATE t SET n = n + 1, note = DEFAULT", ('"n" = n + 1, "note" = DEFAULT', None)),
    DmlCase("DELETE FROM t", (None, None)),
    DmlCase("UPDATE t SET n = 0 WHERE n > 5", ('"n" = 0', "n > 5")),  # EXPLAIN: 400k rows
    DmlCase("DELETE FROM t WHERE id < 10", None),  # EXPLAIN: 9 rows
    DmlCase("UPDATE t SET n = 0", None, rows=500),  # a small table
    # The keyset rewrite would change the meaning: as written.
    DmlCase("UPDATE t SET n = 0 RETURNING id", None),
    DmlCase("UPDATE t SET n = o.n FROM other o WHERE o.id = t.id", None),
    DmlCase("DELETE FROM t USING other o WHERE o.id = t.id", None),
    DmlCase("UPDATE t SET n = (SELECT max(n) FROM t)", None),
    DmlCase("DELETE FROM t WHERE n IN (SELECT n FROM t LIMIT 3)", None),
    DmlCase("UPDATE t SET id = id + 1", None),  # the key moves along the walk
    DmlCase("UPDATE t AS x SET n = 0", None),
    DmlCase("UPDATE ONLY t SET n = 0", None),
    DmlCase("UPDATE t SET (n, note) = (1, 'a')", None),
    DmlCase("WITH x AS (SELECT 1) UPDATE t SET n = 0", None),
]


@pytest.mark.parametrize("case", DML, ids=[c.sql for c in DML])
def test_large_update_or_delete(case: DmlCase) -> None:
    plan = make_plan(case.sql, facts(rows=case.rows))
    (step,) = plan.steps
    if case.backfill is None:
        assert step.backfill is None
        return
    assert step.backfill is not None and step.phase is Phase.BACKFILL
    assert (step.backfill.assignments, step.backfill.predicate) == case.backfill
    assert step.backfill.key == ("id",) and step.sql == case.sql


def test_a_table_never_analyzed_counts_by_its_size() -> None:
    never_analyzed = facts(rows=0)  # 0 rows, 0 bytes by the helper's arithmetic: small
    assert make_plan("UPDATE t SET n = 0", never_analyzed).steps[0].backfill is None
    big = CatalogFacts(
        server_version_num=170000,
        relations={
            RelationName(None, "t"): RelationInfo(
                name=T, relkind="r", primary_key=("id",), rows_estimate=0, total_bytes=2**30
            )
        },
    )
    assert make_plan("UPDATE t SET n = 0", big).steps[0].backfill is not None


def test_large_dml_steps_aside_for_a_table_with_triggers() -> None:
    plan = make_plan("UPDATE t SET n = 0", facts(triggers=(("audit", frozenset({"UPDATE"})),)))
    assert plan.steps[0].backfill is None
    assert make_plan("DELETE FROM t", facts(triggers=(("audit", frozenset({"UPDATE"})),))).steps[0].backfill


def test_large_dml_without_a_database() -> None:
    assert make_plan("UPDATE t SET n = 0").steps[0].backfill is not None  # the safe plan
    assert make_plan("UPDATE t SET n = 0 WHERE n > 5").steps[0].backfill is None  # nothing says large


WALK = Walk(Backfill(T, (), '"n" = n + 1', "n IS NOT NULL"), ("a", "b"), ("integer", "text"))


def test_batch_statements_quote_key_values_and_compare_composite_keys_as_rows() -> None:
    batch = WALK.batch(("1", "it's"), ("9", "z"))
    assert batch == (
        "UPDATE public.t SET n = n + 1 WHERE (a, b) > (CAST('1' AS integer), CAST('it''s' AS text)) "
        "AND (a, b) <= (CAST('9' AS integer), CAST('z' AS text)) AND n IS NOT NULL"
    )
    assert len(parse_sql(batch)) == 1  # one statement, values as literals: nothing pasted
    either = Walk(Backfill(T, (), "n = 0", "n > 1 OR n < -1"), ("id",), ("bigint",))
    assert either.batch(None, ("7",)).endswith("AND (n > 1 OR n < -1)")  # the predicate stays whole
    first = WALK.batch(None, ("9", "z"))
    assert "(a, b) <= (CAST('9' AS integer)" in first and ">" not in first
    single = Walk(Backfill(T, (), None), ("id",), ("bigint",))
    assert single.batch(("5",), ("10",)) == (
        "DELETE FROM public.t WHERE id > CAST('5' AS bigint) AND id <= CAST('10' AS bigint)"
    )


def test_key_reads_sort_by_the_key_not_by_its_text() -> None:
    """ORDER BY names the key qualified: bare, it would sort by the text copy in the output."""
    assert "ORDER BY walked.a DESC, walked.b DESC LIMIT 1" in WALK.upper_bound()
    assert "ORDER BY walked.a, walked.b LIMIT 1 OFFSET" in WALK.next_batch(True)


def test_live_throttle_merges_backfill_knobs_and_ignores_bad_ones() -> None:
    policy = MigrationPolicy()
    merged, warning = live_policy(policy, {"backfill_sleep_ms": 25, "lock_timeout_ms": 1})
    assert merged.backfill_sleep_ms == 25 and merged.lock_timeout_ms == policy.lock_timeout_ms
    assert warning is not None and "lock_timeout_ms" in warning
    same, warning = live_policy(policy, {"backfill_batch_rows": -3})
    assert same == policy and warning is not None and "backfill_batch_rows" in warning
    assert live_policy(policy, {}) == (policy, None)
