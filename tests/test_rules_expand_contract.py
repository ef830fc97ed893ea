"""The expand/contract rules (ALTER COLUMN TYPE, RENAME COLUMN, DROP COLUMN), pure: which
statements they take, the steps they make, and the ones they leave as written."""

from __future__ import annotations

import dataclasses

import pytest

from zdmproxy.plan.model import Phase, Step
from zdmproxy.plan.phases import expand_end, has_contract
from zdmproxy.plan.planner import make_plan
from zdmproxy.plan.rules.change_type import change_type_online
from zdmproxy.plan.rules.column_swap import object_name
from zdmproxy.plan.rules.context import RuleContext, statement_of
from zdmproxy.plan.rules.drop_column import drop_column_in_phases
from zdmproxy.plan.rules.registry import Rule
from zdmproxy.plan.rules.rename_column import rename_column_in_phases
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.catalogue import classify
from zdmproxy.sql.facts import (
    CatalogFacts,
    ColumnType,
    ConstraintInfo,
    ForeignKey,
    IndexInfo,
    RelationInfo,
)
from zdmproxy.sql.locks import LockMode, RelationName

T = RelationName("public", "t")
E, B, V, C = Phase.EXPAND, Phase.BACKFILL, Phase.VALIDATE, Phase.CONTRACT


def _table(**changes: object) -> RelationInfo:
    """public.t: id int PK, c int NOT NULL DEFAULT 0 CHECK (c > 0) with an index, v varchar(20),
    n int (nullable), r int NOT NULL (no default)."""
    info = RelationInfo(
        name=T,
        relkind="r",
        columns={
            "id": ColumnType("int4", not_null=True, sql_type="integer"),
            "c": ColumnType("int4", not_null=True, default="0", sql_type="integer"),
            "v": ColumnType("varchar", (20,), sql_type="character varying(20)"),
            "n": ColumnType("int4", sql_type="integer"),
            "r": ColumnType("int4", not_null=True, sql_type="integer"),
        },
        constraints=(
            ConstraintInfo(
                "t_pkey", "p", True, definition="PRIMARY KEY (id)", columns=("id",), index="t_pkey"
            ),
            ConstraintInfo("t_c_check", "c", True, definition="CHECK ((c > 0))", columns=("c",)),
        ),
        index_definitions=(
            IndexInfo("t_pkey", "CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id)"),
            IndexInfo("t_c_idx", "CREATE INDEX t_c_idx ON public.t USING btree (c) WHERE (c > 5)"),
        ),
        primary_key=("id",),
    )
    return dataclasses.replace(info, **changes)  # type: ignore[arg-type]


def _facts(info: RelationInfo | None = None, version: int = 150000) -> CatalogFacts:
    return CatalogFacts(server_version_num=version, relations={RelationName(None, "t"): info or _table()})


def _apply(rule: Rule, sql: str, facts: CatalogFacts | None = None) -> tuple[Step, ...] | None:
    facts = facts if facts is not None else _facts()
    statement = statement_of(sql)
    version = facts.server_version_num or 180000
    context = RuleContext(
        statement,
        classify(statement, facts, version),
        facts,
        version,
        MigrationPolicy.model_validate({}),
        facts.server_version_num is not None,
        lambda s, f: make_plan(s.text, f).steps,
    )
    return rule(context)


def _phases(steps: tuple[Step, ...] | None) -> list[Phase] | None:
    return None if steps is None else [s.phase for s in steps]


