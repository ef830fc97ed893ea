"""Keyset walks over made-up primary keys: every row done exactly once, whatever the key.

hypothesis makes up a table whose primary key is one or two columns of types whose text forms
are awkward (quotes, backslashes, unicode, negative and fractional numbers, time zones, uuids),
its rows, and the batch size; the backfill (``UPDATE t SET n = n + 1``) must leave every row at
n = 1. The key values go to the server as text and come back as literals the batch statement
quotes, so this is where a key that does not survive the round trip would show.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zdmproxy.engine.catalog import plan_script
from zdmproxy.engine.connector import connect
from zdmproxy.engine.runner import Runner
from zdmproxy.policy import MigrationPolicy

TEXT = st.text(alphabet=st.sampled_from(["a", "Z", "'", '"', "\\", " ", "é", "☃", ",", "(", ")"]), max_size=6)
TYPES: dict[str, st.SearchStrategy[Any]] = {
    "bigint": st.integers(-(2**40), 2**40),
    "text": TEXT,
    "numeric(12,3)": st.decimals(-(10**8), 10**8, places=3, allow_nan=False, allow_infinity=False).map(
        Decimal
    ),
    "timestamptz": st.integers(-(10**9), 10**9).map(
        lambda s: datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=s)
    ),
    "uuid": st.uuids(),
    "boolean": st.booleans(),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[tuple[Any, ...]], int]:
    types = draw(st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=2))
    rows = draw(st.lists(st.tuples(*(TYPES[t] for t in types)), min_size=1, max_size=120, unique=True))
    return types, rows, draw(st.integers(1, 40))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=tables())
async def test_every_row_of_any_key_is_done_once(
    dsn: str, case: tuple[list[str], list[tuple[Any, ...]], int]
) -> None:
    types, rows, batch = case
    table = f"t_{uuid.uuid4().hex[:8]}"
    columns = [f"k{i}" for i in range(len(types))]
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(
            f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in zip(columns, types, strict=True))},"
            f" n int NOT NULL DEFAULT 0, PRIMARY KEY ({', '.join(columns)}))"
        )
        await admin.copy_records_to_table(table, records=rows, columns=columns)
        await admin.execute(f"ANALYZE {table}")
        policy = MigrationPolicy(
            backfill_dml_min_rows=0, backfill_batch_rows=batch, backfill_batch_rows_max=batch
        )
        session = await connect(dsn, "zdmproxy-plan")
        try:
            plan = await plan_script(session, f"UPDATE {table} SET n = n + 1", policy)
        finally:
            await session.close()
        assert plan.steps[0].backfill is not None
        await Runner(dsn, "keys", policy).run(plan)
        done = dict(await admin.fetch(f"SELECT n, count(*) FROM {table} GROUP BY n"))
        assert done == {1: len(rows)}, (types, rows, batch, await admin.fetch(f"SELECT * FROM {table}"))
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {table}")
        await admin.close()
