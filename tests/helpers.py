"""Small helpers shared by behaviour tests."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from zdmproxy.engine.queries import QUERIES
from zdmproxy.engine.runner import MigrationReport, Runner
from zdmproxy.plan.planner import make_plan
from zdmproxy.policy import MigrationPolicy

ITEMS = """
CREATE TABLE items (id bigint PRIMARY KEY, a int NOT NULL, n int NOT NULL DEFAULT 0);
INSERT INTO items (id, a) SELECT g, g % 100 FROM generate_series(1, 10000) g;
ANALYZE items;
"""


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.stdout)
        return data


async def run_cli(*args: str, sql: str, tmp_path: Path, timeout: float = 60) -> CliResult:
    """Run ``python -m zdmproxy`` for real, as a deploy script would."""
    proc = await start_cli(*args, sql=sql, tmp_path=tmp_path)
    return await finish(proc, timeout)


async def zdmproxy(*args: str, timeout: float = 60) -> CliResult:
    """Run ``python -m zdmproxy ARGS`` (no SQL file appended), as an operator would."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zdmproxy",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return await finish(proc, timeout)


def write_sql(tmp_path: Path, sql: str) -> Path:
    path = tmp_path / f"migration-{uuid.uuid4().hex[:8]}.sql"
    path.write_text(sql)
    return path


async def start_cli(*args: str, sql: str, tmp_path: Path) -> asyncio.subprocess.Process:
    path = write_sql(tmp_path, sql)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zdmproxy",
        *args,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = 60) -> CliResult:
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return CliResult(proc.returncode, stdout.decode(), stderr.decode())


async def wait_until_blocked(conn: asyncpg.Connection, pid: int, timeout: float = 10.0) -> None:
    """Poll pg_blocking_pids like PostgreSQL's isolation tester: no sleep guesses how long."""
    async with asyncio.timeout(timeout):
        while not await conn.fetchval("SELECT cardinality(pg_blocking_pids($1)) > 0", pid):
            await asyncio.sleep(0.005)


async def wait_for_session(conn: asyncpg.Connection, app_prefix: str, timeout: float = 15.0) -> int:
    """The pid of the first session whose application_name starts with ``app_prefix``."""
    async with asyncio.timeout(timeout):
        while True:
            pid = await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1 || '%' LIMIT 1",
                app_prefix,
            )
            if pid is not None:
                return int(pid)
            await asyncio.sleep(0.01)


async def wait_for_preflight(conn: asyncpg.Connection, migration_id: str, timeout: float = 30.0) -> None:
    """Until the run of ``migration_id`` has looked for blockers at least once (its watch session
    runs pre-flight's query).

    Seeing the session is not enough: on busy cores the blocker a test releases "after a while"
    may be gone before pre-flight's first look, and then nothing was in its way to report.
    pg_stat_activity keeps a session's last query while it idles, so one poll cannot miss it;
    ``idle`` means that query has finished: it saw whatever was in the way when it ran.
    """
    head = QUERIES["conflicting_locks"][:60]
    async with asyncio.timeout(timeout):
        while not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_stat_activity"
            " WHERE application_name = 'zdmproxy-watch:' || $1 AND state = 'idle' AND left(query, 60) = $2)",
            migration_id,
            head,
        ):
            await asyncio.sleep(0.005)


async def idle_blocker(dsn: str, table: str, app: str = "reporting") -> asyncpg.Connection:
    """A session that read ``table`` in an open transaction and went idle: it holds AccessShareLock."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": app})
    await conn.execute(f"BEGIN; SELECT count(*) FROM {table} WHERE id < 10")
    return conn


def start_run(
    dsn: str, migration_id: str, sql: str, **policy: Any
) -> tuple[MigrationReport, asyncio.Task[Any]]:
    """Run ``sql`` through the engine in the background; the report fills in as it goes."""
    report = MigrationReport(migration_id)
    runner = Runner(dsn, migration_id, MigrationPolicy(**policy))
    return report, asyncio.create_task(runner.run(make_plan(sql), report))


# Pre-flight told to ignore blockers and the watchdog told to stay quiet: attempts really queue.
QUEUE_ANYWAY = {"blocker_min_age_ms": 10**9, "queue_budget_ms": 10**6}
