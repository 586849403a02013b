"""The supervised GRU predictor channel (trainers.predictor): it learns a predictable sign,
its fit reads nothing past the training slice, its channel at a bar depends on no later bar,
and the design option that asks for it is validated, recorded and searched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from trainers.design import Design, DesignOptions, suggest_design
from trainers.predictor import (
    fit_fold_predictor,
    fit_predictor,
    load_predictor,
    predictor_channel,
    split_state,
)
from trainers.predictor_spec import STATE_PREFIX, PredictorSpec

HORIZON = 1


def signal_panel(n_bars: int = 1500, n_assets: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(T, A, 3)`` and closes ``(T, A)`` where the sign of the next bar's return is
    the sign of feature 0 at the decision bar (plus smaller noise)."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_bars, n_assets, 3)).astype(np.float32)
    r = 0.002 * rng.standard_normal((n_bars, n_assets))
    r[1:] += 0.02 * np.sign(features[:-1, :, 0])  # r[t+1] follows feature 0 at t
    close = 100.0 * np.exp(np.cumsum(r, axis=0))
    return features, close


def test_a_predictable_sign_is_learnt() -> None:
    torch.set_num_threads(1)
    features, close = signal_panel()
    fitted = fit_predictor(features, close, 0, 1200, PredictorSpec(HORIZON, sequence_bars=4), seed=0)
    report = fitted.report
    assert report["validation_samples"] > 400
    assert 0.4 < report["validation_up_rate"] < 0.6  # the majority class alone scores ~0.5
    assert report["validation_accuracy"] > 0.9
    channel = fitted.channel(features)
    up = np.sign(features[:, :, 0])
    assert np.mean(np.sign(channel[1300:]) == up[1300:]) > 0.9  # out of the training slice too


def test_the_fit_reads_nothing_past_the_training_slice() -> None:
    torch.set_num_threads(1)
    features, close = signal_panel()
    spec = PredictorSpec(HORIZON, sequence_bars=4, hidden=8)
    a = fit_predictor(features, close, 100, 900, spec, seed=3)
    later_f, later_c = features.copy(), close.copy()
    rng = np.random.default_rng(9)
    later_f[900:] = rng.standard_normal(later_f[900:].shape)
    later_c[900:] *= np.exp(rng.standard_normal(later_c[900:].shape))
    b = fit_predictor(later_f, later_c, 100, 900, spec, seed=3)
    assert a.report == b.report
    for k, v in a.state().items():
        assert torch.equal(v, b.state()[k]), k
    # and the seed matters: another seed fits another network
    c = fit_predictor(features, close, 100, 900, spec, seed=4)
    assert not torch.equal(a.state()[STATE_PREFIX + "head.weight"], c.state()[STATE_PREFIX + "head.weight"])


def test_the_channel_at_a_bar_depends_on_no_later_bar() -> None:
    torch.set_num_threads(1)
    features, close = signal_panel(400)
    fitted = fit_predictor(features, close, 0, 300, PredictorSpec(HORIZON, sequence_bars=6, hidden=8), seed=0)
    channel = predictor_channel(fitted.model, features, 6)
    assert channel.shape == (400, 2) and channel.dtype == np.float32
    assert (channel[:5] == 0).all() and (np.abs(channel[5:]) > 0).all()
    assert (np.abs(channel) <= 1).all()
    for t in (5, 150, 398):
        future = features.copy()
        future[t + 1 :] = 10.0
        again = predictor_channel(fitted.model, future, 6)
        np.testing.assert_array_equal(again[: t + 1], channel[: t + 1])
        assert not np.allclose(again[t + 1 :], channel[t + 1 :])
    # a range computes the same values and leaves the rest at 0
    part = fitted.channel(features, 100, 200)
    np.testing.assert_allclose(part[100:200], channel[100:200], atol=1e-6)
    assert (part[:100] == 0).all() and (part[200:] == 0).all()


def test_state_round_trip_and_spec_validation() -> None:
    features, close = signal_panel(300)
    spec = PredictorSpec(HORIZON, sequence_bars=4, hidden=8)
    fitted = fit_predictor(features, close, 0, 250, spec, seed=0)
    actor_keys = {"action_net.weight": torch.zeros(1)}
    actor_state, predictor_state = split_state({**actor_keys, **fitted.state()})
    assert set(actor_state) == set(actor_keys) and predictor_state.keys() == fitted.state().keys()
    loaded = load_predictor(PredictorSpec.from_json(spec.to_json()), 3, predictor_state)
    np.testing.assert_array_equal(predictor_channel(loaded, features, 4), fitted.channel(features))
    with pytest.raises(ValueError, match="horizon"):
        PredictorSpec(0)
    with pytest.raises(ValueError, match="too short"):
        fit_predictor(features, close, 0, 6, spec, seed=0)
    with pytest.raises(RuntimeError):
        load_predictor(PredictorSpec(HORIZON, 4, hidden=16), 3, predictor_state)


def test_the_design_option_is_validated_recorded_and_searched() -> None:
    options = DesignOptions(predictor_horizons=(0, 24))
    assert DesignOptions.from_dict(options.as_dict()) == options
    assert DesignOptions.from_dict({}).predictor_horizons == (0,)  # studies from before it
    with pytest.raises(ValueError, match="predictor_horizons"):
        DesignOptions(predictor_horizons=(-1,))
    with pytest.raises(ValueError, match="predictor_horizons"):
        DesignOptions(predictor_horizons=())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {suggest_design(study.ask(), options).predictor_horizon for _ in range(20)}
    assert seen == {0, 24}
    fixed = study.ask()
    assert suggest_design(fixed, DesignOptions(predictor_horizons=(4,))).predictor_horizon == 4
    assert "predictor_horizon" not in fixed.params
    design = Design(predictor_horizon=4)
    assert "predictor_horizon" not in design.env_kwargs()
    assert Design.from_meta({"design": design.as_dict()}).predictor_horizon == 4
    assert Design.from_meta({}).predictor_horizon == 0


def test_the_agents_channel_is_cross_fitted_inside_the_training_slice() -> None:
    """Inside the slice a block's channel comes from a network that never saw that block's
    labels (changing them changes nothing there); outside it the kept network's is used."""
    torch.set_num_threads(1)
    features, close = signal_panel(1600)
    spec = PredictorSpec(HORIZON, sequence_bars=4, hidden=8)
    start, stop = 100, 1300
    kept, channel = fit_fold_predictor(features, close, start, stop, spec, 0, 50, 1600)
    own = kept.channel(features, 50, 1600)
    np.testing.assert_array_equal(channel[1300:], own[1300:])  # embargo and test bars
    np.testing.assert_array_equal(channel[50:100], own[50:100])  # the lookback before the slice
    assert (channel[:50] == 0).all()
    assert not np.allclose(channel[start:stop], own[start:stop])  # not the in-sample output
    assert kept.report["out_of_fold_accuracy"] > 0.9  # the signal is real, so it generalises
    assert kept.report["out_of_fold_samples"] == (stop - HORIZON - start) * 2

    # another past for the first block's labels: its channel (fitted on the second block,
    # purged) does not move, the second block's (fitted on the first) does
    middle = (start + stop) // 2
    other = close.copy()
    other[start : middle + HORIZON] *= np.exp(
        np.random.default_rng(5).normal(0, 0.05, (middle + HORIZON - start, 2))
    )
    _, again = fit_fold_predictor(features, other, start, stop, spec, 0, 50, 1600)
    np.testing.assert_array_equal(again[start:middle], channel[start:middle])
    assert not np.allclose(again[middle:stop], channel[middle:stop])


def test_bad_predictor_horizons_on_the_command_line_name_the_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trainers.worker import app

    for value, message in (("x", "not a comma-separated list of bar counts"), ("-4", "must be bars >= 0")):
        argv = ["--study", "s", "--root", str(tmp_path), "--predictor-horizons", value]
        result = CliRunner().invoke(app, argv, terminal_width=200, env={"COLUMNS": "200"})
        shown = " ".join(result.output.replace("│", " ").split())
        assert result.exit_code == 2, result.output
        assert "--predictor-horizons" in shown and message in shown, shown
    assert not any(tmp_path.iterdir())  # nothing started, nothing written
