"""The daemon's HTTP API (FastAPI; the spec is served at /openapi.json), its
Prometheus endpoint and its status page.

Every route but the health checks, the spec and the page shell (which holds
no data and asks for the token) needs `Authorization: Bearer <token>`.
"""

import hmac
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from catchup import __version__
from catchup.daemon.metrics import exposition
from catchup.daemon.runs import CycleRecord, Run, ShardRun, ShardState
from catchup.daemon.service import Daemon
from catchup.errors import CatchupError, ConfigError, ShardBusyError
from catchup.pitr import restorable_windows

# Without a schedule, a backup older than a day is late.
DEFAULT_PERIOD = timedelta(days=1)
Freshness = Literal["fresh", "late", "stale", "never"]


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shards: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, description="keyspace/shard names; omit and set all=true for every shard"
    )
    all: bool = False
    bootstrap: bool = Field(default=False, description="Start new chains from the sources.")


class ProgressView(BaseModel):
    done: int
    total: int


class ShardRunView(BaseModel):
    shard: str
    state: str
    step: str | None
    progress: ProgressView | None
    started_at: datetime | None
    finished_at: datetime | None
    backup_id: str | None
    bytes_from_source: int | None
    durations: dict[str, float]
    error: str | None

    @classmethod
    def of(cls, shard_run: ShardRun) -> "ShardRunView":
        result = shard_run.result
        return cls(
            shard=shard_run.shard.name,
            state=shard_run.state,
            step=shard_run.step,
            progress=ProgressView(done=shard_run.progress[0], total=shard_run.progress[1])
            if shard_run.progress
            else None,
            started_at=shard_run.started_at,
            finished_at=shard_run.finished_at,
            backup_id=result.backup_id if result else None,
            bytes_from_source=result.bytes_from_source if result else None,
            durations=result.durations if result else {},
            error=result.error if result else None,
        )


class RunView(BaseModel):
    id: str
    trigger: str
    state: str
    created_at: datetime
    bootstrap: bool
    shards: list[ShardRunView]

    @classmethod
    def of(cls, run: Run) -> "RunView":
        return cls(
            id=run.run_id,
            trigger=run.trigger,
            state=run.state,
            created_at=run.created_at,
            bootstrap=run.bootstrap,
            shards=[ShardRunView.of(s) for s in run.shards.values()],
        )


class ShardView(BaseModel):
    shard: str
    keyspace: str
    engine: str
    freshness: Freshness
    age_seconds: float | None
    expected_interval_seconds: float
    newest_backup_id: str | None
    newest_backup_at: datetime | None
    next_due_at: datetime | None
    phase: str | None
    last_result: str | None
    last_error: str | None
    last_finished_at: datetime | None
    stalled: bool
    history: list[CycleRecord]  # a dataclass: pydantic validates it as it is
    archive: dict[str, Any] | None = None  # its log archiver, when it runs one


class Message(BaseModel):
    detail: str


def freshness(age: timedelta | None, period: timedelta) -> Freshness:
    """Fresh within 1.5 schedule periods, late within 3, stale beyond."""
    if age is None:
        return "never"
    if age <= period * 1.5:
        return "fresh"
    return "late" if age <= period * 3 else "stale"


def shard_view(
    daemon: Daemon, state: ShardState, now: datetime, archives: dict[str, dict[str, Any]]
) -> ShardView:
    name = state.shard.name
    period = daemon.scheduler.period(name) or DEFAULT_PERIOD
    age = now - state.newest.created_at if state.newest else None
    return ShardView(
        shard=name,
        keyspace=state.shard.keyspace,
        engine=state.shard.engine,
        freshness=freshness(age, period),
        age_seconds=age.total_seconds() if age is not None else None,
        expected_interval_seconds=period.total_seconds(),
        newest_backup_id=state.newest.backup_id if state.newest else None,
        newest_backup_at=state.newest.created_at if state.newest else None,
        next_due_at=daemon.scheduler.due_at(name),
        phase=state.phase,
        last_result=state.last_result,
        last_error=state.last_error,
        last_finished_at=state.last_finished_at,
        stalled=state.stalled,
        history=list(state.history),
        archive=archives.get(name),
    )


