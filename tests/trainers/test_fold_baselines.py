"""The constant-policy fold baselines (trainers.fold_baselines): values against an independent
hand computation on a tiny synthetic panel, the cash policy's excess Sharpe equal to minus
the benchmark's on the embedded data, the same benchmark the trials were scored against,
the study-attribute cache (written once, reused, recomputed on a new key) read back through
trainers.study_db, and the worker writing it once per study."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import create_trial

from tests.conftest import TINY, TrainedStudy
from tests.trainers._worker_proc import TINY_ARGS, reader, workers
from trainers.accounting import Costs
from trainers.data import Panel
from trainers.design import RECOMMENDED_DECISION_INTERVALS, Design, DesignOptions
from trainers.fold_baselines import (
    baselines_key,
    constant_policy_folds,
    ensure_fold_baselines,
    zero_action_folds,
)
from trainers.naming import baseline_note, beats_baselines, grade_with_baselines
from trainers.objective import StudyData, TrainingConfig, objective_value
from trainers.splits import Fold
from trainers.storage import default_storage_url, make_storage
from trainers.study_db import open_engine
from trainers.study_db.baselines import FOLD_BASELINES_ATTR, parse_baselines, read_study_baselines
from trainers.worker import create_study

HOURLY = 8760
T1 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T2 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def gapless_panel(n_bars: int, n_assets: int, seed: int) -> Panel:
    """Random closes (moves of about 1% a bar) with every open equal to the previous close."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n_bars, n_assets)), axis=0))
    opn = np.vstack([close[:1], close[:-1]])
    prices = np.stack([opn, np.maximum(opn, close), np.minimum(opn, close), close, np.ones_like(close)], -1)
    stamps = np.datetime64("2024-01-01T00:00", "s") + np.arange(n_bars) * np.timedelta64(3600, "s")
    return Panel(tuple(f"A{i}USD" for i in range(n_assets)), stamps, prices)


def sharpe(equity: list[float]) -> float:
    """Annualised Sharpe of an equity curve, written out (sample std, zero risk-free rate)."""
    r = [b / a - 1.0 for a, b in itertools.pairwise(equity)]
    mean = sum(r) / len(r)
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
    return mean / sd * math.sqrt(HOURLY)


def hand_fixed_weights(
    panel: Panel, start: int, stop: int, costs: Costs, w: float, interval: int = 1
) -> list[float]:
    """Equity of 'w in each asset' on a gapless panel, bar by bar: from all cash, at every
    decision bar (bar number since the epoch a multiple of ``interval``) trade from the
    drifted weights back to ``w`` each, paying (fee + slippage) on the traded notional
    (fills at open[t + 1] = close[t]); between decision bars hold and drift."""
    close = panel.prices[:, :, 3]
    hours = panel.timestamps.astype("datetime64[s]").astype(np.int64) // 3600
    n = close.shape[1]
    rate = costs.fee + costs.slippage
    equity, held = [1.0], [0.0] * n
    for t in range(start, stop - 1):
        target = [w] * n if hours[t] % interval == 0 else held
        turnover = sum(abs(a - h) for a, h in zip(target, held, strict=True))
        growth = [close[t + 1, i] / close[t, i] for i in range(n)]
        gross = 1.0 - sum(target) + sum(a * g for a, g in zip(target, growth, strict=True))
        equity.append(equity[-1] * (1.0 - rate * turnover) * gross)
        held = [a * g / gross for a, g in zip(target, growth, strict=True)]
    return equity


def hand_invested(panel: Panel, start: int, stop: int, costs: Costs) -> list[float]:
    """'Always (1 - min_cash) / n in each asset', rebalanced every bar."""
    return hand_fixed_weights(panel, start, stop, costs, (1.0 - costs.min_cash) / panel.n_assets)


def hand_buy_and_hold(close: np.ndarray, start: int, stop: int, costs: Costs) -> list[float]:
    """The benchmark: 1/n of each asset bought at close[start] (fee on all of it), then held."""
    rate = costs.fee + costs.slippage
    return [1.0] + [(1.0 - rate) * float(np.mean(close[k] / close[start])) for k in range(start + 1, stop)]


def synthetic(costs: Costs) -> tuple[StudyData, TrainingConfig]:
    panel = gapless_panel(60, 3, seed=7)
    folds = [Fold(0, 0, 10, 12, 30), Fold(1, 0, 25, 28, 45), Fold(2, 0, 40, 42, 60)]
    data = StudyData(panel, np.zeros((60, 3, 1)), folds, panel.fingerprint())
    return data, TrainingConfig(costs=costs)


