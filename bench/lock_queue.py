"""The lock queue (POSTGRES-FACTS.md 3.3), measured again with ``zdmproxy apply`` added.

Per PostgreSQL version: a table ``items`` of N rows; 8 asyncpg clients loop on a
prepared primary-key read for the whole window; at t0 a blocker opens a
transaction, reads ``items`` (AccessShareLock) and stays idle in transaction
until t0 + 5 s; at t0 + 0.5 s ``ALTER TABLE items ADD COLUMN`` is issued in one
of several ways (naive, lock_timeout once, lock_timeout retried, zdmproxy).
Every request's start and latency is recorded, so the table shows what the
application saw while the DDL waited.

Run: ``.venv/bin/python bench/lock_queue.py [--versions 15 18] [--runs 2] [--rows N] [--quick]``.
See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Final

import asyncpg

BENCH_DIR: Final = Path(__file__).resolve().parent
ROOT: Final = BENCH_DIR.parent
# tests/ is not a package (pytest puts it on sys.path), so this is the only way to reuse its cluster helper.
sys.path.insert(0, str(ROOT / "tests"))
from pgcluster import Cluster, ClusterError, find_bin_dir  # noqa: E402

# --- the scenario (POSTGRES-FACTS.md 3.3) -------------------------------------------------------
CLIENTS: Final = 8
BLOCKER_HOLD_S: Final = 5.0  # the blocker commits at t0 + 5 s; the window is at least this long
DDL_AT_S: Final = 0.5  # the DDL is issued at t0 + 0.5 s
LOCK_TIMEOUT: Final = "100ms"
RETRY_PAUSE_S: Final = 0.5  # "retry every 0.5 s", as the blog guides recommend
SLOW_MS: Final = 50.0
READ_SQL: Final = "SELECT a FROM items WHERE id = $1"
BLOCKER_SQL: Final = "BEGIN; SELECT count(*) FROM items WHERE id < 10"

# --- bounds: every wait below has one ----------------------------------------------------------
WARMUP_FIRST_S: Final = 3.0  # clients read before the first run of a version (fills shared_buffers)
WARMUP_S: Final = 0.5  # clients run steady before t0 of every run
DDL_DEADLINE_S: Final = 30.0  # after t0; naive/retry/zdmproxy are cut off (and reported) past it
SETTLE_S: Final = 30.0  # wait for every client to finish a request started after the window
CLIENT_STOP_S: Final = 10.0
CLIENT_LOOP_MAX_S: Final = 120.0  # a client loop ends by itself even if nobody stops it
SETUP_TIMEOUT_S: Final = 600.0  # load + index + VACUUM ANALYZE + CHECKPOINT of one table
CONNECT_TIMEOUT_S: Final = 10.0

# POSTGRES-FACTS.md section 3: "shared_buffers=1GB, max_wal_size=4GB, max_connections=300;
# everything else default". pgcluster's test settings (fsync off, autovacuum off, 128MB) are
# overridden: a later -c on the postgres command line wins over an earlier one.
FACTS_SETTINGS: Final[dict[str, str]] = {
    "shared_buffers": "1GB",
    "max_wal_size": "4GB",
    "max_connections": "300",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "autovacuum": "on",
    "max_locks_per_transaction": "64",
}
REPORTED_SETTINGS: Final = (
    "shared_buffers",
    "max_wal_size",
    "max_connections",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "autovacuum",
    "deadlock_timeout",
    "wal_buffers",
    "lock_timeout",
    "statement_timeout",
    "max_locks_per_transaction",
)


class Mode(Enum):
    BASELINE = "baseline (no blocker, no DDL)"
    BLOCKER = "blocker only"
    NAIVE = "naive ALTER (no timeouts)"
    LT_ONCE = f"SET lock_timeout = '{LOCK_TIMEOUT}' once"
    LT_RETRY = f"lock_timeout {LOCK_TIMEOUT}, retried every {RETRY_PAUSE_S:g} s"
    ZDMPROXY = "zdmproxy apply (defaults)"

    @property
    def has_blocker(self) -> bool:
        return self is not Mode.BASELINE

    @property
    def has_ddl(self) -> bool:
        return self not in (Mode.BASELINE, Mode.BLOCKER)


# --- application traffic -----------------------------------------------------------------------


class Clients:
    """8 connections looping on the prepared PK read; every request's start and latency recorded.

    A request still in flight when the clients are stopped is recorded with its wait so far
    (and counted as ``censored``), so a stuck request never drops out of the statistics.
    """

    def __init__(self, dsn: str, rows: int, count: int = CLIENTS) -> None:
        self.dsn = dsn
        self.rows = rows
        self.count = count
        self.conns: list[asyncpg.Connection] = []
        self.stmts: list[asyncpg.prepared_stmt.PreparedStatement] = []
        self.starts: list[array[float]] = []
        self.lats: list[array[float]] = []
        self.in_flight: list[float | None] = []
        self.last_done_start: list[float] = []
        self.errors: list[str] = []
        self.censored = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def connect(self) -> None:
        await self.close()
        for number in range(self.count):
            conn = await asyncpg.connect(
                self.dsn,
                timeout=CONNECT_TIMEOUT_S,
                server_settings={"application_name": f"bench-client-{number}"},
            )
            self.conns.append(conn)
            self.stmts.append(await conn.prepare(READ_SQL))

    async def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
            conn.terminate()
        self.conns, self.stmts = [], []

    def start(self) -> None:
        assert not self._tasks, "clients already running"
        self.starts = [array("d") for _ in range(self.count)]
        self.lats = [array("d") for _ in range(self.count)]
        self.in_flight = [None] * self.count
        self.last_done_start = [0.0] * self.count
        self.errors = []
        self.censored = 0
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._loop(n)) for n in range(self.count)]

    async def _loop(self, number: int) -> None:
        rng = random.Random(number * 7919 + int(time.monotonic()))
        stmt = self.stmts[number]
        starts, lats = self.starts[number], self.lats[number]
        deadline = time.monotonic() + CLIENT_LOOP_MAX_S
        monotonic, randint, stop = time.monotonic, rng.randint, self._stop
        while not stop.is_set():
            started = monotonic()
            if started > deadline:
                return
            self.in_flight[number] = started
            try:
                await stmt.fetchval(randint(1, self.rows))
            except asyncpg.PostgresError as exc:
                self.errors.append(f"{exc.sqlstate}: {exc}")
            ended = monotonic()
            self.in_flight[number] = None
            starts.append(started)
            lats.append(ended - started)
            self.last_done_start[number] = started

    async def settle(self, limit_s: float = SETTLE_S) -> bool:
        """Wait until every client finished a request started from now on: then every request
        started earlier has completed and been recorded. False if that took longer than limit_s."""
        mark = time.monotonic()
        end = mark + limit_s
        while min(self.last_done_start) < mark:
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.005)
        return True

    async def stop(self) -> None:
        self._stop.set()
        _, pending = await asyncio.wait(self._tasks, timeout=CLIENT_STOP_S)
        now = time.monotonic()
        for number, started in enumerate(self.in_flight):
            if started is not None:  # stuck: record what it has waited so far
                self.starts[number].append(started)
                self.lats[number].append(now - started)
                self.censored += 1
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if pending:  # a cancelled query leaves its connection unusable: start afresh
            await self.connect()

    def samples(self) -> tuple[list[float], list[float]]:
        starts = [s for arr in self.starts for s in arr]
        lats = [x for arr in self.lats for x in arr]
        return starts, lats


# --- the DDL, in each mode ---------------------------------------------------------------------


@dataclass
class DdlResult:
    ok: bool | None = None  # None: no DDL in this mode
    outcome: str = "-"
    done_at: float | None = None  # time.monotonic() the DDL returned (committed or failed)
    attempts: int = 0
    detail: str = ""


async def ddl_plain(conn: asyncpg.Connection, sql: str) -> DdlResult:
    try:
        await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        return DdlResult(False, exc.sqlstate or "error", time.monotonic(), 1, str(exc))
    return DdlResult(True, "ok", time.monotonic(), 1)


async def ddl_retry(conn: asyncpg.Connection, sql: str, deadline: float) -> DdlResult:
    attempts = 0
    while True:
        attempts += 1
        try:
            await conn.execute(sql)
        except asyncpg.LockNotAvailableError as exc:
            if time.monotonic() + RETRY_PAUSE_S > deadline:
                return DdlResult(False, "gave up", time.monotonic(), attempts, str(exc))
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        except asyncpg.PostgresError as exc:
            return DdlResult(False, exc.sqlstate or "error", time.monotonic(), attempts, str(exc))
        return DdlResult(True, "ok", time.monotonic(), attempts)


def zdmproxy_command() -> list[str]:
    script = Path(sys.executable).parent / "zdmproxy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "zdmproxy"]


def json_documents(text: str) -> list[dict[str, object]]:
    """The CLI prints the report, and on failure an error object after it."""
    decoder = json.JSONDecoder()
    docs: list[dict[str, object]] = []
    pos = 0
    while (start := text.find("{", pos)) != -1:
        try:
            doc, pos = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


async def ddl_zdmproxy(
    dsn: str, sql_file: Path, migration_id: str, deadline: float, clock: WallClock
) -> DdlResult:
    # Default settings: no ZDM_* from our environment, no zdmproxy.toml from our cwd.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZDM_", "PG"))}
    spawned = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *zdmproxy_command(),
        "apply",
        "--dsn",
        dsn,
        "--id",
        migration_id,
        "--json",
        str(sql_file),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=sql_file.parent,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        return DdlResult(
            False, "timeout (killed)", time.monotonic(), 0, f"still running at t0+{DDL_DEADLINE_S}"
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    exited = time.monotonic()
    docs = json_documents(stdout.decode(errors="replace"))
    report = next((d for d in docs if "steps" in d), None)
    error = next((d["error"] for d in docs if "error" in d), None)
    attempts: list[dict[str, object]] = []
    if report is not None and isinstance(report["steps"], list) and report["steps"]:
        attempts = report["steps"][0].get("attempts", [])
    ok = proc.returncode == 0 and report is not None and report.get("succeeded") is True
    done_at = exited
    if attempts and isinstance(attempts[-1].get("ended_at"), float):
        done_at = clock.to_monotonic(attempts[-1]["ended_at"])  # type: ignore[arg-type]
    first_attempt = None
    if attempts and isinstance(attempts[0].get("started_at"), float):
        first_attempt = clock.to_monotonic(attempts[0]["started_at"])  # type: ignore[arg-type]
    detail = (
        f"exit {proc.returncode}; process ran {exited - spawned:.2f} s, "
        f"exited {(exited - done_at) * 1000:.0f} ms after the DDL returned"
    )
    if first_attempt is not None:
        detail += f"; first attempt {first_attempt - spawned:.2f} s after spawn"
    if not ok:
        detail += f"; {error or stderr.decode(errors='replace')[-300:]}"
    outcome = "ok" if ok else f"failed (exit {proc.returncode})"
    return DdlResult(ok, outcome, done_at, len(attempts), detail)


@dataclass(frozen=True)
class WallClock:
    """Maps time.time() stamps from the zdmproxy report onto our time.monotonic()."""

    offset: float = field(default_factory=lambda: time.time() - time.monotonic())

    def to_monotonic(self, wall: float) -> float:
        return wall - self.offset


# --- CPU accounting: the machine may be shared ------------------------------------------------

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def _tree_ticks(root_pid: int) -> int:
    """CPU ticks of ``root_pid`` and its direct children (a postmaster and its backends)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, ppid = int(proc.name), int(fields[1])
        if root_pid in (pid, ppid):
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