@pytest.mark.parametrize(
    ("rule", "sql", "phases"),
    [
        # rewriting type changes: column, function, trigger, backfill, NOT NULL check + validate,
        # the CHECK rebuilt + validated, the index rebuilt, then the swap
        (change_type_online, "ALTER TABLE t ALTER COLUMN c TYPE bigint", [E, E, E, B, E, V, E, V, E, C]),
        (change_type_online, "ALTER TABLE t ALTER COLUMN n TYPE bigint", [E, E, E, B, C]),
        (change_type_online, "ALTER TABLE t ALTER COLUMN n TYPE text USING n::text || 'x'", [E, E, E, B, C]),
        # binary-coercible: one instant step, as written (no rule)
        (change_type_online, "ALTER TABLE t ALTER COLUMN v TYPE varchar(50)", None),
        (change_type_online, "ALTER TABLE t ALTER COLUMN v TYPE text", None),
        # what the rule leaves alone
        (change_type_online, "ALTER TABLE ONLY t ALTER COLUMN n TYPE bigint", None),
        (change_type_online, "ALTER TABLE t ALTER COLUMN n TYPE bigint, ALTER COLUMN r TYPE bigint", None),
        (change_type_online, "ALTER TABLE t ADD COLUMN z int", None),
        (rename_column_in_phases, "ALTER TABLE t RENAME COLUMN c TO d", [E, E, E, B, E, V, E, V, E, C]),
        (rename_column_in_phases, "ALTER TABLE t RENAME COLUMN n TO m", [E, E, E, B, C]),
        (rename_column_in_phases, "ALTER TABLE t RENAME TO u", None),
        (rename_column_in_phases, "ALTER INDEX t_c_idx RENAME TO t_c_idx2", None),
        (drop_column_in_phases, "ALTER TABLE t DROP COLUMN r", [E, C]),  # NOT NULL, no default
        (drop_column_in_phases, "ALTER TABLE t DROP COLUMN c", [C]),  # has a default
        (drop_column_in_phases, "ALTER TABLE t DROP COLUMN n", [C]),  # nullable
        (drop_column_in_phases, "ALTER TABLE t DROP COLUMN id", None),  # the primary key
        (drop_column_in_phases, "ALTER TABLE t DROP COLUMN nope", None),  # not there: fails as written
    ],
)
def test_which_statements_each_rule_takes(rule: Rule, sql: str, phases: list[Phase] | None) -> None:
    assert _phases(_apply(rule, sql)) == phases


