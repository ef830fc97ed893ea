"""One error hierarchy for every layer.

Each class carries a stable ``code`` (machine-readable, exposed by the CLI and
later the HTTP API) and the process exit code a command that runs migrations
must return for it, so a Kubernetes Job can retry only what is worth retrying
(69 unreachable, 75 lock budget ran out).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes every migration-running command keeps (documented in the README)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    CONFLICT = 3
    WAIT_TIMED_OUT = 4
    CANCELLED = 5
    # `plan` only: some statement would hold a lock that stops reads or writes while it
    # rewrites or scans a table, so CI can refuse such a migration before anyone runs it.
    BLOCKS_TRAFFIC = 6
    UNREACHABLE = 69
    LOCK_BUDGET_EXHAUSTED = 75
    BAD_CONFIG = 78


@dataclass(frozen=True)
class PgErrorInfo:
    """What PostgreSQL said, kept verbatim so an operator can search for it."""

    sqlstate: str | None
    message: str
    detail: str | None = None
    hint: str | None = None
    position: int | None = None


class ZdmError(Exception):
    """Base of every error zdmproxy reports on purpose."""

    code = "error"
    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, pg: PgErrorInfo | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pg = pg

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.pg is not None:
            out["sqlstate"] = self.pg.sqlstate
            if self.pg.position is not None:
                out["position"] = self.pg.position
        return out


class UsageError(ZdmError):
    code = "usage"
    exit_code = ExitCode.USAGE


class ConfigError(ZdmError):
    code = "bad_configuration"
    exit_code = ExitCode.BAD_CONFIG


class SqlParseError(ZdmError):
    """The input is not valid SQL; ``position`` is a 0-based character offset into the script."""

    code = "parse_error"

    def __init__(
        self, message: str, *, position: int, line: int, column: int, hint: str | None = None
    ) -> None:
        # PostgreSQL's message usually says "syntax error at or near ..." itself: say it once.
        what = "" if message.startswith("syntax error") else "syntax error: "
        super().__init__(
            f"line {line}, column {column}: {what}{message}" + (f" ({hint})" if hint else ""),
            pg=PgErrorInfo(sqlstate="42601", message=message, position=position, hint=hint),
        )
        self.position = position
        self.line = line
        self.column = column

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "line": self.line, "column": self.column}


class UnsupportedStatement(ZdmError):
    """A statement zdmproxy refuses to run as written, with what to write instead."""

    code = "unsupported_statement"


class UnsupportedServer(ZdmError):
    code = "unsupported_server"


class DatabaseUnreachable(ZdmError):
    code = "database_unreachable"
    exit_code = ExitCode.UNREACHABLE


class StepFailed(ZdmError):
    """A step failed for a reason retrying cannot fix (syntax, missing object, permission...)."""

    code = "step_failed"


class StatementTimedOut(StepFailed):
    """The statement held its locks and ran past statement_timeout: retrying would hurt again."""

    code = "statement_timeout"


class Cancelled(ZdmError):
    """Someone else cancelled our statement (pg_cancel_backend): nothing was committed."""

    code = "cancelled"
    exit_code = ExitCode.CANCELLED


class LockBudgetExhausted(ZdmError):
    """Every attempt was refused its lock before the deadline or attempt limit: retry later."""

    code = "lock_budget_exhausted"
    exit_code = ExitCode.LOCK_BUDGET_EXHAUSTED


class ChecksumConflict(ZdmError):
    """The id is recorded with different SQL: an applied migration is never silently replaced."""

    code = "checksum_conflict"
    exit_code = ExitCode.CONFLICT


class MigrationBusy(ZdmError):
    """Another process holds the migration's run lock (it is running it right now)."""

    code = "migration_busy"
    exit_code = ExitCode.WAIT_TIMED_OUT


class WaitTimedOut(ZdmError):
    """We waited for another process's run of the migration longer than the caller allowed."""

    code = "wait_timed_out"
    exit_code = ExitCode.WAIT_TIMED_OUT


class RecordedFailure(ZdmError):
    """A failure the journal recorded for a run of another process, reported as it was recorded."""

    def __init__(self, message: str, *, code: str, exit_code: int, pg: PgErrorInfo | None = None) -> None:
        super().__init__(message, pg=pg)
        self.code = code
        self.exit_code = ExitCode(exit_code)


class OutOfOrder(ZdmError):
    """A new migration file is older than one already applied from the same folder."""

    code = "out_of_order"
    exit_code = ExitCode.CONFLICT


class StopRequested(ZdmError):
    """An operator asked (through the journal's control plane) that the run stop between steps;
    ``state`` is what the migration is recorded as once the running process obeys."""

    exit_code = ExitCode.CANCELLED
    control = "stop"
    state = "cancelled"


class PauseRequested(StopRequested):
    """Paused between two steps as an operator asked: resume continues at the next step."""

    code = "pause_requested"
    control = "pause"
    state = "paused"


class CancelRequested(StopRequested):
    """Cancelled as an operator asked: what ran stays applied, the rest does not run."""

    code = "cancel_requested"
    control = "cancel"
    state = "cancelled"


class PhaseOrder(ZdmError):
    """A phase asked for out of order: contract before the expand ran, rollback after contract."""

    code = "phase_order"
    exit_code = ExitCode.CONFLICT


class NotFound(ZdmError):
    """No migration with this id in the journal."""

    code = "not_found"