def token_guard(token: SecretStr) -> Any:
    bearer = HTTPBearer(auto_error=False)
    expected = token.get_secret_value().encode()

    def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})

    return Depends(require_token)


def failures(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of an endpoint: each a `Message`."""
    return {code: {"model": Message} for code in codes}


UNAUTHORIZED = failures(401)


def create_app(daemon: Daemon, token: SecretStr) -> FastAPI:
    app = FastAPI(
        title="catchup daemon",
        version=__version__,
        description="Schedules and runs catch-up backup cycles of a shard fleet.",
    )
    api = APIRouter(prefix="/api", dependencies=[token_guard(token)], responses=UNAUTHORIZED)

    @app.get("/healthz", tags=["health"])
    def health() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses=failures(503))
    def readiness() -> Any:
        """The scheduler runs and the daemon is not stopping."""
        if daemon.ready:
            return {"status": "ready"}
        return JSONResponse({"detail": "not ready"}, status_code=503)

    def starts_run(path: str, *codes: int) -> Callable[[DecoratedCallable], DecoratedCallable]:
        """A POST that answers 202 at once with the run it started or changed."""
        return api.post(path, status_code=202, response_model=RunView, responses=failures(*codes))

    @starts_run("/runs", 409, 422)
    def trigger_run(request: TriggerRequest) -> RunView:
        """Back up the named shards (or all) now; returns the run at once."""
        if bool(request.shards) == request.all:
            raise HTTPException(422, "give a non-empty 'shards' list or 'all': true, not both")
        try:
            run = daemon.trigger(None if request.all else request.shards, request.bootstrap)
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        except ShardBusyError as exc:
            raise HTTPException(409, str(exc)) from None
        return RunView.of(run)

    @api.get("/runs", response_model=list[RunView])
    def list_runs(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[RunView]:
        """Runs, newest first, with each shard's state and step."""
        with daemon.book.lock:
            return [RunView.of(run) for run in daemon.book.recent_runs(limit)]

    def find_run(run_id: str) -> Run:
        run = daemon.book.run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r}; list them at /api/runs")
        return run

    @api.get("/runs/{run_id}", response_model=RunView, responses=failures(404))
    def get_run(run_id: str) -> RunView:
        with daemon.book.lock:
            return RunView.of(find_run(run_id))

    @starts_run("/runs/{run_id}/cancel", 404, 409)
    def cancel_run(run_id: str) -> RunView:
        """Drop the run's queued cycles and cancel its running ones (they clean up)."""
        run = find_run(run_id)
        if run.state not in ("queued", "running"):
            raise HTTPException(409, f"run {run_id} already ended ({run.state})")
        daemon.cancel(run)
        with daemon.book.lock:
            return RunView.of(run)

    @api.get("/backups", responses=failures(404, 503))
    def list_backups(
        shard: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[dict[str, Any]]:
        """Complete backups in the repository, oldest first."""
        try:
            selected = daemon.config.shard(shard) if shard else None
        except ConfigError as exc:
            raise HTTPException(404, str(exc)) from None
        try:
            if selected is None:
                backups = daemon.repository.backups()
            else:
                backups = daemon.repository.backups(selected.keyspace, selected.shard)
            windows = restorable_windows(daemon.repository, backups)
        except CatchupError as exc:
            raise HTTPException(503, str(exc)) from None
        return [{**m.summary(), "pitr_window": windows.get(m.backup_id)} for m in backups]

    @api.get("/shards", response_model=list[ShardView])
    def list_shards() -> list[ShardView]:
        """Per shard: freshness, what it is doing, the last result and recent cycles."""
        now = daemon.clock()
        archives = daemon.archivers.summaries()
        with daemon.book.lock:
            return [
                shard_view(daemon, state, now, archives) for state in daemon.book.states.values()
            ]

    app.include_router(api)

    @app.get(
        "/metrics",
        dependencies=[token_guard(token)],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, **UNAUTHORIZED},
    )
    def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(exposition(daemon.registry), media_type="text/plain; version=0.0.4")

    page = resources.files("catchup.daemon").joinpath("status.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def status_page() -> str:
        return page

    return app
