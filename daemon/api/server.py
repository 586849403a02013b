"""The control API process: ``python -m daemon.api [--config FILE] [--root DIR] [--host H]
[--port P] [--log-level L]`` (the supervisor's child ``api``; :func:`daemon.fleet.api_spec`).

It loads the configuration, the token (:func:`daemon.api.auth.load_token`, creating
``run/api.token`` at the first start), logs to ``logs/api.log`` (JSON lines; one
``api_request`` event per request with method, path, status and duration, never a header),
writes its heartbeat (``run/heartbeats/api.json``) from the event loop every
:data:`daemon.api.HEARTBEAT_INTERVAL_S` seconds, and serves with uvicorn. A bind address that is not a
loopback address is logged as a warning (``api_bind_not_loopback``).

SIGTERM / SIGINT: uvicorn stops accepting and gives the requests in flight
:data:`GRACEFUL_SHUTDOWN_S` seconds; job commands still running (a sync or deploy started
through the API) are then stopped with their process groups, and the process exits 0.
Exit code 2: a bad configuration or token; 1: the address cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType

import structlog
import uvicorn
from fastapi import FastAPI

from daemon.api import HEARTBEAT_INTERVAL_S
from daemon.api.app import ApiContext, create_app
from daemon.api.auth import TokenError, load_token
from daemon.config import ConfigError, load_config
from trainers.runtime.heartbeat import Heartbeat
from trainers.runtime.layout import Layout
from trainers.runtime.logs import configure_logging

COMPONENT = "api"
GRACEFUL_SHUTDOWN_S = 5  # requests still running this long after SIGTERM are cancelled
JOB_STOP_TIMEOUT_S = 5.0  # then their job commands get SIGTERM, and SIGKILL after this

log = structlog.get_logger(COMPONENT)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the API on this machine: ``localhost`` or a loopback
    IP address (127.0.0.0/8, ::1). A hostname other than ``localhost`` counts as not
    loopback (it may resolve anywhere)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _with_lifespan(app: FastAPI, ctx: ApiContext) -> FastAPI:
    """Add the heartbeat task to ``app``'s lifespan (written from the event loop, so a
    stalled loop stops it and the supervisor's watchdog restarts the API); at shutdown, stop
    the job commands still running (their process groups)."""
    beat = Heartbeat(Layout(ctx.root).heartbeat(COMPONENT), COMPONENT, min_interval_s=0.0)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                beat.beat(force=True, state="serving")
                await asyncio.sleep(HEARTBEAT_INTERVAL_S)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            ctx.runner.shutdown(JOB_STOP_TIMEOUT_S)
            beat.beat(force=True, state="stopped")

    app.router.lifespan_context = lifespan
    return app


def _stopped_by_signal(signum: int, _frame: FrameType | None) -> None:
    log.info("api_signal", signal=signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Run the API until SIGTERM / SIGINT; returns the exit code (0, 1 or 2)."""
    parser = argparse.ArgumentParser(prog="python -m daemon.api")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--host", default=None, help="default: the configuration's api.host")
    parser.add_argument("--port", type=int, default=None, help="default: the configuration's api.port")
    parser.add_argument("--log-level", default=None, help="default: the configuration's log_level")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, {"root": args.root} if args.root else None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host = args.host or cfg.api.host
    port = args.port or cfg.api.port
    level = args.log_level or cfg.log_level
    configure_logging(COMPONENT, cfg.root, level, console=False)
    try:
        token = load_token(cfg.root)
    except TokenError as exc:
        log.error("api_token_refused", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(host):
        log.warning(
            "api_bind_not_loopback",
            host=host,
            port=port,
            note="the control API is reachable from other machines; anyone with the token controls training",
        )
    ctx = ApiContext(args.config, cfg.root, token)
    app = _with_lifespan(create_app(ctx), ctx)
    log.info("api_starting", host=host, port=port, token_source=token.source, root=str(cfg.root))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # uvicorn's own records go to the root logger: logs/api.log
            access_log=False,  # api_request events instead
            server_header=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            log_level=level,
        )
    )
    # uvicorn handles SIGTERM / SIGINT while it serves (graceful shutdown), then re-raises
    # the signal to the handler it found: this one, so the process exits 0 rather than die
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped_by_signal)
    server.run()
    if not server.started:
        log.error("api_not_started", host=host, port=port, note="see the previous error (address in use?)")
        return 1
    log.info("api_stopped")
    return 0