@dataclass
class CpuMeter:
    """Cores used during a run by everything that is neither this benchmark (clients, zdmproxy
    subprocess) nor its own PostgreSQL cluster: other work on a shared machine skews results."""

    postmaster_pid: int
    began: float = 0.0
    busy: int = 0
    ours: float = 0.0
    cluster: int = 0

    def _own_seconds(self) -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> None:
        self.began = time.monotonic()
        self.busy, self.ours, self.cluster = (
            _busy_ticks(),
            self._own_seconds(),
            _tree_ticks(self.postmaster_pid),
        )

    def stop(self) -> tuple[float, float, float]:
        """(cores busy in total, cores used by us and our cluster, cores used by others)."""
        elapsed = max(1e-6, time.monotonic() - self.began)
        busy = (_busy_ticks() - self.busy) / CLOCK_TICKS
        ours = (
            self._own_seconds() - self.ours + (_tree_ticks(self.postmaster_pid) - self.cluster) / CLOCK_TICKS
        )
        return busy / elapsed, ours / elapsed, max(0.0, busy - ours) / elapsed


# --- one run -----------------------------------------------------------------------------------


@dataclass
class RunResult:
    version: int
    mode: Mode
    run: int
    window_s: float
    completed: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    slow: int
    errors: int
    censored: int
    settled: bool
    ddl: DdlResult
    ddl_vs_release_ms: float | None
    ddl_vs_t0_s: float | None
    cpu_total: float = 0.0
    cpu_ours: float = 0.0
    cpu_others: float = 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def connect(dsn: str, app: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S, server_settings={"application_name": app})


