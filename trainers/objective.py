"""The Optuna objective: walk-forward training and evaluation of one trial.

For each walk-forward fold: fit feature normalisation on the fold's train slice, train the
trial's algorithm (PPO, A2C, SAC or TD3; :mod:`trainers.algorithms`) on
:class:`~trainers.env.PortfolioVecEnv` over that slice for ``budget_steps`` env steps,
backtest the deterministic actor on the fold's test slice, and measure its excess Sharpe
ratio (agent minus equal-weight buy-and-hold, both annualised with the dataset's bars per
year: 8,760 for hourly 24/7 bars; see :mod:`trainers.data`). The trial's value is

    value = mean(excess_sharpe over folds) - 0.1 * std(excess_sharpe over folds)

(population std), which prefers agents that beat the benchmark consistently over ones that
beat it once by a lot; after each fold the value over the folds so far is reported to the
median pruner (or, with a budget ladder, the value over all folds at each rung to the
successive-halving pruner). The bundle of the most recent fold's model goes to the artifact
store; the trial's user attributes carry VIN, grade, per-fold metrics, artifact id, actor
sha256, data fingerprint and feature-pipeline version.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.artifacts import upload_artifact
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.logger import configure as configure_logger

from trainers.accounting import Costs, action_dim
from trainers.actor import Actor
from trainers.algorithms import (
    SQUASH,
    Params,
    build_model,
    export_actor,
    rollout_batch,
    suggest_algorithm_params,
)
from trainers.artifact_store import artifact_store_for
from trainers.backtest import backtest, decision_bars
from trainers.bundle import ObservationSpec, pack_bundle, save_bundle, to_numpy_policy
from trainers.data import (
    DEFAULT_MAX_FILL_BARS,
    Panel,
    load_panel,
    resolve_holdout_cut,
    split_holdout,
)
from trainers.design import Design, DesignOptions, suggest_design
from trainers.env import DEFAULT_EPISODE_DAYS, PortfolioVecEnv
from trainers.features import (
    FEATURE_NAMES,
    FEATURE_PIPELINE_VERSION,
    NormStats,
    compute_features,
    feature_set_names,
    warmup_bars,
)
from trainers.naming import grade_for, vin_for
from trainers.predictor import FittedPredictor, fit_fold_predictor, with_channel
from trainers.predictor_spec import PredictorSpec
from trainers.runtime.heartbeat import Heartbeat
from trainers.search_space import DEFAULT_BUDGET_STEPS
from trainers.splits import EMBARGO_DAYS, Fold, Mode, panel_folds

log = logging.getLogger(__name__)

STD_PENALTY = 0.1


class TrialFailed(RuntimeError):
    """A trial that cannot produce a value (NaN, stop request); the reason is recorded."""


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of a study's training (not searched).

    Attributes:
        mode: walk-forward mode, ``quick`` or ``full``.
        budget_steps: env steps trained per fold (>= 30,000 outside tests).
        n_envs: parallel portfolios in the vectorised env.
        embargo: bars between each fold's train and test slices; None: 1 day of the
            data's bars (24 for hourly 24/7 bars).
        episode_bars: bars per training episode; None: 30 days of the data's bars (720
            for hourly 24/7 bars).
        costs: the study's execution model (fees, slippage, cash reserve, maximum weight,
            trailing stop, minimum trade), the same in training, every backtest and the
            paper trader.
        holdout_cut: first bar the study never sees (UTC); None: the dataset's default
            (2019-07-01 for the embedded dataset, else the start of its last 20% of bars).
        bars_per_year: annualisation of every Sharpe ratio; None: inferred from the data
            (8,760 for hourly 24/7 bars).
        bar_seconds: the data's bar interval; filled in from the data, not an input.
        max_fill_bars: longest gap forward-filled by the loader.
        device: torch device for PPO (``cpu`` or ``cuda``).
        seed: base seed (trial number is added); None = random.
        grade_thresholds: objective value per grade (None = defaults).
        design: the agent designs the study allows (action scheme, decision intervals,
            rewards, turnover penalty, algorithms; :class:`trainers.design.DesignOptions`).
        budget_ladder: env steps per fold of each rung of successive halving (e.g.
            ``(10_000, 30_000, 90_000)``): every fold is trained to the first rung and the
            trial reports its value there; the pruner (:func:`halving_pruner`) stops all but
            the best third, whose models continue to the next rung (SB3 trains whole
            rollouts, so a rung rounds up to the next ``n_steps * n_envs``). Empty: one budget,
            ``budget_steps``, and a median pruner after each fold.
        tensorboard: write SB3's TensorBoard logs of every fold under
            ``<root>/tensorboard/<study>/<trial number>/fold_<k>`` (needs the ``tensorboard``
            package: ``pip install -e '.[tensorboard]'``).
    """

    mode: Mode = "quick"
    budget_steps: int = DEFAULT_BUDGET_STEPS
    n_envs: int = 16
    embargo: int | None = None
    episode_bars: int | None = None
    costs: Costs = field(default_factory=Costs)
    holdout_cut: str | None = None
    bars_per_year: int | None = None
    bar_seconds: int | None = None
    max_fill_bars: int = DEFAULT_MAX_FILL_BARS
    device: str = "cpu"
    seed: int | None = 0
    grade_thresholds: dict[str, float] | None = field(default=None)
    design: DesignOptions = field(default_factory=DesignOptions)
    budget_ladder: tuple[int, ...] = ()
    tensorboard: bool = False

    def __post_init__(self) -> None:
        ladder = self.budget_ladder
        if ladder and (min(ladder) < 1 or list(ladder) != sorted(set(ladder))):
            raise ValueError(f"budget_ladder: {list(ladder)} must be increasing step counts >= 1")

    @property
    def final_budget(self) -> int:
        """Env steps per fold of a trial that is never pruned."""
        return self.budget_ladder[-1] if self.budget_ladder else self.budget_steps

    def as_record(self) -> dict[str, Any]:
        """The settings as JSON-able values (``model.json``'s ``training``); resolve them
        first (:meth:`for_data`) so the record holds the cut and bars per year used."""
        out = {k: v for k, v in asdict(self).items() if k not in ("grade_thresholds", "costs", "design")}
        return {**out, "costs": self.costs.as_dict(), "design": self.design.as_dict()}

    def for_data(self, data: StudyData) -> TrainingConfig:
        """These settings with every data-dependent default resolved against ``data``:
        embargo, episode length, hold-out cut, bars per year and bar interval."""
        timeframe = data.panel.timeframe
        return replace(
            self,
            embargo=data.embargo,
            episode_bars=self.episode_bars or timeframe.bars(DEFAULT_EPISODE_DAYS),
            holdout_cut=data.holdout_cut,
            bars_per_year=timeframe.bars_per_year,
            bar_seconds=timeframe.bar_seconds,
        )


