"""The agent design options, checked against hand computations: softmax weights, the
decision interval in the env and the backtest, the three rewards and the turnover penalty,
and the options' validation and round trip."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from trainers.accounting import Costs, action_dim, action_to_weights, softmax_weights
from trainers.backtest import decision_bars, run_decisions
from trainers.design import Design, DesignOptions, suggest_design
from trainers.env import DSR_ETA, PortfolioCore

from .test_features import synthetic_prices

FREE = Costs(fee=0.0, slippage=0.0, min_cash=0.0, max_weight=1.0, trailing_stop=0.0, min_trade=0.0)


def test_softmax_weights_by_hand() -> None:
    # a zero action is the equal-weight portfolio over 3 assets and cash
    np.testing.assert_allclose(softmax_weights(np.zeros((1, 4)), FREE), [[0.25, 0.25, 0.25]])
    # logits 3 * a: exp(3) / (exp(3) + exp(0) * 2 + exp(-3))
    a = np.array([[1.0, 0.0, 0.0, -1.0]])
    z = math.exp(3) + 2 + math.exp(-3)
    np.testing.assert_allclose(softmax_weights(a, FREE), [[math.exp(3) / z, 1 / z, 1 / z]])
    # all in cash
    assert softmax_weights(np.array([[-1.0, -1.0, -1.0, 1.0]]), FREE).sum() < 0.01
    # the cash reserve and the maximum weight still hold
    limited = Costs(min_cash=0.2, max_weight=0.5)
    w = softmax_weights(np.array([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, -1.0]]), limited)
    assert (w <= 0.5 + 1e-12).all() and (w.sum(axis=1) <= 0.8 + 1e-12).all()
    # NaN counts as 0, out-of-range values are clipped
    np.testing.assert_allclose(softmax_weights(np.array([[np.nan, 0.0, 0.0, 0.0]]), FREE), [[0.25] * 3])
    np.testing.assert_allclose(
        softmax_weights(np.array([[7.0, 0.0, 0.0, 0.0]]), FREE), softmax_weights(a[:, [0, 1, 2, 1]], FREE)
    )


def test_action_dim_and_scheme_dispatch() -> None:
    assert action_dim("scores", 3) == 3 and action_dim("softmax", 3) == 4
    with pytest.raises(ValueError, match="unknown action scheme 'logits'"):
        action_dim("logits", 3)
    with pytest.raises(ValueError, match="unknown action scheme"):
        action_to_weights(np.zeros((1, 3)), FREE, "logits")
    np.testing.assert_allclose(action_to_weights(np.zeros((1, 4)), FREE, "softmax"), [[0.25] * 3])
    np.testing.assert_allclose(action_to_weights(np.zeros((1, 3)), FREE, "scores"), [[0.0] * 3])


def test_decision_bars_follow_the_epoch_clock() -> None:
    hour = 3600
    ts = np.arange(10, 22) * hour  # bars 10 .. 21 since the epoch
    np.testing.assert_array_equal(np.flatnonzero(decision_bars(ts, hour, 4)), [2, 6, 10])  # 12, 16, 20
    assert decision_bars(ts, hour, 1).all()
    as_datetime = ts.astype("datetime64[s]")
    np.testing.assert_array_equal(decision_bars(as_datetime, hour, 4), decision_bars(ts, hour, 4))


def _prices(n: int = 80) -> np.ndarray:
    return synthetic_prices(n, 3, seed=3)


def _core(prices: np.ndarray, **design: object) -> PortfolioCore:
    features = np.zeros((len(prices), 3, 2), dtype=np.float32)
    core = PortfolioCore(features, prices, 0, len(prices), 1, 1, FREE, episode_bars=40, seed=0, **design)
    core.reset()
    return core


def test_one_step_spans_the_decision_interval_and_holds_in_between() -> None:
    prices = _prices()
    core = _core(prices, action_scheme="softmax", decision_interval=4)
    t0 = int(core.t[0])
    reward, done, turnover = core.step(np.zeros((1, 4)))
    assert int(core.t[0]) == t0 + 4
    assert turnover[0] == pytest.approx(0.75)  # one trade from cash to 25% of each asset
    # held from the open of t0+1: each asset's weight drifts with its own price
    held = 0.25 * prices[t0 + 4, :, 3] / prices[t0 + 1, :, 0]
    value = 0.25 + held.sum()
    np.testing.assert_allclose(core.weights[0], held / value)
    assert reward[0] == pytest.approx(math.log(value), rel=1e-6)
    assert not done[0]


def test_excess_reward_subtracts_the_equal_weight_benchmark() -> None:
    prices = _prices()
    plain, excess = _core(prices), _core(prices, reward="excess_log_return")
    action = np.array([[1.0, 0.2, -0.5]])
    t0 = int(plain.t[0])
    r_plain, _, _ = plain.step(action)
    r_excess, _, _ = excess.step(action)
    bench = math.log((prices[t0 + 1, :, 3] / prices[t0, :, 3]).mean())
    assert r_excess[0] == pytest.approx(r_plain[0] - bench, abs=1e-6)


def test_differential_sharpe_ratio_by_hand() -> None:
    """Moody & Saffell (2001), eq. 6, recomputed from the step returns."""
    prices = _prices()
    value_core = _core(prices)
    dsr_core = _core(prices, reward="differential_sharpe")
    a = b = 0.0
    action = np.array([[0.6, 0.3, 0.1]])
    for _ in range(6):
        before = value_core.value[0]
        value_core.step(action)
        r = value_core.value[0] / before - 1.0
        (d,), _, _ = dsr_core.step(action)
        var = b - a * a
        expected = 0.0 if var <= 1e-12 else (b * (r - a) - 0.5 * a * (r * r - b)) / var**1.5
        assert d == pytest.approx(float(np.clip(expected, -10, 10)), rel=1e-4, abs=1e-6)
        a, b = a + DSR_ETA * (r - a), b + DSR_ETA * (r * r - b)


def test_turnover_penalty_is_taken_from_the_reward() -> None:
    prices = _prices()
    plain, penalised = _core(prices), _core(prices, turnover_penalty=0.1)
    action = np.array([[1.0, 1.0, 0.0]])
    r_plain, _, turnover = plain.step(action)
    r_pen, _, _ = penalised.step(action)
    assert turnover[0] > 0
    assert r_pen[0] == pytest.approx(r_plain[0] - 0.1 * turnover[0], abs=1e-6)


def test_the_backtest_acts_only_at_decision_bars() -> None:
    prices = _prices()
    calls: list[int] = []

    def act(t: int, weights: np.ndarray) -> np.ndarray:
        calls.append(t)
        return np.array([[1.0, 1.0, 1.0, -1.0]])

    decide = np.zeros(len(prices), dtype=bool)
    decide[[10, 15, 30]] = True
    result = run_decisions(act, prices, 10, 40, FREE, 8760, "softmax", decide)
    assert calls == [10, 15, 30]
    # after the first fill nothing trades until bar 15 (its weights drift)
    w = result.weights
    assert not np.allclose(w[2], w[3])


def test_design_options_validate_and_round_trip() -> None:
    options = DesignOptions("scores", (1, 4, 24), ("log_return", "differential_sharpe"), 0.01)
    assert DesignOptions.from_dict(options.as_dict()) == options
    for bad, where in (
        ({"action_scheme": "logits"}, "action_scheme"),
        ({"decision_intervals": (0,)}, "decision_intervals"),
        ({"rewards": ("sortino",)}, "rewards"),
        ({"turnover_penalty": -1.0}, "turnover_penalty"),
        ({"feature_set": "weekly"}, "feature_set: 'weekly' is not one of base, long"),
    ):
        with pytest.raises(ValueError, match=where):
            DesignOptions(**bad)  # type: ignore[arg-type]
    long = DesignOptions(feature_set="long")
    assert DesignOptions.from_dict(long.as_dict()) == long and long.as_dict()["feature_set"] == "long"
    assert DesignOptions.from_dict({}).feature_set == "base"  # a study recorded before feature sets
    # one per study: the set is fixed in every trial's design, never a searched parameter
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    assert suggest_design(trial, long).feature_set == "long" and trial.params == {}


def test_several_choices_are_searched_one_is_fixed() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fixed = suggest_design(study.ask(), DesignOptions())
    assert fixed == Design()
    seen = set()
    for _ in range(30):
        trial = study.ask()
        d = suggest_design(trial, DesignOptions("softmax", (1, 4, 24), ("log_return", "excess_log_return")))
        assert set(trial.params) == {"decision_interval", "reward"}
        seen.add((d.decision_interval, d.reward))
        study.tell(trial, 0.0)
    assert len(seen) == 6


def test_design_from_a_bundle_record() -> None:
    meta = {
        "action_spec": {"shape": [4], "scheme": "softmax", "decision_interval": 24},
        "design": {"reward": "excess_log_return", "turnover_penalty": 0.02},
    }
    assert Design.from_meta(meta) == Design("softmax", 24, "excess_log_return", 0.02)
    # bundles before schema version 3 acted with scores at every bar
    assert Design.from_meta({"action_spec": {"shape": [3]}}) == Design("scores", 1, "log_return", 0.0)
    # bundles before feature sets observed the base set
    assert Design.from_meta(meta).feature_set == "base"
    assert Design.from_meta({**meta, "design": {"feature_set": "long"}}).feature_set == "long"
