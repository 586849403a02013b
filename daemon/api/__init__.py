"""The REST control API: a FastAPI app served by uvicorn in its own process
(``python -m daemon.api``), which the supervisor runs as its child ``api`` when the
configuration says ``[api] enabled = true`` (:func:`daemon.fleet.api_spec`).

Modules: :mod:`~daemon.api.auth` (the bearer token), :mod:`~daemon.api.schemas` (request
bodies), :mod:`~daemon.api.app` (the routes), :mod:`~daemon.api.server` (the process:
logging, heartbeat, uvicorn). This module imports nothing, so the
supervisor can name the child without loading FastAPI.
"""

HEARTBEAT_INTERVAL_S = 5.0
"""Seconds between the API's heartbeats (written from its event loop)."""
HEARTBEAT_TIMEOUT_S = 60.0
"""A heartbeat older than this (a stalled event loop) gets the API restarted."""
