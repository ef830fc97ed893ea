"""The ops commands on top of the daemon: ``apply`` through a configured daemon (ZDM_DAEMON_URL),
``pause|cancel|resume|throttle`` through it or straight into the journal (--dsn)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import asyncpg
from daemon_helpers import serve
from helpers import run_cli, zdmproxy


async def test_apply_goes_through_a_configured_daemon(dsn: str, tmp_path: Path) -> None:
    served = await serve(tmp_path, "--dsn", dsn)
    os.environ["ZDM_DAEMON_URL"] = served.url
    try:
        done = await run_cli(
            "apply", "--id", "via-daemon", "--json", sql="CREATE TABLE t (id int);", tmp_path=tmp_path
        )
        assert done.code == 0, done.stderr
        assert "through the daemon" in done.stderr
        assert json.loads(done.stdout)["state"] == "succeeded"
        failed = await run_cli(
            "apply", "--id", "broken", sql="ALTER TABLE nope ADD x int;", tmp_path=tmp_path
        )
        assert failed.code == 1 and "step_failed" in failed.stderr
        paused = await zdmproxy("pause", "via-daemon")
        assert paused.code == 3 and "not_running" in paused.stderr  # it has finished
        folder = tmp_path / "migrations"
        folder.mkdir()
        (folder / "V1__users.sql").write_text("CREATE TABLE users (id int PRIMARY KEY);")
        (folder / "V2__email.sql").write_text("ALTER TABLE users ADD COLUMN email text;")
        applied = await zdmproxy("apply", str(folder))
        assert applied.code == 0, applied.stderr
    finally:
        del os.environ["ZDM_DAEMON_URL"]
        assert await served.stop() == 0
    conn = await asyncpg.connect(dsn)
    try:
        who = await conn.fetchval("SELECT application_name FROM zdmproxy.migrations WHERE id = 'via-daemon'")
        assert who == "zdmproxy serve"  # the daemon ran it, not the command
        versions = await conn.fetch(
            "SELECT id, version, source FROM zdmproxy.migrations WHERE version IS NOT NULL ORDER BY version"
        )
        assert [tuple(r) for r in versions] == [
            ("V1__users", "1", "V1__users.sql"),
            ("V2__email", "2", "V2__email.sql"),
        ]
    finally:
        await conn.close()


async def test_control_commands_write_the_journal_without_a_daemon(dsn: str, tmp_path: Path) -> None:
    done = await run_cli(
        "apply", "--dsn", dsn, "--id", "m1", sql="CREATE TABLE t (id int);", tmp_path=tmp_path
    )
    assert done.code == 0, done.stderr
    knobs = await zdmproxy("throttle", "m1", "--dsn", dsn, "--backfill-sleep-ms", "25", "--json")
    assert knobs.code == 0, knobs.stderr
    assert json.loads(knobs.stdout)["throttle"] == {"backfill_sleep_ms": 25.0}
    bad = await zdmproxy("throttle", "m1", "--dsn", dsn, "--backfill-batch-rows", "0")
    assert bad.code != 0 and "backfill_batch_rows" in bad.stderr
    cancelled = await zdmproxy("cancel", "m1", "--dsn", dsn)
    assert cancelled.code != 0 and "succeeded" in cancelled.stderr
    missing = await zdmproxy("pause", "nope", "--dsn", dsn)
    assert missing.code != 0 and "not_found" in missing.stderr
