"""Supervisor configuration: ``cappuccino.toml`` + ``CAPPUCCINO_*`` environment variables.

Every key is optional. Precedence (highest first): environment variables
(``CAPPUCCINO_<SECTION>__<KEY>``, e.g. ``CAPPUCCINO_WORKERS__COUNT=4``; top-level keys as
``CAPPUCCINO_ROOT``), then ``<root>/training.toml`` (the training request written by
``cappuccino start-training``: study size and worker count), then the TOML file, then the
defaults below. An unknown key or a bad
value stops start-up with :class:`ConfigError`, one line naming the key. Secrets (Alpaca
keys) are never part of this file: they come from the environment only.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from trainers.accounting import (
    DEFAULT_FEE,
    DEFAULT_MIN_CASH,
    DEFAULT_MIN_TRADE,
    DEFAULT_TRAILING_STOP,
    CostOverrides,
    Costs,
    Rate,
    Weight,
)
from trainers.artifact_store import ArtifactStoreError, StoreSpec

DEFAULT_CONFIG_FILE = "cappuccino.toml"
TRAINING_OVERLAY = "training.toml"  # <root>/training.toml, written by `cappuccino start-training`
ENV_PREFIX = "CAPPUCCINO_"
# CAPPUCCINO_* variables that are not configuration keys (read by scripts, not by Config)
NON_CONFIG_VARIABLES = frozenset({"CAPPUCCINO_TORCH_SPEC", "CAPPUCCINO_API_TOKEN"})


class ConfigError(ValueError):
    """A configuration problem; the message names the file and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudyConfig(_Section):
    """The Optuna study the workers train on."""

    name: str | None = Field(None, description="study name; default: <root>/.current_study")
    storage: str | None = Field(None, description="storage URL; default sqlite:///<root>/optuna.db")
    n_trials: int = Field(1000, ge=1, description="stop training at this many finished trials")
    mode: Literal["quick", "full"] = "quick"
    budget_steps: int = Field(30_000, ge=1, description="env steps per fold")
    n_envs: int = Field(16, ge=1)
    data: str | None = Field(None, description="dataset folder; default: the embedded dataset")
    holdout_cut: str | None = Field(
        None,
        description="first hold-out bar (UTC); default: 2019-07-01 for the embedded dataset, "
        "else the start of the data's last 20% of bars",
    )


class TrainingSection(_Section):
    """How a study's agents are designed and trained (:class:`trainers.design.DesignOptions`;
    recorded in the study when it is created: an existing study keeps its own). A list of
    several values is searched."""

    action_scheme: Literal["softmax", "scores"] = Field(
        "softmax", description="softmax: weights over the assets and cash; scores: one score per asset"
    )
    decision_intervals: list[int] = Field([24], min_length=1, description="bars between decisions")
    rewards: list[Literal["log_return", "excess_log_return", "differential_sharpe"]] = Field(
        ["excess_log_return"], min_length=1
    )
    turnover_penalty: float = Field(0.0, ge=0.0, description="reward subtracted per unit of turnover")
    algorithms: list[Literal["ppo", "a2c", "sac", "td3"]] = Field(["ppo"], min_length=1)
    predictor_horizons: list[int] = Field(
        [0], min_length=1, description="horizons (bars) of a GRU predictor channel; 0 = none"
    )
    feature_set: Literal["base", "long"] = Field(
        "base",
        description="base: feature windows of at most 48 bars; long: also weeks (168- and "
        "720-bar returns, the 1,200-bar SMA gap, 168-bar volatility). One per study",
    )
    budget_ladder: list[int] = Field(
        [], description="successive halving: env steps per fold of each rung (replaces study.budget_steps)"
    )
    tensorboard: bool = Field(
        False, description="SB3 TensorBoard logs under <root>/tensorboard/<study>/<trial>/"
    )

    @field_validator("predictor_horizons")
    @classmethod
    def _horizons(cls, v: list[int]) -> list[int]:
        if any(h < 0 for h in v) or v != sorted(set(v)):
            raise ValueError("must be increasing whole numbers >= 0 (0 = no predictor)")
        return v

    @field_validator("decision_intervals", "budget_ladder")
    @classmethod
    def _positive_increasing(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v) or v != sorted(set(v)):
            raise ValueError("must be increasing whole numbers >= 1")
        return v

    def worker_args(self) -> list[str]:
        """The worker's command-line options for these settings."""
        args = ["--action-scheme", self.action_scheme]
        args += ["--decision-intervals", ",".join(map(str, self.decision_intervals))]
        args += ["--rewards", ",".join(self.rewards), "--turnover-penalty", str(self.turnover_penalty)]
        args += ["--algorithms", ",".join(self.algorithms)]
        args += ["--predictor-horizons", ",".join(map(str, self.predictor_horizons))]
        args += ["--feature-set", self.feature_set]
        if self.budget_ladder:
            args += ["--budget-ladder", ",".join(map(str, self.budget_ladder))]
        return [*args, "--tensorboard"] if self.tensorboard else args