@pytest.mark.parametrize(
    "costs",
    [
        Costs(fee=0.0, min_cash=0.0, trailing_stop=0.0, min_trade=0.0),
        Costs(fee=0.002, slippage=0.001, min_cash=0.1, trailing_stop=0.0, min_trade=0.0),
    ],
    ids=["frictionless", "fees_and_reserve"],
)
def test_values_equal_a_hand_computation(costs: Costs) -> None:
    data, config = synthetic(costs)
    close = data.panel.prices[:, :, 3]
    got = constant_policy_folds(data, config)
    assert set(got) == {"invested", "cash"}
    want_invested, want_cash = [], []
    for fold, inv, cash in zip(data.folds, got["invested"]["folds"], got["cash"]["folds"], strict=True):
        equity = hand_invested(data.panel, fold.test_start, fold.test_stop, costs)
        bench = sharpe(hand_buy_and_hold(close, fold.test_start, fold.test_stop, costs))
        assert inv["fold"] == cash["fold"] == fold.index
        assert inv["sharpe"] == pytest.approx(sharpe(equity), rel=1e-9)
        assert inv["total_return"] == pytest.approx(equity[-1] - 1.0, rel=1e-9)
        assert inv["benchmark_sharpe"] == cash["benchmark_sharpe"] == pytest.approx(bench, rel=1e-9)
        assert cash["sharpe"] == 0.0 and cash["total_return"] == 0.0
        assert cash["excess_sharpe"] == -cash["benchmark_sharpe"]
        want_invested.append(sharpe(equity) - bench)
        want_cash.append(-bench)
    for name, excess in (("invested", want_invested), ("cash", want_cash)):
        # the objective formula written out: mean - 0.1 * population std
        mean = sum(excess) / len(excess)
        std = math.sqrt(sum((x - mean) ** 2 for x in excess) / len(excess))
        assert got[name]["value"] == pytest.approx(mean - 0.1 * std, rel=1e-9)
    # rebalancing to fixed weights is not buy-and-hold: the invested excess is not zero
    assert any(abs(x) > 1e-6 for x in want_invested)


@pytest.mark.parametrize("interval", [1, 4])
@pytest.mark.parametrize(
    "costs",
    [
        Costs(fee=0.0, min_cash=0.0, trailing_stop=0.0, min_trade=0.0),
        Costs(fee=0.002, slippage=0.001, min_cash=0.1, trailing_stop=0.0, min_trade=0.0),
    ],
    ids=["frictionless", "fees_and_reserve"],
)
def test_the_zero_action_is_equal_weights_over_assets_and_cash_at_decision_bars(
    costs: Costs, interval: int
) -> None:
    data, config = synthetic(costs)
    close = data.panel.prices[:, :, 3]
    got = zero_action_folds(data, config, Design(action_scheme="softmax", decision_interval=interval))
    assert (got["action_scheme"], got["decision_interval"]) == ("softmax", interval)
    excess = []
    for fold, f in zip(data.folds, got["folds"], strict=True):
        # softmax of zero logits: 1 / (n + 1) of each asset, the rest in cash (above the reserve)
        equity = hand_fixed_weights(data.panel, fold.test_start, fold.test_stop, costs, 1 / 4, interval)
        bench = sharpe(hand_buy_and_hold(close, fold.test_start, fold.test_stop, costs))
        assert f["fold"] == fold.index
        assert f["sharpe"] == pytest.approx(sharpe(equity), rel=1e-9)
        assert f["total_return"] == pytest.approx(equity[-1] - 1.0, rel=1e-9)
        excess.append(sharpe(equity) - bench)
    assert got["value"] == pytest.approx(objective_value(excess), rel=1e-9)
    # the decision interval is honoured: fold 2 starts 2 bars before a 4-bar decision bar
    if interval == 4:
        every_bar = zero_action_folds(data, config, Design(action_scheme="softmax", decision_interval=1))
        assert got["folds"][2]["total_return"] != every_bar["folds"][2]["total_return"]


def test_the_zero_score_action_holds_nothing_like_always_cash(study_data: StudyData) -> None:
    got = zero_action_folds(study_data, TINY, Design(action_scheme="scores", decision_interval=1))
    cash = constant_policy_folds(study_data, TINY)["cash"]
    assert got["value"] == cash["value"]
    assert [f["total_return"] for f in got["folds"]] == [0.0] * len(study_data.folds)


