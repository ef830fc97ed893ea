"""The journal's records, read and written through one connection of its own.

This connection only ever runs short autocommit statements on the
``zdmproxy`` tables (the step session commits a transactional step's row
itself), so it never holds a snapshot that a ``CONCURRENTLY`` build would
wait for.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from zdmproxy.engine.attempt import AttemptRecord
from zdmproxy.engine.connector import CONNECTION_LOST, Session, connect, execute_quietly
from zdmproxy.engine.ledger import Checkpoint, Controls
from zdmproxy.errors import ConfigError, StopRequested, ZdmError
from zdmproxy.journal.queries import QUERIES
from zdmproxy.journal.schema import ensure_schema, installed_version
from zdmproxy.journal.steps import decode, rows
from zdmproxy.plan.model import Step

T = TypeVar("T")


@dataclass(frozen=True)
class MigrationRecord:
    """A row of zdmproxy.migrations."""

    id: str
    checksum: str
    sql: str
    state: str
    version: str | None
    source: str | None
    error: dict[str, Any] | None
    runs: int
    client_host: str | None
    client_pid: int | None
    application_name: str | None
    zdmproxy_version: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    read_at: datetime  # the database's clock when this was read
    phase: str | None = None  # the last phase completed: expand, contract, rollback (None: none)

    def by(self) -> str:
        """Who ran it last, as an operator would want it named."""
        parts = [p for p in (self.application_name, self.client_host) if p]
        who = " on ".join(parts) or "an unknown process"
        if self.client_pid:
            who += f" (pid {self.client_pid})"
        return who


@dataclass(frozen=True)
class StepRecord:
    """A row of zdmproxy.steps."""

    index: int
    sql: str
    phase: str
    kind: str
    transactional: bool
    state: str
    outcome: str | None
    error: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    step: Step


R = TypeVar("R")


def _from_row(cls: type[R], row: Any, **decoded: Any) -> R:
    """A record dataclass from a query row with the same column names, some values decoded."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{name: decoded[name] if name in decoded else row[name] for name in names})


def _json(value: str | None) -> Any:
    return json.loads(value) if value is not None else None


def journal_access_error(exc: asyncpg.PostgresError) -> ConfigError:
    """What to grant when the role may not read or write the journal (or the database is
    read-only: a standby's address, say)."""
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return ConfigError(
            f"the database is read-only ({exc}): a standby, or default_transaction_read_only is on. "
            "Point zdmproxy at the primary (with several hosts in the URL, add "
            "target_session_attrs=read-write)"
        )
    return ConfigError(
        f"cannot use the journal (schema zdmproxy): {exc}. The migration role needs, once, as an "
        "administrator: GRANT USAGE ON SCHEMA zdmproxy TO <role>; GRANT SELECT, INSERT, UPDATE, DELETE "
        "ON ALL TABLES IN SCHEMA zdmproxy TO <role> (SELECT is enough for status and history); and a "
        "primary, not a read-only standby"
    )


def error_json(error: ZdmError) -> str:
    """How a failure is recorded: enough to report it again as it was."""
    return json.dumps({**error.as_dict(), "exit_code": int(error.exit_code)})


