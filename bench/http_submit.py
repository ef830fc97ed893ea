"""The daemon's HTTP path against psql, and the daemon's memory over a long backfill.

1. **Submit-to-done.** Per PostgreSQL version, a `zdmproxy serve` (a subprocess, default
   settings) on a test cluster; each round runs one trivial unblocked DDL
   (``ALTER TABLE t ADD COLUMN c_<k> int``, a fresh column each time) three ways, alternating:

   - ``psql``: ``psql -X -q -c SQL`` as a deploy script would run it; its wall time (process
     start, connection, statement) and the statement's own time (``\\timing``);
   - ``curl``: ``curl -X PUT …/v1/migrations/<id>?wait=30`` to the daemon, a new id each time;
     wall time until the answer says ``succeeded`` (process start, HTTP, the journal's
     record/plan/claim, the step, the answer);
   - ``httpx``: the same PUT from a client already connected in this process: the daemon's own
     cost, without curl's process start.

   Medians and p90 over the rounds; the target is curl within 30 ms of psql.

2. **Memory over a long backfill.** One ``ADD COLUMN … NOT NULL DEFAULT gen_random_uuid()`` on a
   table of ``--backfill-rows`` rows (a batched backfill), submitted to a fresh daemon; its
   resident memory (``/proc/<pid>/status`` VmRSS) sampled every 0.25 s until it succeeds.

Run: ``.venv/bin/python bench/http_submit.py [--versions 15 18] [--rounds 30] [--backfill-rows 1000000]``.
Writes a Markdown report to ``bench/results/http_submit-<date>.md`` and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import asyncpg
import httpx
import uvloop

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/ is not a package; its cluster helper is reused
from pgcluster import Cluster, find_bin_dir  # noqa: E402

ZDMPROXY: Final = Path(sys.executable).parent / "zdmproxy"
SETUP: Final = "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE big (id bigint PRIMARY KEY, n int NOT NULL)"
FILL: Final = "INSERT INTO big SELECT g, g % 100 FROM generate_series(1, $1::bigint) g"
BACKFILL: Final = "ALTER TABLE big ADD COLUMN token uuid NOT NULL DEFAULT gen_random_uuid();"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def daemon(dsn: str) -> AsyncIterator[tuple[str, int]]:
    """``zdmproxy serve`` with default settings; yields its URL and pid."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZDM_")}
    with tempfile.TemporaryFile() as log:
        proc = await asyncio.create_subprocess_exec(
            str(ZDMPROXY), "serve", "--dsn", dsn, "--port", str(port), env=env, stdout=log, stderr=log
        )
        async with _stopping(proc):
            yield await _ready(f"http://127.0.0.1:{port}"), proc.pid


@asynccontextmanager
async def _stopping(proc: asyncio.subprocess.Process) -> AsyncIterator[None]:
    try:
        yield
    finally:
        proc.terminate()
        await proc.wait()


async def _ready(url: str) -> str:
    async with httpx.AsyncClient() as client, asyncio.timeout(60):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return url
            await asyncio.sleep(0.05)