@dataclass
class StudyData:
    """The study's bars (before the hold-out cut), their raw features and folds.

    ``features`` is ``(T, n_assets, len(feature_names))``, the study's feature set
    (:data:`trainers.features.FEATURE_SETS`). ``holdout_cut`` is the resolved cut (UTC ISO
    8601) and ``embargo`` the resolved embargo in bars; ``panel.timeframe`` holds the bar
    interval and bars per year.
    """

    panel: Panel
    features: np.ndarray
    folds: list[Fold]
    fingerprint: str
    holdout_cut: str = ""
    embargo: int = 0
    feature_names: tuple[str, ...] = FEATURE_NAMES

    @classmethod
    def load(cls, data_dir: str | Path | None, config: TrainingConfig) -> StudyData:
        """Load, validate and split the dataset (``None`` = embedded dataset).

        Raises:
            trainers.data.DataError: invalid data, a bad ``bars_per_year``, or a cut
                outside the data.
            trainers.splits.TooShortError: too few study bars for the mode (one line).
        """
        whole = load_panel(data_dir, config.max_fill_bars, bars_per_year=config.bars_per_year)
        cut = resolve_holdout_cut(whole, config.holdout_cut)
        panel, _ = split_holdout(whole, cut)
        embargo = panel.timeframe.bars(EMBARGO_DAYS) if config.embargo is None else config.embargo
        names = feature_set_names(config.design.feature_set)
        folds = panel_folds(panel, config.mode, embargo, first_bar=warmup_bars(names))
        first = min(f.train_start for f in folds)
        fingerprint = panel.fingerprint(first, len(panel))
        features = compute_features(panel.prices, names)
        return cls(panel, features, folds, fingerprint, cut, embargo, names)