class Journal:
    """The journal of one database, on its own connection.

    The connection is re-opened when it was lost (a server restart while a step
    waited), once per call: the journal is what a run consults to learn whether
    a step committed, so it must outlive the connections it is asked about.
    """

    def __init__(self, session: Session, dsn: str, application_name: str) -> None:
        self.session = session
        self.dsn = dsn
        self.application_name = application_name

    @classmethod
    async def open(cls, dsn: str, application_name: str) -> Journal:
        session = await connect(dsn, application_name)
        journal = cls(session, dsn, application_name)
        try:
            await journal.using(ensure_schema)
        except BaseException:
            await session.close()
            raise
        return journal

    async def using(self, work: Callable[[Session], Awaitable[T]]) -> T:
        """Run ``work`` on the journal's connection, on a new one if that was lost (once); a role
        that may not use the journal gets a configuration error that names the grants."""
        for retry in (True, False):
            if self.session.is_closed():
                self.session = await connect(self.dsn, self.application_name)
            try:
                return await work(self.session)
            except CONNECTION_LOST:
                await execute_quietly(self.session, QUERIES["ping"])  # closes it if it is really gone
                if not retry:
                    raise
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError) as exc:
                raise journal_access_error(exc) from exc
        raise AssertionError("unreachable")

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        return await self.using(lambda session: getattr(session, method)(QUERIES[query], *args))

    async def close(self) -> None:
        if not self.session.is_closed():
            await self.session.close()

    async def migration(self, migration_id: str) -> MigrationRecord | None:
        row = await self._call("fetchrow", "migration", migration_id)
        return None if row is None else _from_row(MigrationRecord, row, error=_json(row["error"]))

    async def _transaction(self, body: Callable[[Session], Awaitable[T]]) -> T:
        """Run ``body`` in one transaction, again on a new connection if the first was lost.

        Only for bodies that are safe to run twice: a lost COMMIT may have committed.
        """
        for retry in (True, False):
            if self.session.is_closed():
                self.session = await connect(self.dsn, self.application_name)
            session = self.session
            try:
                await session.execute("BEGIN")
                result = await body(session)
                await session.execute("COMMIT")
                return result
            except CONNECTION_LOST:
                await execute_quietly(session, "ROLLBACK")
                if not retry:
                    raise
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError) as exc:
                await execute_quietly(session, "ROLLBACK")
                raise journal_access_error(exc) from exc
            except BaseException:
                await execute_quietly(session, "ROLLBACK")
                raise
        raise AssertionError("unreachable")

    async def create(
        self,
        migration_id: str,
        checksum: str,
        sql: str,
        steps: Sequence[Step],
        *,
        version: str | None = None,
        source: str | None = None,
    ) -> bool:
        """Record a new migration with its plan; False if the id was recorded already (by another
        process, or by this call before a lost COMMIT: the caller reads back what is there)."""

        async def insert(session: Session) -> bool:
            created = await session.fetchval(
                QUERIES["insert_migration"], migration_id, checksum, sql, version, source
            )
            if created is not None:
                await session.execute(QUERIES["insert_steps"], migration_id, rows(steps))
            return created is not None

        return await self._transaction(insert)

    async def amend(
        self, migration_id: str, checksum: str, sql: str, steps: Sequence[Step], start: int
    ) -> None:
        """Replace the SQL and the steps from ``start`` on (none of which has been applied)."""

        async def replace(session: Session) -> None:
            await session.execute(QUERIES["delete_steps_from"], migration_id, start)
            await session.execute(QUERIES["insert_steps"], migration_id, rows(steps[start:], start))
            await session.execute(QUERIES["amend_migration"], migration_id, checksum, sql)

        await self._transaction(replace)

    async def steps(self, migration_id: str) -> list[StepRecord]:
        return [
            _from_row(StepRecord, row, error=_json(row["error"]), step=decode(json.loads(row["spec"])))
            for row in await self._call("fetch", "steps", migration_id)
        ]

    async def attempts(self, migration_id: str) -> list[dict[str, Any]]:
        return [
            {**dict(row), "blockers": json.loads(row["blockers"])}
            for row in await self._call("fetch", "attempts", migration_id)
        ]

    async def history(self, limit: int) -> list[dict[str, Any]]:
        return [
            {**dict(row), "error": _json(row["error"])} for row in await self._call("fetch", "history", limit)
        ]

    async def versioned(self, ids: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Migrations recorded from a folder, and any recorded under one of ``ids``."""
        return [dict(row) for row in await self._call("fetch", "versioned_migrations", list(ids))]

    async def finish(self, migration_id: str, state: str, run: int, error: ZdmError | None = None) -> None:
        await self._call(
            "execute", "migration_finished", migration_id, state, error_json(error) if error else None, run
        )

    async def stopped_as_asked(self, migration_id: str, stop: StopRequested, run: int) -> None:
        await self._call(
            "execute", "migration_stopped_as_asked", migration_id, stop.state, error_json(stop), run
        )

    async def finish_phase(self, migration_id: str, state: str, phase: str, run: int) -> None:
        await self._call("execute", "migration_phase_finished", migration_id, state, phase, run)

    async def steps_rolled_back(self, migration_id: str) -> None:
        await self._call("execute", "steps_rolled_back", migration_id)

    async def step_state(self, migration_id: str, index: int) -> str | None:
        state: str | None = await self._call("fetchval", "step_state", migration_id, index)
        return state

    async def step_started(self, migration_id: str, index: int, run: int) -> str | None:
        before: str | None = await self._call("fetchval", "step_started", migration_id, index, run)
        return before

    async def step_succeeded(self, migration_id: str, index: int, run: int) -> None:
        await self._call("execute", "step_succeeded", migration_id, index, run)

    async def step_failed(
        self, migration_id: str, index: int, outcome: str, error: ZdmError, run: int
    ) -> None:
        await self._call("execute", "step_failed", migration_id, index, outcome, error_json(error), run)

    async def attempt(self, migration_id: str, index: int, run: int, record: AttemptRecord) -> None:
        await self._call(
            "execute",
            "insert_attempt",
            migration_id,
            index,
            run,
            record.number,
            record.started_at,
            record.ended_at,
            record.outcome.value if record.outcome else None,
            record.error.sqlstate if record.error else None,
            record.error.message if record.error else None,
            record.lock_timeout_ms,
            record.queued_behind_us,
            json.dumps([{**dataclasses.asdict(b), "describe": b.describe()} for b in record.blockers]),
        )

    async def checkpoint(self, migration_id: str, index: int) -> Checkpoint | None:
        row = await self._call("fetchrow", "checkpoint", migration_id, index)
        if row is None:
            return None
        position = json.loads(row["position"])
        return Checkpoint(
            tuple(position["after"]),
            int(row["rows_done"]),
            upper=tuple(position["upper"]),
            rows_total_estimate=row["rows_total_estimate"],
            batch_rows=row["batch_rows"],
            throttled_by=row["throttled_by"],
        )

    async def controls(self, migration_id: str) -> Controls:
        row = await self._call("fetchrow", "controls", migration_id)
        if row is None:
            return Controls()
        return Controls(row["control"], json.loads(row["throttle"]))


async def open_existing(dsn: str, application_name: str) -> Journal | None:
    """The journal if this database has one; None without creating it (read-only commands)."""
    journal = Journal(await connect(dsn, application_name), dsn, application_name)
    try:
        version = await journal.using(installed_version)
    except BaseException:
        await journal.close()
        raise
    if version == 0:
        await journal.close()
        return None
    return journal