def test_cash_excess_is_minus_the_benchmark_on_the_embedded_folds(study_data: StudyData) -> None:
    got = constant_policy_folds(study_data, TINY)
    cash, invested = got["cash"], got["invested"]
    assert [f["fold"] for f in cash["folds"]] == [f.index for f in study_data.folds]
    for c, i in zip(cash["folds"], invested["folds"], strict=True):
        assert c["excess_sharpe"] == -c["benchmark_sharpe"] and c["sharpe"] == 0.0
        assert i["benchmark_sharpe"] == c["benchmark_sharpe"]
        assert i["total_return"] != 0.0  # it did trade
    for b in (cash, invested):
        assert b["value"] == objective_value([f["excess_sharpe"] for f in b["folds"]])
    # the embedded data before the default cut rise: cash earns a negative value there
    assert cash["value"] < 0.0


@pytest.mark.slow
def test_baselines_use_the_benchmark_the_trials_were_scored_against(
    trained_study: TrainedStudy, study_data: StudyData
) -> None:
    study = optuna.load_study(study_name=trained_study.study_name, storage=reader(trained_study.storage_url))
    got = constant_policy_folds(study_data, TINY)
    for trial in study.get_trials():
        bench = [f["benchmark_sharpe"] for f in trial.user_attrs["fold_metrics"]]
        assert bench == [f["benchmark_sharpe"] for f in got["cash"]["folds"]]


def test_the_cache_is_written_once_reused_and_recomputed_on_a_new_key(tmp_path: Path) -> None:
    data, config = synthetic(Costs(trailing_stop=0.0))
    url = default_storage_url(tmp_path)
    study = create_study(make_storage(url, heartbeat_interval=None), "s", costs=config.costs)

    first, computed = ensure_fold_baselines(study, data, config, now=T1)
    assert computed and first["computed_at"] == T1.isoformat(timespec="seconds")
    stored = optuna.load_study(study_name="s", storage=url).user_attrs[FOLD_BASELINES_ATTR]
    assert stored == json.loads(json.dumps(first))
    assert stored["key"] == baselines_key(data, config)
    assert stored["key"]["costs"] == config.costs.as_dict() and stored["key"]["bars_per_year"] == HOURLY

    # a second worker (another process would load the study afresh) reuses it
    again, computed = ensure_fold_baselines(optuna.load_study(study_name="s", storage=url), data, config, T2)
    assert not computed and again["computed_at"] == T1.isoformat(timespec="seconds")

    # the daemon side reads it through trainers.study_db
    read = read_study_baselines(open_engine(url), "s")
    assert read is not None and read.n_folds == 3 and read.computed_at == first["computed_at"]
    assert read.values() == {k: first["baselines"][k]["value"] for k in ("invested", "cash")}

    # the untrained start: the zero action at each decision interval the study allows
    assert first["zero_action"]["action_scheme"] == "softmax"
    by_interval = first["zero_action"]["by_interval"]
    assert list(by_interval) == [str(k) for k in sorted(config.design.decision_intervals)]
    for k, value in by_interval.items():
        assert value == zero_action_folds(data, config, Design("softmax", int(k)))["value"]
    assert first["zero_action"]["value"] == max(by_interval.values()) == read.zero_action

    # other decision intervals: recomputed, the start is the better of them
    search = replace(config, design=DesignOptions(decision_intervals=(1, 4)))
    both, computed = ensure_fold_baselines(optuna.load_study(study_name="s", storage=url), data, search, T2)
    assert computed and both["key"]["design"] == {"action_scheme": "softmax", "decision_intervals": [1, 4]}
    one = zero_action_folds(data, config, Design("softmax", 1))["value"]
    four = zero_action_folds(data, config, Design("softmax", 4))["value"]
    assert one != four and both["zero_action"]["by_interval"] == {"1": one, "4": four}
    assert both["zero_action"]["value"] == max(one, four)
    assert both["baselines"] == first["baselines"]  # the constant policies do not depend on it

    # other costs, other folds: recomputed and overwritten
    other = replace(config, costs=Costs(fee=0.01, trailing_stop=0.0))
    changed, computed = ensure_fold_baselines(optuna.load_study(study_name="s", storage=url), data, other, T2)
    assert computed and changed["key"]["costs"]["fee"] == 0.01
    assert changed["baselines"]["invested"]["value"] < first["baselines"]["invested"]["value"]
    fewer = StudyData(data.panel, data.features, data.folds[:2], data.fingerprint)
    _, computed = ensure_fold_baselines(optuna.load_study(study_name="s", storage=url), fewer, other, T2)
    assert computed
    assert read_study_baselines(open_engine(url), "s").n_folds == 2  # type: ignore[union-attr]

    optuna.create_study(storage=url, study_name="bare")
    assert read_study_baselines(open_engine(url), "bare") is None


