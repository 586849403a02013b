"""A bad configuration stops ``cappuccino supervise`` before anything starts, with one line
naming the key (and where it came from) and a non-zero exit code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config
from tests.daemon._supervisor_proc import clean_env, run_cli, write_config

CASES = {
    # name: (extra TOML sections, environment, what the one line must name)
    "toml_unknown_key": ({"workers": {"bogus_key": 1}}, {}, ["workers.bogus_key", "unknown key", "c.toml"]),
    "toml_bad_value": (
        {"workers": {"count": -1}},
        {},
        ["workers.count", "greater than or equal to 0", "c.toml"],
    ),
    "toml_bad_type": (
        {"restart": {"backoff_initial_s": "soon"}},
        {},
        ["restart.backoff_initial_s", "c.toml"],
    ),
    "env_unknown_key": (
        {},
        {"CAPPUCCINO_WORKERS__BOGUS_KEY": "1"},
        ["CAPPUCCINO_WORKERS__BOGUS_KEY", "unknown"],
    ),
    "env_unknown_section": ({}, {"CAPPUCCINO_BOGUS_SECTION": "1"}, ["CAPPUCCINO_BOGUS_SECTION", "unknown"]),
    "env_bad_value": (
        {},
        {"CAPPUCCINO_RESTART__BUDGET_PER_HOUR": "lots"},
        ["CAPPUCCINO_RESTART__BUDGET_PER_HOUR", "restart.budget_per_hour", "'lots'"],
    ),
    "training_bad_reward": (
        {"training": {"rewards": ["log_return", "sortino"]}},
        {},
        ["training.rewards.1", "c.toml"],
    ),
    "training_bad_feature_set": (
        {"training": {"feature_set": "weekly"}},
        {},
        ["training.feature_set", "'base' or 'long'", "c.toml"],
    ),
    "training_bad_ladder": (
        {"training": {"budget_ladder": [30000, 10000]}},
        {},
        ["training.budget_ladder", "increasing", "c.toml"],
    ),
}


# the command line, once per kind (an unknown key and a bad value, in the file and in the
# environment); load_config below checks every case in-process
COMMAND_CASES = ["env_bad_value", "env_unknown_key", "toml_bad_value", "toml_unknown_key"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", COMMAND_CASES)
def test_bad_config_stops_supervise_with_one_line(tmp_path: Path, case: str) -> None:
    sections, env, expected = CASES[case]
    root = tmp_path / "root"
    cfg = write_config(tmp_path / "c.toml", root, study={"name": "cfg"}, **sections)
    result = run_cli("supervise", "--config", str(cfg), env=clean_env(**env), timeout=240)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert not root.exists()  # nothing started: no root, no lock, no logs, no children
    assert result.stdout == ""


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_config_names_the_key(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sections, env, expected = CASES[case]
    for key in [k for k in os.environ if k.upper().startswith("CAPPUCCINO_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = write_config(tmp_path / "c.toml", tmp_path / "root", **sections)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert "\n" not in str(info.value)
    for text in expected:
        assert text in str(info.value)


def test_good_config_and_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPPUCCINO_WORKERS__COUNT", "5")
    monkeypatch.setenv("CAPPUCCINO_TORCH_SPEC", "torch==2.13.0")  # read by bin/setup, not a key
    cfg = write_config(tmp_path / "c.toml", tmp_path / "root", workers={"count": 3})
    config = load_config(cfg)
    assert config.workers.count == 5  # the environment wins over the file
    assert config.study.budget_steps == 256 and config.root == tmp_path / "root"
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "training.toml").write_text("[study]\nn_trials = 7\n")
    assert load_config(cfg).study.n_trials == 7  # the training request overlays the file


def test_training_section_reaches_the_worker_command_line(tmp_path: Path) -> None:
    from daemon.fleet import worker_specs
    from trainers.worker import app as worker_app

    training = {
        "action_scheme": "scores",
        "decision_intervals": [1, 4, 24],
        "rewards": ["log_return", "differential_sharpe"],
        "turnover_penalty": 0.01,
        "algorithms": ["ppo", "sac"],
        "budget_ladder": [10000, 30000, 90000],
        "tensorboard": True,
        "predictor_horizons": [0, 24],
        "feature_set": "long",
    }
    cfg = load_config(write_config(tmp_path / "c.toml", tmp_path / "root", training=training))
    (spec,) = worker_specs(cfg, "s", "sqlite:///x.db")[:1]
    argv = list(spec.argv)
    pairs = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert pairs["--action-scheme"] == "scores" and pairs["--decision-intervals"] == "1,4,24"
    assert pairs["--rewards"] == "log_return,differential_sharpe" and pairs["--algorithms"] == "ppo,sac"
    assert pairs["--turnover-penalty"] == "0.01" and pairs["--budget-ladder"] == "10000,30000,90000"
    assert "--tensorboard" in argv and pairs["--predictor-horizons"] == "0,24"
    assert pairs["--feature-set"] == "long"
    # and the worker's own parser knows every option it is given
    from typer.main import get_command

    command = get_command(worker_app)
    names = {opt for p in command.params for opt in getattr(p, "opts", [])}
    assert {a for a in argv if a.startswith("--")} <= names
