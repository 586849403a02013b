"""``cappuccino evaluate``: how good is a model, on bars it never saw, against baselines.

:func:`evaluate` runs the chosen model (the live ensemble, one trial, a deployment slot or
an archived model) and these baselines on exactly the same bars with the same execution
model (the model's own :class:`trainers.accounting.Costs`):

* equal-weight buy-and-hold with the agent's cash reserve;
* cash;
* a moving-average trend filter (50 days);
* OLMAR, an online-portfolio-selection algorithm (Li & Hoi 2012);
* the best constant rebalanced portfolio in hindsight (BCRP, Cover 1991), marked
  clairvoyant: its weights were chosen with the window's own bars;
* for an ensemble, every member alone.

The window is one of :mod:`trainers.windows`: ``validation`` (the bars the deployer's gate
may look at), ``test`` (never used to select anything: report it once) or ``all``. Per
line: total return; annualised Sharpe ratio with a 95% stationary block bootstrap interval
(Politis & Romano 1994); Sortino ratio, maximum drawdown, Calmar ratio, turnover and
exposure (mean invested fraction); see :mod:`trainers.metrics` for each formula and its
source.

Per study (when the storage is readable): the probability of backtest overfitting by CSCV
over the COMPLETE trials' per-fold excess Sharpe ratios (Bailey, Borwein, López de Prado &
Zhu 2017) and the deflated Sharpe ratio of the evaluated model's Sharpe ratio on the window
given the number of trials tried (Bailey & López de Prado 2014). The DSR uses the variance
across trials of their mean per-fold Sharpe ratio (annualised, converted to per bar) as
``V[SR]``: the spread of the Sharpe ratios the study selected from.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from ensemble.backtests import bundle_backtest, ensemble_backtest, study_bars_per_year
from ensemble.deploy_gate import resolve_cut
from ensemble.deploy_slot import SlotError, slot_dir, verify_slot
from ensemble.manifest import MANIFEST_FILE
from ensemble.policy import EnsembleError, EnsemblePolicy
from ensemble.registry import RegistryError, archive_dir, read_registry
from ensemble.selection import BundleSkip, locate_bundle, verify_bundle
from trainers import baselines, metrics
from trainers.accounting import Costs
from trainers.artifact_store import ArtifactStoreUnavailable
from trainers.bundle import Bundle, BundleError, PipelineSpec, bundle_costs, load_bundle
from trainers.data import DataError, Panel, load_panel
from trainers.features import ALL_FEATURE_NAMES, compute_features
from trainers.runtime.layout import Layout
from trainers.storage import default_storage_url
from trainers.study_db import StudyDBError, complete_attr, open_engine, trial_by_number
from trainers.windows import DEFAULT_VALIDATION_FRACTION, Window, holdout_windows

Source = Literal["ensemble", "trial", "deployment", "archive"]
TREND_WINDOW_DAYS = 50
CI_LEVEL = 0.95


class EvaluateError(ValueError):
    """The evaluation cannot run; the message says what is missing or wrong."""


@dataclass
class Line:
    """One row of the evaluation: a model, a member or a baseline on the window.

    Figures are fractions (returns, drawdown, exposure) or annualised ratios; ``equity`` is
    ``(n_bars,)`` starting at 1.0 and ``weights`` ``(n_bars, n_assets)``.
    """

    name: str
    kind: Literal["model", "member", "baseline", "reference"]
    equity: np.ndarray
    weights: np.ndarray
    turnover: float
    bars_per_year: int
    clairvoyant: bool = False
    figures: dict[str, float] = field(default_factory=dict)

    def compute(self) -> Line:
        """Fill :attr:`figures` (see the module docstring)."""
        e, q = self.equity, self.bars_per_year
        ci = metrics.sharpe_bootstrap_ci(metrics.simple_returns(e), q, level=CI_LEVEL)
        self.figures = {
            "total_return": float(e[-1] / e[0] - 1.0),
            "sharpe": ci.sharpe,
            "sharpe_low": ci.low,
            "sharpe_high": ci.high,
            "sortino": metrics.sortino_ratio(e, q),
            "max_drawdown": metrics.max_drawdown(e),
            "calmar": metrics.calmar_ratio(e, q),
            "turnover": float(self.turnover),
            "exposure": metrics.exposure(self.weights),
        }
        return self

    def as_dict(self, curves: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "clairvoyant": self.clairvoyant}
        out.update({k: _json_float(v) for k, v in self.figures.items()})
        if curves:
            out["equity"] = [float(x) for x in self.equity]
        return out


@dataclass
class Evaluation:
    """What :func:`evaluate` measured."""

    source: Source
    model: str
    study: str | None
    window: Window
    first_bar: str
    last_bar: str
    n_bars: int
    bars_per_year: int
    costs: Costs
    lines: list[Line]
    timestamps: np.ndarray
    study_figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def model_line(self) -> Line:
        return next(line for line in self.lines if line.kind == "model")

    def as_dict(self, curves: bool = False) -> dict[str, Any]:
        """JSON-able form (``--json``); ``curves`` adds every line's equity curve."""
        return {
            "source": self.source,
            "model": self.model,
            "study": self.study,
            "window": self.window,
            "first_bar": self.first_bar,
            "last_bar": self.last_bar,
            "n_bars": self.n_bars,
            "bars_per_year": self.bars_per_year,
            "costs": self.costs.as_dict(),
            "ci_level": CI_LEVEL,
            "lines": [line.as_dict(curves) for line in self.lines],
            "study_figures": self.study_figures,
            "notes": list(self.notes),
        }


