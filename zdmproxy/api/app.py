"""The routes of the HTTP API: thin translations between HTTP and the Daemon.

``PUT /v1/migrations/{id}`` is the call a deploy script (or a Helm/Argo CD hook) makes: 201 when
it recorded the migration, 200 when the same SQL was there already (the existing migration is
returned), 409 when the id holds different SQL; ``?wait=SECONDS`` answers once the migration
settled (or the time passed: then its state says it is still running).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from zdmproxy import __version__
from zdmproxy.api import auth, problems
from zdmproxy.api.daemon import Daemon
from zdmproxy.api.limits import BodyLimit
from zdmproxy.api.models import (
    AttemptOut,
    BackfillOut,
    ControlOut,
    DatabaseHealth,
    LockOut,
    LocksOut,
    MigrationIn,
    MigrationList,
    MigrationOut,
    MigrationSummary,
    NewMigration,
    PlanIn,
    Problem,
    Readiness,
    StepOut,
    Throttle,
    ThrottleOut,
)
from zdmproxy.api.problems import ApiError
from zdmproxy.api.sse import event_stream
from zdmproxy.journal.coordinator import Request
from zdmproxy.metrics import CONTENT_TYPE
from zdmproxy.plan.phases import RunPhase
from zdmproxy.plan.verdict import verdicts
from zdmproxy.policy import MigrationPolicy

MAX_WAIT_S = 3600.0
MigrationId = Annotated[
    str, Path(description="the caller's migration id (1-63 bytes of A-Z a-z 0-9 . _ - : @ +)")
]
Wait = Annotated[
    float | None, Query(ge=0, le=MAX_WAIT_S, description="answer once it settled, or after this many seconds")
]
LastEventId = Annotated[int | None, Header(ge=0, le=2**63 - 1, description="resume after this event id")]
PhaseParam = Annotated[
    Literal["expand", "contract"] | None,
    Query(description="run only this phase (expand now, contract after every old client is gone)"),
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {problems.MEDIA_TYPE: {}}}
    for status in (400, 401, 404, 409, 413, 422, 503)
}


def create_app(daemon: Daemon, token: str | None = None) -> FastAPI:
    """The ASGI app for ``daemon``; with ``token``, every /v1 route and /metrics need it."""
    app = FastAPI(
        title="zdmproxy",
        version=__version__,
        description="Lock-aware PostgreSQL migrations: submit, watch and control them.",
        responses=_ERRORS,
    )
    problems.install(app)
    app.add_middleware(BodyLimit)
    guarded = APIRouter(dependencies=[Depends(auth.bearer(token))])

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive (it answers); says nothing about the database."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz(response: Response) -> Readiness:
        """Ready once the journal was reached; a database blip after that does not flap it (a
        native sidecar's readiness gates its pod): the body says whether it is reachable now."""
        health = daemon.health
        ready = daemon.ready and not daemon.stopping.is_set()
        reason = (
            "shutting down"
            if daemon.stopping.is_set()
            else "ready"
            if daemon.ready
            else "the database has not been reached yet"
        )
        if not ready:
            response.status_code = 503
        return Readiness(
            ready=ready,
            reason=reason,
            database=DatabaseHealth(
                reachable=health.reachable, checked_at=health.checked_at, error=health.error
            ),
        )

    @guarded.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics, from memory (a scrape never queries the database)."""
        return Response(daemon.metrics.exposition(), media_type=CONTENT_TYPE)

    @guarded.put(
        "/v1/migrations/{migration_id}", tags=["migrations"], response_model=MigrationOut, status_code=200
    )
    async def put_migration(
        migration_id: MigrationId,
        body: MigrationIn,
        response: Response,
        wait: Wait = None,
        phase: PhaseParam = None,
    ) -> MigrationOut:
        """Submit a migration under the caller's id (idempotent: the same SQL again is harmless)."""
        return await _submit(daemon, migration_id, body, response, wait, phase)

    @guarded.post("/v1/migrations", tags=["migrations"], response_model=MigrationOut, status_code=200)
    async def post_migration(
        body: NewMigration, response: Response, wait: Wait = None, phase: PhaseParam = None
    ) -> MigrationOut:
        """Submit a migration with its id in the body (as PUT)."""
        return await _submit(daemon, body.id, body, response, wait, phase)

    @guarded.get("/v1/migrations", tags=["migrations"], response_model=MigrationList)
    async def list_migrations(limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> MigrationList:
        """The journal's migrations, newest first."""
        return MigrationList(migrations=[MigrationSummary(**row) for row in await daemon.history(limit)])

    @guarded.get("/v1/migrations/{migration_id}", tags=["migrations"], response_model=MigrationOut)
    async def get_migration(migration_id: MigrationId) -> MigrationOut:
        """State, phase, steps, attempts, blockers and backfill progress."""
        return await _migration_out(daemon, migration_id)

    @guarded.get(
        "/v1/migrations/{migration_id}/events",
        tags=["migrations"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(
        migration_id: MigrationId,
        last_event_id: LastEventId = None,
    ) -> StreamingResponse:
        """Server-sent events from the journal, resumable with Last-Event-ID; the stream ends when
        the migration succeeded, failed or was cancelled."""
        await daemon.record(migration_id)  # 404 before the stream starts
        return StreamingResponse(
            event_stream(daemon, migration_id, last_event_id or 0),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @guarded.post("/v1/migrations/{migration_id}/cancel", tags=["control"], response_model=ControlOut)
    async def cancel(migration_id: MigrationId) -> ControlOut:
        """Stop the migration: a step this daemon runs is cut (rolled back, or left for a resume to
        clean up), a run elsewhere stops before its next step."""
        record = await daemon.ask(migration_id, "cancel")
        status = await daemon.status(migration_id)
        running = next((s for s in status.steps if s.state == "running"), None)
        if running is not None and not running.transactional:
            how = (
                f"step {running.index + 1} runs outside a transaction (CONCURRENTLY): if it was cut it may "
                "leave an INVALID index, which a resume drops before running the step again"
            )
        else:
            how = "a transactional step that was cut is rolled back; steps done stay applied; resume goes on"
        return ControlOut(id=record.id, state=status.record.state, control=status.plane.control, message=how)

    @guarded.post("/v1/migrations/{migration_id}/pause", tags=["control"], response_model=ControlOut)
    async def pause(migration_id: MigrationId) -> ControlOut:
        """Pause between steps (a backfill: between batches); resume goes on from there."""
        record = await daemon.ask(migration_id, "pause")
        return ControlOut(
            id=record.id, state=record.state, control="pause", message="pauses at the next step or batch"
        )

    @guarded.post("/v1/migrations/{migration_id}/resume", tags=["control"], response_model=ControlOut)
    async def resume(migration_id: MigrationId) -> ControlOut:
        """Clear a pause or cancel and run the rest (this daemon starts it if it stopped)."""
        record = await daemon.resume(migration_id)
        return ControlOut(id=record.id, state=record.state, control=None, message="resumed")

    @guarded.patch("/v1/migrations/{migration_id}/throttle", tags=["control"], response_model=ThrottleOut)
    async def throttle(migration_id: MigrationId, body: Throttle) -> ThrottleOut:
        """Live backfill knobs, read by the running backfill before each batch."""
        knobs = body.model_dump(include=body.model_fields_set)
        _policy(daemon.policy, {k: v for k, v in knobs.items() if v is not None})  # ranges, as the policy's
        return ThrottleOut(id=migration_id, throttle=await daemon.throttle(migration_id, knobs))

    @guarded.post("/v1/plan", tags=["plan"])
    async def plan(body: PlanIn) -> dict[str, Any]:
        """Dry run: the plan contract (DESIGN.md), with sizes where the database is reachable."""
        planned = await daemon.plan(body.sql)
        judged = verdicts(planned)
        out = planned.as_dict()
        out["statements"] = [
            {**statement.as_dict(), "verdict": verdict.as_dict()}
            for statement, verdict in zip(planned.statements, judged, strict=True)
        ]
        return out

    @guarded.get("/v1/locks", tags=["plan"], response_model=LocksOut)
    async def locks() -> LocksOut:
        """Who holds or waits for locks on contended tables now (prepared transactions too)."""
        return LocksOut(
            locks=[
                LockOut(
                    relation=b.relation,
                    mode=b.mode,
                    pid=b.pid,
                    application_name=b.application_name,
                    state=b.state,
                    gid=b.gid,
                    describe=b.describe(),
                )
                for b in await daemon.locks()
            ]
        )

    app.include_router(guarded)
    return app


async def _submit(
    daemon: Daemon,
    migration_id: str,
    body: MigrationIn,
    response: Response,
    wait: float | None,
    phase: str | None,
) -> MigrationOut:
    if daemon.stopping.is_set():
        raise ApiError("shutting_down", "this daemon is shutting down; submit to another one or retry")
    request = Request(
        migration_id, body.sql, body.version, body.source, RunPhase(phase) if phase is not None else None
    )
    created, _ = await daemon.submit(request, _policy(daemon.policy, body.policy))
    if wait:
        await daemon.wait(migration_id, wait)
    response.status_code = 201 if created else 200
    return await _migration_out(daemon, migration_id)


def _policy(configured: MigrationPolicy, given: MigrationPolicy | dict[str, Any] | None) -> MigrationPolicy:
    """The caller's knobs over the daemon's configured ones (only what each set explicitly)."""
    if given is None:
        return configured
    if isinstance(given, MigrationPolicy):
        given = given.model_dump(include=given.model_fields_set)
    try:
        return MigrationPolicy.model_validate(
            {**configured.model_dump(include=configured.model_fields_set), **given}
        )
    except ValidationError as exc:
        said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError("invalid_request", f"the policy is not valid: {said}") from None


async def _migration_out(daemon: Daemon, migration_id: str) -> MigrationOut:
    status = await daemon.status(migration_id)
    record = status.record
    backfills = {b.step_index: b for b in status.backfills}
    attempts = [
        AttemptOut(**{**a, "blockers": [b.get("describe", "") for b in a["blockers"]]})
        for a in status.attempts
    ]
    return MigrationOut(
        id=record.id,
        state=record.state,  # type: ignore[arg-type]
        phase=status.plane.phase,
        control=status.plane.control,
        throttle=status.plane.throttle,
        checksum=record.checksum,
        version=record.version,
        source=record.source,
        error=record.error,
        runs=record.runs,
        run_by=record.by() if record.runs else None,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        duration_s=record.duration_s,
        steps=[
            StepOut(
                index=s.index,
                sql=s.sql,
                phase=s.phase,
                kind=s.kind,
                transactional=s.transactional,
                state=s.state,
                outcome=s.outcome,
                error=s.error,
                started_at=s.started_at,
                finished_at=s.finished_at,
                duration_s=s.duration_s,
                backfill=None
                if s.index not in backfills
                else BackfillOut(
                    rows_done=backfills[s.index].rows_done,
                    rows_total_estimate=backfills[s.index].rows_total_estimate,
                    batch_rows=backfills[s.index].batch_rows,
                    throttled_by=backfills[s.index].throttled_by,
                    rate_rows_per_s=backfills[s.index].rate_rows_per_s,
                    eta_s=backfills[s.index].eta_s,
                    updated_at=backfills[s.index].updated_at,
                ),
            )
            for s in status.steps
        ],
        attempts=attempts,
        blockers=list(dict.fromkeys(b for a in attempts for b in a.blockers)),
    )
