"""Creating and upgrading the journal's own schema, versioned, idempotent, under its own lock.

The journal's versions are the files ``schema/NNNN_*.sql``; each is applied
once, in its own transaction together with the row recording it. Many
processes may start at once against a new database: they take the schema
lock by polling (never blocking in a lock, see advisory.py), and the ones
that come second find the work done.
"""

from __future__ import annotations

from importlib.resources import files

import asyncpg

from zdmproxy import __version__
from zdmproxy.engine.connector import Session, execute_quietly
from zdmproxy.errors import ConfigError
from zdmproxy.journal import advisory
from zdmproxy.journal.queries import QUERIES

_POLL_S = 0.1


def upgrades() -> list[tuple[int, str]]:
    """(version, SQL) of every journal version this zdmproxy knows, in order."""
    found = []
    for entry in files("zdmproxy.journal").joinpath("schema").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


LATEST = upgrades()[-1][0]


async def installed_version(session: Session) -> int:
    if not await session.fetchval(QUERIES["journal_exists"]):
        return 0
    return int(await session.fetchval(QUERIES["journal_version"]))


async def ensure_schema(session: Session) -> None:
    """Bring the journal to this zdmproxy's version; a no-op (one query) when it is there."""
    if await _checked(session) == LATEST:
        return
    await advisory.lock(session, advisory.SCHEMA_KEY, _POLL_S)
    try:
        current = await _checked(session)  # someone may have done it while we waited
        for version, sql in upgrades():
            if version <= current:
                continue
            await session.execute("BEGIN")
            try:
                if not await session.fetchval(QUERIES["schema_exists"]):
                    await session.execute(QUERIES["create_schema"])
                await session.execute(sql)
                await session.execute(QUERIES["record_journal_version"], version, __version__)
                await session.execute("COMMIT")
            except asyncpg.InsufficientPrivilegeError as exc:
                await execute_quietly(session, "ROLLBACK")
                raise ConfigError(
                    f"cannot create the journal (schema zdmproxy): {exc}. Once, as an administrator: "
                    "GRANT CREATE ON DATABASE <db> TO <migration role> (or, if schema zdmproxy exists, "
                    "GRANT USAGE, CREATE ON SCHEMA zdmproxy TO <migration role>), or CREATE SCHEMA "
                    "zdmproxy AUTHORIZATION <migration role>"
                ) from exc
            except BaseException:
                await execute_quietly(session, "ROLLBACK")
                raise
    finally:
        await advisory.unlock(session, advisory.SCHEMA_KEY)


async def _checked(session: Session) -> int:
    current = await installed_version(session)
    if current > LATEST:
        raise ConfigError(
            f"the journal in this database (schema zdmproxy) is at version {current}, newer than this "
            f"zdmproxy {__version__} understands ({LATEST}): upgrade zdmproxy"
        )
    return current