def _json_float(v: float) -> float | str | None:
    if v is None:
        return None
    if np.isnan(v):
        return None
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


@dataclass
class _Model:
    """The evaluated model: one bundle, or an ensemble with its members."""

    name: str
    study: str | None
    bundles: list[Bundle]
    policy: EnsemblePolicy | None = None
    member_names: list[str] = field(default_factory=list)

    @property
    def costs(self) -> Costs:
        if self.policy is not None:
            return self.policy.costs
        return bundle_costs(self.bundles[0].meta, str(self.bundles[0].path))


def _load_ensemble(root: Path, pipeline: PipelineSpec) -> _Model:
    path = Layout(root).ensemble_dir / MANIFEST_FILE
    try:
        policy = EnsemblePolicy.from_manifest(path, pipeline)
    except EnsembleError as exc:
        raise EvaluateError(f"ensemble: {exc}") from None
    names = [
        f"member {i}: trial {b.meta.get('trial_number')} {b.meta.get('vin', '')}"
        for i, b in enumerate(policy.bundles)
    ]
    return _Model(
        f"ensemble generation {policy.generation}", policy.study, list(policy.bundles), policy, names
    )


def _load_trial(
    root: Path, storage: str, study: str, number: int, pipeline: PipelineSpec, tmp: Path
) -> _Model:
    try:
        trial = trial_by_number(open_engine(storage), study, number)
    except StudyDBError as exc:
        raise EvaluateError(str(exc)) from None
    if trial is None:
        raise EvaluateError(f"study {study!r} has no COMPLETE trial number {number}")
    sha = trial.user_attrs.get("actor_sha256")
    if not isinstance(sha, str):
        raise EvaluateError(f"trial {number} of study {study!r} saved no bundle (no actor_sha256)")
    try:
        directory, _, where = locate_bundle(trial, root, tmp, Layout(root).ensemble_dir, sha)
        verify_bundle(trial, directory, where, sha, pipeline)
        bundle = load_bundle(directory, pipeline, expect_sha256=sha)
    except (BundleSkip, BundleError, ArtifactStoreUnavailable) as exc:
        raise EvaluateError(f"trial {number} of study {study!r}: {exc}") from None
    return _Model(f"trial {number} {trial.user_attrs.get('vin', '')}".strip(), study, [bundle])


def _load_deployment(root: Path, slot: int, pipeline: PipelineSpec) -> _Model:
    directory = slot_dir(root, slot)
    try:
        info = verify_slot(directory)
        bundle = load_bundle(directory, pipeline, expect_sha256=info.get("sha256"))
    except (BundleError, SlotError, ValueError) as exc:
        raise EvaluateError(f"deployment slot {slot}: {exc}") from None
    return _Model(f"deployment model_{slot} {info.get('vin', '')}".strip(), info.get("study"), [bundle])


def _load_archive(root: Path, vin: str, pipeline: PipelineSpec) -> _Model:
    try:
        registry = read_registry(root)
    except RegistryError as exc:
        raise EvaluateError(str(exc)) from None
    found = [] if registry is None else registry.find(vin)
    if len(found) != 1:
        what = "no archived model" if not found else f"{len(found)} archived models"
        raise EvaluateError(f"{what} named {vin!r} in {archive_dir(root)}; see `cappuccino models list`")
    entry = found[0]
    try:
        bundle = load_bundle(archive_dir(root) / entry.dir, pipeline, expect_sha256=entry.sha256)
    except BundleError as exc:
        raise EvaluateError(f"archived model {entry.dir}: {exc}") from None
    return _Model(f"archived {entry.dir}", entry.study, [bundle])


