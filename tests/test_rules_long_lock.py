"""Statements with no online form, on a large table, are refused unless long locks are allowed
(plan/rules/long_lock.py; the refusal in engine/runner.check_allowed, the flag on apply).

Pure cases first, then on PostgreSQL 15 and 18 through the command line: refused with the
reason and the flag to pass, run with it, and `plan --json` shows the steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from helpers import run_cli

from zdmproxy.engine.runner import check_allowed
from zdmproxy.errors import UnsupportedStatement
from zdmproxy.plan.planner import make_plan
from zdmproxy.plan.verdict import Level, verdicts
from zdmproxy.policy import MigrationPolicy
from zdmproxy.sql.facts import CatalogFacts, ChildInfo, RelationInfo
from zdmproxy.sql.locks import RelationName

MB = 2**20


def table(name: str, size: int | None) -> tuple[RelationName, RelationInfo]:
    return RelationName(None, name), RelationInfo(
        name=RelationName("public", name), relkind="r", total_bytes=size
    )


FACTS = CatalogFacts(
    server_version_num=150000,
    relations=dict(
        [
            table("big", 200 * MB),
            table("small", 1 * MB),
            (
                RelationName(None, "totals"),
                RelationInfo(
                    name=RelationName("public", "totals"),
                    relkind="m",
                    total_bytes=100 * MB,
                    view_definition="SELECT count(*) FROM big",
                ),
            ),
            (
                RelationName(None, "parted"),
                RelationInfo(
                    name=RelationName("public", "parted"),
                    relkind="p",
                    total_bytes=0,
                    children=(
                        ChildInfo(
                            RelationName("public", "parted_1"),
                            "r",
                            1,
                            "FOR VALUES IN (1)",
                            total_bytes=90 * MB,
                        ),
                    ),
                ),
            ),
        ]
    ),
)


@dataclass(frozen=True)
class Case:
    sql: str
    refused: bool
    says: str = ""  # what the refusal must name: the online alternative, or why
    facts: CatalogFacts | None = FACTS
    policy: MigrationPolicy | None = None


CASES = {
    "vacuum_full_large": Case("VACUUM FULL big", True, "pg_repack or pg_squeeze"),
    "vacuum_full_small": Case("VACUUM FULL small", False),
    "vacuum_full_small_with_a_lower_threshold": Case(
        "VACUUM FULL small", True, "1.0 MB", policy=MigrationPolicy(long_lock_min_bytes=MB)
    ),
    "cluster_large": Case("CLUSTER big USING big_pkey", True, "pg_repack --order-by"),
    "set_tablespace_large": Case("ALTER TABLE big SET TABLESPACE pg_default", True, "pg_repack --tablespace"),
    "vacuum_full_of_a_large_partition_through_its_parent": Case(
        "VACUUM FULL parted", True, "parted_1 (90.0 MB)"
    ),
    "plain_vacuum_takes_no_traffic_lock": Case("VACUUM big", False),
    "refresh_large_view": Case(
        "REFRESH MATERIALIZED VIEW totals", True, "CONCURRENTLY (needs a unique index"
    ),
    "refresh_concurrently_lets_readers_through": Case("REFRESH MATERIALIZED VIEW CONCURRENTLY totals", False),
    "truncate_reads_nothing": Case("TRUNCATE big", False),
    "create_index_has_an_online_form": Case("CREATE INDEX big_a ON big (a)", False),
    "a_table_the_script_creates": Case("CREATE TABLE fresh (id int); VACUUM FULL fresh", False),
    "unknown_size_without_a_database": Case("VACUUM FULL big", True, "size is unknown", facts=None),
}


@pytest.mark.parametrize("case_id", list(CASES))
def test_refused_only_where_no_online_form_exists_and_the_table_is_large(case_id: str) -> None:
    case = CASES[case_id]
    plan = make_plan(case.sql, case.facts, case.policy)
    refusals = [step.long_lock for step in plan.steps if step.long_lock]
    assert bool(refusals) == case.refused, refusals
    if case.refused:
        assert case.says in refusals[0]
        verdict = verdicts(plan)[-1]
        assert verdict.level is Level.LONG_LOCK and "--allow-long-locks" in verdict.why


@pytest.mark.parametrize("with_catalog", [False, True])
def test_a_table_the_script_created_is_never_a_long_lock(with_catalog: bool) -> None:
    """Nobody's traffic uses a table created earlier in the same script, whatever its size is
    unknown to the catalog: neither the rule nor the verdict may hold its rewrite against it."""
    facts = CatalogFacts(server_version_num=180000) if with_catalog else CatalogFacts()
    plan = make_plan("CREATE TABLE fresh (id int);\nVACUUM FULL fresh", facts)
    assert not any(step.long_lock for step in plan.steps)
    assert verdicts(plan)[-1].level is Level.SAFE
    alone = make_plan("VACUUM FULL fresh")  # without the CREATE: unknown size, counts as large
    assert alone.steps[0].long_lock and verdicts(alone)[0].level is Level.LONG_LOCK


def test_apply_refuses_it_and_names_the_flag_unless_allowed() -> None:
    plan = make_plan("VACUUM FULL big", FACTS)
    with pytest.raises(UnsupportedStatement, match="--allow-long-locks") as refused:
        check_allowed(plan.steps, MigrationPolicy())
    assert "pg_repack" in str(refused.value)
    check_allowed(plan.steps, MigrationPolicy(allow_long_locks=True))


# --- on PostgreSQL 15 and 18 ---------------------------------------------------------------

SETUP = """
CREATE TABLE items (id bigint PRIMARY KEY, a int, pad text);
INSERT INTO items SELECT g, g % 100, repeat('x', 200) FROM generate_series(1, 5000) g;
CREATE TABLE ev (id bigint, kind int) PARTITION BY LIST (kind);
CREATE TABLE ev_1 PARTITION OF ev FOR VALUES IN (1);
INSERT INTO ev SELECT g, 1 FROM generate_series(1, 5000) g;
ANALYZE;
"""


async def filenode(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT relfilenode FROM pg_class WHERE relname = 'items'"))
    finally:
        await conn.close()


async def test_apply_refuses_a_long_lock_and_runs_it_when_allowed(dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SETUP)
    finally:
        await conn.close()
    before = await filenode(dsn)
    small = ("--long-lock-min-bytes", "1000")  # items is ~1.3 MB: large for this test
    refused = await run_cli(
        "apply", "--dsn", dsn, "--id", "vf", *small, sql="VACUUM FULL items", tmp_path=tmp_path
    )
    assert refused.code != 0 and "--allow-long-locks" in refused.stderr, refused.stderr
    assert "pg_repack" in refused.stderr
    assert await filenode(dsn) == before  # nothing ran
    allowed = await run_cli(
        "apply",
        "--dsn",
        dsn,
        "--id",
        "vf2",
        *small,
        "--allow-long-locks",
        sql="VACUUM FULL items",
        tmp_path=tmp_path,
    )
    assert allowed.code == 0, allowed.stderr
    assert await filenode(dsn) != before  # rewritten
    default = await run_cli("apply", "--dsn", dsn, "--id", "vf3", sql="VACUUM FULL items", tmp_path=tmp_path)
    assert default.code == 0, default.stderr  # below the default 64 MiB: runs


async def test_plan_json_shows_the_new_steps(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SETUP)
    finally:
        await conn.close()
    script = "CREATE INDEX ON ev (id);\nVACUUM FULL items;\nCLUSTER items USING items_pkey;\n"
    monkeypatch.setenv("ZDM_LONG_LOCK_MIN_BYTES", "1000")  # plan reads the configured policy
    result = await run_cli("plan", "--json", "--dsn", dsn, sql=script, tmp_path=tmp_path)
    assert result.code == 6, result.stderr  # the long locks
    index, vacuum, cluster = json.loads(result.stdout)["statements"]
    assert [step["sql"] for step in index["steps"]] == [
        "CREATE INDEX ev_id_idx ON ONLY ev (id)",
        "CREATE INDEX CONCURRENTLY ev_1_id_idx ON public.ev_1 (id)",
        'ALTER INDEX "public"."ev_id_idx" ATTACH PARTITION "public"."ev_1_id_idx"',
    ]
    assert [step["transactional"] for step in index["steps"]] == [True, False, True]
    assert all(step["long_lock"] is None for step in index["steps"])
    for statement in (vacuum, cluster):
        (step,) = statement["steps"]
        assert "pg_repack" in step["long_lock"]
        assert statement["verdict"]["level"] == "long_lock"
