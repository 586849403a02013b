"""Training worker: ``python -m trainers.worker --storage URL --study NAME ...``.

Runs ``study.optimize`` with a multivariate TPE sampler and a median pruner against an
Optuna RDB storage with heartbeats and a stale-trial retry callback (see
:mod:`trainers.storage`). Stops when the study has ``--n-trials`` finished (complete or
pruned) trials, or after ``--max-trials-per-process`` trials of its own (the supervisor
starts it afresh, which bounds memory growth). SIGTERM/SIGINT: the current trial stops at
its next step and ends as FAIL, re-queued with the same parameters (a stop does not use up
its one retry), unless it is in its last fold, which finishes; the process then exits 0.

Storage outages are waited out (:class:`trainers.storage.PatientRDBStorage`): opening the
study, ask, report, tell and Optuna's trial heartbeat all retry with backoff until the
database answers again, while the worker's heartbeat (state ``storage_unavailable``) keeps
the supervisor from taking it for hung. The trial in flight keeps training and its tell is
retried, so its result is recorded once the database is back. When the outage outlasted the
grace period, another worker may have failed that trial as stale and re-queued it (Optuna's
stale-trial machinery) before this one could tell: the tell is then refused, this worker
logs ``trial_taken_over`` and carries on with its next trial (the re-queued copy runs
again). A stop request while waiting exits with ``STORAGE_UNAVAILABLE_EXIT`` (75); the trial
left RUNNING is failed and re-queued by the stale-trial machinery once the database is back.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
import typer
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from trainers.accounting import (
    DEFAULT_FEE,
    DEFAULT_MIN_CASH,
    DEFAULT_MIN_TRADE,
    DEFAULT_TRAILING_STOP,
    Costs,
    costs_from_options,
)
from trainers.data import DataError
from trainers.design import (
    DEFAULT_ACTION_SCHEME,
    RECOMMENDED_DECISION_INTERVALS,
    RECOMMENDED_REWARDS,
    DesignOptions,
)
from trainers.features import DEFAULT_FEATURE_SET
from trainers.runtime.heartbeat import Heartbeat
from trainers.runtime.layout import Layout
from trainers.runtime.logs import configure_logging
from trainers.runtime.memory import release_free_memory
from trainers.search_space import DEFAULT_BUDGET_STEPS
from trainers.splits import Mode
from trainers.storage import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HEARTBEAT_INTERVAL,
    STORAGE_ENV,
    STORAGE_UNAVAILABLE_EXIT,
    Patience,
    StorageUnavailable,
    default_storage_url,
    fail_orphaned_trials,
    is_unavailable_error,
    make_storage,
    redact_url,
    retry_failed_trial,
    wait_for_storage,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class WorkerOptions:
    """Everything a worker process needs (from its command line)."""

    study: str
    storage: str | None = None
    n_trials: int = 100
    data: Path | None = None
    mode: Mode = "quick"
    max_trials_per_process: int = 20
    device: str = "cpu"
    root: Path = Path("train_results")
    budget_steps: int = DEFAULT_BUDGET_STEPS
    n_envs: int = 16
    holdout_cut: str | None = None
    bars_per_year: int | None = None
    heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL
    grace_period: int = DEFAULT_GRACE_PERIOD
    torch_threads: int = 1
    seed: int | None = None
    component: str = "worker"
    log_level: str = "info"
    costs: Costs = field(default_factory=Costs)
    design: DesignOptions = field(default_factory=DesignOptions)
    budget_ladder: tuple[int, ...] = ()
    tensorboard: bool = False

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage_url(self.root)


STUDY_COSTS_ATTR = "costs"
STUDY_DESIGN_ATTR = "design_options"


def create_study(
    storage: optuna.storages.BaseStorage | str,
    name: str,
    seed: int | None = None,
    costs: Costs | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Load or create a maximising study with multivariate TPE and a median pruner (or
    ``pruner``: the successive-halving one of a budget ladder).

    A study has one execution model: ``costs`` is recorded in the study's user attribute
    ``costs`` when the study is new (or has none yet), and must equal it otherwise.

    Raises:
        ValueError: the study was created with other costs (the message names the fields).
    """
    # group=True: trials of different algorithms sample different parameters (a conditional
    # space); the multivariate TPE models each group of parameters that occur together
    with warnings.catch_warnings():  # ``group`` is marked experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            multivariate=True, group=True, constant_liar=True, n_startup_trials=10, seed=seed
        )
    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if costs is not None:
        check_study_costs(study, costs)
    return study


