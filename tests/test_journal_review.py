"""Regression tests for what an adversarial review of the journal found: a run that lost its
step session may not take back a migration another process took over, a possibly committed
step is never recorded as failed, a waiter takes over what a rerun can change, privileges give
a clear error, and the folder checks have no holes."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import asyncpg
import pytest
from helpers import ITEMS, run_cli, zdmproxy
from proxy import AnswerCutter, command_complete, simple_query

from zdmproxy.engine.connector import connect
from zdmproxy.engine.outcomes import Outcome
from zdmproxy.engine.runner import MigrationReport
from zdmproxy.errors import DatabaseUnreachable, MigrationBusy, StatementTimedOut
from zdmproxy.journal.coordinator import Coordinator, Request, Result
from zdmproxy.journal.ledger import Caller, JournalLedger
from zdmproxy.journal.store import Journal
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy


async def test_a_run_that_lost_its_session_cannot_take_back_a_migration_another_run_took_over(
    dsn: str,
) -> None:
    journal = await Journal.open(dsn, "zdmproxy-journal")
    sql = "SELECT 1;"
    await journal.create("m", "c", sql, make_plan(sql).steps)
    a, b = JournalLedger(journal, "m", Caller("a")), JournalLedger(journal, "m", Caller("b"))
    first = await connect(dsn, "a", step_session=True)
    await a.claim(first)
    await a.start(first)
    await first.close()  # A's step session is lost: its lock goes with it
    second = await connect(dsn, "b", step_session=True)
    try:
        await b.claim(second)
        await b.start(second)  # B takes the migration over and finishes it
        await b.step_started(0)
        await b.step_succeeded(0)
        await b.finish("succeeded")
    finally:
        await second.close()
    again = await connect(dsn, "a", step_session=True)
    try:
        with pytest.raises(MigrationBusy, match="taken over"):
            await a.claim(again)  # the lock is free, but the migration is B's now
        assert await a.step_started(0) == "succeeded"  # done: it must not run again
        await a.step_failed(0, Outcome.CONNECTION_LOST, DatabaseUnreachable("x"))  # stale writes...
        await a.finish("failed")  # ...change nothing
        record = await journal.migration("m")
        assert record is not None and record.state == "succeeded" and record.runs == 2
        assert (await journal.steps("m"))[0].state == "succeeded"
    finally:
        await again.close()
        await journal.close()


async def test_a_commit_lost_for_good_is_never_recorded_as_failed(dsn: str) -> None:
    """The server committed the step, then stays unreachable for the step: the run ends with
    exit 69 (not 75), the step stays recorded as done, and the rerun does not run it again."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(ITEMS + "CREATE TABLE ledger (x int);")
    port = int(dsn.rsplit(":", 1)[1].split("/", 1)[0])
    step = "INSERT INTO ledger VALUES (1)"
    cutter = AnswerCutter(
        port, simple_query(step), simple_query("COMMIT"), command_complete("COMMIT"), refuse_after=True
    )
    proxied = dsn.replace(f":{port}/", f":{await cutter.start()}/")
    journal = await Journal.open(dsn, "zdmproxy-journal")  # the journal itself stays reachable
    policy = MigrationPolicy(deadline_s=1.5, backoff_max_ms=200)
    try:
        coordinator = Coordinator(proxied, journal, policy, Caller("test"))
        with pytest.raises(DatabaseUnreachable):
            await coordinator.apply(Request("lost", step + ";"))
        assert cutter.fired
        assert (await journal.steps("lost"))[0].state == "succeeded"  # its own transaction said so
        rerun = await Coordinator(dsn, journal, policy, Caller("test")).apply(Request("lost", step + ";"))
        assert rerun.result is Result.APPLIED
        assert await admin.fetchval("SELECT count(*) FROM ledger") == 1
    finally:
        await cutter.close()
        await journal.close()
        await admin.close()