class SequentialConfig(_Section):
    """Sequential two-stage training (``start-training --sequential``, :mod:`daemon.sequential`):
    a quick-mode study, a gate, then a full-mode study seeded with the best quick parameters."""

    quick_trials: int = Field(20, ge=1, description="finished trials of the quick study before its gate")
    quick_time_limit_s: float | None = Field(
        None, gt=0, description="also evaluate the gate this long after the start (with >= 1 COMPLETE trial)"
    )
    top_k: int = Field(
        3,
        ge=1,
        description="best quick parameter sets enqueued in the full study; the full study becomes "
        "current once it has this many COMPLETE trials",
    )
    gate: Literal["beats_baselines", "min_value", "off"] = Field(
        "beats_baselines",
        description="beats_baselines: the best quick value exceeds both constant baselines (+ margin); "
        "min_value: it exceeds min_value; off: always pass",
    )
    margin: float = Field(0.0, ge=0, description="beats_baselines: required lead over the better baseline")
    min_value: float | None = Field(
        None, description="min_value: the threshold the best quick value must exceed"
    )
    check_interval_s: float = Field(60.0, gt=0, description="seconds between the supervisor's stage checks")

    @model_validator(mode="after")
    def _min_value_given(self) -> SequentialConfig:
        if self.gate == "min_value" and self.min_value is None:
            raise ValueError("gate 'min_value' needs min_value")
        return self


class ArtifactsConfig(_Section):
    """Where trial bundles are stored (:mod:`trainers.artifact_store`). No credentials here:
    boto3 reads them from the environment (``AWS_ACCESS_KEY_ID`` ...) or its usual chain."""

    store: str = Field("file", description='"file" (<root>/artifacts) or "s3://bucket/prefix"')
    endpoint_url: str | None = Field(None, description="S3-compatible server (MinIO, Ceph ...); default AWS")
    region: str | None = Field(None, description="S3 region; default boto3's chain")

    @field_validator("store")
    @classmethod
    def _valid_store(cls, value: str) -> str:
        try:
            StoreSpec.parse(value)
        except ArtifactStoreError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _valid_endpoint(cls, value: str | None) -> str | None:
        try:
            StoreSpec.parse("file", value)
        except ArtifactStoreError as exc:
            raise ValueError(str(exc)) from None
        return value

    def spec(self) -> StoreSpec:
        """The parsed store (see :meth:`trainers.artifact_store.StoreSpec.parse`)."""
        return StoreSpec.parse(self.store, self.endpoint_url, self.region)


class WorkersConfig(_Section):
    """Training worker processes."""

    count: int = Field(2, ge=0, le=256)
    max_trials_per_process: int = Field(20, ge=1)
    device: Literal["cpu", "cuda"] = "cpu"
    torch_threads: int = Field(1, ge=1)
    memory_limit_mb: int = Field(4096, ge=64)
    heartbeat_timeout_s: float = Field(900.0, gt=0, description="no heartbeat for this long = hung")
    optuna_heartbeat_interval_s: int = Field(30, ge=1)
    optuna_grace_period_s: int = Field(120, ge=2)