async def run_once(
    dsn: str,
    version: int,
    clients: Clients,
    mode: Mode,
    run: int,
    column: str,
    workdir: Path,
    meter: CpuMeter,
) -> RunResult:
    sql = f"ALTER TABLE items ADD COLUMN {column} int"
    blocker = await connect(dsn, "bench-reporting") if mode.has_blocker else None
    ddl_conn = await connect(dsn, "bench-ddl") if mode in (Mode.NAIVE, Mode.LT_ONCE, Mode.LT_RETRY) else None
    sql_file = workdir / f"{column}.sql"
    sql_file.write_text(sql + ";\n")
    migration_id = f"bench-pg{version}-{column}"
    clock = WallClock()
    ddl_task: asyncio.Task[DdlResult] | None = None
    try:
        if ddl_conn is not None and mode in (Mode.LT_ONCE, Mode.LT_RETRY):
            await ddl_conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        clients.start()
        await asyncio.sleep(WARMUP_S)
        meter.start()
        t0 = time.monotonic()
        deadline = t0 + DDL_DEADLINE_S
        if blocker is not None:
            await blocker.execute(BLOCKER_SQL)
        await sleep_until(t0 + DDL_AT_S)
        if mode in (Mode.NAIVE, Mode.LT_ONCE):
            assert ddl_conn is not None
            ddl_task = asyncio.create_task(ddl_plain(ddl_conn, sql))
        elif mode is Mode.LT_RETRY:
            assert ddl_conn is not None
            ddl_task = asyncio.create_task(ddl_retry(ddl_conn, sql, deadline))
        elif mode is Mode.ZDMPROXY:
            ddl_task = asyncio.create_task(ddl_zdmproxy(dsn, sql_file, migration_id, deadline, clock))
        await sleep_until(t0 + BLOCKER_HOLD_S)
        released = time.monotonic()  # the moment COMMIT is sent: the lock goes with it
        if blocker is not None:
            await blocker.execute("COMMIT")
        ddl = DdlResult()
        if ddl_task is not None:
            try:
                ddl = await asyncio.wait_for(ddl_task, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                ddl = DdlResult(False, "timeout", time.monotonic(), 0, f"not done by t0+{DDL_DEADLINE_S}")
                if ddl_conn is not None:
                    ddl_conn.terminate()
        window_end = t0 + BLOCKER_HOLD_S
        if ddl.done_at is not None:
            window_end = max(window_end, ddl.done_at)
        await sleep_until(window_end)
        cpu_total, cpu_ours, cpu_others = meter.stop()
        settled = await clients.settle()
        await clients.stop()
    finally:
        if ddl_task is not None and not ddl_task.done():
            ddl_task.cancel()
            await asyncio.gather(ddl_task, return_exceptions=True)
        for conn in (blocker, ddl_conn):
            if conn is not None:
                conn.terminate()
        if clients.running:
            await clients.stop()

    starts, lats = clients.samples()
    completed = sum(1 for s, x in zip(starts, lats, strict=True) if s + x >= t0 and s + x <= window_end)
    in_window = sorted(x * 1000 for s, x in zip(starts, lats, strict=True) if t0 <= s <= window_end)
    ddl_vs_release = None
    ddl_vs_t0 = None
    if ddl.done_at is not None:
        ddl_vs_t0 = ddl.done_at - t0
        if ddl.ok:
            ddl_vs_release = (ddl.done_at - released) * 1000
    return RunResult(
        version=version,
        mode=mode,
        run=run,
        window_s=window_end - t0,
        completed=completed,
        p50_ms=percentile(in_window, 0.50),
        p99_ms=percentile(in_window, 0.99),
        max_ms=in_window[-1] if in_window else float("nan"),
        slow=sum(1 for x in in_window if x > SLOW_MS),
        errors=len(clients.errors),
        censored=clients.censored,
        settled=settled,
        ddl=ddl,
        ddl_vs_release_ms=ddl_vs_release,
        ddl_vs_t0_s=ddl_vs_t0,
        cpu_total=cpu_total,
        cpu_ours=cpu_ours,
        cpu_others=cpu_others,
    )


# --- one version -------------------------------------------------------------------------------


@dataclass
class VersionInfo:
    version: int
    server_version: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    heap_mb: float = 0.0
    index_mb: float = 0.0
    setup_s: float = 0.0
    runs_s: float = 0.0
    leftover_processes: list[str] = field(default_factory=list)


async def load_table(dsn: str, rows: int) -> None:
    conn = await connect(dsn, "bench-setup")
    try:
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            await conn.execute("DROP TABLE IF EXISTS items")
            await conn.execute("CREATE TABLE items (id bigint, a int, b text, c timestamptz, n int)")
            await conn.execute(
                "INSERT INTO items SELECT g, g % 1000, md5(g::text), now() - g * interval '1 second', 0"
                " FROM generate_series(1, $1::bigint) g",
                rows,
            )
            await conn.execute("ALTER TABLE items ADD PRIMARY KEY (id)")
            await conn.execute("VACUUM ANALYZE items")
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def describe_server(dsn: str, info: VersionInfo) -> None:
    conn = await connect(dsn, "bench-info")
    try:
        info.server_version = await conn.fetchval("SHOW server_version")
        for name in REPORTED_SETTINGS:
            info.settings[name] = await conn.fetchval(f"SHOW {name}")
        info.heap_mb = await conn.fetchval("SELECT pg_relation_size('items') / 1048576.0")
        info.index_mb = await conn.fetchval("SELECT pg_relation_size('items_pkey') / 1048576.0")
    finally:
        await conn.close()


def processes_using(path: Path) -> list[str]:
    """Processes whose command line names ``path`` (our data directory): none may outlive us."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


async def bench_version(
    version: int, modes: list[Mode], runs: int, rows: int, results: list[RunResult]
) -> VersionInfo:
    info = VersionInfo(version)
    bin_dir = find_bin_dir(version)
    if bin_dir is None:
        raise ClusterError(f"no PostgreSQL {version} binaries on this machine")
    cluster = Cluster(bin_dir, settings=FACTS_SETTINGS)
    began = time.monotonic()
    base_dir: Path | None = None
    try:
        log(f"PG {version}: initdb + start ({bin_dir})")
        await asyncio.to_thread(cluster.start)
        base_dir = cluster.base_dir
        dsn = cluster.dsn()
        log(f"PG {version}: loading {rows:,} rows, VACUUM ANALYZE, CHECKPOINT")
        await load_table(dsn, rows)
        await describe_server(dsn, info)
        clients = Clients(dsn, rows)
        await clients.connect()
        clients.start()
        await asyncio.sleep(WARMUP_FIRST_S)
        await clients.stop()
        info.setup_s = time.monotonic() - began
        log(f"PG {version} {info.server_version}: ready after {info.setup_s:.1f} s")
        postmaster_pid = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        meter = CpuMeter(postmaster_pid)
        runs_began = time.monotonic()
        column = 0
        with tempfile.TemporaryDirectory(prefix="zdmproxy-bench-") as tmp:
            for run in range(1, runs + 1):
                for mode in modes:
                    column += 1
                    result = await run_once(dsn, version, clients, mode, run, f"c_{column}", Path(tmp), meter)
                    results.append(result)
                    log(f"PG {version} run {run} {mode.name}: {summary_line(result)}")
                    await asyncio.sleep(0.5)  # let the server's stats and WAL writer catch up
        await clients.close()
        info.runs_s = time.monotonic() - runs_began
    finally:
        await asyncio.to_thread(cluster.stop)
        if base_dir is not None:
            info.leftover_processes = processes_using(base_dir)
    return info


def summary_line(r: RunResult) -> str:
    text = (
        f"W {r.window_s:.2f} s, {r.completed:,} done, p50 {r.p50_ms:.2f} p99 {r.p99_ms:.2f} "
        f"max {r.max_ms:.1f} ms, {r.slow} > {SLOW_MS:g} ms"
    )
    if r.ddl.ok is not None:
        text += f"; DDL {r.ddl.outcome} ({r.ddl.attempts} attempt(s))"
        if r.ddl_vs_release_ms is not None:
            text += f" {r.ddl_vs_release_ms:+.0f} ms vs release"
        elif r.ddl_vs_t0_s is not None:
            text += f" at t0+{r.ddl_vs_t0_s:.2f} s"
        if r.ddl.detail:
            text += f" [{r.ddl.detail}]"
    text += f"; CPU cores: ours {r.cpu_ours:.2f}, others {r.cpu_others:.2f}"
    if r.errors or r.censored or not r.settled:
        text += f"; errors {r.errors}, censored {r.censored}, settled {r.settled}"
    return text


# --- report ------------------------------------------------------------------------------------


def fmt_int(values: list[float]) -> str:
    return f"{statistics.fmean(values):,.0f}"


def fmt_ms(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:,.2f}" if mean < 10 else f"{mean:,.0f}" if mean >= 100 else f"{mean:,.1f}"


def ddl_cell(rs: list[RunResult]) -> tuple[str, str]:
    if rs[0].ddl.ok is None:
        return "-", "-"
    outcomes = []
    for r in rs:
        text = r.ddl.outcome
        if r.ddl.ok and r.ddl.attempts != 1:
            text += f" after {r.ddl.attempts} attempts"
        elif r.ddl.ok:
            text += ", 1 attempt"
        if not r.ddl.ok and r.ddl_vs_t0_s is not None:
            text += f" at t0+{r.ddl_vs_t0_s:.2f} s"
        outcomes.append(text)
    unique = list(dict.fromkeys(outcomes))
    timing = [r.ddl_vs_release_ms for r in rs if r.ddl_vs_release_ms is not None]
    when = " / ".join(f"{t:+,.0f}" for t in timing) if timing else "-"
    return " / ".join(unique), when


def markdown_table(results: list[RunResult], modes: list[Mode], versions: list[int]) -> str:
    head = (
        "| PG | mode | runs | W (s) | completed in W | req/s in W | p50 ms | p99 ms | max ms "
        f"| > {SLOW_MS:g} ms | DDL outcome | DDL done vs blocker release (ms, per run) "
        "| other CPU load (cores) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for version in versions:
        for mode in modes:
            rs = [r for r in results if r.version == version and r.mode is mode]
            if not rs:
                continue
            outcome, when = ddl_cell(rs)
            rows.append(
                f"| {version} | {mode.value} | {len(rs)} | {fmt_ms([r.window_s for r in rs])} "
                f"| {fmt_int([r.completed for r in rs])} "
                f"| {fmt_int([r.completed / r.window_s for r in rs])} "
                f"| {fmt_ms([r.p50_ms for r in rs])} | {fmt_ms([r.p99_ms for r in rs])} "
                f"| **{fmt_ms([r.max_ms for r in rs])}** | {statistics.fmean([r.slow for r in rs]):g} "
                f"| {outcome} | {when} | {statistics.fmean([r.cpu_others for r in rs]):.2f} |"
            )
    return head + "\n".join(rows) + "\n"


def detail_table(results: list[RunResult]) -> str:
    head = (
        "| PG | mode | run | W (s) | completed | p50 ms | p99 ms | max ms | > 50 ms | client errors "
        "| censored | settled | DDL | attempts | DDL done | CPU cores ours / others | detail |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        done = "-"
        if r.ddl_vs_release_ms is not None:
            done = f"{r.ddl_vs_release_ms:+.0f} ms vs release"
        elif r.ddl_vs_t0_s is not None:
            done = f"t0+{r.ddl_vs_t0_s:.3f} s"
        detail = r.ddl.detail.replace("|", "/").replace("\n", " ")
        rows.append(
            f"| {r.version} | {r.mode.name} | {r.run} | {r.window_s:.3f} | {r.completed:,} "
            f"| {r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.max_ms:.1f} | {r.slow} | {r.errors} | {r.censored} "
            f"| {r.settled} | {r.ddl.outcome} | {r.ddl.attempts or '-'} | {done} "
            f"| {r.cpu_ours:.2f} / {r.cpu_others:.2f} | {detail} |"
        )
    return head + "\n".join(rows) + "\n"


def machine_facts() -> dict[str, str]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem_kb / 1048576:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "asyncpg": asyncpg.__version__,
        "event loop": "uvloop" if "uvloop" in sys.modules else "asyncio",
    }


def write_report(
    path: Path,
    args: argparse.Namespace,
    table: str,
    results: list[RunResult],
    infos: list[VersionInfo],
    wall_s: float,
    load: tuple[str, str],
) -> None:
    lines = [
        f"# Lock queue benchmark, {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}` — wall time **{wall_s:.0f} s**.",
        "",
        "Scenario: POSTGRES-FACTS.md 3.3 (see bench/README.md). 8 asyncpg clients loop on the prepared "
        "`SELECT a FROM items WHERE id = $1`; at t0 a blocker runs "
        f"`{BLOCKER_SQL}` and commits at t0+{BLOCKER_HOLD_S:g} s; at t0+{DDL_AT_S:g} s "
        "`ALTER TABLE items ADD COLUMN c_k int` is issued. W = [t0, max(t0+5 s, DDL done)]. "
        "Latency columns cover every request started in W (stuck ones included); "
        "'completed' counts requests that finished in W. Values are means over runs.",
        "",
        table,
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in machine_facts().items()),
        f"- load average before / after: {load[0]} / {load[1]}",
        "",
        "## Servers",
        "",
        f"- rows: {args.rows:,}; runs per mode: {args.runs}; clients: {CLIENTS}",
        "- started by tests/pgcluster.py's Cluster with POSTGRES-FACTS.md's settings appended "
        f"({', '.join(f'{k}={v}' for k, v in FACTS_SETTINGS.items())}); initdb -E UTF8 --locale=C",
    ]
    for info in infos:
        settings = ", ".join(f"{k}={v}" for k, v in info.settings.items())
        lines.append(
            f"- PG {info.server_version}: {settings}; items heap {info.heap_mb:.0f} MB + pkey "
            f"{info.index_mb:.0f} MB; setup {info.setup_s:.0f} s, runs {info.runs_s:.0f} s; "
            f"processes left after stop: {len(info.leftover_processes)}"
        )
    lines += ["", "## Every run", "", detail_table(results)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--versions", type=int, nargs="+", default=[15, 18])
    parser.add_argument("--runs", type=int, default=None, help="runs per mode (default 2; 1 with --quick)")
    parser.add_argument("--rows", type=int, default=None, help="table size (default 2,000,000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200,000 rows, 1 run per mode")
    parser.add_argument("--modes", nargs="+", choices=[m.name.lower() for m in Mode], default=None)
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/...)")
    args = parser.parse_args()
    args.rows = args.rows or (200_000 if args.quick else 2_000_000)
    args.runs = args.runs or (1 if args.quick else 2)
    if args.out is None:
        suffix = "-quick" if args.quick else ""
        args.out = BENCH_DIR / "results" / f"lock_queue-{datetime.now():%Y-%m-%d}{suffix}.md"
    return args


async def main_async(args: argparse.Namespace) -> int:
    modes = [Mode[m.upper()] for m in args.modes] if args.modes else list(Mode)
    versions = [v for v in args.versions if find_bin_dir(v) is not None]
    for missing in sorted(set(args.versions) - set(versions)):
        log(f"PG {missing}: no binaries on this machine, skipped")
    if not versions:
        log("no PostgreSQL version to benchmark")
        return 2
    began = time.monotonic()
    load_before = loadavg()
    results: list[RunResult] = []
    infos: list[VersionInfo] = []
    for version in versions:
        infos.append(await bench_version(version, modes, args.runs, args.rows, results))
    wall = time.monotonic() - began
    load_after = loadavg()
    table = markdown_table(results, modes, versions)
    print(table)
    write_report(args.out, args, table, results, infos, wall, (load_before, load_after))
    log(f"wall time {wall:.0f} s; results written to {args.out}")
    leftovers = [p for info in infos for p in info.leftover_processes]
    if leftovers:
        log("processes left behind:\n" + "\n".join(leftovers))
        return 1
    return 0


def main() -> int:
    args = parse_args()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_async(args))
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
