"""Training requests (:mod:`daemon.training_control`) without a supervisor: ``stop-training``
keeps the request and sets the workers to 0, a request the configuration refuses leaves
``training.toml`` as it was, a held ``run/training.lock`` refuses a second request, and the
``training.toml`` writer round-trips through ``tomllib``."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.config import ConfigError
from daemon.training_control import (
    TrainingBusy,
    TrainingRequest,
    start_training,
    stop_training,
    training_request_toml,
)
from trainers.runtime.layout import Layout
from trainers.runtime.pidlock import PidLock


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./cappuccino.toml
    for var in [v for v in os.environ if v.upper().startswith("CAPPUCCINO_")]:
        monkeypatch.delenv(var)
    path = tmp_path / "root"
    path.mkdir()
    return path


REQUEST = {"study": {"n_trials": 7, "mode": "full"}, "workers": {"count": 3}, "costs": {"fee": 0.001}}


def test_training_request_toml_round_trips() -> None:
    data = {"log_level": "debug", **REQUEST, "paper_trader": {"allow_live": False, "broker": 'si"m'}}
    text = training_request_toml(data, "a test")
    assert text.startswith("# the training request, written by a test at ")
    assert tomllib.loads(text) == data


def test_stop_training_sets_workers_to_zero_and_keeps_the_rest(root: Path) -> None:
    Layout(root).training_request.write_text(training_request_toml(REQUEST, "a test"))
    result = CliRunner().invoke(app, ["stop-training", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert f"workers.count = 0 in {Layout(root).training_request} (was 3)" in result.stdout
    assert "supervisor is not running" in result.stdout
    assert tomllib.loads(Layout(root).training_request.read_text()) == {
        **REQUEST,
        "workers": {"count": 0},
    }


def test_a_request_the_configuration_refuses_leaves_training_toml_as_it_was(root: Path) -> None:
    before = training_request_toml(REQUEST, "a test")
    Layout(root).training_request.write_text(before)
    with pytest.raises(ConfigError, match=r"training.toml: workers.count: .*256"):
        start_training(None, root, TrainingRequest("too_many", n_trials=5, workers=300))
    assert Layout(root).training_request.read_text() == before
    assert not Layout(root).current_study.exists()


def test_a_held_training_lock_refuses_a_second_request(root: Path) -> None:
    with PidLock(Layout(root).training_lock):
        with pytest.raises(TrainingBusy, match=f"another training request \\(pid {os.getpid()}\\)"):
            stop_training(None, root)
        result = CliRunner().invoke(app, ["stop-training", "--root", str(root)])
    assert result.exit_code == 2
    assert "another training request" in result.output
    assert not Layout(root).training_request.exists()
