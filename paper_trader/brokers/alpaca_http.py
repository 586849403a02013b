"""HTTP plumbing of the alpaca-py clients: a timeout on every request (alpaca-py's session
sends requests without one and offers no option for it) and retries of throttled or failed
answers with urllib3's :class:`~urllib3.util.retry.Retry` (requests' own transport).

Retried: HTTP 429 (rate limit) and 500, 502, 503, 504, up to ``retries`` times per request,
for GET and POST alike (a POST of an order is safe to repeat: Alpaca refuses a second order
with the same client order id, and the client then looks the placed one up). The wait
before a retry is the answer's ``Retry-After`` header (seconds or an HTTP date) when it has
one, capped at ``retry_after_max_s``; otherwise exponential backoff ``backoff_s * 2**(n-1)``
before the ``n``-th consecutive retry (none before the first), capped at ``backoff_max_s``
(urllib3's formula). When the retries are spent the last answer goes back to alpaca-py,
which raises it as an ``APIError``. Requests that get no answer at all (connection refused,
timeout) are not retried here: the client's callers decide (a lost order answer is looked
up by client order id). alpaca-py's own fixed-wait retry of 429 is switched off, so the
two do not multiply.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout (alpaca-py's session sends requests without one)."""

    def __init__(self, timeout_s: float, max_retries: Retry | int = 0) -> None:
        super().__init__(max_retries=max_retries)
        self._timeout_s = timeout_s

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, **kwargs)


def retry_policy(retries: int, backoff_s: float, backoff_max_s: float, retry_after_max_s: float) -> Retry:
    """The urllib3 :class:`Retry` of the module docstring.

    Args:
        retries: most retries of one request on a 429 or 5xx answer (0: none).
        backoff_s: urllib3's ``backoff_factor``, seconds.
        backoff_max_s: longest backoff wait, seconds.
        retry_after_max_s: longest wait a ``Retry-After`` header may ask for, seconds.
    """
    return Retry(
        total=retries,
        connect=0,
        read=0,
        other=0,
        redirect=0,
        status=retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST", "DELETE", "PATCH"}),
        backoff_factor=backoff_s,
        backoff_max=backoff_max_s,
        respect_retry_after_header=True,
        retry_after_max=int(retry_after_max_s),
        raise_on_status=False,
    )


def configure_session(client: Any, timeout_s: float, retry: Retry | int = 0) -> None:
    """Make every request of an alpaca-py client (``TradingClient``,
    ``CryptoHistoricalDataClient``) give up after ``timeout_s`` seconds unanswered (a request
    that sets its own timeout keeps it) and retry as ``retry`` says (see
    :func:`retry_policy`); alpaca-py's own 429 retry is switched off."""
    session: requests.Session = client._session  # alpaca-py offers no public timeout option
    adapter = _TimeoutAdapter(timeout_s, retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    client._retry = 0  # alpaca-py's RESTClient: no second, fixed-wait retry loop around ours