def _cut(model: _Model) -> pd.Timestamp:
    """The latest training cut among the model's bundles: every hold-out bar is after
    every bundle's training data."""
    return max(resolve_cut(None, b)[1] for b in model.bundles)


def _iso(panel: Panel, i: int) -> str:
    return pd.Timestamp(panel.timestamps[i], tz="UTC").isoformat()


def _baseline_lines(panel: Panel, start: int, stop: int, costs: Costs, per_year: int) -> list[Line]:
    prices = panel.prices[:stop]
    trend_bars = max(1, round(TREND_WINDOW_DAYS * per_year / 365))
    runs = [
        baselines.buy_and_hold_equal(prices, start, stop, costs),
        baselines.cash(prices, start, stop, costs),
        baselines.moving_average_trend(prices, start, stop, costs, window_bars=trend_bars),
        baselines.olmar(prices, start, stop, costs),
        baselines.best_constant_rebalanced_portfolio(prices, start, stop, costs),
    ]
    names = {
        "buy_and_hold_equal": "equal-weight buy-and-hold",
        "cash": "cash",
        "moving_average_trend": f"trend filter ({TREND_WINDOW_DAYS}-day moving average)",
        "olmar": "OLMAR",
        "bcrp": "best constant rebalanced (hindsight)",
    }
    return [
        Line(
            names[r.name],
            "reference" if r.clairvoyant else "baseline",
            r.equity,
            r.weights,
            r.turnover,
            per_year,
            r.clairvoyant,
        ).compute()
        for r in runs
    ]


def study_figures(storage: str, study: str, model_line: Line) -> dict[str, Any]:
    """PBO over the study's trials and the DSR of ``model_line`` (see the module docstring).

    Returns ``{"n_trials", "pbo": {...} | None, "dsr": {...} | None, "why": str | None}``.
    """
    out: dict[str, Any] = {"n_trials": 0, "pbo": None, "dsr": None, "why": None}
    try:
        folds = complete_attr(open_engine(storage), study, "fold_metrics")
    except StudyDBError as exc:
        out["why"] = str(exc)
        return out
    rows = {n: fm for n, fm in folds.items() if isinstance(fm, list) and fm}
    out["n_trials"] = len(rows)
    if not rows:
        out["why"] = f"study {study!r} has no COMPLETE trial with per-fold results"
        return out
    n_folds = max(len(fm) for fm in rows.values())
    full = {n: fm for n, fm in rows.items() if len(fm) == n_folds}
    excess = np.array([[float(f["excess_sharpe"]) for f in fm] for fm in full.values()]).T  # folds x trials
    try:
        pbo = metrics.probability_of_backtest_overfitting(excess)
        out["pbo"] = {
            "pbo": pbo.pbo,
            "n_trials": pbo.n_trials,
            "n_folds": n_folds,
            "n_splits": pbo.n_splits,
            "n_combinations": pbo.n_combinations,
        }
    except ValueError as exc:
        out["why"] = f"PBO: {exc}"
    q = model_line.bars_per_year
    trial_sharpes = np.array([np.mean([float(f["sharpe"]) for f in fm]) for fm in rows.values()])
    r = metrics.simple_returns(model_line.equity)
    if len(trial_sharpes) >= 2 and len(r) >= 3 and r.std(ddof=1) > 0:
        sr = float(r.mean() / r.std(ddof=1))
        variance = float(trial_sharpes.var(ddof=1)) / q
        skew = float(stats.skew(r))
        kurt = float(stats.kurtosis(r, fisher=False))
        try:
            dsr = metrics.deflated_sharpe_ratio(sr, len(trial_sharpes), variance, len(r), skew, kurt)
            sr0 = metrics.expected_maximum_sharpe_ratio(len(trial_sharpes), variance)
            out["dsr"] = {
                "dsr": dsr,
                "sharpe_per_bar": sr,
                "expected_max_sharpe_per_bar": sr0,
                "n_trials": len(trial_sharpes),
                "sharpe_variance_annualised": float(trial_sharpes.var(ddof=1)),
                "n_obs": len(r),
                "skew": skew,
                "kurtosis": kurt,
            }
        except ValueError as exc:
            out["why"] = f"DSR: {exc}"
    elif out["why"] is None:
        out["why"] = "DSR needs 2 or more trials and a model whose equity moves"
    return out


