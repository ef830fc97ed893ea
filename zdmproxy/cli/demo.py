"""``zdmproxy demo``: the point of zdmproxy in about half a minute, on a throwaway PostgreSQL.

It plays an application (a few clients reading and writing one table, every request's latency
recorded) and a report that keeps a transaction open on that table. Then it submits a schema
change that needs splitting (a NOT NULL column whose default must be backfilled, and an index)
to a zdmproxy daemon running in this process, over its HTTP API (on a unix socket), and shows
the plan, the blocker the daemon waited for, the backfill and the clients' latency, live, from
the daemon's own event stream. Then the same change as written, with the same traffic and the
same report, and both latency figures side by side.

With ``--dsn`` it runs on that database instead (it creates ``demo_accounts`` there and leaves it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from zdmproxy.api.daemon import Daemon
from zdmproxy.api.server import Listen, serve
from zdmproxy.cli.progress import ServerSentEvents, event_display, live_wanted
from zdmproxy.cli.shared import err, out, run_async
from zdmproxy.engine.events import Event, EventKind, deliver
from zdmproxy.engine.queries import load_queries
from zdmproxy.errors import ExitCode, UsageError, ZdmError
from zdmproxy.policy import MigrationPolicy

QUERIES = load_queries("zdmproxy.cli", "demo.sql")
SLOW_MS = 100.0  # a request slower than this counts as stalled (zdmproxy's default queue budget)
REPORT_APP = "demo-report"
DEADLINE_S = 120.0  # the demo ends by itself whatever happens


class DemoFailed(ZdmError):
    """The demo's migration did not succeed (its error says why)."""

    code = "demo_failed"


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = commands.add_parser(
        "demo",
        help="see zdmproxy work: embedded PostgreSQL, live traffic, a blocker, a split migration",
    )
    demo.add_argument("--dsn", help="run on this (empty) database instead of a throwaway embedded one")
    demo.add_argument("--rows", type=int, default=200_000, metavar="N", help="rows in the demo table")
    demo.add_argument(
        "--clients", type=int, default=4, metavar="N", help="application clients reading and writing"
    )
    demo.add_argument(
        "--hold-s",
        type=float,
        default=3.0,
        metavar="S",
        help="how long the report holds its transaction",
    )
    demo.add_argument("--json", action="store_true", help="print the comparison as JSON")
    demo.set_defaults(handler=run)


@dataclass(frozen=True)
class Options:
    rows: int
    clients: int
    hold_s: float


def run(args: argparse.Namespace) -> int:
    options = Options(args.rows, args.clients, args.hold_s)
    if not 1_000 <= options.rows <= 10_000_000:
        raise UsageError(f"--rows {options.rows}: give between 1000 and 10000000")
    if not 1 <= options.clients <= 32:
        raise UsageError(f"--clients {options.clients}: give between 1 and 32")
    if not 0.5 <= options.hold_s <= 30:
        raise UsageError(f"--hold-s {options.hold_s:g}: give between 0.5 and 30 seconds")
    with ExitStack() as stack:
        if args.dsn:
            dsn = str(args.dsn)
        else:
            from zdmproxy.embedded import throwaway_server

            err.print("[dim]starting a throwaway embedded PostgreSQL (deleted afterwards)...[/dim]")
            dsn = stack.enter_context(throwaway_server())
        try:
            report = run_async(_demo(dsn, options), dsn=dsn)
        except (KeyboardInterrupt, asyncio.CancelledError):
            err.print("[red]interrupted[/red]: the demo stopped and cleaned up")
            return int(ExitCode.CANCELLED)
    if args.json:
        out.print_json(json.dumps(report, default=str))
    else:
        out.print(_comparison(report))
    return int(ExitCode.OK)


# -- the application ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """What the clients saw over a stretch of time (requests still waiting count as far as they got)."""

    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    slow: int  # requests slower than SLOW_MS


