"""What every command that reads the runtime shares: ``--config`` and ``--root`` resolved
the same way (``cappuccino.toml`` and ``CAPPUCCINO_*``, ``--root`` winning), and the storage
URL resolved the same way (``--storage``, else the configuration's ``study.storage``, else
:func:`trainers.storage.default_storage_url`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from daemon.config import Config, ConfigError, load_config
from trainers.storage import default_storage_url

CONFIG_HELP = "cappuccino.toml (default ./cappuccino.toml if it exists)."
ROOT_HELP = "Runtime root (overrides the config; default train_results)."
# the two options as a command declares them: `config: Path = CONFIG_OPTION`, `root: Path = ROOT_OPTION`
CONFIG_OPTION: Any = typer.Option(None, "--config", "-c", help=CONFIG_HELP)
ROOT_OPTION: Any = typer.Option(None, "--root", help=ROOT_HELP)


def runtime_config(config: Path | None, root: Path | None, must_exist: bool = True) -> Config:
    """The configuration with ``--root`` applied.

    A bad configuration, or (with ``must_exist``) a runtime root that does not exist, is one
    line on stderr and exit code 2.
    """
    try:
        cfg = load_config(config, {"root": root} if root else None)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if must_exist and not cfg.root.is_dir():
        typer.echo(
            f"error: runtime root {cfg.root} does not exist (pass --root DIR, set CAPPUCCINO_ROOT, "
            "or run cappuccino quickstart)",
            err=True,
        )
        raise typer.Exit(2)
    return cfg


def runtime_storage(cfg: Config, storage: str | None) -> str:
    """The storage URL a command uses: ``--storage``, else the configuration's
    ``study.storage`` (``CAPPUCCINO_STUDY__STORAGE``), else ``sqlite:///<root>/optuna.db``."""
    return storage or cfg.study.storage or default_storage_url(cfg.root)


def with_runtime_options(
    entry: Callable[..., Any], apply: Callable[[Config, dict[str, Any]], None] | None = None
) -> Callable[..., Any]:
    """A process entry point (``python -m trainers.worker``, ``python -m paper_trader``: every
    option on its command line, ``--root`` defaulting to ``train_results``) as a ``cappuccino``
    command that takes ``--config`` and ``--root`` like every other: its other options are
    unchanged, ``root`` becomes the configuration's root (``--root`` winning; it need not exist
    yet), and ``apply(cfg, kwargs)`` may set more of ``entry``'s arguments from the
    configuration before ``entry`` runs.

    Raises:
        ValueError: ``entry`` has no ``root`` parameter.
    """
    signature = inspect.signature(entry)
    if "root" not in signature.parameters:
        raise ValueError(f"{entry.__name__} has no root parameter")
    params = [
        p.replace(default=ROOT_OPTION) if p.name == "root" else p for p in signature.parameters.values()
    ]
    params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=CONFIG_OPTION))

    @functools.wraps(entry)
    def command(*args: Any, config: Path | None = None, **kwargs: Any) -> Any:
        cfg = runtime_config(config, kwargs.pop("root", None), must_exist=False)
        if apply is not None:
            apply(cfg, kwargs)
        return entry(*args, root=cfg.root, **kwargs)

    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {**entry.__annotations__, "config": "Path"}
    return command