class CostsConfig(_Section):
    """The study's execution model (:class:`trainers.accounting.Costs`): what training, every
    backtest, the deployer's gate, ``evaluate`` and the paper trader charge and enforce.
    Recorded in the study when it is created; a study keeps it (start a new study to change
    it)."""

    fee: Rate = Field(DEFAULT_FEE, description="commission per side, fraction of traded notional")
    slippage: Rate = Field(0.0, description="adverse fill-price deviation per side, fraction")
    min_cash: Rate = Field(DEFAULT_MIN_CASH, description="minimum cash reserve, fraction of equity")
    max_weight: Weight = Field(1.0, description="maximum weight of one asset, fraction of equity")
    trailing_stop: Rate = Field(DEFAULT_TRAILING_STOP, description="exit this far below the high; 0 = off")
    min_trade: Rate = Field(DEFAULT_MIN_TRADE, description="no-trade band per asset, fraction of equity")

    def as_costs(self) -> Costs:
        return Costs(**self.model_dump())


class PaperTraderConfig(_Section, CostOverrides):
    """The paper-trading process. It trades with the costs its models were trained with;
    the cost keys here are overrides (unset = the model's own), logged and shown in status."""

    enabled: bool = True
    broker: Literal["sim", "alpaca"] = "sim"
    speed: float = Field(1.0, ge=0, description="sim replay speed in bars/s; 0 = as fast as possible")
    deployment: str | None = Field(None, description="trade this deployment slot instead of the ensemble")
    initial_cash: float = Field(10_000.0, gt=0)
    min_notional: float = Field(10.0, ge=0)
    allow_live: bool = False
    memory_limit_mb: int = Field(2048, ge=64)
    heartbeat_timeout_s: float = Field(300.0, gt=0)


class JobsConfig(_Section):
    """Intervals and bounds of the scheduled jobs (seconds)."""

    sync_interval_s: float = Field(600.0, gt=0)
    deploy_interval_s: float = Field(3600.0, gt=0)
    watchdog_interval_s: float = Field(30.0, gt=0)
    monitor_interval_s: float = Field(300.0, gt=0)
    misfire_grace_s: float = Field(60.0, gt=0)
    job_timeout_s: float = Field(600.0, gt=0, description="a job run longer than this is abandoned")


