"""A daemon for API tests: in-process behind httpx's ASGI transport, or ``zdmproxy serve`` for real."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from zdmproxy.api.app import create_app
from zdmproxy.api.daemon import Daemon
from zdmproxy.policy import MigrationPolicy


@dataclass
class Api:
    client: httpx.AsyncClient
    daemon: Daemon


@contextlib.asynccontextmanager
async def in_process(dsn: str, token: str | None = None, **policy: Any) -> AsyncIterator[Api]:
    daemon = Daemon(dsn, MigrationPolicy(**policy), probe_interval_s=0.2, poll_s=0.05)
    await daemon.start()
    transport = httpx.ASGITransport(app=create_app(daemon, token))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://zdmproxy", timeout=60) as client:
            yield Api(client, daemon)
    finally:
        await daemon.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    """A ``zdmproxy serve`` subprocess; its stderr is collected into ``log``."""

    proc: asyncio.subprocess.Process
    url: str
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=60, **kwargs)

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signum)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise


async def serve(
    tmp_path: Path, *args: str, env: Mapping[str, str] | None = None, ready: bool = True, name: str = "daemon"
) -> Served:
    """Start ``python -m zdmproxy serve ARGS`` and wait until /readyz answers 200."""
    log_path = tmp_path / f"{name}-{os.urandom(3).hex()}.log"
    port = free_port()
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zdmproxy",
            "serve",
            "--port",
            str(port),
            *args,
            stdout=log,
            stderr=log,
            env={**os.environ, **(env or {})},
        )
    served = Served(proc, f"http://127.0.0.1:{port}", log_path)
    if ready:
        await wait_ready(served)
    return served


async def wait_ready(served: Served, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout), served.client() as client:
        while True:
            if served.proc.returncode is not None:
                raise AssertionError(f"zdmproxy serve exited {served.proc.returncode}:\n{served.log}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)


async def settled(client: httpx.AsyncClient, migration_id: str, timeout: float = 30) -> dict[str, Any]:
    """The migration once it succeeded, failed, was cancelled or paused."""
    async with asyncio.timeout(timeout):
        while True:
            body: dict[str, Any] = (await client.get(f"/v1/migrations/{migration_id}")).json()
            if body["state"] in ("succeeded", "failed", "cancelled", "paused"):
                return body
            await asyncio.sleep(0.05)


async def count_runs_table(dsn: str) -> None:
    """A side-effect table: every time a migration's INSERT step runs, it adds a row."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE runs (id bigint GENERATED ALWAYS AS IDENTITY, what text)")
    finally:
        await conn.close()
