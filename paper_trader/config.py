"""Settings of one paper-trader process (from its command line) and its runtime paths.

All money amounts are in the quote currency (USD for the embedded dataset); all rates are
fractions, not percent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from trainers.accounting import CostOverrides
from trainers.runtime.layout import Layout

COMPONENT = "paper_trader"  # its log, heartbeat and status name
_SLOT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ConfigError(ValueError):
    """A bad setting; the message names the option and the problem."""


class TraderConfig(CostOverrides):
    """What one paper-trader process does.

    Attributes:
        root: runtime root (``train_results`` by default).
        data: dataset folder of the simulated broker (None = the embedded dataset).
        holdout_cut: first bar the simulated broker replays (UTC, ISO 8601); earlier bars
            serve as feature history only. None: the dataset's default hold-out cut, as in
            training (2019-07-01 for the embedded dataset, else the start of its last 20%
            of bars).
        speed: replay speed of the simulated broker in bars per second; 0 = as fast as possible.
        max_bars: stop once the ledger holds this many processed bars (None = run until the
            replay ends, or forever with a live data feed).
        deployment: trade the single model in ``<root>/deployments/model_<slot>/`` instead of
            the ensemble.
        broker: ``sim`` (replay) or ``alpaca`` (Alpaca paper account; keys from the environment).
        live: ask for Alpaca's live endpoint (refused unless the configuration allows it).
        fee, slippage, min_cash, max_weight, trailing_stop, min_trade: overrides of the
            traded model's execution model (None, the default: trade with the costs the
            model was trained with, from its bundles). Each override is logged and shown in
            the status (``costs``, ``cost_overrides``).
        min_notional: orders below this notional are not placed (a full exit of a stopped
            position always is).
        slippage: adverse fill-price deviation per side.
        initial_cash: cash of a new ledger.
        poll_s: seconds between looks for an ensemble (or a new bar of a live feed) while waiting.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path = Path("train_results")
    data: Path | None = None
    holdout_cut: str | None = None
    speed: float = Field(0.0, ge=0)
    max_bars: int | None = Field(None, ge=1)
    deployment: str | None = None
    broker: Literal["sim", "alpaca"] = "sim"
    live: bool = False
    allow_live: bool = False
    min_notional: float = Field(10.0, ge=0)
    initial_cash: float = Field(10_000.0, gt=0)
    poll_s: float = Field(1.0, gt=0)

    @field_validator("deployment")
    @classmethod
    def _slot_name(cls, value: str | None) -> str | None:
        if value is not None and not _SLOT_RE.match(value):
            raise ValueError("a slot name is 1-64 letters, digits, '_' or '-'")
        return value

    @classmethod
    def build(cls, **values: object) -> TraderConfig:
        """Validate settings; raises :class:`ConfigError` naming the first bad option."""
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            first = exc.errors()[0]
            name = "--" + ".".join(str(p) for p in first["loc"]).replace("_", "-")
            raise ConfigError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None

    # -- runtime paths (trainers.runtime.layout knows them all) -------------------------------

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def trader_dir(self) -> Path:
        """``<root>/paper_trader``: the ledger, status file and process lock."""
        return self.layout.trader_dir

    @property
    def ledger_path(self) -> Path:
        return self.layout.ledger

    @property
    def status_path(self) -> Path:
        return self.layout.trader_status

    @property
    def lock_path(self) -> Path:
        return self.layout.trader_lock

    @property
    def heartbeat_path(self) -> Path:
        """``<root>/run/heartbeats/paper_trader.json`` (read by the supervisor's watchdog)."""
        return self.layout.heartbeat(COMPONENT)

    @property
    def log_path(self) -> Path:
        return self.layout.log(COMPONENT)
