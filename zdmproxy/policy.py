"""How carefully one migration runs: the knobs a caller may set per migration.

A pydantic model because it arrives from the edges (environment, TOML file,
command line, later the HTTP body) and must be validated there; the engine
reads it as an immutable value.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# PostgreSQL's timeouts are an int of milliseconds: SET lock_timeout / statement_timeout refuses
# anything larger (22023), and it would do so mid-run, after the journal started the migration.
MAX_TIMEOUT_MS = 2**31 - 1  # about 24.8 days
# The settings zdmproxy SETs on the server, and the unit each is given in.
_SERVER_TIMEOUTS = {
    "lock_timeout_ms": 1,
    "lock_timeout_max_ms": 1,
    "statement_timeout_s": 1000,
    "concurrent_lock_timeout_s": 1000,
    "concurrent_statement_timeout_s": 1000,
    "backfill_max_lock_ms": 1,
}


def shown(value: object) -> str:
    """A number as a person typed it: 3000000 and 0.5, not 3e+06 and not 3000000.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class MigrationPolicy(BaseModel):
    # inf and nan are not durations: "forever" is a large number (or None where a knob is opt-in)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    queue_budget_ms: float = Field(
        100, gt=0, description="longest any session may wait queued behind our lock request"
    )
    lock_timeout_ms: float = Field(1000, gt=0, description="hard bound on one lock wait (first attempt)")
    lock_timeout_max_ms: float = Field(2000, gt=0, description="lock_timeout may grow up to this")
    lock_timeout_growth: float = Field(1.25, ge=1, description="factor applied per failed attempt")
    statement_timeout_s: float = Field(
        300, gt=0, description="bound on a step whose locks hold reads or writes up while it runs"
    )
    concurrent_lock_timeout_s: float = Field(
        600, gt=0, description="lock_timeout for CONCURRENTLY steps, whose waits queue nobody"
    )
    concurrent_statement_timeout_s: float = Field(
        7200,
        gt=0,
        description="bound on a step nobody's reads or writes wait for (CONCURRENTLY, VALIDATE, VACUUM)",
    )
    deadline_s: float = Field(900, gt=0, description="total time one step may spend trying")
    max_attempts: int = Field(100, ge=1, description="attempts per step before it fails")
    backoff_initial_ms: float = Field(50, ge=0, description="first pause between attempts")
    backoff_max_ms: float = Field(5000, ge=0, description="the pause doubles up to this")
    backoff_jitter_ms: float = Field(50, ge=0, description="random extra pause, so processes spread out")
    watchdog_interval_ms: float = Field(20, ge=2, description="watchdog poll period; never a tight loop")
    blocker_poll_ms: float = Field(
        20,
        ge=5,
        description="how often a waiting step re-checks blockers (it starts within this of their end)",
    )
    blocker_min_age_ms: float = Field(
        200, ge=0, description="pre-flight waits for conflicting transactions older than this"
    )
    terminate_idle_blockers_after_s: float | None = Field(
        None, gt=0, description="opt-in: terminate blockers idle in transaction for longer than this"
    )
    cancel_autovacuum: bool = Field(
        True, description="cancel a (non-wraparound) autovacuum in the way, as PostgreSQL would"
    )
    allow_destructive: bool = Field(False, description="permit DROP TABLE, DROP COLUMN, TRUNCATE ...")
    allow_unverified_locks: bool = Field(
        False,
        description="run statements whose locks the catalogue does not know, as written (no LOCK first)",
    )
    allow_long_locks: bool = Field(
        False,
        description="run statements with no online form (VACUUM FULL, CLUSTER, SET TABLESPACE, a rewrite "
        "no rule makes online ...) that hold a lock stopping traffic while they read a large table",
    )
    long_lock_min_bytes: int = Field(
        64 * 2**20,
        ge=0,
        description="a table this large or larger is one whose long lock is refused (smaller ones run)",
    )
    # Backfills (engine/backfill.py): also live knobs, set while one runs (migrations.throttle).
    backfill_batch_rows: int = Field(1000, ge=1, description="rows in a backfill's first batch")
    backfill_batch_rows_max: int = Field(
        100_000, ge=1, description="a backfill batch never grows past this many rows"
    )
    backfill_target_batch_ms: float = Field(
        40, gt=0, description="batch size adapts, both ways, so one batch takes about this long"
    )
    backfill_max_lock_ms: float = Field(
        100,
        gt=0,
        description="statement_timeout of a batch's UPDATE: it holds row locks no longer (plus its COMMIT)",
    )
    backfill_sleep_ms: float = Field(0, ge=0, description="pause after every backfill batch")
    backfill_max_replica_lag_bytes: int | None = Field(
        64 * 2**20, ge=0, description="pause while a replica is this far behind (pg_stat_replication)"
    )
    backfill_max_replica_lag_s: float | None = Field(
        30, ge=0, description="pause while a replica's replay_lag is longer than this"
    )
    backfill_max_archive_backlog_bytes: int | None = Field(
        2**30, ge=0, description="pause while this much WAL waits for archive_command (pg_stat_archiver)"
    )
    backfill_max_blocked_ms: float = Field(
        50, gt=0, description="a session waiting longer than this behind a batch halves the next ones"
    )
    backfill_pause_on_autovacuum: bool = Field(
        True, description="pause a backfill while autovacuum works on its table"
    )
    backfill_health_poll_ms: float = Field(
        500,
        ge=10,
        description="how often a backfill reads its health signals and the journal's pause, cancel "
        "and live knobs (between batches, and while paused)",
    )
    backfill_dml_min_rows: int = Field(
        10_000,
        ge=0,
        description="an UPDATE or DELETE of every row of a table larger than this runs as a batched backfill",
    )
    backfill_progress_interval_s: float = Field(
        1, gt=0, description="a backfill reports its progress at most this often"
    )

    @model_validator(mode="before")
    @classmethod
    def _max_follows_first(cls, data: Any) -> Any:
        """A first lock_timeout above the default maximum raises the maximum with it, unless
        the maximum was set too (then a lower maximum is an error that names both)."""
        if isinstance(data, dict) and "lock_timeout_max_ms" not in data and "lock_timeout_ms" in data:
            default = cls.model_fields["lock_timeout_max_ms"].default
            with contextlib.suppress(TypeError, ValueError):  # not a number: the field says so
                data = {**data, "lock_timeout_max_ms": max(default, float(data["lock_timeout_ms"]))}
        return data

    @model_validator(mode="after")
    def _timeouts_fit_the_server(self) -> MigrationPolicy:
        for name, unit_ms in _SERVER_TIMEOUTS.items():
            if getattr(self, name) * unit_ms > MAX_TIMEOUT_MS:
                raise ValueError(
                    f"{name} ({shown(getattr(self, name))}) is above PostgreSQL's largest timeout, "
                    f"{shown(MAX_TIMEOUT_MS / unit_ms)} {'ms' if unit_ms == 1 else 's'} (about 24.8 days)"
                )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> MigrationPolicy:
        if self.lock_timeout_max_ms < self.lock_timeout_ms:
            raise ValueError(
                f"lock_timeout_max_ms ({self.lock_timeout_max_ms:g}) must be at least lock_timeout_ms "
                f"({self.lock_timeout_ms:g}): raise ZDM_LOCK_TIMEOUT_MAX_MS too, or leave it unset"
            )
        if self.backoff_max_ms < self.backoff_initial_ms:
            raise ValueError("backoff_max_ms must be at least backoff_initial_ms")
        return self

    @model_validator(mode="after")
    def _backfill_consistent(self) -> MigrationPolicy:
        if self.backfill_target_batch_ms > self.backfill_max_lock_ms:
            raise ValueError(
                f"backfill_target_batch_ms ({self.backfill_target_batch_ms:g}) must not exceed "
                f"backfill_max_lock_ms ({self.backfill_max_lock_ms:g}): a batch aiming past its own "
                "timeout would time out every time"
            )
        return self

    def lock_timeout_for(self, attempt: int) -> float:
        """lock_timeout (ms) for the n-th attempt (1-based): escalates, capped."""
        grown = self.lock_timeout_ms * self.lock_timeout_growth ** (attempt - 1)
        return min(grown, self.lock_timeout_max_ms)
