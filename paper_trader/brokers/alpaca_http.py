"""A timeout on every HTTP request of an alpaca-py client (alpaca-py's session sends
requests without one and offers no option for it)."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout (alpaca-py's session sends requests without one)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, **kwargs)


def with_timeout(client: Any, timeout_s: float) -> None:
    """Make every request of an alpaca-py client (``TradingClient``,
    ``CryptoHistoricalDataClient``) give up after ``timeout_s`` seconds unanswered; a
    request that sets its own timeout keeps it."""
    session: requests.Session = client._session  # alpaca-py offers no public timeout option
    adapter = _TimeoutAdapter(timeout_s)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
