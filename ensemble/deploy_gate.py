"""The auto-deployer's gates: what a trial must prove before it is deployed.

A candidate (the best COMPLETE trial of the study) is promoted only if every gate passes:

* ``improvement``: its objective value beats the deployed one by a minimum relative
  improvement ``m`` (default 1%): ``value - deployed >= m * |deployed|`` and
  ``value > deployed``. The ``|deployed|`` makes the rule work for negative values
  (deployed -0.50, m = 1%: the candidate needs >= -0.495, i.e. 1% less bad); for a deployed
  value of exactly 0 any strictly positive value is an improvement. An empty slot (or one
  whose deployment is no longer valid) passes.
* ``grade``: its grade (user attribute ``grade``, see :mod:`trainers.naming`) is at least
  the configured one (default ``A``).
* ``rollback``: it was not rolled back from this slot (``cappuccino deploy --rollback``
  removed it; the deploy log remembers, so the hourly job does not re-promote it; a second
  rollback, which swaps it back in, lifts the block).
* ``bundle``: its bundle (from the trial's Optuna artifact, else ``<root>/<bundle_path>``)
  loads, matches the trial's ``actor_sha256``, belongs to this study and trial id, has an
  observation spec the hold-out data can feed, a usable action spec and a valid execution
  model (``costs``).
* ``holdout``: :func:`trainers.backtest.backtest` of the bundle on the **validation
  window** of the hold-out bars (the first half, by default, of the bars at or after the
  hold-out cut, which the study never saw; :mod:`trainers.windows`) reaches the minimum
  Sharpe ratio (annualised with the dataset's bars per year, default 0.5) and stays within
  the maximum drawdown (fraction of peak equity, default 0.25). Features are computed over the whole panel so
  the first hold-out decision has a full lookback window of history, normalised with the
  bundle's stored statistics; every cost and risk rule (fee, slippage, cash reserve,
  maximum weight, trailing stop, minimum trade) is the bundle's own execution model
  (``costs``), the one it was trained with and the paper trader trades with. It is skipped
  (and the candidate refused) when the bundle is not valid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from ensemble.backtests import bundle_backtest
from trainers.accounting import action_dim
from trainers.artifact_store import ArtifactStoreUnavailable, artifact_store_for
from trainers.bundle import (
    Bundle,
    BundleError,
    PipelineSpec,
    bundle_costs,
    load_bundle,
)
from trainers.bundle_cache import fetch_bundle
from trainers.data import DEFAULT_HOLDOUT_CUT, Panel
from trainers.naming import GRADES, grade_at_least
from trainers.windows import DEFAULT_VALIDATION_FRACTION, holdout_windows

DEFAULT_MIN_IMPROVEMENT = 0.01
DEFAULT_MIN_GRADE = "A"
DEFAULT_MIN_SHARPE = 0.5
DEFAULT_MAX_DRAWDOWN = 0.25

Status = Literal["pass", "fail", "skipped"]


@dataclass(frozen=True)
class DeployThresholds:
    """What a candidate must reach (fractions, not percent).

    Attributes:
        min_improvement: minimum relative improvement of the objective value over the
            deployed one (0.01 = 1%), see the module docstring for values <= 0.
        min_grade: worst acceptable grade (``S`` best ... ``F`` worst).
        min_sharpe: minimum hold-out Sharpe ratio, annualised (8,760 bars/year).
        max_drawdown: maximum hold-out drawdown, fraction of peak equity in [0, 1].
        validation_fraction: share of the hold-out bars in the validation window, the only
            bars the gate may look at (:mod:`trainers.windows`).
    """

    min_improvement: float = DEFAULT_MIN_IMPROVEMENT
    min_grade: str = DEFAULT_MIN_GRADE
    min_sharpe: float = DEFAULT_MIN_SHARPE
    max_drawdown: float = DEFAULT_MAX_DRAWDOWN
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_improvement) and self.min_improvement >= 0):
            raise ValueError(f"min_improvement must be a finite fraction >= 0, got {self.min_improvement}")
        if self.min_grade not in GRADES:
            raise ValueError(f"min_grade must be one of {', '.join(GRADES)}, got {self.min_grade!r}")
        if not math.isfinite(self.min_sharpe):
            raise ValueError(f"min_sharpe must be finite, got {self.min_sharpe}")
        if not 0.0 <= self.max_drawdown <= 1.0:
            raise ValueError(f"max_drawdown must be a fraction in [0, 1], got {self.max_drawdown}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GateResult:
    """Outcome of one gate: ``status``, why it did not pass (one line each), the figures."""

    name: str
    status: Status
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons), **self.details}


def check_improvement(value: float, deployed: float | None, min_improvement: float) -> GateResult:
    """Gate ``improvement`` (rule in the module docstring); ``deployed=None``: empty slot."""
    details: dict[str, Any] = {"value": value, "deployed_value": deployed, "min_improvement": min_improvement}
    if deployed is None:
        return GateResult("improvement", "pass", [], details)
    required = deployed + min_improvement * abs(deployed)
    details["required_value"] = required
    if deployed != 0:
        details["relative_improvement"] = (value - deployed) / abs(deployed)
    if value >= required and value > deployed:
        return GateResult("improvement", "pass", [], details)
    reason = (
        f"value {value:.6g} does not beat the deployed {deployed:.6g} by {min_improvement:.2%} "
        f"(needs > {deployed:.6g} and >= {required:.6g})"
    )
    return GateResult("improvement", "fail", [reason], details)


def check_grade(grade: str | None, min_grade: str) -> GateResult:
    """Gate ``grade``: ``grade`` is ``min_grade`` or better (a missing grade fails)."""
    details = {"grade": grade, "min_grade": min_grade}
    if grade not in GRADES:
        return GateResult("grade", "fail", [f"trial has no valid grade ({grade!r})"], details)
    if grade_at_least(grade, min_grade):
        return GateResult("grade", "pass", [], details)
    return GateResult("grade", "fail", [f"grade {grade} is below the minimum {min_grade}"], details)


def check_not_rolled_back(record: dict[str, Any] | None, slot: int) -> GateResult:
    """Gate ``rollback``: ``record`` is the deploy-log line of the rollback that removed the
    candidate from ``slot`` (see :func:`ensemble.deploy.rolled_back_from`), or None."""
    if record is None:
        return GateResult("rollback", "pass")
    reason = f"it was rolled back from slot {slot} at {record.get('time')}; roll back again to restore it"
    return GateResult("rollback", "fail", [reason], {"rolled_back_at": record.get("time")})


def _verify(directory: Path, trial: FrozenTrial, study: str, pipeline: PipelineSpec) -> Bundle:
    bundle = load_bundle(directory, pipeline, expect_sha256=trial.user_attrs["actor_sha256"])
    meta = bundle.meta
    if meta.get("study") != study or meta.get("trial_id") != trial._trial_id:
        raise BundleError(
            f"{directory}: bundle of study {meta.get('study')!r} trial id {meta.get('trial_id')}, "
            f"not of study {study!r} trial id {trial._trial_id}"
        )
    expected_shape = [action_dim(bundle.design.action_scheme, len(bundle.spec.symbols))]
    if meta.get("action_spec", {}).get("shape") != expected_shape:
        raise BundleError(f"{directory}: model.json action_spec shape is not {expected_shape}")
    bundle_costs(meta, str(directory))
    return bundle


def check_bundle(
    root: Path, trial: FrozenTrial, study: str, pipeline: PipelineSpec, workdir: Path
) -> tuple[GateResult, Bundle | None, Path | None]:
    """Gate ``bundle``: fetch and verify the trial's bundle.

    Sources, in order: the Optuna artifact ``artifact_id`` (from the artifact store through
    the verified cache, :func:`trainers.bundle_cache.fetch_bundle`) and
    ``<root>/<bundle_path>`` (a trial trained on this host); the first that verifies is
    used. Returns the gate result, the loaded bundle and its directory (``None`` when no
    source verifies).
    """
    attrs = trial.user_attrs
    details: dict[str, Any] = {"actor_sha256": attrs.get("actor_sha256")}
    if not attrs.get("actor_sha256"):
        return GateResult("bundle", "fail", ["trial has no actor_sha256 user attribute"], details), None, None
    problems: list[str] = []
    sources: list[tuple[str, Any]] = []
    if attrs.get("artifact_id"):
        sources.append((f"artifact:{attrs['artifact_id']}", attrs["artifact_id"]))
    if attrs.get("bundle_path"):
        sources.append((f"bundle_path:{attrs['bundle_path']}", attrs["bundle_path"]))
    if not sources:
        return (
            GateResult("bundle", "fail", ["trial has neither artifact_id nor bundle_path"], details),
            None,
            None,
        )
    for label, ref in sources:
        try:
            if label.startswith("artifact:"):
                store = artifact_store_for(root)
                try:
                    sha = str(attrs["actor_sha256"])
                    directory = fetch_bundle(store, str(ref), root, sha, trial._trial_id, workdir)
                except (ArtifactNotFound, ArtifactStoreUnavailable) as exc:
                    raise BundleError(f"artifact {ref} in {store.where}: {exc}") from None
            else:
                rel = Path(str(ref))
                if rel.is_absolute() or ".." in rel.parts:
                    raise BundleError(f"bundle_path {ref!r} must be relative to the root and inside it")
                directory = root / rel
            bundle = _verify(directory, trial, study, pipeline)
        except BundleError as exc:
            problems.append(f"{label}: {exc}")
            continue
        details.update(source=label, problems=problems, lookback=bundle.spec.lookback)
        return GateResult("bundle", "pass", [], details), bundle, directory
    details["problems"] = problems
    return GateResult("bundle", "fail", ["no valid bundle: " + "; ".join(problems)], details), None, None


def parse_cut(text: str) -> pd.Timestamp:
    """A hold-out cut as a UTC timestamp.

    Raises:
        ValueError: not an ISO 8601 time, or one without a timezone.
    """
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise ValueError(f"hold-out cut {text!r} is not an ISO 8601 time (e.g. 2019-07-01T00:00Z)") from None
    if ts.tzinfo is None:
        raise ValueError(f"hold-out cut {text!r} has no timezone; write it in UTC, e.g. 2019-07-01T00:00Z")
    return ts.tz_convert("UTC")


def resolve_cut(holdout_cut: str | None, bundle: Bundle) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``(cut used, cut the trial was trained with)``: the given cut, else the bundle's own
    ``training.holdout_cut``, else :data:`trainers.data.DEFAULT_HOLDOUT_CUT`.

    Raises:
        ValueError: a cut that is not an ISO 8601 time with a timezone.
    """
    trained = parse_cut(str(bundle.meta.get("training", {}).get("holdout_cut") or DEFAULT_HOLDOUT_CUT))
    return (trained if holdout_cut is None else parse_cut(holdout_cut)), trained


