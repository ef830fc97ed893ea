"""The backfill rules' end state equals the statement as written (tests/equivalence.py):
columns, types, defaults, nullability, constraints and their validity, indexes, no helper
left behind, and the data. The volatile defaults here are volatile functions with a fixed
result, so the data can be compared row for row."""

from __future__ import annotations

import pytest
from equivalence import check_equivalent

from zdmproxy.policy import MigrationPolicy

SETUP = """
CREATE FUNCTION seven() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 7';
CREATE TABLE t (id bigint PRIMARY KEY, a int NOT NULL, n int);
INSERT INTO t SELECT g, g % 10, CASE WHEN g % 7 = 0 THEN NULL ELSE g END FROM generate_series(1, 5000) g;
CREATE TABLE pair (a int, b text, v int, PRIMARY KEY (a, b));
INSERT INTO pair SELECT g % 13, 'k' || g, g FROM generate_series(1, 3000) g;
ANALYZE t, pair;
"""

CASES = [
    "ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT seven()",
    "ALTER TABLE t ADD COLUMN c int DEFAULT (random() * 0)::int + 3",
    "ALTER TABLE t ADD COLUMN s text COLLATE \"C\" NOT NULL DEFAULT seven()::text || 'x'",
    "ALTER TABLE pair ADD COLUMN c bigint NOT NULL DEFAULT seven() * 2",
    "UPDATE t SET n = coalesce(n, 0) * 2 + 1",
    "UPDATE t SET n = a WHERE n IS NULL",
    "DELETE FROM t WHERE a = 3",
    "UPDATE pair SET v = v + 1",
]


@pytest.mark.parametrize("statement", CASES)
async def test_backfill_plans_end_where_the_statement_ends(dsn: str, statement: str) -> None:
    # Small batches, so every walk takes several (composite keys cross their boundaries).
    policy = MigrationPolicy(deadline_s=60, backfill_dml_min_rows=0, backfill_batch_rows_max=700)
    plan = await check_equivalent(dsn, SETUP, statement, policy=policy)
    assert any(step.backfill is not None for step in plan.steps), [s.sql for s in plan.steps]