def study_costs(study: optuna.Study, default: Costs) -> Costs:
    """The study's execution model: its recorded ``costs``, or ``default`` recorded now when
    it has none.

    Raises:
        ValueError: the recorded costs are invalid (the message names the field).
    """
    recorded = study.user_attrs.get(STUDY_COSTS_ATTR)
    if recorded is None:
        study.set_user_attr(STUDY_COSTS_ATTR, default.as_dict())
        return default
    return Costs.from_dict(recorded, f"study {study.study_name!r}")


def check_study_costs(study: optuna.Study, costs: Costs) -> None:
    """Record ``costs`` on a study that has none; refuse other costs than the recorded ones.

    Raises:
        ValueError: the study trades with other costs.
    """
    diff = study_costs(study, costs).differences(costs)
    if diff:
        fields = ", ".join(f"{k} {a:g} (asked {b:g})" for k, (a, b) in diff.items())
        raise ValueError(
            f"study {study.study_name!r} trades with other costs: {fields}; a study has one execution "
            "model, so start a new study to change it"
        )


def _bar_counts(text: str, option: str) -> tuple[int, ...]:
    """A comma-separated list of bar counts from the command line.

    Raises:
        typer.BadParameter: not whole numbers (naming ``option``).
    """
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a comma-separated list of bar counts", param_hint=option
        ) from None


def check_study_design(study: optuna.Study, design: DesignOptions) -> None:
    """Record the agent designs a study allows on a study that has none; refuse others.

    Raises:
        ValueError: the study was started with other design options (the message names them).
    """
    recorded = study.user_attrs.get(STUDY_DESIGN_ATTR)
    if recorded is None:
        study.set_user_attr(STUDY_DESIGN_ATTR, design.as_dict())
        return
    ours = design.as_dict()
    # options added since the study was created take their defaults; a malformed record is
    # compared as stored and its difference reported below
    with contextlib.suppress(TypeError, ValueError):
        recorded = {**recorded, **DesignOptions.from_dict(recorded).as_dict()}
    diff = {k: (recorded.get(k), v) for k, v in ours.items() if recorded.get(k) != v}
    if diff:
        fields = ", ".join(f"{k} {a} (asked {b})" for k, (a, b) in diff.items())
        raise ValueError(
            f"study {study.study_name!r} was started with other design options: {fields}; "
            "start a new study to change them"
        )


def finished_trials(study: optuna.Study) -> int:
    """Number of COMPLETE or PRUNED trials."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _open_study(opts: WorkerOptions, log: Any, patience: Patience) -> optuna.Study:
    """Open (or create) the study on a :class:`~trainers.storage.PatientRDBStorage`, waiting
    out a storage that cannot be reached (:func:`trainers.storage.wait_for_storage`); an
    error while the database answers is retried a few times because workers starting
    together on a fresh SQLite file can race to create Optuna's tables."""

    def open_once() -> optuna.Study:
        storage = make_storage(
            opts.storage_url, opts.heartbeat_interval, opts.grace_period, patience=patience
        )
        pruner = None
        if opts.budget_ladder:
            from trainers.objective import halving_pruner

            pruner = halving_pruner(opts.budget_ladder)
        study = create_study(storage, opts.study, seed=opts.seed, costs=opts.costs, pruner=pruner)
        check_study_design(study, opts.design)
        fail_orphaned_trials(study, opts.grace_period)
        return study

    for attempt in range(5):
        try:
            return wait_for_storage(open_once, opts.storage_url, patience)
        except (StorageUnavailable, UpdateFinishedTrialError):
            raise
        except Exception as exc:
            if attempt == 4 or not is_unavailable_error(exc):
                raise
            log.warning("storage_retry", attempt=attempt + 1, error=str(exc).splitlines()[0])
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def storage_patience(stop: threading.Event, heartbeat: Heartbeat, log: Any) -> Patience:
    """How this worker waits out a storage outage: heartbeat ``storage_unavailable`` (with
    ``waited_s``) at every attempt, a ``storage_unavailable`` warning at the first attempt and
    every 30 s, ``storage_available`` once the database answers again."""
    last_log = [float("-inf")]

    def on_wait(waited_s: float, error: str) -> None:
        heartbeat.beat(force=True, state="storage_unavailable", waited_s=round(waited_s, 1), error=error)
        now = time.monotonic()
        if waited_s == 0.0 or now - last_log[0] >= 30.0:
            last_log[0] = now
            log.warning("storage_unavailable", waited_s=round(waited_s, 1), error=error, note="waiting")

    def on_recover(waited_s: float) -> None:
        last_log[0] = float("-inf")
        log.info("storage_available", waited_s=round(waited_s, 1))
        heartbeat.beat(force=True, state="running", storage_waited_s=round(waited_s, 1))

    return Patience(stop=stop, on_wait=on_wait, on_recover=on_recover)


