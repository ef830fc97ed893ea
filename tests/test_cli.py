"""The command line end to end: the plan contract, and the exit codes scripts rely on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
from helpers import ITEMS, run_cli, write_sql

FK_SCRIPT = """
ALTER TABLE orders ADD CONSTRAINT orders_buyer_fk FOREIGN KEY (buyer_id) REFERENCES items (id) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_item_fk;
ALTER TABLE items ALTER COLUMN a TYPE bigint;
ALTER TABLE orders VALIDATE CONSTRAINT orders_buyer_fk;
"""
ORDERS = """
CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, buyer_id bigint);
ALTER TABLE orders ADD CONSTRAINT orders_item_fk FOREIGN KEY (item_id) REFERENCES items (id) NOT VALID;
CREATE VIEW item_totals AS SELECT a, count(*) FROM items GROUP BY a;
"""


async def test_plan_json_with_dsn_resolves_schemas_and_constraints(dsn: str, tmp_path: Path) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(ITEMS)
        await admin.execute(ORDERS)
        version = await admin.fetchval("SELECT current_setting('server_version_num')::int")
    finally:
        await admin.close()
    result = await run_cli("plan", "--json", "--dsn", dsn, sql=FK_SCRIPT, tmp_path=tmp_path)
    assert result.code == 6, result.stderr  # the type change rewrites items under AccessExclusiveLock
    plan = json.loads(result.stdout)
    assert plan["server_version_num"] == version and plan["from_catalog"] is True
    add_fk, validate, retype, validate_new = plan["statements"]
    assert sorted(add_fk["locks"], key=lambda lock: lock["relation"]) == [
        {"relation": "public.items", "mode": "ShareRowExclusiveLock"},
        {"relation": "public.orders", "mode": "ShareRowExclusiveLock"},
    ]
    assert add_fk["position"] == FK_SCRIPT.index("ALTER") and add_fk["rewrites"] == []
    step = add_fk["steps"][0]
    assert set(step) >= {"sql", "phase", "transactional", "locks", "rewrites_table", "scans_table", "reason"}
    assert step["phase"] == "single" and step["transactional"] is True and step["scans_table"] is False
    # Only the catalog knows the constraint is a foreign key on items; the statement text does not.
    assert {"relation": "public.items", "mode": "RowShareLock"} in validate["locks"]
    assert retype["rewrites"] == ["public.items"] and retype["steps"][0]["rewrites_table"] is True
    # The catalog knows who depends on the column and how big the table is.
    assert any("used by view public.item_totals" in note for note in retype["notes"])
    (size,) = retype["sizes"]
    assert size["relation"] == "public.items" and size["rows_estimate"] == 10000
    assert size["total_bytes"] > 0 and "~10.0k rows" in retype["steps"][0]["reason"]
    # A foreign key added earlier in the same script is known to the statements after it.
    assert {"relation": "public.items", "mode": "RowShareLock"} in validate_new["locks"]


async def test_plan_without_database_states_its_assumptions(tmp_path: Path) -> None:
    result = await run_cli("plan", "--json", sql=FK_SCRIPT, tmp_path=tmp_path)
    assert result.code == 6, result.stderr
    plan = json.loads(result.stdout)
    assert plan["from_catalog"] is False
    validate = plan["statements"][1]
    assert validate["locks"] == [{"relation": "orders", "mode": "ShareUpdateExclusiveLock"}]
    assert any("foreign key" in note for note in validate["notes"])


async def test_destructive_statement_needs_explicit_permission(dsn: str, tmp_path: Path) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(ITEMS)
        refused = await run_cli(
            "apply", "--dsn", dsn, "--id", "drop", sql="DROP TABLE items", tmp_path=tmp_path
        )
        assert refused.code == 1 and "--allow-destructive" in refused.stderr
        assert await admin.fetchval("SELECT count(*) FROM items") == 10000  # nothing lost
        allowed = await run_cli(
            "apply",
            "--dsn",
            dsn,
            "--id",
            "drop",
            "--allow-destructive",
            sql="DROP TABLE items",
            tmp_path=tmp_path,
        )
        assert allowed.code == 0, allowed.stderr
        assert await admin.fetchval("SELECT to_regclass('items')") is None
    finally:
        await admin.close()


async def test_unreachable_database_exits_69(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    result = await run_cli("apply", "--dsn", dsn, "--id", "x", sql="SELECT 1", tmp_path=tmp_path)
    assert result.code == 69, result.stderr
    assert "cannot reach the database" in result.stderr


async def test_bad_configuration_exits_78(tmp_path: Path) -> None:
    os.environ["ZDM_LOCK_TIMEOUT_MS"] = "soon"
    try:
        result = await run_cli("apply", "--id", "x", sql="SELECT 1", tmp_path=tmp_path)
    finally:
        del os.environ["ZDM_LOCK_TIMEOUT_MS"]
    assert result.code == 78
    assert "ZDM_LOCK_TIMEOUT_MS" in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "zdmproxy", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    no_id = cli("apply", str(write_sql(tmp_path, "SELECT 1")))
    assert no_id.returncode == 2 and "--id" in no_id.stderr
    missing = cli("plan", str(tmp_path / "nope.sql"))
    assert missing.returncode == 2 and "nope.sql: no such file" in missing.stderr