class RestartConfig(_Section):
    """Restart policy of crashed or hung children."""

    backoff_initial_s: float = Field(5.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    budget_per_hour: int = Field(3, ge=0, description="restarts allowed per child per hour")
    stop_timeout_s: float = Field(30.0, gt=0, description="SIGTERM -> SIGKILL grace on stop")


class EnsembleConfig(_Section):
    top_n: int = Field(10, ge=1)
    combine: Literal["mean", "median", "value_weighted"] = "mean"


class DeployConfig(_Section):
    slot: str = "0"
    min_improvement: float = Field(0.01, ge=0)
    min_grade: Literal["S", "A", "B", "C", "D", "F"] = "A"
    min_sharpe: float = 0.5
    max_drawdown: float = Field(0.25, gt=0, le=1)
    validation_fraction: float = Field(
        0.5, gt=0, lt=1, description="share of the hold-out bars in the validation window (the gate's)"
    )
    candidates: int = Field(5, ge=1, description="the best trials tried in value order until one passes")


DEFAULT_PAUSE_FREE_DISK_MB = 256


class PreflightConfig(_Section):
    """Start-up minimums (``cappuccino doctor``) and the supervisor's disk-full guard
    (:mod:`daemon.disk_guard`)."""

    min_free_disk_mb: int = Field(
        1024, ge=0, description="start-up minimum; a paused supervisor resumes once this much is free again"
    )
    min_free_memory_mb: int = Field(512, ge=0)
    pause_free_disk_mb: int | None = Field(
        None,
        ge=0,
        description="below this much free space the supervisor pauses the workers and stops the paper "
        "trader; default: 256 or min_free_disk_mb if smaller",
    )

    @model_validator(mode="after")
    def _pause_below_minimum(self) -> PreflightConfig:
        if self.pause_free_disk_mb is not None and self.pause_free_disk_mb > self.min_free_disk_mb:
            raise ValueError(
                f"pause_free_disk_mb ({self.pause_free_disk_mb}) must not exceed min_free_disk_mb "
                f"({self.min_free_disk_mb}), the free space at which a paused supervisor resumes"
            )
        return self

    @property
    def pause_below_mb(self) -> int:
        """The free space (MiB) below which the supervisor pauses (``pause_free_disk_mb``)."""
        if self.pause_free_disk_mb is not None:
            return self.pause_free_disk_mb
        return min(DEFAULT_PAUSE_FREE_DISK_MB, self.min_free_disk_mb)


class ArchiveConfig(_Section):
    """The daily archive job (:mod:`ensemble.archive`; same rules as ``cappuccino archive``)."""

    enabled: bool = True
    interval_s: float = Field(86_400.0, gt=0, description="seconds between runs")
    top_percent: float = Field(10.0, gt=0, le=100)
    min_grade: Literal["S", "A", "B", "C", "D", "F"] = "A"


class CleanupConfig(_Section):
    """The daily cleanup job (:mod:`daemon.cleanup`; same rules as ``cappuccino clean``)."""

    enabled: bool = True
    interval_s: float = Field(86_400.0, gt=0, description="seconds between runs")
    keep_days: float = Field(7.0, ge=0, description="remove logs not modified for this many days")
    keep_top: int = Field(20, ge=1, description="COMPLETE trials kept per study; keep >= ensemble.top_n")


class AlertsConfig(_Section):
    """Monitor figures and webhook alerts (:mod:`daemon.monitor`, :mod:`daemon.alerts`)."""

    webhook_url: SecretStr | None = Field(
        None, description="http(s) URL that receives alerts as JSON POSTs; none: alerts go to the log only"
    )
    stagnation_trials: int = Field(50, ge=1, description="no better value in this many COMPLETE trials")
    rate_window: int = Field(100, ge=1, description="fail/prune rates over this many latest finished trials")
    drawdown_limit: float = Field(0.20, gt=0, le=1, description="paper-trader drawdown (fraction) alerting")
    max_attempts: int = Field(5, ge=1, le=20, description="delivery attempts per alert")
    backoff_s: float = Field(2.0, gt=0, description="first retry delay; doubles per attempt")
    timeout_s: float = Field(5.0, gt=0, description="HTTP timeout per attempt")
    repeat_after_s: float = Field(
        86_400.0, ge=0, description="re-send a still-active alert after this long; 0 = never"
    )
    storage_unavailable_after_s: float = Field(
        60.0, ge=0, description="alert when the study storage has not answered for this long"
    )


class ApiConfig(_Section):
    """The REST control API (:mod:`daemon.api`), run by the supervisor as its child ``api``.
    Its bearer token is ``CAPPUCCINO_API_TOKEN`` or ``<root>/run/api.token`` (never here)."""

    enabled: bool = Field(False, description="run the control API with the supervisor")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="bind address; anything but a loopback address is logged as a warning",
    )
    port: int = Field(8765, ge=1, le=65535)
    memory_limit_mb: int = Field(
        3072,
        ge=64,
        description="RSS limit of the API's process tree, with the sync/deploy/rollback commands it runs "
        "(about 400 MB each, one of each at a time)",
    )