def check_holdout(
    bundle: Bundle,
    panel: Panel,
    raw_features: np.ndarray,
    holdout_cut: str | None,
    thresholds: DeployThresholds,
) -> GateResult:
    """Gate ``holdout``: backtest the bundle on the validation window of the hold-out bars
    (rule in the module docstring; the test window is never looked at).

    Args:
        bundle: the verified candidate bundle.
        panel: the whole dataset, ``(T, n_assets, 5)`` prices.
        raw_features: ``(T, n_assets, n_features)`` :func:`trainers.features.compute_features`
            of ``panel.prices``.
        holdout_cut: first hold-out bar (UTC ISO 8601); None = the bundle's training cut.

    Raises:
        ValueError: the cut is malformed, or the hold-out bars are too few for a validation
            and a test window of 2 bars each.
    """
    cut, trained_cut = resolve_cut(holdout_cut, bundle)
    start = panel.index_of(cut)
    lookback = bundle.spec.history_bars  # the lookback, plus a predictor's sequence less one
    details: dict[str, Any] = {
        "holdout_cut": cut.isoformat(),
        "trained_holdout_cut": trained_cut.isoformat(),
        "min_sharpe": thresholds.min_sharpe,
        "max_drawdown_allowed": thresholds.max_drawdown,
    }
    if len(panel) - start < 2:
        last = pd.Timestamp(panel.timestamps[-1], tz="UTC").isoformat()
        raise ValueError(f"hold-out cut {cut.isoformat()} leaves fewer than 2 bars (data ends {last})")
    stop = holdout_windows(len(panel), start, thresholds.validation_fraction).split
    details["window"] = "validation"
    if cut < trained_cut:
        reason = (
            f"hold-out cut {cut.isoformat()} is before the trial's own cut {trained_cut.isoformat()}: "
            "the backtest would include bars the study trained on"
        )
        return GateResult("holdout", "fail", [reason], details)
    if start < lookback - 1:
        reason = f"hold-out starts at bar {start}, before the {lookback} bars of history the model reads"
        return GateResult("holdout", "fail", [reason], details)
    costs = bundle_costs(bundle.meta, str(bundle.path))
    try:
        result = bundle_backtest(
            bundle, panel.prices, raw_features, start, stop, costs, timestamps=panel.timestamps
        )
    except FloatingPointError as exc:
        return GateResult("holdout", "fail", [f"hold-out backtest: {exc}"], details)
    m = result.metrics
    details.update(
        first_bar=pd.Timestamp(panel.timestamps[start], tz="UTC").isoformat(),
        last_bar=pd.Timestamp(panel.timestamps[stop - 1], tz="UTC").isoformat(),
        n_bars=m.n_bars,
        sharpe=m.sharpe,
        max_drawdown=m.max_drawdown,
        total_return=m.total_return,
        turnover=m.turnover,
        benchmark_sharpe=result.benchmark.sharpe,
        benchmark_return=result.benchmark.total_return,
        excess_sharpe=result.excess_sharpe,
        bars_per_year=result.bars_per_year,
        data_fingerprint=panel.fingerprint(start, stop),
        costs=costs.as_dict(),
    )
    reasons = []
    if not m.sharpe >= thresholds.min_sharpe:
        reasons.append(
            f"validation-window Sharpe {m.sharpe:.3f} is below the minimum {thresholds.min_sharpe:.3f}"
        )
    if not m.max_drawdown <= thresholds.max_drawdown:
        reasons.append(
            f"validation-window max drawdown {m.max_drawdown:.3f} exceeds the maximum "
            f"{thresholds.max_drawdown:.3f}"
        )
    return GateResult("holdout", "fail" if reasons else "pass", reasons, details)
