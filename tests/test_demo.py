"""``zdmproxy demo`` does what the README promises: through the daemon's HTTP API the clients
barely notice the change; as written, they stall behind the report's transaction."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import asyncpg
from helpers import CliResult, zdmproxy


def _report(result: CliResult) -> dict[str, object]:
    assert result.code == 0, result.stderr
    return result.json()


async def test_demo_splits_the_migration_and_the_clients_see_the_difference(dsn: str) -> None:
    result = await zdmproxy("demo", "--dsn", dsn, "--rows", "20000", "--hold-s", "2", "--json", timeout=110)
    report = _report(result)
    safe: dict[str, object] = report["zdmproxy"]  # type: ignore[assignment]
    naive: dict[str, object] = report["as_written"]  # type: ignore[assignment]

    # Through the daemon: a plan with a backfill, the report waited for, every row backfilled.
    phases = [step["phase"] for step in safe["steps"]]  # type: ignore[attr-defined]
    assert "backfill" in phases and phases[0] == "expand", phases
    assert any("app 'demo-report'" in b for b in safe["waited_for"]), safe["waited_for"]  # type: ignore[attr-defined]
    assert safe["backfilled_rows"] == 20000
    assert "waiting for pid" in result.stderr and "backfill done: 20000" in result.stderr

    # The clients: nobody stalls behind zdmproxy; as written, they queue behind the ALTER for as
    # long as the report's transaction lasts (about 2 s). Bounds far apart: no timing flake.
    safe_max = safe["latency"]["max_ms"]  # type: ignore[index]
    naive_max = naive["latency"]["max_ms"]  # type: ignore[index]
    assert naive_max >= 1000, naive
    assert safe_max < 1000 and safe_max < naive_max / 2, (safe, naive)

    # What the migration left is what the statement as written leaves (and the demo says so).
    assert report["outcome"] == {"token_not_null": True, "token_nulls": 0, "index_valid": True}
    conn = await asyncpg.connect(dsn)
    try:
        columns = await conn.fetch(
            "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'demo_accounts'::regclass"
            " AND attname IN ('signup_token', 'referral_token') ORDER BY attname"
        )
        invalid = await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        state = await conn.fetchval("SELECT state FROM zdmproxy.migrations WHERE id = $1", safe["id"])
    finally:
        await conn.close()
    assert [(r["attname"], r["attnotnull"]) for r in columns] == [
        ("referral_token", True),
        ("signup_token", True),
    ]
    assert invalid == 0 and state == "succeeded"


async def test_demo_refuses_a_database_that_has_its_table(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE demo_accounts (id int)")
    finally:
        await conn.close()
    result = await zdmproxy("demo", "--dsn", dsn, "--rows", "1000", timeout=60)
    assert result.code == 2 and "demo_accounts already exists" in result.stderr


async def test_demo_bad_options_are_usage_errors() -> None:
    result = await zdmproxy("demo", "--rows", "5", timeout=60)
    assert result.code == 2 and "--rows 5" in result.stderr


def _ours() -> set[str]:
    """The demo's temporary directories: the embedded server's, the daemon socket's."""
    temp = Path(tempfile.gettempdir())
    return {p.name for pattern in ("zdmproxy-embedded-*", "zdmproxy-demo-*") for p in temp.glob(pattern)}


async def test_demo_on_the_embedded_server_ends_by_itself_and_cleans_up() -> None:
    before = _ours()
    result = await zdmproxy("demo", "--rows", "5000", "--hold-s", "1", "--json", timeout=110)
    report = _report(result)
    assert report["outcome"] == {"token_not_null": True, "token_nulls": 0, "index_valid": True}
    assert _ours() <= before, f"left behind: {_ours() - before}"  # the server's data, the socket
    assert json.dumps(report)  # a plain JSON document on stdout, nothing else there