def evaluate(
    root: str | Path,
    source: Source = "ensemble",
    *,
    study: str | None = None,
    trial: int | None = None,
    slot: int = 0,
    vin: str | None = None,
    window: Window = "test",
    storage: str | None = None,
    data: str | Path | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> Evaluation:
    """Evaluate a model and the baselines on one hold-out window (module docstring).

    Args:
        root: runtime root.
        source: ``ensemble`` (``<root>/ensemble``), ``trial`` (``trial`` of ``study``),
            ``deployment`` (``deployments/model_<slot>``) or ``archive`` (``vin``).
        study: the study (needed for ``trial``; default for the others: the model's own).
        window: ``validation``, ``test`` or ``all`` (:mod:`trainers.windows`).
        storage: Optuna storage URL (default ``sqlite:///<root>/optuna.db``); needed for
            ``trial``, and for the per-study PBO and DSR.
        data: dataset folder (None: the embedded dataset).
        validation_fraction: share of the hold-out bars in the validation window.

    Raises:
        EvaluateError: no such model, unreadable bundle or manifest, data that cannot feed
            the model, or a window too short.
    """
    root = Path(root)

    storage = storage or default_storage_url(root)
    try:
        panel = load_panel(data)
    except DataError as exc:
        raise EvaluateError(f"data: {exc}") from None
    pipeline = PipelineSpec(panel.symbols)
    with tempfile.TemporaryDirectory(prefix="cappuccino-evaluate-") as tmp:
        if source == "ensemble":
            model = _load_ensemble(root, pipeline)
        elif source == "trial":
            if study is None or trial is None:
                raise EvaluateError("--trial needs a study (--study, or <root>/.current_study)")
            model = _load_trial(root, storage, study, trial, pipeline, Path(tmp))
        elif source == "deployment":
            model = _load_deployment(root, slot, pipeline)
        elif source == "archive":
            if vin is None:
                raise EvaluateError("--archive needs a VIN")
            model = _load_archive(root, vin, pipeline)
        else:
            raise EvaluateError(f"unknown source {source!r}")
        return _run(model, panel, study or model.study, window, storage, validation_fraction, source)


def _run(
    model: _Model,
    panel: Panel,
    study: str | None,
    window: Window,
    storage: str,
    validation_fraction: float,
    source: Source,
) -> Evaluation:
    cut = panel.index_of(_cut(model))
    try:
        windows = holdout_windows(len(panel), cut, validation_fraction)
        start, stop = windows.bounds(window)
    except ValueError as exc:
        raise EvaluateError(f"hold-out windows: {exc}") from None
    per_year = study_bars_per_year(model.bundles[0])
    costs = model.costs
    raw = compute_features(panel.prices, ALL_FEATURE_NAMES)
    try:
        if model.policy is not None:
            result = ensemble_backtest(
                model.policy, panel.prices, raw, start, stop, costs, per_year, panel.timestamps
            )
        else:
            result = bundle_backtest(
                model.bundles[0], panel.prices, raw, start, stop, costs, per_year, panel.timestamps
            )
    except (ValueError, FloatingPointError) as exc:
        raise EvaluateError(f"{model.name}: {exc}") from None
    lines = [
        Line(model.name, "model", result.equity, result.weights, result.metrics.turnover, per_year).compute()
    ]
    if model.policy is not None:
        for name, bundle in zip(model.member_names, model.bundles, strict=True):
            r = bundle_backtest(bundle, panel.prices, raw, start, stop, costs, per_year, panel.timestamps)
            lines.append(Line(name, "member", r.equity, r.weights, r.metrics.turnover, per_year).compute())
    lines += _baseline_lines(panel, start, stop, costs, per_year)
    notes = []
    if window == "test":
        notes.append("test window: report it once; choose models on the folds and the validation window")
    ev = Evaluation(
        source=source,
        model=model.name,
        study=study,
        window=window,
        first_bar=_iso(panel, start),
        last_bar=_iso(panel, stop - 1),
        n_bars=stop - start,
        bars_per_year=per_year,
        costs=costs,
        lines=lines,
        timestamps=panel.timestamps[start:stop],
        notes=notes,
    )
    if study is not None:
        ev.study_figures = study_figures(storage, study, lines[0])
    return ev