def test_a_malformed_record_reads_as_unknown() -> None:
    good = {"baselines": {"invested": {"value": -0.3, "folds": [{}]}, "cash": {"value": 1.3, "folds": [{}]}}}
    assert parse_baselines(good) is not None and parse_baselines(good).best == 1.3  # type: ignore[union-attr]
    for bad in (None, "x", {}, {"baselines": {"invested": {"value": 1.0}}}):
        assert parse_baselines(bad) is None
    nan = {"baselines": {"invested": {"value": float("nan")}, "cash": {"value": 1.0}}}
    assert parse_baselines(nan) is None
    # a record written before the zero action existed still reads, without it
    assert parse_baselines(good).zero_action is None  # type: ignore[union-attr]
    assert parse_baselines({**good, "zero_action": {"value": -0.05}}).zero_action == -0.05  # type: ignore[union-attr]
    assert parse_baselines({**good, "zero_action": {"value": "x"}}).zero_action is None  # type: ignore[union-attr]
    # the untrained start is a reference, never part of the verdict
    above_start = parse_baselines({**good, "zero_action": {"value": 2.0}})
    assert above_start is not None and above_start.values() == {"invested": -0.3, "cash": 1.3}
    assert beats_baselines(1.5, above_start.values()) is True


def test_the_verdict_names_every_baseline_not_beaten() -> None:
    base = {"invested": -0.04, "cash": 1.34}
    assert beats_baselines(1.35, base) is True
    assert beats_baselines(1.34, base) is False  # a tie does not beat
    assert beats_baselines(0.87, None) is None and beats_baselines(None, base) is None
    assert grade_with_baselines("A", 1.5, base) == "A (beats both baselines)"
    assert grade_with_baselines("S", 0.87, base) == "S (below always in cash +1.3400)"
    assert baseline_note(-1.66, {"invested": -0.04, "cash": -2.89}) == "below always invested -0.0400"
    assert baseline_note(-3.0, {"invested": -0.04, "cash": -2.89}) == (
        "below always invested -0.0400 and always in cash -2.8900"
    )
    assert grade_with_baselines(None, 0.2, None) == "- (baselines not recorded)"


@pytest.mark.slow
def test_the_worker_records_the_baselines_once_per_study(tmp_path: Path) -> None:
    """A worker on a study that already has its trials: it records the baselines and exits
    without training; a second worker reuses them."""
    url = default_storage_url(tmp_path)
    study = create_study(make_storage(url, heartbeat_interval=None), "done", costs=Costs())
    study.add_trial(create_trial(value=-1.66))
    args = ("--study", "done", "--root", str(tmp_path), "--n-trials", "1", *TINY_ARGS)
    with workers(tmp_path / "logs") as ws:
        first = ws.start(*args)
        assert first.wait() == 0, first.describe()
        record = optuna.load_study(study_name="done", storage=reader(url)).user_attrs[FOLD_BASELINES_ATTR]
        second = ws.start(*args)
        assert second.wait() == 0, second.describe()
    assert "fold_baselines" in first.output() and "study_complete" in first.output()
    logged = next(
        json.loads(line) for line in first.output().splitlines() if '"event": "fold_baselines"' in line
    )
    assert logged["zero_action_value"] == round(record["zero_action"]["value"], 4)
    assert "worker_started" not in first.output()  # no trial ran
    after = optuna.load_study(study_name="done", storage=reader(url)).user_attrs[FOLD_BASELINES_ATTR]
    assert after == record  # not recomputed: the same computed_at
    # what a worker started without design options uses: the recommended decision interval
    config = TrainingConfig(design=DesignOptions(decision_intervals=RECOMMENDED_DECISION_INTERVALS))
    expected = StudyData.load(None, config)
    assert record["key"] == baselines_key(expected, config)
    assert len(record["baselines"]["cash"]["folds"]) == len(expected.folds)