def study_features(data: StudyData, feature_set: str) -> np.ndarray:
    """The raw features ``(T, n_assets, F)`` of a feature set
    (:data:`trainers.features.FEATURE_SETS`): the leading columns of the study's.

    Raises:
        ValueError: an unknown set, or one the study's features do not include.
    """
    names = feature_set_names(feature_set)
    if data.feature_names[: len(names)] != names:
        raise ValueError(
            f"feature_set {feature_set!r}: the study's data carry {len(data.feature_names)} "
            f"features, not the set's {len(names)}"
        )
    return data.features[:, :, : len(names)]


class _TrainingCallback(BaseCallback):
    """Stops PPO when ``stop`` is set; beats the heartbeat after every rollout."""

    def __init__(self, stop: threading.Event | None, heartbeat: Heartbeat | None) -> None:
        super().__init__()
        self.stop = stop
        self.heartbeat = heartbeat

    def _on_step(self) -> bool:
        return self.stop is None or not self.stop.is_set()

    def _on_rollout_end(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.beat(state="training", steps=int(self.num_timesteps))


@dataclass
class FoldResult:
    """Outcome of one fold: metrics and the trained actor."""

    metrics: dict[str, float]
    state: dict[str, Any]
    norm: NormStats
    predictor: FittedPredictor | None = None


class FoldLearner:
    """One walk-forward fold's model: trained up a budget (in steps, possibly in several
    rungs of a budget ladder, continuing the same model) and backtested on the fold's test
    slice.

    Args:
        data, fold: the study's bars and the fold.
        params: the trial's point of its algorithm's search space.
        config: training settings.
        seed: the trial's seed.
        design: the trial's agent design (default :class:`trainers.design.Design`).
        log_dir: folder for SB3's TensorBoard logs (None: no logs).
    """

    def __init__(
        self,
        data: StudyData,
        fold: Fold,
        params: Params,
        config: TrainingConfig,
        seed: int | None,
        design: Design | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.data, self.fold, self.params = data, fold, params
        self.config = config.for_data(data)
        self.design = design or Design()
        self.seconds = 0.0
        t0 = time.perf_counter()
        raw = study_features(data, self.design.feature_set)
        self.norm = NormStats.fit(raw[fold.train_start : fold.train_stop])
        self.features = self.norm.apply(raw)
        self.predictor: FittedPredictor | None = None
        if self.design.predictor_horizon > 0:
            # fitted on the fold's training slice only; its channel is computed for the bars
            # the environment (cross-fitted) and the fold's backtest (the kept network) read
            spec = PredictorSpec(self.design.predictor_horizon)
            close = data.panel.prices[:, :, 3]
            first = max(0, fold.train_start - params.lookback)
            self.predictor, channel = fit_fold_predictor(
                self.features, close, fold.train_start, fold.train_stop, spec, seed, first, fold.test_stop
            )
            self.features = with_channel(self.features, channel)
        self.env = PortfolioVecEnv(
            self.features,
            data.panel.prices,
            fold.train_start,
            fold.train_stop,
            params.lookback,
            self.config.n_envs,
            self.config.costs,
            self.config.episode_bars,
            seed,
            **self.design.env_kwargs(),
        )
        self.model = build_model(self.design.algorithm, params, self.env, self.config.device, seed)
        # SB3's default logger creates an empty SB3-<time> folder in the temp dir on every
        # learn(); over a campaign that is thousands of folders. Log nowhere instead, or to
        # TensorBoard only when asked.
        if log_dir is None:
            self.model.set_logger(Logger(folder=None, output_formats=[]))
        else:
            self.model.set_logger(configure_logger(str(log_dir), ["tensorboard"]))
        self.seconds += time.perf_counter() - t0

    @property
    def steps(self) -> int:
        """Env steps trained so far."""
        return int(self.model.num_timesteps)

    def train_to(
        self, steps: int, stop: threading.Event | None = None, heartbeat: Heartbeat | None = None
    ) -> None:
        """Continue training until ``steps`` env steps (SB3 rounds up to whole rollouts).

        Raises:
            TrialFailed: training stopped by ``stop``.
        """
        t0 = time.perf_counter()
        more = steps - self.steps
        if more > 0:
            callback = _TrainingCallback(stop, heartbeat)
            self.model.learn(total_timesteps=more, callback=callback, reset_num_timesteps=self.steps == 0)
        self.seconds += time.perf_counter() - t0
        if stop is not None and stop.is_set():
            raise TrialFailed(f"stopped during fold {self.fold.index} training")

    def evaluate(self) -> FoldResult:
        """Backtest the deterministic actor on the fold's test slice.

        Raises:
            TrialFailed: NaN in weights or metrics.
        """
        t0 = time.perf_counter()
        fold, params, design, data = self.fold, self.params, self.design, self.data
        state = export_actor(design.algorithm, self.model)
        if not all(np.isfinite(v.numpy()).all() for v in state.values()):
            raise TrialFailed(f"fold {fold.index}: trained weights contain NaN or inf")
        core = self.env.core
        squash = SQUASH[design.algorithm]
        actor = Actor(
            core.obs_dim, core.action_dim, params.net_width, params.net_depth, params.activation, squash
        )
        actor.load_state_dict(state)
        try:
            result = backtest(
                to_numpy_policy(actor),
                self.features,
                data.panel.prices,
                fold.test_start,
                fold.test_stop,
                params.lookback,
                self.config.costs,
                data.panel.bars_per_year,
                design.action_scheme,
                decision_bars(data.panel.timestamps, data.panel.bar_seconds, design.decision_interval),
            )
        except FloatingPointError as exc:
            raise TrialFailed(f"fold {fold.index}: {exc}") from None
        train_seconds = self.seconds
        self.seconds += time.perf_counter() - t0
        metrics = {
            "fold": fold.index,
            "excess_sharpe": result.excess_sharpe,
            "sharpe": result.metrics.sharpe,
            "benchmark_sharpe": result.benchmark.sharpe,
            "total_return": result.metrics.total_return,
            "benchmark_return": result.benchmark.total_return,
            "max_drawdown": result.metrics.max_drawdown,
            "turnover": result.metrics.turnover,
            "train_steps": self.steps,
            "train_seconds": round(train_seconds, 3),
            "seconds": round(self.seconds, 3),
        }
        bad = [k for k, v in metrics.items() if not math.isfinite(float(v))]
        if bad:
            raise TrialFailed(f"fold {fold.index}: {', '.join(bad)} is NaN or inf")
        if self.predictor is not None:
            metrics |= {f"predictor_{k}": v for k, v in self.predictor.report.items()}
            state = {**state, **self.predictor.state()}
        return FoldResult(metrics, state, self.norm, self.predictor)


def train_fold(
    data: StudyData,
    fold: Fold,
    params: Params,
    config: TrainingConfig,
    seed: int | None,
    stop: threading.Event | None = None,
    heartbeat: Heartbeat | None = None,
    design: Design | None = None,
) -> FoldResult:
    """Train the design's algorithm on a fold's train slice for ``config.budget_steps`` and
    backtest it on its test slice (:class:`FoldLearner` in one go).

    Raises:
        TrialFailed: NaN in weights or metrics, or training stopped by ``stop``.
    """
    learner = FoldLearner(data, fold, params, config, seed, design)
    learner.train_to(learner.config.budget_steps, stop, heartbeat)
    return learner.evaluate()


def halving_pruner(ladder: tuple[int, ...]) -> optuna.pruners.BasePruner:
    """Optuna's successive-halving pruner (Li et al. 2020, "A System for Massively Parallel
    Hyperparameter Tuning" (ASHA)) on a budget ladder: rungs at ``ladder[0] * r^k`` steps
    with ``r = round(ladder[1] / ladder[0])`` (at least 2); at each rung a trial continues
    only if its value is in the top ``1/r`` of the trials that reached that rung."""
    factor = max(2, round(ladder[1] / ladder[0])) if len(ladder) > 1 else 3
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=ladder[0], reduction_factor=factor, min_early_stopping_rate=0
    )


def objective_value(excess: list[float]) -> float:
    """``mean(excess) - 0.1 * std(excess)`` (population std) of per-fold excess Sharpe."""
    arr = np.asarray(excess, dtype=np.float64)
    return float(arr.mean() - STD_PENALTY * arr.std())


class Objective:
    """Callable objective for ``study.optimize``.

    Args:
        data: the study's bars, features and folds.
        config: training settings.
        root: runtime root (bundles go to ``root/trials/<study>/<trial>/`` and
            ``root/artifacts/``).
        stop: set by the worker's SIGTERM handler; a trial stops between steps unless it
            is in its last fold (nearly done), and then ends as FAIL.
        heartbeat: beaten after every PPO rollout and every fold.
    """

    def __init__(
        self,
        data: StudyData,
        config: TrainingConfig,
        root: str | Path,
        stop: threading.Event | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.heartbeat = heartbeat
        self.data = data
        self.config = config.for_data(data)
        self.root = Path(root)
        self.stop = stop or threading.Event()
        self.artifact_store = artifact_store_for(self.root)  # [artifacts] store: file or S3

    @staticmethod
    def _mkdir(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            raise

    def _checkpoint_key(self, design: Design) -> dict[str, Any]:
        """What must be equal for a retried trial to reuse its predecessor's folds."""
        key = {
            "data_fingerprint": self.data.fingerprint,
            "folds": [f.as_dict() for f in self.data.folds],
            "budget_steps": self.config.budget_steps,
            "n_envs": self.config.n_envs,
            "seed": self.config.seed,
            "costs": self.config.costs.as_dict(),
            "design": design.as_dict(),
            "feature_pipeline_version": FEATURE_PIPELINE_VERSION,
        }
        return json.loads(json.dumps(key))  # the form it takes once stored

    def _reusable_folds(self, trial: optuna.Trial, key: dict[str, Any]) -> list[dict[str, float]]:
        """The finished folds a retried trial inherits (Optuna's retry copies the failed
        trial's user attributes): its leading ``fold_metrics`` when they were computed under
        the same :meth:`_checkpoint_key`; never the last fold, whose model the bundle needs."""
        inherited = trial.user_attrs.get("fold_metrics")
        if trial.user_attrs.get("checkpoint") != key or not isinstance(inherited, list):
            return []
        done = []
        for index, metrics in enumerate(inherited[: len(self.data.folds) - 1]):
            if not isinstance(metrics, dict) or metrics.get("fold") != index:
                break
            done.append(metrics)
        return done

    def _run(self, trial: optuna.Trial) -> float:
        design = suggest_design(trial, self.config.design)
        params = suggest_algorithm_params(trial, design.algorithm)
        key = self._checkpoint_key(design)
        reused = [] if self.config.budget_ladder else self._reusable_folds(trial, key)
        trial.set_user_attr("checkpoint", key)
        trial.set_user_attr("resumed_from_fold", len(reused) if reused else None)
        trial.set_user_attr("mode", self.config.mode)
        trial.set_user_attr("budget_steps", self.config.final_budget)
        if self.config.budget_ladder:
            trial.set_user_attr("budget_ladder", list(self.config.budget_ladder))
        trial.set_user_attr("data_fingerprint", self.data.fingerprint)
        trial.set_user_attr("feature_pipeline_version", FEATURE_PIPELINE_VERSION)
        trial.set_user_attr("design", design.as_dict())
        for stale in ("fail_reason", "vin", "grade", "artifact_id", "actor_sha256"):
            if stale in trial.user_attrs:  # a retried trial inherits its predecessor's attrs
                trial.set_user_attr(stale, None)
        # a retry trains with its original trial's seed, so a resumed trial ends as the
        # uninterrupted one would have
        frozen = trial.study._storage.get_trial(trial._trial_id)
        original = frozen.system_attrs.get("failed_trial")
        number = original if isinstance(original, int) else trial.number
        seed = None if self.config.seed is None else self.config.seed + number
        if self.config.budget_ladder:
            results, last = self._climb(trial, params, design, seed)
        else:
            results, last = self._fold_by_fold(trial, params, design, seed, reused)
        value = objective_value([r["excess_sharpe"] for r in results])
        if not math.isfinite(value):
            raise TrialFailed("objective value is NaN or inf")
        self._save_bundle(trial, params, design, self.data.folds[-1], last, value, results)
        return value

    def _fold_by_fold(
        self,
        trial: optuna.Trial,
        params: Params,
        design: Design,
        seed: int | None,
        reused: list[dict[str, float]] | None = None,
    ) -> tuple[list[dict[str, float]], FoldResult]:
        """One budget: train and test each fold in turn, reporting the value over the folds
        so far (step = fold index) to the median pruner. The ``reused`` leading folds (a
        retried trial's checkpoints, :meth:`_reusable_folds`) are reported, not trained."""
        results: list[dict[str, float]] = []
        last: FoldResult | None = None
        folds = self.data.folds
        for fold in folds:
            if reused and fold.index < len(reused):
                results.append(reused[fold.index])
                trial.report(objective_value([r["excess_sharpe"] for r in results]), fold.index)
                continue
            if self.stop.is_set():
                raise TrialFailed(f"worker stopping before fold {fold.index}")
            # the last fold finishes even on a stop request: the trial is nearly done
            fold_stop = self.stop if fold.index < len(folds) - 1 else None
            if self.heartbeat is not None:
                self.heartbeat.beat(force=True, state="fold", trial=trial.number, fold=fold.index)
            learner = FoldLearner(
                self.data, fold, params, self.config, seed, design, self._log_dir(trial, fold)
            )
            learner.train_to(self.config.budget_steps, fold_stop, self.heartbeat)
            last = learner.evaluate()
            results.append(last.metrics)
            trial.set_user_attr("fold_metrics", results)
            # the value over the folds so far: the median pruner compares a trial's best
            # report with the others' at the same step, so a single fold's excess (high on a
            # rising fold) would keep a trial alive whatever its later folds did
            trial.report(objective_value([r["excess_sharpe"] for r in results]), fold.index)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {fold.index}")
        assert last is not None
        return results, last

    def _climb(
        self, trial: optuna.Trial, params: Params, design: Design, seed: int | None
    ) -> tuple[list[dict[str, float]], FoldResult]:
        """Successive halving: train every fold's model to each rung of the budget ladder in
        turn, reporting the value over all folds at each rung (step = env steps per fold)."""
        folds = self.data.folds
        learners = [
            FoldLearner(self.data, fold, params, self.config, seed, design, self._log_dir(trial, fold))
            for fold in folds
        ]
        ladder = self.config.budget_ladder
        results: list[dict[str, float]] = []
        last: FoldResult | None = None
        for rung, steps in enumerate(ladder):
            results = []
            for learner in learners:
                index = learner.fold.index
                if self.stop.is_set():
                    raise TrialFailed(f"worker stopping before fold {index} at {steps} steps")
                final = rung == len(ladder) - 1 and index == len(folds) - 1
                if self.heartbeat is not None:
                    self.heartbeat.beat(force=True, state="fold", trial=trial.number, fold=index, rung=rung)
                learner.train_to(steps, None if final else self.stop, self.heartbeat)
                last = learner.evaluate()
                results.append(last.metrics)
            trial.set_user_attr("fold_metrics", results)
            trial.report(objective_value([r["excess_sharpe"] for r in results]), steps)
            if rung < len(ladder) - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at {steps} env steps per fold")
        assert last is not None
        return results, last

    def _log_dir(self, trial: optuna.Trial, fold: Fold) -> Path | None:
        """``<root>/tensorboard/<study>/<trial>/fold_<k>`` when TensorBoard logs are on."""
        if not self.config.tensorboard:
            return None
        return self.root / "tensorboard" / trial.study.study_name / str(trial.number) / f"fold_{fold.index}"

    def _save_bundle(
        self,
        trial: optuna.Trial,
        params: Params,
        design: Design,
        fold: Fold,
        result: FoldResult,
        value: float,
        fold_metrics: list[dict[str, float]],
    ) -> None:
        created = datetime.now(UTC)
        grade = grade_for(value, self.config.grade_thresholds)
        costs = self.config.costs
        batch = rollout_batch(design.algorithm, params, self.config.n_envs)
        vin = vin_for(
            {**params.as_dict(), "batch_size": batch},
            value,
            created,
            algorithm=design.algorithm.upper(),
            thresholds=self.config.grade_thresholds,
            trailing_stop=costs.trailing_stop,
        )
        spec = ObservationSpec(
            self.data.panel.symbols,
            feature_set_names(design.feature_set),
            params.lookback,
            FEATURE_PIPELINE_VERSION,
            result.norm,
            result.predictor.spec if result.predictor else None,
        )
        meta = {
            "algorithm": design.algorithm.upper(),
            "architecture": {
                "type": "mlp",
                "obs_dim": spec.obs_dim,
                "n_assets": self.data.panel.n_assets,
                "width": params.net_width,
                "depth": params.net_depth,
                "activation": params.activation,
                "squash": SQUASH[design.algorithm],
            },
            "observation_spec": spec.to_json(),
            "action_spec": {
                "shape": [action_dim(design.action_scheme, self.data.panel.n_assets)],
                "low": -1.0,
                "high": 1.0,
                "scheme": design.action_scheme,
                "decision_interval": design.decision_interval,
                "meaning": "see trainers.accounting.action_to_weights and trainers.backtest.decision_bars",
            },
            "design": design.as_dict(),
            "costs": costs.as_dict(),
            "hyperparameters": params.as_dict(),
            "training": self.config.as_record(),
            "study": trial.study.study_name,
            "trial_number": trial.number,
            "trial_id": trial._trial_id,
            "value": value,
            "vin": vin,
            "grade": grade,
            "metrics": {"fold": fold_metrics[-1], "folds": fold_metrics},
            "fold": fold.as_dict(),
            "data_fingerprint": self.data.panel.fingerprint(fold.train_start, fold.train_stop),
            "created_at": created.isoformat(),
        }
        directory = self.root / "trials" / trial.study.study_name / str(trial.number) / "bundle"
        digest = save_bundle(directory, result.state, meta)
        with tempfile.NamedTemporaryFile(suffix=".tar", dir=directory.parent) as tmp:
            tmp.write(pack_bundle(directory))
            tmp.flush()
            artifact_id = upload_artifact(
                artifact_store=self.artifact_store,
                file_path=tmp.name,
                study_or_trial=trial,
                mimetype="application/x-tar",
            )
        for key, val in (
            ("vin", vin),
            ("grade", grade),
            ("artifact_id", artifact_id),
            ("actor_sha256", digest),
            ("bundle_path", str(directory.relative_to(self.root))),
        ):
            trial.set_user_attr(key, val)
