"""Request and response bodies of the HTTP API; /openapi.json is generated from these.

Requests forbid unknown fields: a typo in a deploy script (``"sq1": ...``) is a 422 that names
the field, never a silently ignored setting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from zdmproxy.policy import MigrationPolicy

MAX_SQL_BYTES = 1_000_000


def _no_nul(text: str) -> str:
    """PostgreSQL's text cannot hold a NUL character: refused here, not by the journal's INSERT."""
    if "\x00" in text:
        raise ValueError("holds a NUL character (\\0), which PostgreSQL text cannot store")
    return text


Text = Annotated[str, AfterValidator(_no_nul)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MigrationIn(_Request):
    """A migration to run: its SQL, and optionally the policy knobs for this migration."""

    sql: Text = Field(min_length=1, max_length=MAX_SQL_BYTES, description="the migration's SQL script")
    policy: MigrationPolicy | None = Field(
        None, description="knobs for this migration over the daemon's configured ones"
    )
    version: Text | None = Field(
        None, max_length=100, description="its version, for migrations from a folder of versioned files"
    )
    source: Text | None = Field(None, max_length=1000, description="the file it came from")


class NewMigration(MigrationIn):
    """POST /v1/migrations: the id comes in the body."""

    id: Text = Field(min_length=1, max_length=63, description="caller-chosen migration id")


class PlanIn(_Request):
    sql: Text = Field(min_length=1, max_length=MAX_SQL_BYTES)


def _live_knobs() -> dict[str, Any]:
    """Every backfill knob of MigrationPolicy, optional: the backfill merges what is set over
    its policy before each batch (engine/backfill.py); ranges are checked against the policy."""
    return {
        name: (cast(Any, info.annotation) | None, Field(None, description=info.description))
        for name, info in MigrationPolicy.model_fields.items()
        if name.startswith("backfill_")
    }


_ThrottleFields = create_model("_ThrottleFields", __base__=_Request, **_live_knobs())


class Throttle(_ThrottleFields):  # type: ignore[misc, valid-type]
    """Live backfill knobs (MigrationPolicy's ``backfill_*``); a null removes a knob set before,
    so the policy's value applies again."""


class Problem(BaseModel):
    """An error, as RFC 9457 problem details with zdmproxy's stable ``code``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    sqlstate: str | None = None
    position: int | None = None
    errors: list[dict[str, Any]] | None = None


class AttemptOut(BaseModel):
    step_index: int
    run: int
    number: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    sqlstate: str | None
    message: str | None
    lock_timeout_ms: float | None
    queued_behind_us: int
    blockers: list[str]


class BackfillOut(BaseModel):
    rows_done: int
    rows_total_estimate: int | None
    batch_rows: int | None
    throttled_by: str | None
    rate_rows_per_s: float | None
    eta_s: float | None
    updated_at: datetime


class StepOut(BaseModel):
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
    backfill: BackfillOut | None = None


class MigrationOut(BaseModel):
    id: str
    state: Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"]
    phase: str | None
    control: str | None = Field(description="a pause or cancel asked and not yet obeyed")
    throttle: dict[str, Any]
    checksum: str
    version: str | None
    source: str | None
    error: dict[str, Any] | None
    runs: int
    run_by: str | None = Field(description="who ran it last")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    steps: list[StepOut]
    attempts: list[AttemptOut]
    blockers: list[str] = Field(description="who blocked its steps, as its attempts recorded them")


class MigrationSummary(BaseModel):
    id: str
    state: str
    version: str | None
    runs: int
    steps: int
    steps_done: int
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    error: dict[str, Any] | None


class MigrationList(BaseModel):
    migrations: list[MigrationSummary]


class ControlOut(BaseModel):
    id: str
    state: str
    control: str | None
    message: str


class ThrottleOut(BaseModel):
    id: str
    throttle: dict[str, Any]


class LockOut(BaseModel):
    relation: str | None
    mode: str | None
    pid: int
    application_name: str
    state: str | None
    gid: str | None
    describe: str


class LocksOut(BaseModel):
    locks: list[LockOut]


class DatabaseHealth(BaseModel):
    reachable: bool
    checked_at: datetime | None
    error: str | None


class Readiness(BaseModel):
    ready: bool
    reason: str
    database: DatabaseHealth
