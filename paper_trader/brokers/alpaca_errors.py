"""Errors of the Alpaca client, and the mapping of alpaca-py's failures onto them. Messages
never contain the API keys."""

from __future__ import annotations

import json

import requests
from alpaca.common.exceptions import APIError


class AlpacaError(RuntimeError):
    """Base of the Alpaca client's errors; messages never contain the API keys."""


class AlpacaConfigError(AlpacaError):
    """Missing keys or contradictory Alpaca settings; the message says what to set."""


class LiveTradingRefused(AlpacaConfigError):
    """A non-paper endpoint without both ``--live`` and ``allow_live`` in the configuration."""


class AlpacaAPIError(AlpacaError):
    """Alpaca answered with an error, or could not be reached.

    Attributes:
        status_code: HTTP status, or ``None`` when no answer came (connection error, timeout).
        code: Alpaca's error code from the body, when it sent one.
    """

    def __init__(self, message: str, status_code: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class OrderConflict(AlpacaError):
    """The client order id is already used by an order with another symbol, side or quantity."""


def api_error(what: str, exc: APIError) -> AlpacaAPIError:
    """alpaca-py's :class:`APIError` (its text is the response body, JSON when Alpaca sent
    JSON) as an :class:`AlpacaAPIError` with HTTP status and Alpaca's error code.

    Args:
        what: the request, e.g. ``"account request"`` (the message reads ``Alpaca <what>
            failed (HTTP <status>): <Alpaca's message>``).
    """
    message, code = str(exc), None
    try:
        body = json.loads(message)
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("message", message))
        code = body.get("code") if isinstance(body.get("code"), int) else None
    status = exc.status_code
    return AlpacaAPIError(f"Alpaca {what} failed (HTTP {status}): {message}", status, code)


def no_answer_error(what: str, exc: requests.RequestException) -> AlpacaAPIError:
    """A request that got no answer (connection error, timeout) as an :class:`AlpacaAPIError`
    without status: ``Alpaca <what> failed: no answer (<exception type>: <exception>)``."""
    return AlpacaAPIError(f"Alpaca {what} failed: no answer ({type(exc).__name__}: {exc})")