async def test_a_waiter_takes_over_a_failure_that_depends_on_the_other_callers_settings(dsn: str) -> None:
    """A runs with a 1 s statement_timeout and fails; B, waiting with the default, must not
    report A's failure as its own: it runs the migration and succeeds."""
    admin = await asyncpg.connect(dsn)
    await admin.execute("CREATE TABLE ledger (x int)")
    sql = "INSERT INTO ledger SELECT 1 FROM pg_sleep(1.5);"
    ja, jb = await Journal.open(dsn, "zdmproxy-journal"), await Journal.open(dsn, "zdmproxy-journal")
    a = Coordinator(dsn, ja, MigrationPolicy(statement_timeout_s=1), Caller("a"))
    b = Coordinator(dsn, jb, MigrationPolicy(), Caller("b"), poll_s=0.05)
    first = asyncio.create_task(a.apply(Request("slow", sql)))
    second: asyncio.Task[object] | None = None
    try:
        async with asyncio.timeout(15):  # A's step is running: B will have to wait
            while not await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'zdmproxy:slow:step1'"
                " AND query LIKE 'INSERT%'"
            ):
                await asyncio.sleep(0.01)
        second = asyncio.create_task(b.apply(Request("slow", sql), MigrationReport("slow")))
        with pytest.raises(StatementTimedOut):
            await asyncio.wait_for(first, 30)
        applied = await asyncio.wait_for(second, 30)
        assert applied.result is Result.APPLIED  # B ran it
        assert await admin.fetchval("SELECT count(*) FROM ledger") == 1
    finally:
        for task in (first, second):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await ja.close()
        await jb.close()
        await admin.close()


async def test_a_role_that_may_not_use_the_journal_gets_exit_78_naming_the_grants(
    dsn: str, tmp_path: Path
) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        first = await run_cli("apply", "--dsn", dsn, "--id", "one", sql="SELECT 1;", tmp_path=tmp_path)
        assert first.code == 0, first.stderr  # the journal exists now, owned by the superuser
        await admin.execute(
            "DO $$ BEGIN CREATE ROLE outsider LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
            f'GRANT CREATE ON DATABASE "{await admin.fetchval("SELECT current_database()")}" TO outsider'
        )
        other = dsn.replace("postgres@", "outsider@", 1)
        applied = await run_cli("apply", "--id", "two", "--dsn", other, sql="SELECT 1;", tmp_path=tmp_path)
        history = await _zdmproxy("history", "--dsn", other)
        for code, err in ((applied.code, applied.stderr), history):
            assert code == 78, err
            assert "GRANT USAGE ON SCHEMA zdmproxy" in err and "Traceback" not in err
    finally:
        await admin.close()


def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir(exist_ok=True)
    for existing in folder.iterdir():
        existing.unlink()
    for name, sql in files.items():
        (folder / name).write_text(sql)
    return folder


async def _apply_dir(dsn: str, folder: Path, *flags: str) -> tuple[int, str]:
    return await _zdmproxy("apply", "--dsn", dsn, *flags, str(folder))


async def _zdmproxy(*args: str) -> tuple[int, str]:
    result = await zdmproxy(*args)
    return result.code, result.stderr


async def test_folder_checks_refuse_a_renamed_file_and_a_missing_one(dsn: str, tmp_path: Path) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("CREATE TABLE t (a int); INSERT INTO t VALUES (0)")
        bump = "UPDATE t SET a = a + 1;"
        code, err = await _apply_dir(
            dsn, _folder(tmp_path, {"V1__init.sql": "SELECT 1;", "V2__bump.sql": bump})
        )
        assert code == 0, err
        # The applied V2 renamed to V3: the same SQL would run again.
        renamed = _folder(tmp_path, {"V1__init.sql": "SELECT 1;", "V3__bump.sql": bump})
        code, err = await _apply_dir(dsn, renamed)
        assert code == 3 and "'V2__bump'" in err and "renamed" in err, err
        # An applied file removed from the folder: refused unless said to be on purpose.
        code, err = await _apply_dir(dsn, _folder(tmp_path, {"V2__bump.sql": bump}))
        assert code == 3 and "'V1__init'" in err and "--ignore-missing" in err, err
        code, err = await _apply_dir(dsn, _folder(tmp_path, {"V2__bump.sql": bump}), "--ignore-missing")
        assert code == 0, err
        # Without the newest applied file it is an older release's folder: V2 is left as it is.
        code, err = await _apply_dir(dsn, _folder(tmp_path, {"V1__init.sql": "SELECT 1;"}))
        assert code == 0 and "V2__bump" in err, err
        # Any-case .sql is a migration, not silently skipped.
        upper = _folder(tmp_path, {"V1__init.sql": "SELECT 1;", "V2__bump.sql": bump, "V4__more.SQL": bump})
        code, err = await _apply_dir(dsn, upper)
        assert code == 0, err
        assert await admin.fetchval("SELECT a FROM t") == 2  # V2 once, V4 once
    finally:
        await admin.close()
