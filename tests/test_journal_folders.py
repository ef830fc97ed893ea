"""``zdmproxy apply DIR`` end to end, as a deploy job runs it, on PostgreSQL 15 and 18.

What a file did is never taken from zdmproxy's word: an event trigger logs every DDL command a
step session (application_name ``zdmproxy:<id>:step<n>``) completes, and every file inserts a row
naming itself into a table of the test's own; both are counted after the run.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from helpers import ITEMS, QUEUE_ANYWAY, CliResult, finish, idle_blocker

from zdmproxy.journal.steps import checksum
from zdmproxy.sql.parse import parse_script

# Installed before zdmproxy runs; lives outside the schemas the migrations touch.
WITNESS = """
CREATE SCHEMA testlog;
CREATE TABLE testlog.ddl (id bigserial PRIMARY KEY, app text NOT NULL, tag text NOT NULL);
CREATE TABLE testlog.applied (id bigserial PRIMARY KEY, file text NOT NULL);
CREATE FUNCTION testlog.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') LIKE 'zdmproxy:%' THEN
        INSERT INTO testlog.ddl (app, tag) VALUES (current_setting('application_name'), tg_tag);
    END IF;
END $$;
-- At the end: a start trigger's INSERT would give DROP INDEX CONCURRENTLY's transaction an xid
-- ("must be first action in transaction"); and a failed transactional command logs nothing.
CREATE EVENT TRIGGER zdm_test_log_ddl ON ddl_command_end EXECUTE FUNCTION testlog.log_ddl();
"""


def applied(name: str) -> str:
    """The statement a file runs to say it ran (counted, never trusted)."""
    return f"INSERT INTO testlog.applied (file) VALUES ('{name}');\n"


@dataclass
class Witness:
    conn: asyncpg.Connection

    async def ddl(self) -> list[tuple[str, str]]:
        """(migration id, command tag) of every DDL command a step session completed, in order."""
        rows = await self.conn.fetch("SELECT app, tag FROM testlog.ddl ORDER BY id")
        return [(r["app"].split(":")[1], r["tag"]) for r in rows]

    async def files(self) -> list[str]:
        return [r["file"] for r in await self.conn.fetch("SELECT file FROM testlog.applied ORDER BY id")]

    async def journal_exists(self) -> bool:
        return bool(await self.conn.fetchval("SELECT to_regnamespace('zdmproxy') IS NOT NULL"))

    async def public_relations(self) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1"
        )
        return [r["relname"] for r in rows]


@pytest.fixture
async def witness(dsn: str) -> AsyncIterator[Witness]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(WITNESS)
        yield Witness(conn)
    finally:
        await conn.close()


def env_without_database(**extra: str) -> dict[str, str]:
    """The environment of a deploy job, minus anything that would name a database or config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZDM_", "PG")) and k != "COLUMNS"}
    env.update(extra)
    return env