class Config(BaseSettings):
    """The whole configuration (see ``cappuccino.example.toml`` for every key)."""

    model_config = SettingsConfigDict(
        env_prefix="CAPPUCCINO_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    root: Path = Path("train_results")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    status_interval_s: float = Field(5.0, gt=0)
    study: StudyConfig = StudyConfig()
    training: TrainingSection = TrainingSection()
    artifacts: ArtifactsConfig = ArtifactsConfig()
    sequential: SequentialConfig = SequentialConfig()
    costs: CostsConfig = CostsConfig()
    workers: WorkersConfig = WorkersConfig()
    paper_trader: PaperTraderConfig = PaperTraderConfig()
    jobs: JobsConfig = JobsConfig()
    restart: RestartConfig = RestartConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    deploy: DeployConfig = DeployConfig()
    preflight: PreflightConfig = PreflightConfig()
    archive: ArchiveConfig = ArchiveConfig()
    cleanup: CleanupConfig = CleanupConfig()
    alerts: AlertsConfig = AlertsConfig()
    api: ApiConfig = ApiConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment wins over the file's values (passed as init kwargs)
        return (env_settings, init_settings)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the TOML file (``None``: ``./cappuccino.toml`` if it exists) and the environment.

    Args:
        path: config file; an explicit path that does not exist is an error.
        overrides: values that win over everything (e.g. ``{"root": ...}`` from ``--root``).

    Raises:
        ConfigError: unreadable TOML, unknown key, or bad value; one line naming it.
    """
    data: dict[str, Any] = {}
    where = "CAPPUCCINO_* environment"
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        where = f"{path} or CAPPUCCINO_* environment"
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    root = Path(
        (overrides or {}).get("root")
        or os.environ.get("CAPPUCCINO_ROOT")
        or data.get("root")
        or "train_results"
    )
    overlay = root / TRAINING_OVERLAY
    if overlay.is_file():
        try:
            extra = tomllib.loads(overlay.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{overlay}: not valid TOML ({exc})") from None
        data = _deep_merge(data, extra)
        where = f"{where} or {overlay}"
    _check_environment()
    _unexport_artifacts()
    try:
        config = Config(**data)  # environment wins over the file's values
        if overrides:
            config = Config.model_validate(_deep_merge(config.model_dump(), overrides))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        value = "" if err["type"] == "extra_forbidden" else f" (got {err.get('input')!r})"
        raise ConfigError(f"{_source(loc, path, overlay) or where}: {key}: {msg}{value}") from None
    _export_artifacts(config)
    return config


_exported: dict[str, str] = {}  # CAPPUCCINO_ARTIFACTS__* this process set itself


def _unexport_artifacts() -> None:
    """Forget what :func:`_export_artifacts` set, so a re-read file's change is seen."""
    for name, value in _exported.items():
        if os.environ.get(name) == value:
            del os.environ[name]
    _exported.clear()


def _export_artifacts(config: Config) -> None:
    """Put ``[artifacts]`` into this process's environment: every reader of the process
    (:func:`trainers.artifact_store.artifact_store_for`) and every child it starts (they
    inherit the environment) then use one store, as they do the storage URL."""
    for name, value in config.artifacts.spec().env().items():
        if os.environ.get(name) != value:
            os.environ[name] = value
            _exported[name] = value


def _source(loc: list[str], path: str | Path | None, overlay: Path) -> str | None:
    """Where the value at ``loc`` came from: the ``CAPPUCCINO_*`` variable, the overlay or
    the config file (None when unknown, e.g. a default or an override)."""
    upper = {k.upper(): k for k in os.environ if k.upper().startswith(ENV_PREFIX)}
    for depth in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(loc[:depth]).upper()
        if name in upper:
            return f"environment variable {upper[name]}"
    for file in (overlay, path):
        if file is not None and Path(file).is_file() and _has_key(Path(file), loc):
            return str(file)
    return None


def _has_key(path: Path, loc: list[str]) -> bool:
    try:
        node: Any = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _check_environment() -> None:
    """Reject an unknown ``CAPPUCCINO_<KEY>`` variable (the settings library would ignore it).

    Raises:
        ConfigError: naming the variable.
    """
    known = {name.upper() for name in Config.model_fields}
    for var in os.environ:
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NON_CONFIG_VARIABLES:
            continue
        head = upper[len(ENV_PREFIX) :].split("__", 1)[0]
        if head not in known:
            raise ConfigError(f"environment variable {var}: unknown key {head.lower()!r}")


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
