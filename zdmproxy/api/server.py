"""Serving the API: the listening socket bound here, uvicorn without its own signal handling,
and a graceful SIGTERM inside zdmproxy's uvloop main.

Two of uvicorn's defaults do not fit a sidecar: its signal handling exits 143 and cuts open
streams, and its ``uds`` option leaves the socket file world-writable. So the socket is bound
here (a unix socket created 0600 under a tight umask), uvicorn gets it ready-made with signal
capture switched off, and SIGTERM/SIGINT run ``Daemon.stop`` first: event streams and
long-polls end, running steps reach a safe point and are recorded, then the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from zdmproxy.api.app import create_app
from zdmproxy.api.daemon import Daemon
from zdmproxy.errors import ConfigError

log = logging.getLogger("zdmproxy.daemon")


@dataclass(frozen=True)
class Listen:
    """Where the API listens: a TCP host and port, or a unix socket path."""

    host: str = "127.0.0.1"
    port: int = 8080
    unix_socket: Path | None = None

    @property
    def loopback(self) -> bool:
        if self.unix_socket is not None:
            return True  # reachable only through the file system, and the file is 0600
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    def describe(self) -> str:
        if self.unix_socket is not None:
            return f"unix socket {self.unix_socket}"
        return (
            f"http://{self.host}:{self.port}" if ":" not in self.host else f"http://[{self.host}]:{self.port}"
        )


def check_exposure(listen: Listen, token: str | None) -> None:
    """A listener other processes or hosts can reach needs a token: refuse to start without."""
    if token is None and not listen.loopback:
        raise ConfigError(
            f"refusing to listen on {listen.describe()} without a token: anyone who can reach it could run "
            "DDL. Give a token file (--token-file, ZDM_TOKEN_FILE) or listen on 127.0.0.1 / a unix socket"
        )


def bind(listen: Listen) -> socket.socket:
    """The listening socket, bound here (a unix socket readable and writable by its owner only)."""
    if listen.unix_socket is not None:
        path = listen.unix_socket
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ConfigError(f"{path} exists and is not a socket: choose another --unix-socket path")
            path.unlink()  # left by an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # created 0600: no window in which another user could connect
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
    else:
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((listen.host, listen.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {listen.describe()}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: zdmproxy's main decides what a signal does."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(daemon: Daemon, listen: Listen, token: str | None, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT (or ``stop`` is set: a daemon inside another program, the
    demo), then stop gracefully (see the module's docstring)."""
    check_exposure(listen, token)
    sock = bind(listen)
    config = uvicorn.Config(
        create_app(daemon, token),
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    server = _Server(config)
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await daemon.start()
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        stopping = asyncio.create_task(stop.wait())
        log.info("listening on %s", listen.describe())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping: bringing running migrations to a safe point")
        await daemon.stop()
        server.should_exit = True
        await serving
        stopping.cancel()
        log.info("stopped")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        sock.close()
        if listen.unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                listen.unix_socket.unlink()