async def zdm(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> CliResult:
    """``python -m zdmproxy ARGS`` in ``cwd`` (never this repository: no zdmproxy.toml there)."""
    proc = await start(*args, cwd=cwd, env=env)
    try:
        return await finish(proc, timeout)
    finally:
        await reap(proc)


async def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zdmproxy",
        *args,
        cwd=cwd,
        env=env if env is not None else env_without_database(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def write_folder(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


def sha(path: Path) -> str:
    return checksum(parse_script(path.read_text()))


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    path = tmp_path / "cwd"
    path.mkdir()
    return path


# --- a folder applied in version order, each file once ------------------------------------

ORDERED = {
    # Written so that text order (V1, V10, V1.5, V2, V9) would fail: V10 needs V9's table.
    "V1__accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL);\n"
    + applied("V1"),
    "V1.5__seed.sql": "INSERT INTO accounts SELECT g, 'user' || g || '@example.com' "
    "FROM generate_series(1, 100) g;\n" + applied("V1.5"),
    "V2__email_index.sql": "CREATE INDEX CONCURRENTLY accounts_email_idx ON accounts (email);\n"
    + applied("V2"),
    "V9__plans.sql": "CREATE TABLE plans (name text PRIMARY KEY);\nINSERT INTO plans VALUES ('free');\n"
    + applied("V9"),
    "V10__account_plan.sql": "ALTER TABLE accounts ADD COLUMN plan text REFERENCES plans (name);\n"
    + applied("V10"),
    "README.md": "not a migration",
}
ORDERED_IDS = [
    ("V1__accounts", "1"),
    ("V1.5__seed", "1.5"),
    ("V2__email_index", "2"),
    ("V9__plans", "9"),
    ("V10__account_plan", "10"),
]
ORDERED_DDL = [
    ("V1__accounts", "CREATE TABLE"),
    ("V2__email_index", "CREATE INDEX"),
    ("V9__plans", "CREATE TABLE"),
    ("V10__account_plan", "ALTER TABLE"),
]


async def test_apply_dir_runs_files_in_version_order_each_exactly_once(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    folder = write_folder(tmp_path / "migrations", ORDERED)
    first = await zdm("apply", str(folder), "--dsn", dsn, "--json", cwd=cwd)
    assert first.code == 0, first.stderr
    assert await witness.files() == ["V1", "V1.5", "V2", "V9", "V10"]
    assert await witness.ddl() == ORDERED_DDL
    report: list[dict[str, Any]] = first.json()["migrations"]  # type: ignore[assignment]
    assert [(m["id"], m["result"]) for m in report] == [(i, "applied") for i, _ in ORDERED_IDS]
    assert await witness.conn.fetchval("SELECT count(*) FROM accounts") == 100
    assert await witness.conn.fetchval(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'accounts_email_idx'::regclass"
    )

    for _ in range(2):  # run again, twice: nothing executes
        again = await zdm("apply", str(folder), "--dsn", dsn, "--json", cwd=cwd)
        assert again.code == 0, again.stderr
        report = again.json()["migrations"]  # type: ignore[assignment]
        assert [(m["id"], m["result"], m["steps"]) for m in report] == [
            (migration_id, "already_applied", []) for migration_id, _ in ORDERED_IDS
        ]
        assert "nothing ran here" in again.stderr
        assert await witness.files() == ["V1", "V1.5", "V2", "V9", "V10"]
        assert await witness.ddl() == ORDERED_DDL
        assert await witness.conn.fetchval("SELECT count(*) FROM accounts") == 100

    journal = await witness.conn.fetch(
        "SELECT id, version, source, state, runs FROM zdmproxy.migrations ORDER BY created_at"
    )
    assert [tuple(r) for r in journal] == [(i, v, f"{i}.sql", "succeeded", 1) for i, v in ORDERED_IDS]


# --- status and history --------------------------------------------------------------------

FAILING = {
    "V1__items.sql": "CREATE TABLE items (id int PRIMARY KEY);\n" + applied("V1"),
    # Step 1 commits, step 2 breaks the primary key: the file stops half-way.
    "V2__seed.sql": "INSERT INTO items VALUES (1);\nINSERT INTO items VALUES (1);\n" + applied("V2"),
    "V3__later.sql": "CREATE TABLE later (id int);\n" + applied("V3"),
}


async def test_status_and_history_show_pending_applied_and_failed_with_errors_and_attempts(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    folder = write_folder(tmp_path / "migrations", FAILING)
    failed = await zdm("apply", str(folder), "--dsn", dsn, "--json", cwd=cwd)
    assert failed.code == 1, failed.stderr
    assert "duplicate key" in failed.stderr and "V2__seed" in failed.stderr
    report = failed.json()  # one document: what ran, and the error
    assert report["error"]["code"] == "step_failed" and report["error"]["sqlstate"] == "23505"  # type: ignore[index]
    ran = [(m["id"], m["succeeded"], len(m["steps"])) for m in report["migrations"]]  # type: ignore[attr-defined]
    assert ran == [("V1__items", True, 2), ("V2__seed", False, 2)]
    assert await witness.files() == ["V1"]

    # A pending file that does not parse yet is still listed: status only checksums recorded files.
    (folder / "V4__draft.sql").write_text("CREATE TABLE (;\n")
    by_folder = await zdm("status", str(folder), "--dsn", dsn, "--json", cwd=cwd)
    assert by_folder.code == 0, by_folder.stderr
    assert by_folder.json() == {
        "folder": str(folder),
        "migrations": [
            {
                "file": "V1__items.sql",
                "id": "V1__items",
                "version": "1",
                "state": "succeeded",
                "file_changed": False,
            },
            {
                "file": "V2__seed.sql",
                "id": "V2__seed",
                "version": "2",
                "state": "failed",
                "file_changed": False,
            },
            {
                "file": "V3__later.sql",
                "id": "V3__later",
                "version": "3",
                "state": "pending",
                "file_changed": False,
            },
            {
                "file": "V4__draft.sql",
                "id": "V4__draft",
                "version": "4",
                "state": "pending",
                "file_changed": False,
            },
        ],
    }
    (folder / "V4__draft.sql").unlink()
    table = await zdm("status", str(folder), "--dsn", dsn, cwd=cwd)
    assert table.code == 0, table.stderr
    lines = {line.split()[1]: line.split()[2] for line in table.stdout.splitlines()[1:] if line.strip()}
    assert lines == {"V1__items.sql": "succeeded", "V2__seed.sql": "failed", "V3__later.sql": "pending"}

    one = await zdm("status", "V2__seed", "--dsn", dsn, "--json", cwd=cwd)
    assert one.code == 0, one.stderr
    detail: dict[str, Any] = one.json()
    migration = detail["migration"]
    assert migration["state"] == "failed" and migration["runs"] == 1
    assert migration["source"] == "V2__seed.sql" and migration["version"] == "2"
    assert "duplicate key" in migration["error"]["message"] and migration["error"]["exit_code"] == 1
    assert [(s["index"], s["state"]) for s in detail["steps"]] == [
        (0, "succeeded"),
        (1, "failed"),
        (2, "pending"),
    ]
    assert detail["steps"][1]["error"]["sqlstate"] == "23505"
    assert [(a["step_index"], a["outcome"], a["sqlstate"]) for a in detail["attempts"]] == [
        (0, "succeeded", None),
        (1, "failed", "23505"),
    ]
    shown = await zdm("status", "V2__seed", "--dsn", dsn, cwd=cwd)
    assert shown.code == 0, shown.stderr
    assert "V2__seed: failed, run 1 time(s)" in shown.stdout
    assert "step 2 failed" in shown.stdout and "duplicate key" in shown.stdout

    history = await zdm("history", "--dsn", dsn, "--json", cwd=cwd)
    assert history.code == 0, history.stderr
    rows: list[dict[str, Any]] = history.json()["migrations"]  # type: ignore[assignment]
    summary = {r["id"]: (r["state"], r["steps_done"], r["steps"], r["attempts"]) for r in rows}
    assert summary == {"V1__items": ("succeeded", 2, 2, 2), "V2__seed": ("failed", 1, 3, 2)}
    (v2,) = [r for r in rows if r["id"] == "V2__seed"]
    assert "duplicate key" in v2["error"]["message"]
    (v1,) = [r for r in rows if r["id"] == "V1__items"]
    assert v1["duration_s"] is not None and v1["duration_s"] >= 0 and v1["finished_at"] is not None
    listed = await zdm("history", "--dsn", dsn, cwd=cwd)
    assert listed.code == 0, listed.stderr
    assert "V1__items" in listed.stdout and "succeeded" in listed.stdout and "2/2" in listed.stdout
    assert "V2__seed" in listed.stdout and "failed" in listed.stdout and "1/3" in listed.stdout
    assert "duplicate key" in listed.stdout
    unfinished = await zdm("status", "--dsn", dsn, "--json", cwd=cwd)
    assert unfinished.code == 0, unfinished.stderr
    assert [r["id"] for r in unfinished.json()["migrations"]] == ["V2__seed"]  # type: ignore[attr-defined]

    # The failed file may be corrected: it resumes at its failed step, and the rest follow.
    (folder / "V2__seed.sql").write_text(
        "INSERT INTO items VALUES (1);\nINSERT INTO items VALUES (2);\n" + applied("V2")
    )
    fixed = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert fixed.code == 0, fixed.stderr
    assert await witness.files() == ["V1", "V2", "V3"]
    assert [r["id"] for r in await witness.conn.fetch("SELECT id FROM items ORDER BY id")] == [1, 2]
    assert await witness.ddl() == [("V1__items", "CREATE TABLE"), ("V3__later", "CREATE TABLE")]
    after = (await zdm("status", "V2__seed", "--dsn", dsn, "--json", cwd=cwd)).json()
    assert after["migration"]["state"] == "succeeded" and after["migration"]["runs"] == 2  # type: ignore[index]
    assert after["migration"]["error"] is None  # type: ignore[index]
    assert [s["state"] for s in after["steps"]] == ["succeeded"] * 3  # type: ignore[attr-defined]
    attempts = [(a["step_index"], a["run"], a["outcome"]) for a in after["attempts"]]  # type: ignore[attr-defined]
    # Run 2 started at the failed step, and the record of run 1's failure is kept.
    assert attempts == [(0, 1, "succeeded"), (1, 1, "failed"), (1, 2, "succeeded"), (2, 2, "succeeded")]
    done = await zdm("status", str(folder), "--dsn", dsn, "--json", cwd=cwd)
    states = [m["state"] for m in done.json()["migrations"]]  # type: ignore[attr-defined]
    assert states == ["succeeded"] * 3
    nothing = await zdm("status", "--dsn", dsn, cwd=cwd)
    assert nothing.code == 0 and "nothing unfinished" in nothing.stderr


async def test_status_of_a_database_without_a_journal_creates_none_and_lists_nothing_applied(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    # No journal is an empty journal: what a first deploy's pre-check sees. It is said, not an
    # error, and --json keeps the shape a script reads every other time.
    folder = write_folder(
        tmp_path / "migrations", {"V1__one.sql": "SELECT 1;\n", "V2__two.sql": "SELECT 2;\n"}
    )
    for args in (("status",), ("history",), ("status", str(folder))):
        result = await zdm(*args, "--dsn", dsn, cwd=cwd)
        assert result.code == 0 and "no journal" in result.stderr and "applied nothing" in result.stderr, (
            result
        )
    assert (await zdm("history", "--dsn", dsn, "--json", cwd=cwd)).json() == {"migrations": []}
    assert (await zdm("status", "--dsn", dsn, "--json", cwd=cwd)).json() == {"migrations": []}
    pending = await zdm("status", str(folder), "--dsn", dsn, "--json", cwd=cwd)
    assert pending.code == 0, pending.stderr
    assert pending.json() == {
        "folder": str(folder),
        "migrations": [
            {
                "file": "V1__one.sql",
                "id": "V1__one",
                "version": "1",
                "state": "pending",
                "file_changed": False,
            },
            {
                "file": "V2__two.sql",
                "id": "V2__two",
                "version": "2",
                "state": "pending",
                "file_changed": False,
            },
        ],
    }
    unknown = await zdm("status", "V1__x", "--dsn", dsn, cwd=cwd)  # an id it cannot hold: an error
    assert unknown.code == 1 and "'V1__x'" in unknown.stderr and "no journal" in unknown.stderr, unknown
    assert not await witness.journal_exists()
    await witness.conn.execute("CREATE SCHEMA zdmproxy")  # made by an administrator, still empty
    missing = await zdm("history", "--dsn", dsn, cwd=cwd)
    assert missing.code == 0 and "no journal" in missing.stderr
    assert (
        await witness.conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'zdmproxy'::regnamespace"
        )
        == 0
    )


async def test_status_shows_a_running_migration_and_what_blocked_its_attempts(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    await witness.conn.execute(ITEMS)
    folder = write_folder(
        tmp_path / "migrations", {"V1__note.sql": "ALTER TABLE items ADD COLUMN note text;\n"}
    )
    # Pre-flight told to ignore the blocker and the watchdog to stay quiet: attempts really queue
    # behind it, time out, and are recorded with it.
    queue_anyway = {f"ZDM_{k.upper()}": str(v) for k, v in QUEUE_ANYWAY.items()}
    blocker = await idle_blocker(dsn, "items")
    proc = await start(
        "apply",
        str(folder),
        "--dsn",
        dsn,
        "--lock-timeout-ms",
        "100",
        cwd=cwd,
        env=env_without_database(**queue_anyway),
    )
    try:
        async with asyncio.timeout(30):
            while not await witness.journal_exists() or not await witness.conn.fetchval(
                "SELECT EXISTS (SELECT FROM zdmproxy.attempts WHERE outcome <> 'succeeded')"
            ):
                await asyncio.sleep(0.01)
        running = await zdm("status", "V1__note", "--dsn", dsn, cwd=cwd)
        assert running.code == 0 and "V1__note: running, by pid" in running.stdout, running
        await blocker.close()
        done = await finish(proc, 30)
    finally:
        await reap(proc)
        await blocker.close()
    assert done.code == 0, done.stderr
    assert (await witness.ddl()) == [("V1__note", "ALTER TABLE")]

    detail: dict[str, Any] = (await zdm("status", "V1__note", "--dsn", dsn, "--json", cwd=cwd)).json()
    assert detail["migration"]["state"] == "succeeded" and detail["migration"]["duration_s"] > 0
    *failed, last = detail["attempts"]
    assert failed and last["outcome"] == "succeeded"
    assert all(a["outcome"] == "lock_timeout" and a["sqlstate"] == "55P03" for a in failed), failed
    assert all(a["lock_timeout_ms"] >= 100 for a in detail["attempts"])
    seen = {b["application_name"] for a in failed for b in a["blockers"]}
    assert seen == {"reporting"}, failed
    shown = await zdm("status", "V1__note", "--dsn", dsn, cwd=cwd)
    assert shown.code == 0, shown.stderr
    assert "V1__note: succeeded" in shown.stdout
    assert "step 1 was blocked by" in shown.stdout and "'reporting'" in shown.stdout
    listed: list[dict[str, Any]] = (await zdm("history", "--dsn", dsn, "--json", cwd=cwd)).json()[
        "migrations"
    ]  # type: ignore[assignment]
    assert [(m["id"], m["attempts"], m["steps_done"]) for m in listed] == [
        ("V1__note", len(detail["attempts"]), 1)
    ]


async def test_history_in_a_log_80_columns_wide_shows_states_and_times_in_full(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    folder = write_folder(tmp_path / "migrations", {"V1__items.sql": FAILING["V1__items.sql"]})
    assert (await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)).code == 0
    listed = await zdm("history", "--dsn", dsn, cwd=cwd, env=env_without_database(COLUMNS="80"))
    assert listed.code == 0, listed.stderr
    assert "…" not in listed.stdout, listed.stdout
    assert "succeeded" in listed.stdout, listed.stdout


# --- refusals before anything runs (issue 9, test 5) ----------------------------------------


async def test_changed_renamed_and_out_of_order_files_are_refused_until_allowed(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    v1 = "CREATE TABLE one (id int);\n" + applied("V1")
    v3 = "CREATE TABLE three (id int);\n" + applied("V3")
    folder = write_folder(tmp_path / "migrations", {"V1__one.sql": v1, "V3__three.sql": v3})
    assert (await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)).code == 0
    before = (await witness.ddl(), await witness.files())
    assert before == ([("V1__one", "CREATE TABLE"), ("V3__three", "CREATE TABLE")], ["V1", "V3"])

    # An applied file changed: exit 3, the file and both checksums named, nothing runs.
    changed = folder / "V1__one.sql"
    changed.write_text(v1 + "CREATE TABLE one_more (id int);\n")
    write_folder(folder, {"V4__four.sql": "CREATE TABLE four (id int);\n" + applied("V4")})
    refused = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert refused.code == 3, refused.stderr
    recorded = await witness.conn.fetchval("SELECT checksum FROM zdmproxy.migrations WHERE id = 'V1__one'")
    assert recorded == checksum(parse_script(v1)) != sha(changed)
    message = " ".join(refused.stderr.split())
    assert "checksum_conflict" in message and str(changed) in message
    assert f"recorded sha256 {recorded}" in message and f"file sha256 {sha(changed)}" in message
    assert (await witness.ddl(), await witness.files()) == before  # not even V4 ran
    status = (await zdm("status", str(folder), "--dsn", dsn, "--json", cwd=cwd)).json()
    assert [(m["id"], m["state"], m["file_changed"]) for m in status["migrations"]] == [  # type: ignore[attr-defined]
        ("V1__one", "succeeded", True),
        ("V3__three", "succeeded", False),
        ("V4__four", "pending", False),
    ]
    table = await zdm("status", str(folder), "--dsn", dsn, cwd=cwd)
    assert "succeeded (file changed since)" in table.stdout, table.stdout
    changed.write_text(v1)

    # A new file older than the newest applied one: exit 3 with the way to say it is intended.
    late = folder / "V2__two.sql"
    late.write_text("CREATE TABLE two (id int);\n" + applied("V2"))
    refused = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert refused.code == 3, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "out_of_order" in message and str(late) in message and "--out-of-order" in message
    assert (await witness.ddl(), await witness.files()) == before
    assert await witness.conn.fetchval("SELECT to_regclass('two')") is None

    allowed = await zdm("apply", str(folder), "--dsn", dsn, "--out-of-order", cwd=cwd)
    assert allowed.code == 0, allowed.stderr
    assert await witness.files() == ["V1", "V3", "V2", "V4"]  # V1 and V3 did not run again
    assert (await witness.ddl())[2:] == [("V2__two", "CREATE TABLE"), ("V4__four", "CREATE TABLE")]
    again = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)  # applied now: in order
    assert again.code == 0, again.stderr
    assert await witness.files() == ["V1", "V3", "V2", "V4"]

    # A renamed file: its version is recorded under the old name.
    (folder / "V3__three.sql").rename(folder / "V3__drei.sql")
    refused = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert refused.code == 3, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "V3__drei.sql" in message and "'V3__three'" in message and "renamed" in message
    assert await witness.files() == ["V1", "V3", "V2", "V4"]
    (folder / "V3__drei.sql").rename(folder / "V3__three.sql")

    # An older release's folder (a rolled-back deploy): V4 is newer than its newest file, as in
    # Flyway's "future" migrations: left as it is, said, and nothing runs.
    four = (folder / "V4__four.sql").read_text()
    (folder / "V4__four.sql").unlink()
    older = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert older.code == 0, older.stderr
    message = " ".join(older.stderr.split())
    assert "1 applied migration(s) newer than this folder's newest file" in message and "V4__four" in message
    assert await witness.files() == ["V1", "V3", "V2", "V4"]
    (folder / "V4__four.sql").write_text(four)

    # An applied file removed from the middle: the folder is the history, unless told it was on purpose.
    (folder / "V2__two.sql").unlink()
    refused = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert refused.code == 3, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "'V2__two'" in message and "--ignore-missing" in message and "V4__four" not in message
    allowed = await zdm("apply", str(folder), "--dsn", dsn, "--ignore-missing", cwd=cwd)
    assert allowed.code == 0, allowed.stderr
    status = (await zdm("status", str(folder), "--dsn", dsn, "--json", cwd=cwd)).json()
    assert [(m["id"], m["state"], m["file"]) for m in status["migrations"]] == [  # type: ignore[attr-defined]
        ("V1__one", "succeeded", "V1__one.sql"),
        ("V3__three", "succeeded", "V3__three.sql"),
        ("V4__four", "succeeded", "V4__four.sql"),
        ("V2__two", "succeeded", None),
    ]
    table = await zdm("status", str(folder), "--dsn", dsn, cwd=cwd)
    assert "succeeded (no file)" in table.stdout, table.stdout
    assert await witness.files() == ["V1", "V3", "V2", "V4"]


async def test_a_folder_may_run_the_same_sql_twice(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    index = "CREATE INDEX CONCURRENTLY accounts_email_idx ON accounts (email);\n"
    folder = write_folder(
        tmp_path / "migrations",
        {
            "V1__accounts.sql": "CREATE TABLE accounts (id int PRIMARY KEY, email text);\n",
            "V2__email_index.sql": index,
            "V3__drop_email_index.sql": "DROP INDEX CONCURRENTLY accounts_email_idx;\n",
            # Comments do not count in the checksum: the same statement is the same SQL.
            "V4__email_index_again.sql": "-- it is back: the lookups need it after all\n" + index,
        },
    )
    result = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert result.code == 0, result.stderr
    assert ("V4__email_index_again", "CREATE INDEX") in await witness.ddl()


@pytest.mark.parametrize(
    ("files", "code", "named"),
    [
        pytest.param({"V2__fine.sql": "SELECT 1", "V3-bad.sql": "SELECT 1"}, 2, "V3-bad.sql", id="bad-name"),
        pytest.param({"V2__a.sql": "SELECT 1", "V2__b.sql": "SELECT 1"}, 2, "same version", id="duplicate"),
        pytest.param({"V2__a.sql": "SELECT 1", "V3__b.sql": "CREATE TABLE (;"}, 1, "syntax", id="syntax"),
        pytest.param({"V2__a.sql": "SELECT 1", "V3__b.sql": b"SELECT '\xe9'"}, 2, "UTF-8", id="not-utf8"),
    ],
)
async def test_a_bad_folder_is_refused_before_anything_runs(
    dsn: str,
    witness: Witness,
    tmp_path: Path,
    cwd: Path,
    files: dict[str, str | bytes],
    code: int,
    named: str,
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "V1__first.sql").write_text("CREATE TABLE first (id int);\n" + applied("V1"))
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    refused = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert refused.code == code, refused.stderr
    assert named in " ".join(refused.stderr.split())
    if code == 2 and named.endswith(".sql"):
        assert "V<version>__<description>.sql" in refused.stderr
    # Nothing ran, not even the first, well-formed file; and no journal was created.
    assert not await witness.journal_exists()
    assert await witness.public_relations() == []
    assert await witness.files() == [] and await witness.ddl() == []


# --- folders as other tools' users have them ---------------------------------------------------


async def test_a_node_pg_migrate_folder_runs_each_files_up_section_only(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    # node-pg-migrate's SQL files hold both directions; run whole, each would undo itself (the
    # DROP INDEX is not even destructive: nothing would refuse it) and exit 0.
    files = {
        "1700000000000_create-items.sql": "-- Up Migration\n"
        + "CREATE TABLE items (id int PRIMARY KEY, sku text);\n"
        + applied("items")
        + "\n-- Down Migration\nDROP TABLE items;\n",
        "1700000000001_items-sku-index.sql": "-- Up Migration\nCREATE INDEX items_sku_idx ON items (sku);\n"
        + applied("index")
        + "-- Down Migration\nDROP INDEX items_sku_idx;\nDELETE FROM testlog.applied;\n",
        # dbmate's markers, the same way
        "20241130120000_add-note.sql": "-- migrate:up\nALTER TABLE items ADD COLUMN note text;\n"
        + applied("note")
        + "\n-- migrate:down\nALTER TABLE items DROP COLUMN note;\n",
    }
    folder = write_folder(tmp_path / "migrations", files)
    result = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert result.code == 0, result.stderr
    assert await witness.files() == ["items", "index", "note"]
    assert await witness.conn.fetchval(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_sku_idx'::regclass"
    )
    assert (
        await witness.conn.fetchval(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'note'"
        )
        == 1
    )
    recorded = await witness.conn.fetchval(
        "SELECT sql FROM zdmproxy.migrations WHERE id = '1700000000001_items-sku-index'"
    )
    assert "DROP INDEX" not in recorded and "Down Migration" not in recorded
    # The down section is not the migration: changing it changes nothing applied.
    (folder / "1700000000001_items-sku-index.sql").write_text(
        files["1700000000001_items-sku-index.sql"].replace(
            "DROP INDEX items_sku_idx", "DROP INDEX IF EXISTS items_sku_idx"
        )
    )
    again = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert again.code == 0 and "already applied" in again.stderr, again.stderr
    status = (await zdm("status", str(folder), "--dsn", dsn, "--json", cwd=cwd)).json()
    assert {m["state"] for m in status["migrations"]} == {"succeeded"}  # type: ignore[attr-defined]
    assert await witness.files() == ["items", "index", "note"]


async def test_a_windows_checkout_with_a_byte_order_mark_and_crlf_is_the_same_migration(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    sql = "CREATE TABLE one (id int);\n" + applied("V1")
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "V1__one.sql").write_bytes(b"\xef\xbb\xbf" + sql.replace("\n", "\r\n").encode())
    windows = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert windows.code == 0, windows.stderr
    (folder / "V1__one.sql").write_text(sql)  # the same file checked out on Linux
    linux = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert linux.code == 0 and "already applied" in linux.stderr, linux.stderr
    single = await zdm("apply", str(folder / "V1__one.sql"), "--id", "V1__one", "--dsn", dsn, cwd=cwd)
    assert single.code == 0 and "already applied" in single.stderr, single.stderr
    assert await witness.files() == ["V1"]


async def test_a_folder_with_sub_folders_is_applied_whole_in_version_order(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    folder = tmp_path / "migrations"
    write_folder(
        folder, {"V1__accounts.sql": "CREATE TABLE accounts (id int PRIMARY KEY);\n" + applied("V1")}
    )
    write_folder(
        folder / "2024", {"V2__plans.sql": "CREATE TABLE plans (id int PRIMARY KEY);\n" + applied("V2")}
    )
    write_folder(
        folder / "2025",
        {
            "V3__account_plan.sql": "ALTER TABLE accounts ADD COLUMN plan int REFERENCES plans;\n"
            + applied("V3")
        },
    )
    result = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert result.code == 0, result.stderr
    assert await witness.files() == ["V1", "V2", "V3"]
    status = (await zdm("status", str(folder), "--dsn", dsn, "--json", cwd=cwd)).json()
    assert [(m["file"], m["state"]) for m in status["migrations"]] == [  # type: ignore[attr-defined]
        ("V1__accounts.sql", "succeeded"),
        ("2024/V2__plans.sql", "succeeded"),
        ("2025/V3__account_plan.sql", "succeeded"),
    ]
    # Moving a file to another sub-folder keeps its id: nothing runs again.
    (folder / "2024" / "V2__plans.sql").rename(folder / "2025" / "V2__plans.sql")
    moved = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert moved.code == 0, moved.stderr
    assert await witness.files() == ["V1", "V2", "V3"]


@pytest.mark.parametrize(
    ("name", "content", "named"),
    [
        pytest.param("V3__empty.sql", "-- filled in later\n", "holds no SQL statement", id="empty"),
        pytest.param("V3__zero.sql", "", "holds no SQL statement", id="zero-bytes"),
        pytest.param("V3__moved.sql", None, "broken symbolic link", id="broken-link"),
        pytest.param(
            "V2__first.sql.conf", "executeInTransaction=false\n", "per-script configuration", id="conf"
        ),
        pytest.param("R__views.sql", "CREATE VIEW v AS SELECT 1;\n", "repeatable", id="repeatable"),
        pytest.param("sub/V3__b.sql", None, "broken symbolic link", id="in-a-sub-folder"),
        pytest.param(
            "V3__c.sql",
            "CREATE TABLE c (id int);\n-- Down migration: drop c by hand\nCREATE TABLE d (id int);\n",
            "line 2 ('-- Down migration') reads as a down-section marker",
            id="down-marker-alone",
        ),
    ],
)
async def test_a_file_zdmproxy_would_have_to_skip_or_record_empty_is_refused_before_anything_runs(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path, name: str, content: str | None, named: str
) -> None:
    folder = write_folder(
        tmp_path / "migrations", {"V2__first.sql": "CREATE TABLE first (id int);\n" + applied("V2")}
    )
    path = folder / name
    path.parent.mkdir(exist_ok=True)
    if content is None:
        path.symlink_to(tmp_path / "elsewhere" / path.name)
    else:
        path.write_text(content)
    refused = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert refused.code == 2, refused.stderr
    message = " ".join(refused.stderr.split())
    assert path.name in message and named in message, message
    assert not await witness.journal_exists()
    assert await witness.public_relations() == [] and await witness.files() == []


async def test_a_mistyped_folder_is_named_as_missing_not_taken_for_a_file_or_an_id(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    missing = tmp_path / "migration"  # the deploy job's typo for migrations/
    applied_to = await zdm("apply", str(missing), "--dsn", dsn, cwd=cwd)
    assert applied_to.code == 2 and f"{missing}: no such file or folder" in applied_to.stderr, applied_to
    assert "--id" not in applied_to.stderr
    shown = await zdm("status", str(missing), "--dsn", dsn, cwd=cwd)
    assert shown.code == 2 and f"{missing}: no such folder" in shown.stderr, shown
    assert not await witness.journal_exists()


async def test_a_folder_file_whose_id_was_applied_with_apply_file_is_that_migration(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    one = "CREATE TABLE one (id int);\n" + applied("V1")
    two = "CREATE TABLE two (id int);\n" + applied("V2")
    single = write_folder(tmp_path / "single", {"two.sql": two})
    by_id = await zdm("apply", str(single / "two.sql"), "--id", "V2__two", "--dsn", dsn, cwd=cwd)
    assert by_id.code == 0, by_id.stderr
    folder = write_folder(tmp_path / "migrations", {"V1__one.sql": one, "V2__two.sql": two + "-- changed\n"})
    # The same SQL: status says applied, not pending, and apply runs only V1.
    status = (await zdm("status", str(folder), "--dsn", dsn, "--json", cwd=cwd)).json()
    assert [(m["id"], m["state"]) for m in status["migrations"]] == [  # type: ignore[attr-defined]
        ("V1__one", "pending"),
        ("V2__two", "succeeded"),
    ]
    # Other SQL under that id: refused before anything runs, not after V1 ran.
    (folder / "V2__two.sql").write_text(two.replace("two (id int)", "two (id bigint)"))
    refused = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert refused.code == 3 and "V2__two.sql" in refused.stderr, refused.stderr
    assert await witness.files() == ["V2"]
    (folder / "V2__two.sql").write_text(two)
    result = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert result.code == 0, result.stderr
    assert await witness.files() == ["V2", "V1"]


# --- a database is required (issue 9, test 6) ------------------------------------------------


async def test_apply_without_a_database_exits_78_and_says_how_to_give_one(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    folder = write_folder(tmp_path / "migrations", {"V1__one.sql": "CREATE TABLE one (id int);\n"})
    single = write_folder(tmp_path / "single", {"change.sql": "CREATE TABLE single (id int);\n"})
    assert not (cwd / "zdmproxy.toml").exists()
    env = env_without_database()
    assert not {k for k in env if k.startswith(("ZDM_", "PG"))}
    applies: list[tuple[str, ...]] = [
        ("apply", str(folder)),
        ("apply", str(single / "change.sql"), "--id", "single"),
        ("apply", str(folder), "--json"),
    ]
    for args in applies:
        result = await zdm(*args, cwd=cwd, env=env)
        assert result.code == 78, (args, result)
        message = " ".join(result.stderr.split())
        assert "bad_configuration" in message and "no database given" in message
        assert "--dsn" in message and "ZDM_DATABASE_URL" in message and "database_url" in message
        assert "--embedded" in message
    readers: list[tuple[str, ...]] = [("status",), ("history",), ("status", str(folder))]
    for args in readers:
        result = await zdm(*args, cwd=cwd, env=env)
        assert result.code == 78 and "ZDM_DATABASE_URL" in result.stderr, (args, result)
    assert not await witness.journal_exists()
    assert await witness.public_relations() == []

    # Each of the three ways to give one works (the variable, the config file, the flag).
    assert (
        await zdm("apply", str(folder), cwd=cwd, env=env_without_database(ZDM_DATABASE_URL=dsn))
    ).code == 0
    assert await witness.public_relations() == ["one"]
    (cwd / "zdmproxy.toml").write_text(f'database_url = "{dsn}"\n')
    from_file = await zdm("apply", str(folder), cwd=cwd, env=env)
    assert from_file.code == 0 and "already applied" in from_file.stderr, from_file.stderr
    (cwd / "zdmproxy.toml").unlink()
    flag = await zdm("apply", str(single / "change.sql"), "--id", "single", "--dsn", dsn, cwd=cwd, env=env)
    assert flag.code == 0, flag.stderr
    assert await witness.public_relations() == ["one", "single"]


async def test_embedded_refuses_a_database_it_would_ignore(dsn: str, tmp_path: Path, cwd: Path) -> None:
    folder = write_folder(tmp_path / "migrations", {"V1__one.sql": "CREATE TABLE one (id int);\n"})
    result = await zdm("apply", str(folder), "--embedded", "--dsn", dsn, cwd=cwd)
    assert result.code == 2 and "--embedded" in result.stderr, result


# --- three processes, one folder, one CONCURRENTLY build under write traffic (issue 9, test 4) ---

HOT = """
CREATE TABLE hot (id bigserial PRIMARY KEY, a int NOT NULL, n int NOT NULL DEFAULT 0,
                  at timestamptz NOT NULL DEFAULT clock_timestamp());
INSERT INTO hot (a) SELECT g % 1000 FROM generate_series(1, 50000) g;
ANALYZE hot;
"""
TEN = {
    "V1__customers.sql": "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);\n"
    + applied("V1"),
    "V2__seed_customers.sql": "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 1000) g;\n"
    + applied("V2"),
    "V3__orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, total int);\n"
    + applied("V3"),
    "V4__orders_fk.sql": "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) "
    "REFERENCES customers (id) NOT VALID;\n" + applied("V4"),
    "V5__hot_index.sql": "CREATE INDEX CONCURRENTLY hot_a_idx ON hot (a);\n" + applied("V5"),
    "V6__customers_email.sql": "ALTER TABLE customers ADD COLUMN email text;\n" + applied("V6"),
    "V7__validate_fk.sql": "ALTER TABLE orders VALIDATE CONSTRAINT orders_customer_fk;\n" + applied("V7"),
    "V8__seed_orders.sql": "INSERT INTO orders SELECT g, g % 1000 + 1, g FROM generate_series(1, 1000) g;\n"
    + applied("V8"),
    "V9__customers_name_idx.sql": "CREATE INDEX customers_name_idx ON customers (name);\n" + applied("V9"),
    "V10__audit.sql": "CREATE TABLE audit (id bigserial PRIMARY KEY, note text);\n" + applied("V10"),
}
TEN_DDL = Counter(
    {
        ("V1__customers", "CREATE TABLE"): 1,
        ("V3__orders", "CREATE TABLE"): 1,
        ("V4__orders_fk", "ALTER TABLE"): 1,
        ("V5__hot_index", "CREATE INDEX"): 1,
        ("V6__customers_email", "ALTER TABLE"): 1,
        ("V7__validate_fk", "ALTER TABLE"): 1,
        ("V9__customers_name_idx", "CREATE INDEX"): 1,
        ("V10__audit", "CREATE TABLE"): 1,
    }
)
UPDATE_HOT = "UPDATE hot SET n = n + 1, at = clock_timestamp() WHERE id = $1"
BOUND_S = 30  # the whole run, three processes and ten files (the bound); it takes a few seconds


@dataclass
class Writers:
    """Application traffic on ``hot`` while zdmproxy runs: autocommit UPDATEs and INSERTs."""

    dsn: str
    clients: int = 3
    writes: int = 0
    errors: list[BaseException] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Writers:
        conns = [
            await asyncpg.connect(self.dsn, server_settings={"application_name": "app"}) for _ in range(3)
        ]
        self._tasks = [asyncio.create_task(self._client(c, i)) for i, c in enumerate(conns)]
        async with asyncio.timeout(10):
            while self.writes < self.clients * 5:  # every client is writing
                await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 30)

    async def _client(self, conn: asyncpg.Connection, number: int) -> None:
        rng = random.Random(number)
        deadline = time.monotonic() + 110  # bounded even if the test forgets to stop us
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    if rng.random() < 0.5:
                        await conn.execute("INSERT INTO hot (a) VALUES ($1)", rng.randint(0, 999))
                    else:
                        await conn.execute(
                            "UPDATE hot SET n = n + 1, at = clock_timestamp() WHERE id = $1",
                            rng.randint(1, 50000),
                        )
                    self.writes += 1
                except asyncpg.PostgresError as exc:
                    self.errors.append(exc)
                await asyncio.sleep(0.002)  # pace: leave the two cores to zdmproxy
        finally:
            await conn.close()


# A zdmproxy backend waiting for a lock (a relation, a virtualxid: a CONCURRENTLY build waiting
# for old snapshots, an advisory lock) held by another zdmproxy backend, for longer than a
# journal statement takes; or blocked in an advisory lock at all (a blocked waiter holds a
# snapshot); or idle in an open transaction for long (a waiter holding a snapshot).
SUSPECT = """
SELECT w.pid, w.application_name AS app, w.state, w.wait_event_type, w.wait_event,
       extract(epoch FROM clock_timestamp() - w.state_change)::float8 AS state_s,
       extract(epoch FROM clock_timestamp() - l.waitstart)::float8 AS waited_s,
       l.locktype, l.mode,
       (SELECT array_agg(b.application_name || ' (' || b.state || ')')
          FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(w.pid))) AS blockers
  FROM pg_stat_activity w
  LEFT JOIN pg_locks l ON l.pid = w.pid AND NOT l.granted
 WHERE w.datname = current_database() AND w.application_name LIKE 'zdmproxy%'
   AND (   (w.wait_event_type = 'Lock' AND w.wait_event = 'advisory')
        OR (w.state = 'idle in transaction' AND clock_timestamp() - w.state_change > interval '2 s')
        OR (l.pid IS NOT NULL AND clock_timestamp() - l.waitstart > interval '2 s'
            AND EXISTS (SELECT FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(w.pid))
                           AND b.application_name LIKE 'zdmproxy%')))
"""


async def watch_for_snapshot_waits(
    dsn: str, seen: list[dict[str, Any]], alarm: asyncio.Event, stop: asyncio.Event
) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "test-monitor"})
    try:
        while not stop.is_set():
            rows = await conn.fetch(SUSPECT)
            if rows:
                seen.extend(dict(r) for r in rows)
                alarm.set()
            await asyncio.sleep(0.02)  # a sampling period, not a synchronisation
    finally:
        await conn.close()


@dataclass
class Running:
    """A zdmproxy process whose stderr is read line by line as it runs (to see it waiting)."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _out: bytes = b""

    async def _read(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None

        async def err() -> None:
            assert self.proc.stderr is not None
            async for line in self.proc.stderr:
                self.lines.append(line.decode())

        self._out, _ = await asyncio.gather(self.proc.stdout.read(), err())

    async def result(self, reading: asyncio.Task[None]) -> CliResult:
        await reading
        code = await self.proc.wait()
        return CliResult(code, self._out.decode(), "".join(self.lines))

    def waiting_for(self, migration_id: str) -> bool:
        return any("waiting:" in line and f"'{migration_id}'" in line for line in self.lines)


async def blocked_by(conn: asyncpg.Connection, app_prefix: str, blocker: int) -> int:
    """Poll until a session whose application_name starts with ``app_prefix`` waits for
    ``blocker``; its pid. (The step sessions of processes that lost the race for the run lock
    carry the same name for a moment; and a build waits for each writer in turn: the
    application's short transactions come and go, the slow writer's stays.)"""
    query = """
        SELECT pid FROM pg_stat_activity
         WHERE application_name LIKE $1 || '%' AND $2::int = ANY (pg_blocking_pids(pid))
    """
    while (pid := await conn.fetchval(query, app_prefix, blocker)) is None:
        await asyncio.sleep(0.005)
    return int(pid)


IN_A_TRANSACTION = """
SELECT pid, application_name, state, backend_xmin::text AS xmin
  FROM pg_stat_activity
 WHERE datname = current_database() AND application_name LIKE 'zdmproxy%' AND pid <> $1
   AND (state = 'idle in transaction' OR (state = 'idle' AND backend_xmin IS NOT NULL)
        OR wait_event = 'advisory')
"""


async def test_three_processes_apply_a_folder_each_file_exactly_once_under_write_traffic(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    await witness.conn.execute(HOT)
    folder = write_folder(tmp_path / "migrations", TEN)
    suspects: list[dict[str, Any]] = []
    alarm, stop = asyncio.Event(), asyncio.Event()
    monitor = asyncio.create_task(watch_for_snapshot_waits(dsn, suspects, alarm, stop))
    # A slow writer: its open transaction holds the build in its first wait (for writers to
    # finish), before the build takes the snapshots it later waits behind. So the other two
    # processes are surely waiting for V5 while it builds.
    slow = await asyncpg.connect(dsn, server_settings={"application_name": "slow-writer"})
    running: list[Running] = []
    readers: list[asyncio.Task[None]] = []
    try:
        await slow.execute("BEGIN; INSERT INTO hot (a) VALUES (0)")
        async with Writers(dsn) as writers:
            started = time.monotonic()
            procs = await asyncio.gather(
                *(start("apply", str(folder), "--dsn", dsn, "--json", cwd=cwd) for _ in range(3))
            )
            running = [Running(p) for p in procs]
            readers = [asyncio.create_task(r._read()) for r in running]
            async with asyncio.timeout(BOUND_S):
                builder = await blocked_by(witness.conn, "zdmproxy:V5__hot_index", slow.get_server_pid())
                while sum(r.waiting_for("V5__hot_index") for r in running) < 2:
                    assert not any(t.done() for t in readers), [r.lines for r in running]
                    await asyncio.sleep(0.01)
                # Waiting, the other two hold no transaction and no snapshot, and block in no lock.
                assert await witness.conn.fetch(IN_A_TRANSACTION, builder) == []
            await slow.execute("COMMIT")

            runs = asyncio.ensure_future(
                asyncio.wait_for(
                    asyncio.gather(*(r.result(t) for r, t in zip(running, readers, strict=True))), BOUND_S
                )
            )
            alarmed = asyncio.ensure_future(alarm.wait())
            either: set[asyncio.Future[Any]] = {runs, alarmed}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            alarmed.cancel()
            if not runs.done():  # fail at once, saying why, instead of waiting for the bound
                runs.cancel()
                pytest.fail(f"a zdmproxy process waits on another's snapshot: {suspects[:5]}")
            try:
                results = runs.result()
            except TimeoutError:
                pytest.fail(f"not finished within {BOUND_S} s; suspects: {suspects[:5]}")
            elapsed = time.monotonic() - started
            writes_during_run = writers.writes
    finally:
        stop.set()
        for r in running:
            await reap(r.proc)
        for t in readers:
            t.cancel()
        await slow.close()
        await asyncio.wait_for(monitor, 10)
    print(f"three processes, ten files: {elapsed:.1f} s, {writes_during_run} writes meanwhile")

    assert [r.code for r in results] == [0, 0, 0], [r.stderr for r in results]
    assert elapsed < BOUND_S
    assert not writers.errors, writers.errors[:3]
    # Every file ran exactly once: its own row, and each of its DDL commands once.
    assert Counter(await witness.files()) == Counter({f"V{n}": 1 for n in range(1, 11)})
    assert Counter(await witness.ddl()) == TEN_DDL
    assert await witness.conn.fetchval("SELECT count(*) FROM customers") == 1000
    assert await witness.conn.fetchval("SELECT count(*) FROM orders") == 1000
    # Each file was taken up by one process (runs), and every step succeeded on its first attempt.
    journal = await witness.conn.fetch("SELECT id, state, runs FROM zdmproxy.migrations ORDER BY id")
    assert {(r["id"], r["state"], r["runs"]) for r in journal} == {
        (name.removesuffix(".sql"), "succeeded", 1) for name in TEN
    }
    attempts = await witness.conn.fetch(
        "SELECT migration_id, step_index, count(*) AS n, bool_and(outcome = 'succeeded') AS ok"
        " FROM zdmproxy.attempts GROUP BY 1, 2"
    )
    assert len(attempts) == 20 and all(a["n"] == 1 and a["ok"] for a in attempts), attempts
    # Each process reports each file: one ran it, the others say who did.
    reports = [r.json()["migrations"] for r in results]
    for name in TEN:
        outcomes = Counter(
            m["result"]
            for report in reports
            for m in report  # type: ignore[attr-defined]
            if m["id"] == name.removesuffix(".sql")
        )
        assert outcomes["applied"] == 1 and outcomes.total() == 3, (name, outcomes)
        assert set(outcomes) <= {"applied", "applied_by_other", "already_applied"}, (name, outcomes)
    # The index is usable, and was built while the application kept writing.
    index = await witness.conn.fetchrow(
        "SELECT indisvalid, indisready FROM pg_index WHERE indexrelid = 'hot_a_idx'::regclass"
    )
    assert index is not None and index["indisvalid"] and index["indisready"]
    window = await witness.conn.fetchrow(
        "SELECT started_at, finished_at FROM zdmproxy.steps WHERE migration_id = 'V5__hot_index'"
    )
    assert window is not None
    during = await witness.conn.fetchval(
        "SELECT count(*) FROM hot WHERE at BETWEEN $1 AND $2", window["started_at"], window["finished_at"]
    )
    assert during > 0, "no write landed while the index was being built"
    # Nobody waited on another zdmproxy's snapshot, or blocked in an advisory lock.
    assert not suspects, suspects[:5]


async def test_a_process_that_waited_reports_the_failure_the_other_recorded(
    dsn: str, witness: Witness, tmp_path: Path, cwd: Path
) -> None:
    await witness.conn.execute(
        "CREATE TABLE dup (id int PRIMARY KEY, a int); INSERT INTO dup VALUES (1, 1), (2, 1)"
    )
    folder = write_folder(
        tmp_path / "migrations",
        {
            "V1__more.sql": "INSERT INTO dup VALUES (3, 3);\n" + applied("V1"),
            "V2__unique.sql": "CREATE UNIQUE INDEX CONCURRENTLY dup_a_key ON dup (a);\n" + applied("V2"),
            "V3__after.sql": "CREATE TABLE after_v2 (id int);\n" + applied("V3"),
        },
    )
    # A slow writer holds the build (it fails on the duplicates) until the other process waits.
    slow = await asyncpg.connect(dsn, server_settings={"application_name": "slow-writer"})
    running: list[Running] = []
    readers: list[asyncio.Task[None]] = []
    try:
        await slow.execute("BEGIN; INSERT INTO dup VALUES (100, 100)")
        procs = await asyncio.gather(*(start("apply", str(folder), "--dsn", dsn, cwd=cwd) for _ in range(2)))
        running = [Running(p) for p in procs]
        readers = [asyncio.create_task(r._read()) for r in running]
        async with asyncio.timeout(30):
            await blocked_by(witness.conn, "zdmproxy:V2__unique", slow.get_server_pid())
            while not any(r.waiting_for("V2__unique") for r in running):
                assert not any(t.done() for t in readers), [r.lines for r in running]
                await asyncio.sleep(0.01)
        await slow.execute("COMMIT")
        first, second = await asyncio.wait_for(
            asyncio.gather(*(r.result(t) for r, t in zip(running, readers, strict=True))), 30
        )
    finally:
        for r in running:
            await reap(r.proc)
        for t in readers:
            t.cancel()
        await slow.close()
    waiter, builder_run = (first, second) if running[0].waiting_for("V2__unique") else (second, first)
    assert builder_run.code == 1 and "dup_a_key" in builder_run.stderr, builder_run.stderr
    # The one that waited did not run it again: it reports what the other recorded, and stops.
    assert waiter.code == 1, waiter.stderr
    message = " ".join(waiter.stderr.split())
    assert "V2__unique failed in the run by zdmproxy apply" in message and "dup_a_key" in message
    record = await witness.conn.fetchrow(
        "SELECT state, runs FROM zdmproxy.migrations WHERE id = 'V2__unique'"
    )
    assert record is not None and tuple(record) == ("failed", 1)
    assert (
        await witness.conn.fetchval(
            "SELECT count(*) FROM zdmproxy.attempts WHERE migration_id = 'V2__unique'"
        )
        == 1
    )
    assert await witness.files() == ["V1"]
    assert await witness.conn.fetchval("SELECT to_regclass('after_v2')") is None

    # The data fixed, a new run retries it: the INVALID index the build left is replaced.
    await witness.conn.execute("DELETE FROM dup WHERE id = 2")
    again = await zdm("apply", str(folder), "--dsn", dsn, cwd=cwd)
    assert again.code == 0, again.stderr
    assert await witness.conn.fetchval(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'dup_a_key'::regclass"
    )
    assert (
        await witness.conn.fetchval(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'dup'::regclass AND NOT indisvalid"
        )
        == 0
    )
    assert await witness.files() == ["V1", "V2", "V3"]
    assert (await witness.ddl()).count(("V2__unique", "CREATE INDEX")) == 1  # the failed build logs nothing
