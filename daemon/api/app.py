"""The control API's routes (FastAPI). Every route but ``GET /api/health`` needs the bearer
token (:mod:`daemon.api.auth`); the OpenAPI schema is at ``/openapi.json`` and browsable at
``/docs`` (both public: they describe the routes, never the system's state).

Status codes: 200 done; 401 no or wrong token; 404 nothing there (no such study, no paper
trader status yet); 409 refused by the current state (another training request holds
``run/training.lock``, no current study, a job command that failed: its error line is the
detail); 422 a bad body or query (``detail`` lists each error with its ``loc``, naming the
field); 503 the configuration or the study storage cannot be read; 504 a job command
timed out.

Each request re-reads the configuration (with ``training.toml``), so it acts on what the
supervisor runs after its last SIGHUP. The training routes call :mod:`daemon.training_control`
(the command line's code path); sync and deploy run the supervisor's job commands
(:mod:`daemon.jobs`) at once and answer with their output.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError

from daemon import jobs, training_control
from daemon.api.auth import ApiToken
from daemon.api.schemas import DeployRequest, StudySelect, TrainingContinue, TrainingStart
from daemon.config import Config, ConfigError, load_config
from daemon.scheduler import JobRunner
from daemon.views.status import status_document
from trainers.atomic_io import read_json_object
from trainers.naming import beats_baselines
from trainers.runtime.current_study import read_current_study
from trainers.runtime.layout import Layout
from trainers.storage import default_storage_url
from trainers.study_db import StudyDBError, find_study, open_engine, rank_trials
from trainers.study_db.baselines import read_study_baselines

log = structlog.get_logger("api")

MAX_TOP = 100


@dataclass
class ApiContext:
    """What the routes share: the configuration file and root the API was started with,
    the token, and the runner of job commands (never scheduled here)."""

    config_path: Path | None
    root: Path
    token: ApiToken
    runner: JobRunner = field(default_factory=lambda: JobRunner(60.0, 600.0))
    job_locks: dict[str, threading.Lock] = field(
        default_factory=lambda: {name: threading.Lock() for name in ("sync", "deploy", "rollback")}
    )

    def config(self) -> Config:
        """The configuration now (file, ``training.toml``, environment).

        Raises:
            HTTPException: 503 naming the bad key.
        """
        try:
            return load_config(self.config_path, {"root": self.root})
        except ConfigError as exc:
            raise HTTPException(503, f"configuration: {exc}") from None

    def storage_url(self, cfg: Config) -> str:
        return cfg.study.storage or default_storage_url(self.root)

    def current_study(self, cfg: Config) -> str:
        """``.current_study``, else the configured ``study.name``.

        Raises:
            HTTPException: 409 when there is neither.
        """
        try:
            name = read_current_study(self.root) or cfg.study.name
        except ValueError as exc:
            raise HTTPException(503, str(exc)) from None
        if not name:
            raise HTTPException(409, "no current study: start training or POST /api/study/current first")
        return name


BEARER = HTTPBearer(
    auto_error=False,
    description="CAPPUCCINO_API_TOKEN, or <root>/run/api.token (`cappuccino api-token --show`)",
)


def _bearer_check(ctx: ApiContext) -> Callable[..., None]:
    def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
    ) -> None:
        if credentials is None or not ctx.token.matches(credentials.credentials):
            log.warning(
                "api_unauthorized",
                method=request.method,
                path=request.url.path,
                client=request.client.host if request.client else None,
                reason="no bearer token" if credentials is None else "wrong token",
            )
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


def _job_response(ctx: ApiContext, job: str, log_name: str, body: Callable[[], str]) -> dict[str, Any]:
    """Run a job command now; its outcome, summary line and what it printed (the lines it
    added to ``logs/<log_name>.out``). One API run per log file at a time, so two runs'
    lines never mix there (a scheduled run of the supervisor may still add its own).

    Raises:
        HTTPException: 409 the command failed or another API run of it is in progress,
            504 it timed out (detail: the outcome).
    """
    lock = ctx.job_locks[log_name]
    if not lock.acquire(blocking=False):
        raise HTTPException(409, f"another {log_name} command started through the API is running")
    try:
        out = Layout(ctx.root).job_output(log_name)
        offset = out.stat().st_size if out.is_file() else 0
        t0 = time.monotonic()
        detail = body()
        try:
            with open(out, "rb") as fh:
                fh.seek(offset)
                output = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            output = []
    finally:
        lock.release()
    failed = detail.startswith(("failed", "timeout"))
    outcome, _, rest = detail.partition(":") if failed else ("ok", "", detail)
    result = {
        "job": job,
        "outcome": outcome,
        "detail": rest.strip(),
        "output": output,
        "duration_s": round(time.monotonic() - t0, 3),
        "log": str(out),
    }
    log.info("api_job", job=job, outcome=outcome, duration_s=result["duration_s"])
    if outcome != "ok":
        raise HTTPException(504 if outcome == "timeout" else 409, result)
    return result


def create_app(ctx: ApiContext) -> FastAPI:
    """The FastAPI application of one runtime root."""
    app = FastAPI(
        title="cappuccino control API",
        summary="Start and stop training, switch the study, sync, deploy, read status.",
        version="1",
    )
    auth = [Depends(_bearer_check(ctx))]

    @app.middleware("http")
    async def access_log(request: Request, call_next: Callable[..., Any]) -> Response:
        t0 = time.monotonic()
        response: Response = await call_next(request)
        log.info(
            "api_request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            duration_ms=round((time.monotonic() - t0) * 1000, 1),
            client=request.client.host if request.client else None,
        )
        return response

    @app.get("/api/health", tags=["status"])
    def health() -> dict[str, str]:
        """Liveness: ``{"status": "ok"}`` while the API serves (no token needed)."""
        return {"status": "ok"}

    @app.get("/api/status", tags=["status"], dependencies=auth)
    def status() -> dict[str, Any]:
        """The status document of ``cappuccino status --json``: supervisor (children, jobs,
        monitor), study, ensemble, paper trader, deployments, study mismatches."""
        cfg = ctx.config()
        return status_document(ctx.root, ctx.storage_url(cfg), cfg.study.name)

    @app.post("/api/training/start", tags=["training"], dependencies=auth)
    def training_start(body: TrainingStart) -> dict[str, Any]:
        """``cappuccino start-training``: create the study (with its costs), record the
        request in ``training.toml``, make the study current (ensemble sync, SIGHUP). 409
        while another training request is in progress or when the study has other costs."""
        cfg = ctx.config()
        errors = body.window_errors(cfg.study.mode)
        if body.sequential and body.resolved_mode() is not None:
            field = "mode" if body.mode is not None else "use_expanding_window"
            msg = "a sequential run trains quick, then full: leave the mode out"
            errors.append({"type": "value_error", "loc": ("body", field), "msg": msg, "input": True})
        if errors:
            raise RequestValidationError(errors)
        request = training_control.TrainingRequest(
            study=body.study,
            n_trials=body.n_trials,
            workers=body.workers,
            mode=body.resolved_mode(),
            budget_steps=body.budget_steps,
            costs=body.overrides(),
            sequential=body.sequential,
            quick_trials=body.quick_trials,
            confirm=body.confirm,
        )
        try:
            started = training_control.start_training(ctx.config_path, ctx.root, request)
        except training_control.TrainingBusy as exc:
            raise HTTPException(409, str(exc)) from None
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        except ValueError as exc:  # the study was created with other costs
            raise HTTPException(409, str(exc)) from None
        log.info("api_training_started", study=body.study, n_trials=body.n_trials, workers=body.workers)
        return started.as_dict()

    @app.post("/api/training/continue", tags=["training"], dependencies=auth)
    def training_continue(body: TrainingContinue | None = None) -> dict[str, Any]:
        """``cappuccino continue``: begin stage 2 of a sequential run waiting for confirmation
        (``force``: also after a refused gate): the best quick parameter sets enqueued in the
        full study, ``training.toml`` for full mode, SIGHUP. 409 when there is no run in that
        stage (the message names its stage) or another training request is in progress."""
        from daemon.sequential import continue_training

        ctx.config()
        try:
            done = continue_training(ctx.config_path, ctx.root, force=body is not None and body.force)
        except training_control.TrainingBusy as exc:
            raise HTTPException(409, str(exc)) from None
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        log.info("api_training_continued", run=done.run["name"], stage=done.run["stage"])
        return done.as_dict()

    @app.post("/api/training/stop", tags=["training"], dependencies=auth)
    def training_stop() -> dict[str, Any]:
        """``cappuccino stop-training``: ``workers.count = 0`` in ``training.toml`` and SIGHUP;
        the supervisor stops its workers (their trials are re-queued). 409 while another
        training request is in progress."""
        ctx.config()
        try:
            stopped = training_control.stop_training(ctx.config_path, ctx.root)
        except training_control.TrainingBusy as exc:
            raise HTTPException(409, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(503, str(exc)) from None
        log.info("api_training_stopped", workers_before=stopped.workers_before)
        return stopped.as_dict()

    @app.post("/api/study/current", tags=["training"], dependencies=auth)
    def study_current(body: StudySelect) -> dict[str, Any]:
        """``cappuccino set-study``: write ``.current_study``, sync the ensemble from it,
        SIGHUP the supervisor. 409 while another training request is in progress."""
        ctx.config()
        try:
            switched = training_control.set_study(ctx.config_path, ctx.root, body.study)
        except training_control.TrainingBusy as exc:
            raise HTTPException(409, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(503, str(exc)) from None
        log.info("api_study_switched", study=body.study)
        return switched.as_dict()

    @app.get("/api/trials/top", tags=["study"], dependencies=auth)
    def trials_top(
        n: Annotated[int, Query(ge=1, le=MAX_TOP, description="how many trials")] = 10,
        study: Annotated[str | None, Query(description="default: the current study")] = None,
    ) -> dict[str, Any]:
        """The study's best ``n`` COMPLETE trials, best first (``trainers.study_db.ranking``),
        each with its value, VIN, grade, verdict against the study's baselines, parameters and
        user attributes. 404 for an unknown study, 503 when the storage cannot be read."""
        cfg = ctx.config()
        name = study or ctx.current_study(cfg)
        try:
            engine = open_engine(ctx.storage_url(cfg))
            with engine.connect() as conn:
                found = find_study(conn, name)
            if found is not None:
                ranked = rank_trials(engine, name, n)
                recorded = read_study_baselines(engine, name)
        except StudyDBError as exc:
            raise HTTPException(503, str(exc)) from None
        except SQLAlchemyError as exc:  # find_study's own query
            raise HTTPException(503, f"storage: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        if found is None:
            raise HTTPException(404, f"no study named {name!r} in the storage")
        baselines = None if recorded is None else recorded.values()
        return {
            "study": name,
            "baselines": baselines,
            "trials": [
                {
                    "rank": i + 1,
                    "number": t.number,
                    "trial_id": t.trial_id,
                    "value": t.value,
                    "vin": t.user_attrs.get("vin"),
                    "grade": t.user_attrs.get("grade"),
                    "beats_baselines": beats_baselines(t.value, baselines),
                    "params": t.params,
                    "user_attrs": t.user_attrs,
                }
                for i, t in enumerate(ranked)
            ],
        }

    def job_context(cfg: Config) -> jobs.JobContext:
        study = ctx.current_study(cfg)
        return jobs.JobContext(cfg, ctx.root, study, ctx.storage_url(cfg), ctx.runner, ctx.config_path)

    @app.post("/api/ensemble/sync", tags=["jobs"], dependencies=auth)
    def ensemble_sync() -> dict[str, Any]:
        """The supervisor's sync job now (``cappuccino sync`` of the current study with the
        configured top-N). 409 when it fails (e.g. no COMPLETE trial yet, another sync
        running), 504 past ``jobs.job_timeout_s``."""
        job = job_context(ctx.config())
        return _job_response(ctx, "ensemble_sync", "sync", lambda: jobs.sync(job))

    @app.post("/api/deploy", tags=["jobs"], dependencies=auth)
    def deploy(body: DeployRequest | None = None) -> dict[str, Any]:
        """The supervisor's deploy job now (``cappuccino deploy`` with the configured gates);
        ``dry_run`` evaluates the gates and changes nothing. A refusal by a gate is a 200
        whose output says why; 409 when the command fails."""
        job = job_context(ctx.config())
        dry_run = body is not None and body.dry_run
        return _job_response(ctx, "deploy", "deploy", lambda: jobs.deploy(job, dry_run=dry_run))

    @app.post("/api/deploy/rollback", tags=["jobs"], dependencies=auth)
    def deploy_rollback() -> dict[str, Any]:
        """``cappuccino deploy --rollback`` of the configured slot: ``model_<slot>.previous``
        swapped back in. 409 when there is nothing to roll back."""
        cfg = ctx.config()
        job = jobs.JobContext(cfg, ctx.root, "", ctx.storage_url(cfg), ctx.runner, ctx.config_path)
        return _job_response(ctx, "rollback", "rollback", lambda: jobs.rollback(job))

    @app.get("/api/paper_trader", tags=["status"], dependencies=auth)
    def paper_trader() -> dict[str, Any]:
        """The paper trader's ``paper_trader/status.json`` (equity, positions, drawdown, last
        bar, model generation ...). 404 before its first status."""
        path = Layout(ctx.root).trader_status
        doc = read_json_object(path)
        if doc is None:
            raise HTTPException(404, f"no paper trader status yet ({path})")
        return doc

    return app