def _taken_over(exc: BaseException) -> bool:
    """Whether ``exc`` (out of ``study.optimize``) is Optuna refusing to tell a trial that is
    no longer RUNNING: failed as stale by another worker during a storage outage, or already
    finished by a tell whose answer the outage lost."""
    return isinstance(exc, UpdateFinishedTrialError) or (
        isinstance(exc, ValueError) and str(exc).startswith("Cannot tell a ")
    )


def run_worker(opts: WorkerOptions) -> int:
    """Run trials until a limit or a stop signal; returns the process exit code.

    Raises:
        DataError: the dataset is invalid.
        ValueError: bad options (budget, device, storage URL).
    """
    import torch  # heavy imports here: `cappuccino --help`/`status` must not pay for them

    from trainers.objective import StudyData, TrainingConfig

    if opts.device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {opts.device!r}")
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if opts.budget_steps < 1 or opts.n_trials < 1 or opts.max_trials_per_process < 1:
        raise ValueError("--budget-steps, --n-trials and --max-trials-per-process must be >= 1")
    if opts.tensorboard:
        try:
            import tensorboard  # noqa: F401  (SB3 writes through torch's SummaryWriter)
        except ImportError:
            raise ValueError(
                "--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"
            ) from None
    torch.set_num_threads(opts.torch_threads)
    log = configure_logging(opts.component, opts.root, opts.log_level).bind(study=opts.study)
    heartbeat = Heartbeat(Layout(opts.root).heartbeat(opts.component), opts.component)
    heartbeat.beat(force=True, state="starting")
    final_budget = opts.budget_ladder[-1] if opts.budget_ladder else opts.budget_steps
    if final_budget < DEFAULT_BUDGET_STEPS:
        log.warning("budget_below_default", budget_steps=final_budget, note="for tests only")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    config = TrainingConfig(
        mode=opts.mode,
        budget_steps=opts.budget_steps,
        n_envs=opts.n_envs,
        holdout_cut=opts.holdout_cut,
        bars_per_year=opts.bars_per_year,
        device=opts.device,
        seed=opts.seed,
        costs=opts.costs,
        design=opts.design,
        budget_ladder=opts.budget_ladder,
        tensorboard=opts.tensorboard,
    )
    data = StudyData.load(opts.data, config)
    config = config.for_data(data)  # the cut, bars per year, embargo and episode actually used
    try:
        return _train(opts, log, heartbeat, stop, data, config)
    except StorageUnavailable as exc:
        log.warning("worker_exiting", stopped=True, reason=str(exc), exit_code=STORAGE_UNAVAILABLE_EXIT)
        return STORAGE_UNAVAILABLE_EXIT