async def _timed(*argv: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {stderr.decode()}")
    return elapsed, stdout.decode()


async def submit_to_done(dsn: str, psql: str, rounds: int) -> dict[str, list[float]]:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(SETUP)
    finally:
        await admin.close()
    times: dict[str, list[float]] = {
        name: []
        for name in (
            "psql",
            "psql statement",
            "curl",
            "httpx",
            "record, plan, claim",
            "step (journaled)",
            "outside the journal",
        )
    }
    body = Path(tempfile.mkdtemp()) / "body.json"
    async with daemon(dsn) as (url, _), httpx.AsyncClient(base_url=url, timeout=60) as client:
        column = 0

        def sql() -> str:
            nonlocal column
            column += 1
            return f"ALTER TABLE t ADD COLUMN c_{column} int"

        for warmup in range(3):  # the journal's schema, connections, first plans
            await client.put(f"/v1/migrations/warmup-{warmup}?wait=30", json={"sql": sql()})
            await _timed(psql, "-X", "-q", "-c", sql(), dsn)
        for number in range(rounds):
            wall, printed = await _timed(psql, "-X", "-q", "-c", "\\timing on", "-c", sql(), dsn)
            times["psql"].append(wall)
            match = re.search(r"Time: ([0-9.]+) ms", printed)
            assert match, printed
            times["psql statement"].append(float(match[1]) / 1000)
            body.write_text(json.dumps({"sql": sql()}))
            wall, answer = await _timed(
                "curl", "-sS", "-X", "PUT", "-H", "Content-Type: application/json",
                "--data-binary", f"@{body}", f"{url}/v1/migrations/curl-{number}?wait=30",
            )  # fmt: skip
            assert json.loads(answer)["state"] == "succeeded", answer
            times["curl"].append(wall)
            started = time.perf_counter()
            response = await client.put(f"/v1/migrations/httpx-{number}?wait=30", json={"sql": sql()})
            total = time.perf_counter() - started
            times["httpx"].append(total)
            record = response.json()
            assert record["state"] == "succeeded", response.text
            # Where the time went, by the journal's own clock (the database's).
            created, began, ended = (
                datetime.datetime.fromisoformat(record[k])
                for k in ("created_at", "started_at", "finished_at")
            )
            step = record["steps"][0]
            times["record, plan, claim"].append((began - created).total_seconds())
            times["step (journaled)"].append(step["duration_s"])
            times["outside the journal"].append(total - (ended - created).total_seconds())
    shutil.rmtree(body.parent)
    return times


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def backfill_memory(dsn: str, rows: int) -> tuple[list[tuple[float, int]], dict[str, object]]:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(FILL, rows)
        await admin.execute("VACUUM ANALYZE big")
    finally:
        await admin.close()
    samples: list[tuple[float, int]] = []
    async with daemon(dsn) as (url, pid), httpx.AsyncClient(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        response = await client.put("/v1/migrations/backfill", json={"sql": BACKFILL})
        assert response.status_code in (200, 201), response.text
        while True:
            samples.append((time.perf_counter() - started, _rss_kib(pid)))
            record = (await client.get("/v1/migrations/backfill")).json()
            if record["state"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.25)
    assert record["state"] == "succeeded", record
    return samples, record


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, nargs="+", default=[15, 18])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--backfill-rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = [
        f"# http_submit — {datetime.date.today()}",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"load {os.getloadavg()[0]:.2f} at start. Rounds: {args.rounds}. Command: "
        f"`.venv/bin/python bench/http_submit.py {' '.join(sys.argv[1:])}`",
        "",
        "## Submit-to-done of `ALTER TABLE t ADD COLUMN c_<k> int` (ms)",
        "",
        "| PG | psql statement (\\timing) | psql process | curl PUT ?wait | httpx PUT ?wait (connected) | "
        "curl - psql (median) | curl / psql (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    memory: list[str] = []
    parts = [
        "",
        "Where the connected PUT's time went, by the journal's timestamps (ms, median and p90): from the",
        "migration's row being created to its run starting (plan from the catalog, steps recorded, run",
        "lock claimed), the step itself (with its journal writes), and everything outside the journal",
        "(HTTP, parsing, the answer's own queries).",
        "",
        "| PG | record, plan, claim | step (journaled) | outside the journal |",
        "|---|---|---|---|",
    ]
    for major in args.versions:
        bin_dir = find_bin_dir(major)
        if bin_dir is None:
            lines.append(f"| {major} | skipped: not installed | | | | | |")
            continue
        with Cluster(bin_dir) as cluster:
            times = uvloop.run(submit_to_done(cluster.dsn(), str(bin_dir / "psql"), args.rounds))
            if major == args.versions[-1]:
                samples, record = uvloop.run(backfill_memory(cluster.dsn(), args.backfill_rows))
                memory = _memory_report(major, args.backfill_rows, samples, record)

        def cell(name: str) -> str:
            return f"{_ms(times[name], 0.5):.1f} (p90 {_ms(times[name], 0.9):.1f})"  # noqa: B023

        psql, curl = statistics.median(times["psql"]), statistics.median(times["curl"])
        parts.append(
            f"| {major} | {cell('record, plan, claim')} | {cell('step (journaled)')} | "
            f"{cell('outside the journal')} |"
        )
        lines.append(
            f"| {major} | {cell('psql statement')} | {cell('psql')} | {cell('curl')} | {cell('httpx')} | "
            f"**{(curl - psql) * 1000:+.1f}** | {curl / psql:.2f}x |"
        )
    report = "\n".join([*lines, *parts, "", *memory]) + "\n"
    print(report)
    out = args.out or ROOT / "bench" / "results" / f"http_submit-{datetime.date.today()}.md"
    out.write_text(report)


def _memory_report(
    major: int, rows: int, samples: list[tuple[float, int]], record: dict[str, object]
) -> list[str]:
    rss = [kib for _, kib in samples]
    quarter = max(1, len(rss) // 4)
    first, last = statistics.mean(rss[:quarter]), statistics.mean(rss[-quarter:])
    steps = record["steps"]
    assert isinstance(steps, list)
    backfill = next(s for s in steps if s["phase"] == "backfill")
    return [
        f"## Daemon memory over a backfill of {rows:,} rows (PG {major})",
        "",
        f"`{BACKFILL}` through `PUT /v1/migrations/backfill`; the daemon's VmRSS sampled every 0.25 s "
        f"({len(rss)} samples over {samples[-1][0]:.1f} s; the backfill step took "
        f"{backfill['duration_s']:.1f} s).",
        "",
        "| RSS at submit | mean, first quarter | mean, last quarter | max | last - first quarter |",
        "|---|---|---|---|---|",
        f"| {rss[0] / 1024:.1f} MiB | {first / 1024:.1f} MiB | {last / 1024:.1f} MiB | "
        f"{max(rss) / 1024:.1f} MiB | {(last - first) / 1024:+.1f} MiB |",
    ]


if __name__ == "__main__":
    main()
