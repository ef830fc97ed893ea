"""``zdmproxy serve`` as real processes: signals, sockets, tokens, several daemons on one
database, a daemon stopped or killed mid-migration and taken over, and logs without passwords."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import stat
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from daemon_helpers import count_runs_table, serve, wait_ready
from helpers import ITEMS, idle_blocker

PASSWORD = "Sup3r-Secret-pw-7731"
WAIT = {"wait": 60}


def _with_password(dsn: str) -> str:
    """The test clusters trust local connections: the password is sent, never checked."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace("@", f":{PASSWORD}@", 1)))


async def _step_session(conn: asyncpg.Connection, migration_id: str, *, waiting: bool) -> int:
    """The pid of the migration's step session (once it waits for a lock, with ``waiting``)."""
    async with asyncio.timeout(20):
        while True:
            pid = await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1"
                " AND (NOT $2 OR wait_event_type = 'Lock')",
                f"zdmproxy:{migration_id}:step%",
                waiting,
            )
            if pid is not None:
                return int(pid)
            await asyncio.sleep(0.05)


async def test_non_loopback_listener_without_token_refuses_to_start(dsn: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "zdmproxy", "serve", "--dsn", dsn, "--host", "0.0.0.0", "--port", "1",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 78
    assert b"without a token" in stderr


async def test_token_unix_socket_and_no_password_in_logs(dsn: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-0123456789abcdef\n")
    secret_dsn = _with_password(dsn)
    served = await serve(tmp_path, "--dsn", secret_dsn, "--host", "0.0.0.0", "--token-file", str(token_file))
    socket_path = tmp_path / "api.sock"
    on_socket = await serve(tmp_path, "--dsn", secret_dsn, "--unix-socket", str(socket_path), ready=False)
    try:
        async with served.client() as client:
            assert (await client.get("/v1/migrations")).status_code == 401
            wrong = await client.get(
                "/v1/migrations", headers={"Authorization": "Bearer tok-0123456789abcdeX"}
            )
            assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"
            auth = {"Authorization": "Bearer tok-0123456789abcdef"}
            good = await client.put(
                "/v1/migrations/ok",
                params={"wait": 30},
                json={"sql": "CREATE TABLE t (id int)"},
                headers=auth,
            )
            assert good.status_code == 201 and good.json()["state"] == "succeeded"
            failed = await client.put(
                "/v1/migrations/bad",
                params={"wait": 30},
                json={"sql": "ALTER TABLE nope ADD x int"},
                headers=auth,
            )
            assert failed.json()["state"] == "failed"
            assert (
                PASSWORD not in failed.text
                and PASSWORD not in (await client.get("/metrics", headers=auth)).text
            )

        async with asyncio.timeout(20):
            while not socket_path.exists():
                await asyncio.sleep(0.05)
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://zdmproxy") as client:
            async with asyncio.timeout(20):
                while (await client.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.05)
            listed = await client.get("/v1/migrations")  # no token needed on a 0600 socket
            assert {m["id"] for m in listed.json()["migrations"]} == {"ok", "bad"}
    finally:
        assert await served.stop() == 0
        assert await on_socket.stop() == 0
    assert not socket_path.exists()
    for log in (served.log, on_socket.log):
        assert "listening on" in log
        assert PASSWORD not in log


async def test_password_file_is_read_on_every_connect(dsn: str, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    env = {"ZDM_DATABASE_PASSWORD_FILE": str(secret)}
    served = await serve(tmp_path, "--dsn", dsn, env=env, ready=False)
    try:
        async with served.client() as client:
            async with asyncio.timeout(20):  # the file is not there yet: the daemon cannot connect
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        ready = (await client.get("/readyz")).json()
                        if ready["database"]["checked_at"] is not None:
                            break
                    await asyncio.sleep(0.05)
            assert ready["ready"] is False and "ZDM_DATABASE_PASSWORD_FILE" in ready["database"]["error"]
            secret.write_text(PASSWORD + "\n")  # mounted (or rotated): the next connect reads it
            await wait_ready(served)
    finally:
        assert await served.stop() == 0
    assert PASSWORD not in served.log


async def test_three_daemons_run_each_migration_once(dsn: str, tmp_path: Path) -> None:
    await count_runs_table(dsn)
    conn = await asyncpg.connect(dsn)
    await conn.execute(ITEMS)
    migrations = {
        "m1": "INSERT INTO runs (what) VALUES ('m1'); ALTER TABLE items ADD COLUMN note text;",
        "m2": "INSERT INTO runs (what) VALUES ('m2'); CREATE INDEX CONCURRENTLY items_a_idx ON items (a);",
        "m3": "INSERT INTO runs (what) VALUES ('m3'); ALTER TABLE items ADD COLUMN flag bool;",
    }
    daemons = [await serve(tmp_path, "--dsn", dsn, name=f"d{n}") for n in range(3)]
    writing = True

    async def writes() -> int:
        writer = await asyncpg.connect(dsn)
        done = 0
        try:
            while writing:
                await writer.execute("INSERT INTO items (id, a) VALUES ($1, 1)", 100_000 + done)
                done += 1
        finally:
            await writer.close()
        return done

    traffic = asyncio.create_task(writes())
    clients = [d.client() for d in daemons]
    try:
        for migration_id, sql in migrations.items():
            answers = await asyncio.gather(
                *(
                    c.put(f"/v1/migrations/{migration_id}", params={"wait": 60}, json={"sql": sql})
                    for c in clients
                )
            )
            assert [a.json()["state"] for a in answers] == ["succeeded"] * 3, [a.text for a in answers]
            assert sorted(a.status_code for a in answers) == [200, 200, 201]
    finally:
        writing = False
        rows_written = await traffic
        for client in clients:
            await client.aclose()
        for daemon in daemons:
            assert await daemon.stop() == 0
    try:
        runs = await conn.fetch("SELECT what, count(*) AS n FROM runs GROUP BY what ORDER BY what")
        assert [(r["what"], r["n"]) for r in runs] == [("m1", 1), ("m2", 1), ("m3", 1)]
        assert await conn.fetchval("SELECT bool_and(runs = 1) FROM zdmproxy.migrations")
        assert await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_a_idx'::regclass"
        )
        assert rows_written > 0
    finally:
        await conn.close()


async def test_sigterm_leaves_the_journal_consistent_and_another_daemon_resumes(
    dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(ITEMS)
    blocker = await idle_blocker(dsn, "items")
    sql = "CREATE TABLE a (id int); ALTER TABLE items ADD COLUMN x int; CREATE TABLE c (id int);"
    first = await serve(tmp_path, "--dsn", dsn, name="first")
    try:
        async with first.client() as client:
            assert (await client.put("/v1/migrations/s1", json={"sql": sql})).status_code == 201
            await _step_session(conn, "s1", waiting=False)
            async with asyncio.timeout(20):
                while not await conn.fetchval(
                    "SELECT EXISTS (SELECT FROM zdmproxy.events WHERE step_index = 1"
                    " AND kind IN ('waiting_for_blockers', 'attempt_failed'))"
                ):
                    await asyncio.sleep(0.05)
            # A client follows the event stream; the daemon going away ends it cleanly.
            seen: list[int] = []
            async with client.stream("GET", "/v1/migrations/s1/events") as stream:
                first.proc.send_signal(signal.SIGTERM)
                async for line in stream.aiter_lines():
                    if line.startswith("id: "):
                        seen.append(int(line.removeprefix("id: ")))
    finally:
        code = await first.stop(signal.SIGTERM)
    assert code == 0, first.log
    assert "graceful shutdown exceeded" not in first.log  # the stream ended, it was not cut
    assert seen
    record = await conn.fetchrow("SELECT state, error, control FROM zdmproxy.migrations WHERE id = 's1'")
    assert record["state"] == "cancelled" and record["error"] is None  # stopped, to be taken over
    steps = await conn.fetch("SELECT state FROM zdmproxy.steps WHERE migration_id = 's1' ORDER BY index")
    assert steps[0]["state"] == "succeeded" and steps[2]["state"] == "pending"
    async with asyncio.timeout(10):  # it closed its sessions; their backends end right after
        while await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'zdmproxy%'"
        ):
            await asyncio.sleep(0.02)
    assert not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_attribute WHERE attname = 'x')")

    await blocker.execute("ROLLBACK")
    second = await serve(tmp_path, "--dsn", dsn, name="second")
    try:
        async with second.client() as client:
            resumed = await client.put("/v1/migrations/s1", params={"wait": 30}, json={"sql": sql})
            assert resumed.status_code == 200 and resumed.json()["state"] == "succeeded"
            assert resumed.json()["runs"] == 2
            # It reconnects to the other daemon with the last id it saw and misses nothing.
            rest = await client.get("/v1/migrations/s1/events", headers={"Last-Event-ID": str(seen[-1])})
            lines = rest.text.splitlines()
            again = [int(line.removeprefix("id: ")) for line in lines if line.startswith("id: ")]
            every = await conn.fetch("SELECT id FROM zdmproxy.events WHERE migration_id = 's1' ORDER BY id")
            assert seen + again == [r["id"] for r in every]
            assert "taking_over" in rest.text or "step_started" in rest.text
    finally:
        assert await second.stop() == 0
        await blocker.close()
    assert await conn.fetchval("SELECT to_regclass('c') IS NOT NULL")
    await conn.close()


async def test_kill_9_during_a_concurrent_index_build_and_another_daemon_takes_over(
    dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(ITEMS)
    # An old snapshot: CREATE INDEX CONCURRENTLY waits for it, so the build is caught mid-way.
    old = await asyncpg.connect(dsn)
    await old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class")
    sql = "CREATE INDEX CONCURRENTLY items_a_idx ON items (a);"
    victim = await serve(tmp_path, "--dsn", dsn, name="victim")
    survivor = await serve(tmp_path, "--dsn", dsn, name="survivor")
    try:
        async with victim.client() as client:
            assert (await client.put("/v1/migrations/k1", json={"sql": sql})).status_code == 201
        pid = await _step_session(conn, "k1", waiting=True)
        victim.proc.send_signal(signal.SIGKILL)
        await victim.proc.wait()
        async with asyncio.timeout(20):  # the server notices its client is gone (1 s check)
            while await conn.fetchval("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)", pid):
                await asyncio.sleep(0.05)
        assert await conn.fetchval(
            "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = 'items_a_idx'::regclass"
        )
        await old.execute("ROLLBACK")

        async with survivor.client() as client:
            taken = await client.put("/v1/migrations/k1", params={"wait": 30}, json={"sql": sql})
            assert taken.status_code == 200, taken.text
            assert taken.json()["state"] == "succeeded" and taken.json()["runs"] == 2
            events = (await client.get("/v1/migrations/k1/events")).text
            assert "taking_over" in events and "debris_dropped" in events
    finally:
        await old.close()
        assert await survivor.stop() == 0
        if victim.proc.returncode is None:
            victim.proc.kill()
            await victim.proc.wait()
    assert await conn.fetchval("SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'items'::regclass")
    assert await conn.fetchval("SELECT count(*) FROM pg_index WHERE indrelid = 'items'::regclass") == 2
    await conn.close()