def _train(
    opts: WorkerOptions, log: Any, heartbeat: Heartbeat, stop: threading.Event, data: Any, config: Any
) -> int:
    """Open the study and run trials (the body of :func:`run_worker`)."""
    from trainers.fold_baselines import ensure_fold_baselines
    from trainers.objective import Objective

    study = _open_study(opts, log, storage_patience(stop, heartbeat, log))
    baselines, computed = ensure_fold_baselines(study, data, config)
    log.info(
        "fold_baselines",
        computed=computed,
        **{f"{name}_value": round(b["value"], 4) for name, b in baselines["baselines"].items()},
        zero_action_value=round(baselines["zero_action"]["value"], 4),
    )
    remaining = opts.n_trials - finished_trials(study)
    if remaining <= 0:
        log.info("study_complete", finished=opts.n_trials)
        return 0
    objective = Objective(data, config, opts.root, stop, heartbeat)
    ran = [0]  # trials this process finished (any state)

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        ran[0] += 1
        release_free_memory()  # the trial's models and environments are garbage now
        log.info(
            "trial_finished",
            trial=trial.number,
            state=trial.state.name,
            value=trial.value,
            vin=trial.user_attrs.get("vin"),
            reason=trial.user_attrs.get("fail_reason"),
        )
        disk_full = "No space left on device" in str(trial.user_attrs.get("fail_reason"))
        if trial.state == TrialState.FAIL and (stop.is_set() or disk_full):
            retry_failed_trial(study, trial.number)  # not the trial's fault: not counted
        orphans = fail_orphaned_trials(study, opts.grace_period)
        if orphans:
            log.warning("orphaned_trials_failed", trials=orphans, note="re-queued once")
        if stop.is_set() or finished_trials(study) >= opts.n_trials:
            study.stop()

    log.info(
        "worker_started",
        storage=redact_url(opts.storage_url),
        mode=opts.mode,
        folds=len(data.folds),
        timeframe=data.panel.timeframe.describe(),
        holdout_cut=data.holdout_cut,
    )
    quota = min(remaining, opts.max_trials_per_process)
    while ran[0] < quota and not stop.is_set():
        try:
            study.optimize(
                objective,
                n_trials=quota - ran[0],
                callbacks=[after_trial],
                catch=(Exception,),
                gc_after_trial=True,
            )
            break
        except Exception as exc:
            if not _taken_over(exc):
                raise
            ran[0] += 1
            log.warning("trial_taken_over", error=str(exc), note="its re-queued copy runs again")
            if finished_trials(study) >= opts.n_trials:
                break
    log.info("worker_exiting", stopped=stop.is_set())
    return 0


app = typer.Typer(add_completion=False, help="Run training trials of one Optuna study.")