REFUSED = {
    "a foreign key on the column": _table(
        foreign_keys=(ForeignKey("t_n_fkey", T, ("n",), RelationName("public", "p"), ("id",)),)
    ),
    "a foreign key referencing it": _table(
        referenced_by=(ForeignKey("k_fkey", RelationName("public", "k"), ("t_n",), T, ("n",)),)
    ),
    "a view on the column": _table(column_views={"n": (RelationName("public", "v"),)}),
    "an identity column": _table(
        columns={**_table().columns, "n": ColumnType("int4", identity="a", sql_type="integer")}
    ),
    "a generated column in the table": _table(
        columns={**_table().columns, "g": ColumnType("int4", generated="s", sql_type="integer")}
    ),
    "no primary key": _table(primary_key=(), constraints=()),
    "a partitioned table": _table(relkind="p"),
    "an exclusion constraint": _table(
        constraints=(
            *_table().constraints,
            ConstraintInfo("t_n_excl", "x", True, definition="EXCLUDE", columns=("n",)),
        )
    ),
    "a deferrable unique constraint": _table(
        constraints=(
            *_table().constraints,
            ConstraintInfo(
                "t_n_key", "u", True, definition="UNIQUE (n) DEFERRABLE", columns=("n",), index="t_n_key"
            ),
        )
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_columns_it_cannot_keep_equivalent_run_as_written(case: str) -> None:
    facts = _facts(REFUSED[case])
    assert _apply(rename_column_in_phases, "ALTER TABLE t RENAME COLUMN n TO m", facts) is None
    sql = "ALTER TABLE t ALTER COLUMN n TYPE bigint"
    steps = _apply(change_type_online, sql, facts)
    if steps is not None:  # as written, refused as a long lock (a table of unknown size), saying why
        (step,) = steps
        assert step.sql == sql and step.long_lock and "no expand/contract" in step.reason, step.reason


def test_without_catalog_facts_the_rules_step_aside() -> None:
    assert _apply(change_type_online, "ALTER TABLE t ALTER COLUMN c TYPE bigint", CatalogFacts()) is None
    assert _apply(rename_column_in_phases, "ALTER TABLE t RENAME COLUMN c TO d", CatalogFacts()) is None
    assert _apply(drop_column_in_phases, "ALTER TABLE t DROP COLUMN r", CatalogFacts()) is None


def test_type_change_steps_their_way_back_and_the_swap() -> None:
    steps = _apply(change_type_online, "ALTER TABLE t ALTER COLUMN c TYPE bigint")
    assert steps is not None
    by_kind = {s.kind: s for s in steps}
    assert by_kind["ALTER TABLE ADD COLUMN"].sql == 'ALTER TABLE "t" ADD COLUMN "c_zdm_new" bigint'
    # every expand step can be undone (twice: IF EXISTS); a validate or backfill needs no undoing
    for step in steps:
        if step.phase is Phase.EXPAND:
            assert step.revert is not None and "IF EXISTS" in step.revert, step.sql
        else:
            assert step.revert is None, step.sql
    backfill = by_kind["UPDATE"].backfill
    assert backfill is not None and backfill.key == ("id",) and backfill.assignments == '"c_zdm_new" = "c"'
    index = by_kind["CREATE INDEX CONCURRENTLY"]
    assert not index.transactional and "(c_zdm_new) WHERE c_zdm_new > 5" in index.sql
    swap = steps[-1]
    assert swap.transactional and swap.destructive is None and not swap.rewrites
    assert [(str(lock.relation), lock.mode) for lock in swap.locks if lock.relation == T] == [
        ("public.t", LockMode.ACCESS_EXCLUSIVE)
    ]
    assert swap.sql.split(";\n") == [
        'DROP TRIGGER "zzz_zdm_sync_c" ON "t"',
        'DROP FUNCTION "public"."zdm_sync_t_c"()',
        'ALTER TABLE "t" DROP COLUMN "c"',
        'ALTER TABLE "t" ALTER COLUMN "c_zdm_new" SET NOT NULL',
        'ALTER TABLE "t" DROP CONSTRAINT "c_zdm_new_zdm_not_null"',
        'ALTER TABLE "t" RENAME COLUMN "c_zdm_new" TO "c"',
        'ALTER TABLE "t" ALTER COLUMN "c" SET DEFAULT 0',
        'ALTER TABLE "t" RENAME CONSTRAINT "t_c_check_zdm" TO "t_c_check"',
        'ALTER INDEX "public"."t_c_idx_zdm" RENAME TO "t_c_idx"',
    ]
    # no step holds a lock that stops traffic while it reads or rewrites the table (the swap's
    # SET NOT NULL is proven by the validated check: no scan)
    assert not any(s.rewrites for s in steps)
    assert all(
        not s.scans or s.locks[0].mode <= LockMode.SHARE_UPDATE_EXCLUSIVE for s in steps if s.backfill is None
    )


def test_a_using_expression_reads_the_triggers_row() -> None:
    steps = _apply(change_type_online, "ALTER TABLE t ALTER COLUMN n TYPE bigint USING n * 10 + c")
    assert steps is not None
    function = next(s for s in steps if s.kind == "CREATE FUNCTION")
    assert 'NEW."n_zdm_new" := new.n * 10 + new.c;' in function.sql
    backfill = next(s for s in steps if s.backfill is not None)
    assert backfill.backfill is not None and backfill.backfill.assignments == '"n_zdm_new" = n * 10 + c'


def test_a_serials_sequence_is_handed_to_the_new_column_before_the_old_one_goes() -> None:
    serial = ColumnType(
        "int4",
        not_null=True,
        default="nextval('t_n_seq'::regclass)",
        sql_type="integer",
        owned_sequence="public.t_n_seq",
    )
    facts = _facts(_table(columns={**_table().columns, "n": serial}))
    steps = _apply(change_type_online, "ALTER TABLE t ALTER COLUMN n TYPE bigint", facts)
    assert steps is not None
    swap = steps[-1].sql.split(";\n")
    owned = swap.index('ALTER SEQUENCE public.t_n_seq OWNED BY "t"."n_zdm_new"')
    assert owned < swap.index('ALTER TABLE "t" DROP COLUMN "n"')
    assert 'ALTER TABLE "t" ALTER COLUMN "n" SET DEFAULT nextval(\'t_n_seq\'::regclass)' in swap


def test_a_unique_or_primary_key_comes_back_as_a_constraint_using_the_rebuilt_index() -> None:
    steps = _apply(change_type_online, "ALTER TABLE t ALTER COLUMN id TYPE bigint")
    assert steps is not None
    assert "CREATE UNIQUE INDEX CONCURRENTLY t_pkey_zdm ON t (id_zdm_new)" in [s.sql for s in steps]
    assert 'ADD CONSTRAINT "t_pkey" PRIMARY KEY USING INDEX "t_pkey_zdm"' in steps[-1].sql


def test_rename_syncs_both_ways_and_keeps_the_names_a_rename_keeps() -> None:
    steps = _apply(rename_column_in_phases, "ALTER TABLE t RENAME COLUMN c TO d")
    assert steps is not None
    assert steps[0].sql == 'ALTER TABLE "t" ADD COLUMN "d" integer'
    function = steps[1].sql
    assert 'NEW."d" := NEW."c"' in function and 'NEW."c" := NEW."d"' in function
    assert "RENAME COLUMN" not in steps[-1].sql
    assert 'RENAME CONSTRAINT "t_c_check_zdm" TO "t_c_check"' in steps[-1].sql


def test_on_18_a_named_not_null_constraint_keeps_its_name() -> None:
    named = _table(
        constraints=(*_table().constraints, ConstraintInfo("t_c_not_null", "n", True, columns=("c",)))
    )
    steps = _apply(rename_column_in_phases, "ALTER TABLE t RENAME COLUMN c TO d", _facts(named, 180000))
    assert steps is not None
    assert 'ADD CONSTRAINT "t_c_not_null" NOT NULL "d"' in steps[-1].sql and not steps[-1].scans
    on_15 = _apply(rename_column_in_phases, "ALTER TABLE t RENAME COLUMN c TO d", _facts(named, 150000))
    assert on_15 is not None and 'ALTER COLUMN "d" SET NOT NULL' in on_15[-1].sql and not on_15[-1].scans


def test_drop_column_expand_lets_new_code_insert_without_it() -> None:
    steps = _apply(drop_column_in_phases, "ALTER TABLE t DROP COLUMN r")
    assert steps is not None
    expand, contract = steps
    assert expand.sql == 'ALTER TABLE "t" ALTER COLUMN "r" DROP NOT NULL'
    assert expand.revert == 'ALTER TABLE "t" ALTER COLUMN "r" SET NOT NULL'
    assert contract.sql == "ALTER TABLE t DROP COLUMN r" and contract.destructive  # still needs allowing


def test_object_names_fit_postgresql_and_stay_apart() -> None:
    long = "x" * 60
    first, second = object_name(long, "a", "zdm"), object_name(long, "b", "zdm")
    assert len(first) == len(second) == 63 and first != second
    assert object_name("c", "zdm_new") == "c_zdm_new"


@pytest.mark.parametrize(
    ("phases", "end"),
    [([], 0), ([Phase.SINGLE], 1), ([E, B, V, C], 3), ([E, C, Phase.SINGLE, E, C], 1), ([C], 0)],
)
def test_the_expand_phase_is_everything_before_the_first_contract_step(phases: list[Phase], end: int) -> None:
    steps = [Step("SELECT 1", phase, True, (), (), (), "") for phase in phases]
    assert expand_end(steps) == end
    assert has_contract(steps) == (C in phases)
