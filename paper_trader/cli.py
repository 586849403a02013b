"""Command line of the paper trader: ``python -m paper_trader`` and ``cappuccino trade``.

A user error (bad option, bad data, a ledger of another broker, another trader on the same
root, missing Alpaca keys) ends in one line on stderr and exit code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import typer

from paper_trader.config import ConfigError, TraderConfig
from trainers.atomic_io import is_disk_full
from trainers.data import DataError
from trainers.runtime.logs import configure_logging

if TYPE_CHECKING:  # the trading machinery (torch) loads when a trader runs, not for --help
    from paper_trader.brokers import Broker
    from paper_trader.model_source import ModelSource

ALLOW_LIVE_ENV = "CAPPUCCINO_PAPER_TRADER__ALLOW_LIVE"
# exit code of a trader stopped by a full disk (sysexits.h EX_IOERR); the supervisor then
# starts it again once the disk has room, without counting a restart (daemon/disk_guard.py)
DISK_FULL_EXIT = 74


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_broker(
    config: TraderConfig, alpaca_url: str | None = None, alpaca_data_url: str | None = None
) -> Broker:
    """The broker the settings name.

    Raises:
        DataError: bad replay data.
        paper_trader.brokers.alpaca_errors.AlpacaError: Alpaca settings or keys.
    """
    from paper_trader.brokers import SimBroker

    if config.broker == "sim":
        return SimBroker(config.data, config.holdout_cut, config.speed)
    from paper_trader.brokers.alpaca import AlpacaBroker

    return AlpacaBroker.from_settings(config, alpaca_url, alpaca_data_url)


def build_source(config: TraderConfig, symbols: tuple[str, ...]) -> ModelSource:
    """The ensemble (default) or the deployment slot of ``config.deployment``."""
    from paper_trader.model_source import DeploymentSource, EnsembleSource
    from trainers.bundle import PipelineSpec

    pipeline = PipelineSpec(symbols)
    if config.deployment is not None:
        return DeploymentSource(config.root, config.deployment, pipeline)
    return EnsembleSource(config.root, pipeline)


def run(config: TraderConfig, alpaca_url: str | None = None, alpaca_data_url: str | None = None) -> int:
    """Build broker, model source and trader; run with signal handlers; return the exit code
    (0, or :data:`DISK_FULL_EXIT` when the disk filled up: every bar is one ledger
    transaction, so the bar in progress rolled back and the ledger ends at the last committed
    bar; a restart resumes at the next one)."""
    from paper_trader.loop import Trader

    broker = build_broker(config, alpaca_url, alpaca_data_url)
    trader = Trader(config, broker, build_source(config, broker.symbols))
    trader.install_signal_handlers()
    try:
        return trader.run()
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        # the log may be on the full disk too: stderr (the supervisor's <name>.stdout or the terminal)
        structlog.get_logger("paper_trader").error(
            "disk_full", error=str(exc), note="stopped at a bar boundary"
        )
        typer.echo(f"disk full: stopped at a bar boundary, ledger intact ({exc})", err=True)
        return DISK_FULL_EXIT


def _user_errors() -> tuple[type[BaseException], ...]:
    from paper_trader.brokers import BrokerError
    from paper_trader.ledger import LedgerError
    from paper_trader.loop import TraderError

    errors: list[type[BaseException]] = [
        ConfigError,
        DataError,
        LedgerError,
        TraderError,
        BrokerError,
    ]
    try:
        from paper_trader.brokers.alpaca_errors import AlpacaError

        errors.append(AlpacaError)
    except ImportError:  # pragma: no cover - alpaca-py is a dependency
        pass
    return tuple(errors)


def trade(
    root: Path = typer.Option(Path("train_results"), envvar="CAPPUCCINO_ROOT", help="Runtime root."),
    data: Path = typer.Option(None, help="Dataset folder of the simulated broker (default: embedded)."),
    holdout_cut: str = typer.Option(
        None,
        help="First replayed bar (UTC, ISO 8601); default: the dataset's hold-out cut "
        "(2019-07-01 for the embedded dataset, else the start of its last 20% of bars).",
    ),
    speed: float = typer.Option(1.0, help="Replay speed of the sim broker, bars per second; 0 = flat out."),
    max_bars: int = typer.Option(None, help="Stop once the ledger holds this many processed bars."),
    deployment: str = typer.Option(None, help="Trade deployments/model_<SLOT> instead of the ensemble."),
    broker: str = typer.Option("sim", help="sim (replay) or alpaca (Alpaca paper; keys from the env)."),
    live: bool = typer.Option(False, help=f"Alpaca live endpoint; also needs {ALLOW_LIVE_ENV}=true."),
    fee: float = typer.Option(None, help="Override the model's fee per side (fraction of notional)."),
    slippage: float = typer.Option(None, help="Override the model's slippage per side (fraction)."),
    min_cash: float = typer.Option(None, help="Override the model's cash reserve (fraction of equity)."),
    max_weight: float = typer.Option(None, help="Override the model's largest weight of one asset."),
    trailing_stop: float = typer.Option(None, help="Override the model's trailing stop (0 = off)."),
    min_trade: float = typer.Option(None, help="Override the model's no-trade band (fraction of equity)."),
    min_notional: float = typer.Option(10.0, help="Smallest order notional (quote currency)."),
    initial_cash: float = typer.Option(10_000.0, help="Cash of a new ledger (quote currency)."),
    alpaca_url: str = typer.Option(None, help="Alpaca trading API base URL override (proxy or test server)."),
    alpaca_data_url: str = typer.Option(None, help="Alpaca market-data API base URL override."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    debug: bool = typer.Option(False, help="Show tracebacks of errors."),
) -> None:
    """Paper-trade the ensemble (or a deployment slot), one decision per closed bar."""
    import torch

    torch.set_num_threads(1)
    try:
        config = TraderConfig.build(
            root=root,
            data=data,
            holdout_cut=holdout_cut,
            speed=speed,
            max_bars=max_bars,
            deployment=deployment,
            broker=broker,
            live=live,
            allow_live=_env_flag(ALLOW_LIVE_ENV),
            fee=fee,
            slippage=slippage,
            min_cash=min_cash,
            max_weight=max_weight,
            trailing_stop=trailing_stop,
            min_trade=min_trade,
            min_notional=min_notional,
            initial_cash=initial_cash,
        )
        if log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"--log-level: use debug, info, warning or error, not {log_level!r}")
        configure_logging("paper_trader", config.root, log_level)
        code = run(config, alpaca_url, alpaca_data_url)
    except _user_errors() as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


app = typer.Typer(add_completion=False, help="Paper-trade the ensemble, one decision per closed bar.")
app.command()(trade)