@dataclass
class Traffic:
    """Clients doing primary-key reads and writes, paced like an application, each request timed."""

    dsn: str
    clients: int
    rows: int
    pace_s: float = 0.004  # leaves CPU for the server and the migration on a small machine
    done: list[tuple[float, float]] = field(default_factory=list)  # (started, seconds)
    waiting: dict[int, float] = field(default_factory=dict)  # client -> started, in flight
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Traffic]:
        conns = [
            await asyncpg.connect(self.dsn, server_settings={"application_name": "demo-app"})
            for _ in range(self.clients)
        ]
        self._tasks = [asyncio.create_task(self._client(n, conn)) for n, conn in enumerate(conns)]
        try:
            yield self
        finally:
            self._stop.set()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, number: int, conn: asyncpg.Connection) -> None:
        rng = random.Random(number)
        try:
            while not self._stop.is_set():
                query = QUERIES["read"] if rng.random() < 0.75 else QUERIES["write"]
                started = time.monotonic()
                self.waiting[number] = started
                await conn.execute(query, rng.randint(1, self.rows))
                del self.waiting[number]
                self.done.append((started, time.monotonic() - started))
                await asyncio.sleep(self.pace_s)
        finally:
            await conn.close()

    def latency(self, since: float, until: float | None = None) -> Latency:
        now = time.monotonic()
        until = now if until is None else until
        seconds = [s for started, s in self.done if since <= started <= until]
        seconds += [now - started for started in self.waiting.values() if since <= started <= until]
        if not seconds:
            return Latency(0, 0.0, 0.0, 0.0, 0)
        seconds.sort()

        def pick(q: float) -> float:
            return round(seconds[min(len(seconds) - 1, int(q * len(seconds)))] * 1000, 2)

        slow = sum(s * 1000 > SLOW_MS for s in seconds)
        return Latency(len(seconds), pick(0.5), pick(0.99), pick(1.0), slow)

    async def settle(self) -> None:
        """Until every request started so far has finished (a stuck one is counted in full)."""
        mark = time.monotonic()
        async with asyncio.timeout(30):
            while any(started <= mark for started in self.waiting.values()):
                await asyncio.sleep(0.01)


class LatencyLine:
    """The clients' latency over the last second, for the live display. Computed on the event
    loop (which owns the samples); rich's refresh thread only reads the finished text."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.text = Text("")

    def __rich__(self) -> RenderableType:
        return self.text

    @contextlib.asynccontextmanager
    async def updating(self) -> AsyncIterator[LatencyLine]:
        async def update() -> None:
            while True:
                self.text = Text.from_markup(_latency_markup(self.traffic))
                await asyncio.sleep(0.25)

        async with _repeating(update):
            yield self


def _latency_markup(traffic: Traffic) -> str:
    now = time.monotonic()
    last = traffic.latency(now - 1.0)
    stuck = max((now - s for s in traffic.waiting.values()), default=0.0)
    style = "red" if last.max_ms > SLOW_MS or stuck * 1000 > SLOW_MS else "green"
    text = (
        f"  [{style}]clients[/{style}]: {last.requests} requests in the last second, "
        f"p99 {last.p99_ms:.1f} ms, max {last.max_ms:.1f} ms"
    )
    if stuck * 1000 > SLOW_MS:
        text += f", [bold red]{len(traffic.waiting)} waiting for {stuck:.1f} s[/bold red]"
    return text


@contextlib.asynccontextmanager
async def _latency_shown(traffic: Traffic) -> AsyncIterator[LatencyLine]:
    """The clients' latency: a live line under the event panel on a terminal, else a plain line
    every two seconds."""
    line = LatencyLine(traffic)
    if live_wanted(err):
        async with line.updating():
            yield line
        return

    async def every_two_seconds() -> None:
        while True:
            await asyncio.sleep(2)
            err.print(_latency_markup(traffic))

    async with _repeating(every_two_seconds):
        yield line


@contextlib.asynccontextmanager
async def _repeating(loop: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- the flow ------------------------------------------------------------------------------------


async def _demo(dsn: str, options: Options) -> dict[str, Any]:
    """Set up, run both phases through an in-process daemon, clean up; the comparison."""
    try:
        return await asyncio.wait_for(_phases(dsn, options), DEADLINE_S)
    except TimeoutError:  # an OSError: it must not read as a lost connection
        raise DemoFailed(f"the demo did not finish within {DEADLINE_S:g} s; it stopped") from None


async def _phases(dsn: str, options: Options) -> dict[str, Any]:
    """The table, the daemon, the traffic, both phases; what the migration left."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval(QUERIES["exists"]):
            raise UsageError("demo_accounts already exists here: give the demo an empty database")
        err.print(f"creating demo_accounts with {options.rows:,} rows...")
        for name in ("create_table", "fill_table", "analyze_table"):
            await conn.execute(QUERIES[name], *([options.rows] if name == "fill_table" else []))
    finally:
        await conn.close()
    with tempfile.TemporaryDirectory(prefix="zdmproxy-demo-") as tmp:
        async with _daemon(dsn, Path(tmp) / "api.sock") as client:
            traffic = Traffic(dsn, options.clients, options.rows)
            async with traffic.running():
                err.print(
                    f"{options.clients} clients read and write demo_accounts (every request timed); "
                    f"a report session '{REPORT_APP}' keeps a transaction open for {options.hold_s:g} s "
                    "in each phase"
                )
                safe = await _through_daemon(client, traffic, dsn, options)
                naive = await _as_written(traffic, dsn, options)
    conn = await asyncpg.connect(dsn)
    try:
        outcome = dict(await conn.fetchrow(QUERIES["outcome"]))
    finally:
        await conn.close()
    return {
        "rows": options.rows,
        "clients": options.clients,
        "hold_s": options.hold_s,
        "slow_ms": SLOW_MS,
        "zdmproxy": safe,
        "as_written": naive,
        "outcome": outcome,
    }