@app.command()
def main(
    study: str = typer.Option(..., help="Study name."),
    storage: str = typer.Option(
        None,
        envvar=STORAGE_ENV,
        help="Storage URL (default sqlite:///<root>/optuna.db); the environment variable keeps a "
        "password out of the process list.",
    ),
    n_trials: int = typer.Option(100, help="Stop when the study has this many finished trials."),
    data: Path = typer.Option(None, help="Dataset folder (default: the embedded dataset)."),
    mode: str = typer.Option("quick", help="Walk-forward mode: quick or full."),
    max_trials_per_process: int = typer.Option(20, help="Exit after this many trials."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    root: Path = typer.Option(Path("train_results"), envvar="CAPPUCCINO_ROOT", help="Runtime root."),
    budget_steps: int = typer.Option(DEFAULT_BUDGET_STEPS, help="Env steps per fold."),
    n_envs: int = typer.Option(16, help="Parallel envs in the vectorised env."),
    holdout_cut: str = typer.Option(
        None,
        help="First hold-out bar (UTC); default: 2019-07-01 for the embedded dataset, "
        "else the start of the data's last 20% of bars.",
    ),
    bars_per_year: int = typer.Option(
        None,
        min=1,
        help="Bars per year for annualising Sharpe ratios (default: inferred from the data; "
        "8760 for hourly 24/7 bars).",
    ),
    heartbeat_interval: int = typer.Option(DEFAULT_HEARTBEAT_INTERVAL, help="Seconds."),
    grace_period: int = typer.Option(DEFAULT_GRACE_PERIOD, help="Seconds."),
    torch_threads: int = typer.Option(1, help="Torch intra-op threads."),
    seed: int = typer.Option(None, help="Base seed (trial number is added)."),
    component: str = typer.Option("worker", help="Name for logs/<component>.log and the heartbeat."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    fee: float = typer.Option(DEFAULT_FEE, help="Commission per side, fraction of traded notional."),
    slippage: float = typer.Option(0.0, help="Adverse fill-price deviation per side, fraction."),
    min_cash: float = typer.Option(DEFAULT_MIN_CASH, help="Minimum cash reserve, fraction of equity."),
    max_weight: float = typer.Option(1.0, help="Maximum weight of one asset, fraction of equity."),
    trailing_stop: float = typer.Option(
        DEFAULT_TRAILING_STOP, help="Trailing stop below the high (0 = off)."
    ),
    min_trade: float = typer.Option(DEFAULT_MIN_TRADE, help="No-trade band per asset, fraction of equity."),
    action_scheme: str = typer.Option(
        DEFAULT_ACTION_SCHEME, help="softmax (weights over assets and cash) or scores (one per asset)."
    ),
    decision_intervals: str = typer.Option(
        ",".join(map(str, RECOMMENDED_DECISION_INTERVALS)),
        help="Bars between decisions, comma-separated; several are searched (e.g. 1,4,24).",
    ),
    rewards: str = typer.Option(
        ",".join(RECOMMENDED_REWARDS),
        help="log_return, excess_log_return or differential_sharpe, comma-separated; several are searched.",
    ),
    turnover_penalty: float = typer.Option(0.0, help="Reward subtracted per unit of turnover."),
    budget_ladder: str = typer.Option(
        None,
        help="Successive halving: env steps per fold of each rung, e.g. 10000,30000,90000 "
        "(replaces --budget-steps and the median pruner).",
    ),
    tensorboard: bool = typer.Option(
        False, "--tensorboard", help="SB3 TensorBoard logs under <root>/tensorboard/<study>/<trial>/."
    ),
    algorithms: str = typer.Option(
        "ppo", help="ppo, a2c, sac or td3, comma-separated; several are searched."
    ),
    predictor_horizons: str = typer.Option(
        "0",
        help="Horizons (bars) of a supervised GRU predictor channel fitted per fold, comma-separated "
        "(0 = none); several are searched.",
    ),
    feature_set: str = typer.Option(
        DEFAULT_FEATURE_SET,
        help="Features the agents observe: base (windows of at most 48 bars) or long (also 168- and "
        "720-bar returns, the 1,200-bar SMA gap and 168-bar volatility). One per study.",
    ),
) -> None:
    """Run a training worker."""
    if mode not in ("quick", "full"):
        raise typer.BadParameter(f"use quick or full, not {mode!r}", param_hint="--mode")
    try:
        costs = costs_from_options(
            Costs(),
            "options",
            fee=fee,
            slippage=slippage,
            min_cash=min_cash,
            max_weight=max_weight,
            trailing_stop=trailing_stop,
            min_trade=min_trade,
        )
    except ValueError as exc:
        name = str(exc).split("costs.")[-1].split(":")[0].replace("_", "-")
        raise typer.BadParameter(str(exc).split(": ", 2)[-1], param_hint=f"--{name}") from None
    try:
        ladder = tuple(int(k) for k in budget_ladder.split(",")) if budget_ladder else ()
        if ladder and (min(ladder) < 1 or list(ladder) != sorted(set(ladder))):
            raise ValueError
    except ValueError:
        raise typer.BadParameter(
            f"{budget_ladder!r} is not an increasing comma-separated list of step counts",
            param_hint="--budget-ladder",
        ) from None
    intervals = _bar_counts(decision_intervals, "--decision-intervals")
    horizons = _bar_counts(predictor_horizons, "--predictor-horizons")
    try:
        design = DesignOptions(
            action_scheme=action_scheme,
            decision_intervals=intervals,
            rewards=tuple(r.strip() for r in rewards.split(",")),
            turnover_penalty=turnover_penalty,
            algorithms=tuple(a.strip().lower() for a in algorithms.split(",")),
            predictor_horizons=horizons,
            feature_set=feature_set,
        )
    except ValueError as exc:
        option = str(exc).split(":")[0].replace("_", "-")
        raise typer.BadParameter(str(exc), param_hint=f"--{option}") from None
    opts = WorkerOptions(
        study=study,
        storage=storage,
        n_trials=n_trials,
        data=data,
        mode=mode,  # type: ignore[arg-type]
        max_trials_per_process=max_trials_per_process,
        device=device,
        root=root,
        budget_steps=budget_steps,
        n_envs=n_envs,
        holdout_cut=holdout_cut,
        bars_per_year=bars_per_year,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        torch_threads=torch_threads,
        seed=seed,
        component=component,
        log_level=log_level,
        costs=costs,
        design=design,
        budget_ladder=ladder,
        tensorboard=tensorboard,
    )
    try:
        code = run_worker(opts)
    except (DataError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


if __name__ == "__main__":
    sys.exit(app())
