"""Alpaca connection settings: keys from the environment only, and the two-key live switch.

Keys come from the environment only (``ALPACA_API_KEY_ID`` / ``ALPACA_API_SECRET_KEY``, or
Alpaca's own ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``); they are held as
:class:`pydantic.SecretStr` and never reach a repr, a log line or an error message.

The live endpoint is refused unless BOTH the caller passes ``live=True`` (the ``--live``
flag) and the configuration sets ``allow_live``; by default everything goes to Alpaca's paper
endpoint (``TradingClient(paper=True)``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from alpaca.common.enums import BaseURL
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from paper_trader.brokers.alpaca_errors import AlpacaConfigError, LiveTradingRefused

KEY_ID_VARS = ("ALPACA_API_KEY_ID", "APCA_API_KEY_ID")
SECRET_KEY_VARS = ("ALPACA_API_SECRET_KEY", "APCA_API_SECRET_KEY")
LIVE_TRADING_HOST = urlsplit(BaseURL.TRADING_LIVE.value).hostname


class _KeysFromEnvironment(EnvSettingsSource):
    """Environment source that yields the two key fields only; the rest is configuration."""

    def __call__(self) -> dict[str, Any]:
        names = {*KEY_ID_VARS, *SECRET_KEY_VARS, "api_key_id", "api_secret_key"}
        return {k: v for k, v in super().__call__().items() if k in names}


class AlpacaSettings(BaseSettings):
    """Alpaca connection settings.

    The key id and secret are read from the environment only (``ALPACA_API_KEY_ID`` /
    ``ALPACA_API_SECRET_KEY``, else ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``); passing
    them as arguments is an error. Every other field comes from the caller (the configuration
    file), never from the environment.

    Attributes:
        api_key_id: API key id (secret), ``None`` when the environment has none.
        api_secret_key: API secret key (secret), ``None`` when the environment has none.
        paper: trade on Alpaca's paper endpoint (default). ``False`` selects the live
            endpoint, which :meth:`live_endpoint` (and so ``AlpacaClient``) refuses unless
            ``live=True`` and ``allow_live`` are both given.
        allow_live: configuration half of the two-key live switch.
        url_override: trading API base URL instead of Alpaca's (a proxy, or a test server).
        data_url_override: market-data API base URL instead of Alpaca's.
        request_timeout_s: seconds before an unanswered HTTP request is given up (> 0).
        retries: most retries of one request answered 429 or 5xx (>= 0; see
            :mod:`~paper_trader.brokers.alpaca_http`).
        retry_backoff_s: exponential backoff factor between retries, seconds (>= 0).
        retry_backoff_max_s: longest backoff wait, seconds.
        retry_after_max_s: longest wait a ``Retry-After`` header may ask for, seconds; the
            defaults keep one request's worst case (4 waits) far below the watchdog's
            heartbeat timeout.

    Raises:
        AlpacaConfigError: a key passed as an argument.
        pydantic.ValidationError: an unknown field or a bad value.
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    api_key_id: SecretStr | None = Field(default=None, validation_alias=AliasChoices(*KEY_ID_VARS))
    api_secret_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices(*SECRET_KEY_VARS))
    paper: bool = True
    allow_live: bool = False
    url_override: str | None = None
    data_url_override: str | None = None
    request_timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=4, ge=0, le=20)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    retry_backoff_max_s: float = Field(default=10.0, ge=0)
    retry_after_max_s: float = Field(default=20.0, ge=0)

    def __init__(self, **values: Any) -> None:
        given = sorted({*KEY_ID_VARS, *SECRET_KEY_VARS, "api_key_id", "api_secret_key"} & set(values))
        if given:
            raise AlpacaConfigError(
                f"Alpaca keys come from the environment only; do not pass {', '.join(given)} "
                f"(set {KEY_ID_VARS[0]} and {SECRET_KEY_VARS[0]} in the environment)"
            )
        super().__init__(**values)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first, then the key variables of the environment; no dotenv, no files."""
        return (init_settings, _KeysFromEnvironment(settings_cls))

    def is_live_endpoint(self) -> bool:
        """True when orders would go to a live (real-money) endpoint: ``paper`` is false, or
        the trading URL override points at Alpaca's live host."""
        if not self.paper:
            return True
        return bool(self.url_override) and urlsplit(self.url_override).hostname == LIVE_TRADING_HOST

    def require_keys(self) -> tuple[str, str]:
        """The key id and secret, as plain strings (hand them to alpaca-py only).

        Raises:
            AlpacaConfigError: a key is missing from the environment or empty (the message
                names the variables, never a value).
        """
        key = self.api_key_id.get_secret_value() if self.api_key_id else ""
        secret = self.api_secret_key.get_secret_value() if self.api_secret_key else ""
        if not key or not secret:
            missing = [n for n, v in ((KEY_ID_VARS[0], key), (SECRET_KEY_VARS[0], secret)) if not v]
            raise AlpacaConfigError(
                f"Alpaca API keys missing: set {' and '.join(missing)} in the environment "
                f"(or {KEY_ID_VARS[1]} / {SECRET_KEY_VARS[1]}); keys are never read from files or arguments"
            )
        return key, secret

    def live_endpoint(self, live: bool) -> bool:
        """Whether to use the live endpoint, checked against the two-key switch.

        Args:
            live: the ``--live`` command-line flag.

        Returns:
            True for the live (real-money) endpoint, False for paper.

        Raises:
            LiveTradingRefused: the endpoint is not paper and ``live`` and ``allow_live`` are
                not both true.
            AlpacaConfigError: ``live`` is given while the settings select the paper endpoint.
        """
        live_endpoint = self.is_live_endpoint()
        if live_endpoint and not (live and self.allow_live):
            raise LiveTradingRefused(
                "refusing Alpaca's live (real-money) endpoint: it needs both the --live flag "
                f"and allow_live = true in the configuration (--live: {live}, "
                f"allow_live: {self.allow_live}); use paper = true to paper-trade"
            )
        if live and not live_endpoint:
            raise AlpacaConfigError(
                "--live was given but the Alpaca settings select the paper endpoint (paper = true); "
                "set paper = false and allow_live = true in the configuration to trade live, "
                "or drop --live"
            )
        return live_endpoint