@contextlib.asynccontextmanager
async def _daemon(dsn: str, socket: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A zdmproxy daemon in this process, serving its HTTP API on a unix socket; a client for it.
    A Ctrl-C (which the daemon's own handler catches) stops the demo too."""
    stop = asyncio.Event()
    # The defaults, except that the demo's table stands for a large one: its long locks are split
    # too (by default a table under long_lock_min_bytes is small enough to lock briefly as written).
    daemon = Daemon(dsn, MigrationPolicy.model_validate({}))  # the defaults, as shipped
    server = asyncio.create_task(serve(daemon, Listen(unix_socket=socket), None, stop))
    transport = httpx.AsyncHTTPTransport(uds=str(socket))
    demo = asyncio.current_task()
    assert demo is not None

    def interrupted(_: object) -> None:
        if not demo.done() and not stopping:
            demo.cancel()

    stopping = False
    watcher = asyncio.create_task(stop.wait())
    watcher.add_done_callback(interrupted)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://zdmproxy", timeout=30) as client:
            await _until_ready(client, server)
            err.print(f"zdmproxy daemon running in this process: HTTP on unix socket {socket}")
            yield client
    finally:
        stopping = True
        stop.set()
        await asyncio.wait_for(server, 30)
        watcher.cancel()


async def _until_ready(client: httpx.AsyncClient, server: asyncio.Task[None]) -> None:
    async with asyncio.timeout(30):
        while True:
            if server.done():
                server.result()  # its error (the socket, the database)
                raise DemoFailed("the daemon stopped before it was ready")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _report_session(dsn: str, hold_s: float) -> AsyncIterator[None]:
    """A report's transaction on the table, open for ``hold_s`` from now, then committed."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": REPORT_APP})
    await conn.execute(QUERIES["hold"])
    ends = time.monotonic() + hold_s

    async def release() -> None:
        await asyncio.sleep(max(0.0, ends - time.monotonic()))
        await conn.execute(QUERIES["release"])
        err.print(f"  [dim]the report session committed after {hold_s:g} s[/dim]")

    releasing = asyncio.create_task(release())
    try:
        await asyncio.sleep(0.3)  # an old transaction by now: the kind that blocks DDL
        yield
        await releasing
    finally:
        releasing.cancel()
        await conn.close()


async def _through_daemon(
    client: httpx.AsyncClient, traffic: Traffic, dsn: str, options: Options
) -> dict[str, Any]:
    script = QUERIES["migration"]
    migration_id = f"demo-{int(time.time())}"
    err.rule("[bold]1. through zdmproxy[/bold]")
    plan = _ok(await client.post("/v1/plan", json={"sql": script}))
    err.print("the migration, as a deploy script would send it (PUT /v1/migrations/{id}):")
    for line in script.splitlines():
        err.print(f"  [cyan]{escape(line)}[/cyan]")
    steps = [step for statement in plan["statements"] for step in statement["steps"]]
    err.print(f"the plan (POST /v1/plan): {len(steps)} steps")
    for number, step in enumerate(steps, 1):
        sql = " ".join(step["sql"].split())
        err.print(f"  {number}. [bold]{step['phase']:<8}[/bold] {escape(sql[:110])}")
    blockers: list[str] = []
    backfilled = 0
    started = time.monotonic()
    async with _report_session(dsn, options.hold_s), _latency_shown(traffic) as latency:
        submitted = time.monotonic()
        created = await client.put(f"/v1/migrations/{migration_id}", json={"sql": script})
        _ok(created)
        with event_display(err, latency) as sink:
            async for event in _events(client, migration_id):
                await deliver(sink, event)
                blockers += [b.describe() for b in event.blockers]
                if event.progress is not None:
                    backfilled = event.progress.rows_done
        finished = time.monotonic()
    await traffic.settle()
    record = _ok(await client.get(f"/v1/migrations/{migration_id}"))
    if record["state"] != "succeeded":
        raise DemoFailed(f"the migration {record['state']}: {record['error']}")
    err.print(f"[green]✓ done through zdmproxy in {finished - submitted:.1f} s[/green]")
    return {
        "id": migration_id,
        "steps": [{"phase": s["phase"], "sql": s["sql"]} for s in steps],
        "waited_for": sorted(set(blockers)),
        "backfilled_rows": backfilled,
        "seconds": round(finished - submitted, 3),
        "latency": asdict(traffic.latency(started, finished)),
    }


async def _as_written(traffic: Traffic, dsn: str, options: Options) -> dict[str, Any]:
    err.rule("[bold]2. the same change as written[/bold] (new names, same statements)")
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "demo-as-written"})
    started = time.monotonic()
    try:
        async with _report_session(dsn, options.hold_s), _latency_shown(traffic) as latency:
            submitted = time.monotonic()
            with event_display(err, latency) as sink:
                for number, name in enumerate(("naive_column", "naive_index")):
                    sql = QUERIES[name]
                    detail = "as written: no lock_timeout, no pre-flight, one statement, one lock"
                    await deliver(sink, Event(EventKind.STEP_STARTED, number, sql, detail=detail))
                    began = time.monotonic()
                    await conn.execute(sql)
                    took = f"done in {time.monotonic() - began:.1f} s"
                    await deliver(sink, Event(EventKind.STEP_SUCCEEDED, number, took))
            finished = time.monotonic()
    finally:
        await conn.close()
    await traffic.settle()
    err.print(f"[yellow]done as written in {finished - submitted:.1f} s[/yellow]")
    return {
        "statements": [QUERIES["naive_column"], QUERIES["naive_index"]],
        "seconds": round(finished - submitted, 3),
        "latency": asdict(traffic.latency(started, finished)),
    }


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise DemoFailed(f"{response.request.method} {response.request.url.path}: {response.text}")
    body: dict[str, Any] = response.json()
    return body


async def _events(client: httpx.AsyncClient, migration_id: str) -> AsyncIterator[Event]:
    """The migration's server-sent events as the engine's Events (so they render as in
    ``apply``), until the stream ends with the migration."""
    stream_events = ServerSentEvents()
    async with client.stream("GET", f"/v1/migrations/{migration_id}/events", timeout=None) as stream:
        async for line in stream.aiter_lines():
            event = stream_events.feed(line)
            if isinstance(event, Event):
                yield event


# -- the result ----------------------------------------------------------------------------------


def _comparison(report: dict[str, Any]) -> Table:
    safe, naive = report["zdmproxy"]["latency"], report["as_written"]["latency"]
    table = Table(
        title=f"{report['clients']} clients, {report['rows']:,} rows, a report holding its transaction "
        f"for {report['hold_s']:g} s",
        title_justify="left",
    )
    table.add_column("while the change ran")
    table.add_column("zdmproxy", justify="right", style="green")
    table.add_column("as written", justify="right", style="red")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("requests served", lambda lat: f"{lat['requests']:,}"),
        ("median latency", lambda lat: f"{lat['p50_ms']:,.1f} ms"),
        ("p99 latency", lambda lat: f"{lat['p99_ms']:,.1f} ms"),
        ("slowest request", lambda lat: f"{lat['max_ms']:,.0f} ms"),
        (f"requests over {report['slow_ms']:g} ms", lambda lat: f"{lat['slow']:,}"),
    ]
    for label, render in rows:
        table.add_row(label, render(safe), render(naive))
    table.add_row(
        "the change took",
        f"{report['zdmproxy']['seconds']:.1f} s",
        f"{report['as_written']['seconds']:.1f} s",
    )
    return table
