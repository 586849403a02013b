"""``cappuccino evaluate`` and the one execution model: a study trained with non-default
costs is replayed by the real paper trader, evaluated, and checked by the deployer's gate,
and all three see the same equity curve."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from daemon.cli import app
from ensemble.backtests import bundle_backtest
from ensemble.deploy_gate import DeployThresholds, check_holdout
from ensemble.evaluate import EvaluateError, evaluate
from ensemble.policy import EnsemblePolicy
from ensemble.sync import sync_ensemble
from paper_trader.ledger import Ledger
from tests.paper_trader.ensemble_root import PIPELINE, REPO
from trainers.accounting import Costs
from trainers.data import DEFAULT_HOLDOUT_CUT, Panel
from trainers.features import compute_features
from trainers.objective import Objective, StudyData, TrainingConfig
from trainers.storage import default_storage_url, make_storage
from trainers.windows import holdout_windows
from trainers.worker import create_study

COSTS = Costs(fee=0.001, slippage=0.0005, min_cash=0.1, max_weight=0.6, trailing_stop=0.02, min_trade=0.002)
STUDY = "costly"
N_BARS = 300
runner = CliRunner()


@pytest.fixture(scope="module")
def costly_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-trial study trained with :data:`COSTS`, its best trial alone as the ensemble."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("costly") / "root"
    root.mkdir()
    config = TrainingConfig(budget_steps=256, n_envs=2, seed=0, costs=COSTS)
    url = default_storage_url(root)
    study = create_study(make_storage(url, heartbeat_interval=None), STUDY, seed=0, costs=COSTS)
    study.optimize(Objective(StudyData.load(None, config), config, root), n_trials=3)
    (root / ".current_study").write_text(STUDY + "\n")
    sync_ensemble(root, url, STUDY, PIPELINE, top_n=1)
    return root


def copy_root(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


@pytest.mark.slow
def test_trader_evaluate_and_gate_see_the_same_equity_curve(
    costly_root: Path, panel: Panel, tmp_path: Path
) -> None:
    root = copy_root(costly_root, tmp_path / "root")
    argv = [sys.executable, "-m", "daemon.cli", "trade", "--root", str(root), "--broker", "sim"]
    argv += ["--speed", "0", "--max-bars", str(N_BARS), "--min-notional", "0"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    ledger = Ledger(root / "paper_trader" / "ledger.db")
    traded = np.array([r.equity for r in ledger.equity_rows()]) / 10_000.0
    assert len(traded) == N_BARS
    orders = ledger.orders()
    assert any(o.reason == "trailing_stop" for o in orders), "the stop must fire for this test to mean much"
    assert len({o.bar_ts for o in orders}) > N_BARS // 4
    status = json.loads((root / "paper_trader" / "status.json").read_text())
    assert status["costs"] == COSTS.as_dict() and status["cost_overrides"] == {}

    evaluated = evaluate(root, "ensemble", window="all").model_line.equity
    np.testing.assert_allclose(traded, evaluated[:N_BARS], rtol=1e-7, atol=0)

    # the deployer's gate backtests the member's bundle on the validation window
    (bundle,) = EnsemblePolicy.from_manifest(root / "ensemble" / "ensemble_manifest.json", PIPELINE).bundles
    raw = compute_features(panel.prices)
    cut = panel.index_of(DEFAULT_HOLDOUT_CUT)
    split = holdout_windows(len(panel), cut).split
    gate_run = bundle_backtest(bundle, panel.prices, raw, cut, split)
    np.testing.assert_allclose(traded, gate_run.equity[:N_BARS], rtol=1e-7, atol=0)
    gate = check_holdout(bundle, panel, raw, None, DeployThresholds())
    assert gate.details["window"] == "validation"
    assert gate.details["sharpe"] == gate_run.metrics.sharpe
    assert gate.details["costs"] == COSTS.as_dict()
    assert gate.details["n_bars"] == split - cut - 1


@pytest.mark.slow
def test_evaluate_reports_every_baseline_with_intervals_and_study_figures(
    costly_root: Path, panel: Panel, tmp_path: Path
) -> None:
    root = copy_root(costly_root, tmp_path / "root")
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", "--root", str(root), "--ensemble", "--window", "test", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    names = [line["name"] for line in doc["lines"]]
    assert names[0].startswith("ensemble generation 1") and doc["lines"][0]["kind"] == "model"
    assert any(n.startswith("member 0") for n in names)
    for wanted in ("equal-weight buy-and-hold", "cash", "trend filter", "OLMAR", "best constant rebalanced"):
        assert any(n.startswith(wanted) for n in names), wanted
    assert [line["clairvoyant"] for line in doc["lines"] if line["name"].startswith("best constant")] == [
        True
    ]
    for line in doc["lines"]:
        assert line["sharpe_low"] <= line["sharpe"] <= line["sharpe_high"]
    cash_line = next(line for line in doc["lines"] if line["name"] == "cash")
    assert cash_line["total_return"] == 0.0 and cash_line["exposure"] == 0.0
    windows = holdout_windows(len(panel), panel.index_of(DEFAULT_HOLDOUT_CUT))
    assert doc["window"] == "test" and doc["n_bars"] == windows.end - windows.split
    assert doc["costs"] == COSTS.as_dict()
    sf = doc["study_figures"]
    assert sf["n_trials"] == 3 and 0.0 <= sf["pbo"]["pbo"] <= 1.0 and 0.0 <= sf["dsr"]["dsr"] <= 1.0

    table = runner.invoke(app, ["evaluate", "--root", str(root), "--out", str(out)])
    assert table.exit_code == 0, table.output
    assert "test window" in table.output and "PBO" in table.output and "deflated Sharpe ratio" in table.output
    assert (out / "tearsheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((out / "evaluation.json").read_text())["lines"][0]["equity"]) == doc["n_bars"]


@pytest.mark.slow
def test_evaluate_a_trial_and_the_windows_split_the_holdout(costly_root: Path, panel: Panel) -> None:
    val = evaluate(costly_root, "trial", study=STUDY, trial=0, window="validation")
    test = evaluate(costly_root, "trial", study=STUDY, trial=0, window="test")
    both = evaluate(costly_root, "trial", study=STUDY, trial=0, window="all")
    assert val.first_bar == both.first_bar and test.last_bar == both.last_bar
    assert val.n_bars + test.n_bars == both.n_bars
    assert val.last_bar < test.first_bar
    assert val.model.startswith("trial 0")


def test_bad_choices_are_one_line(costly_root: Path) -> None:
    both = runner.invoke(app, ["evaluate", "--root", str(costly_root), "--ensemble", "--trial", "0"])
    assert both.exit_code == 2 and "choose one model" in both.output
    window = runner.invoke(app, ["evaluate", "--root", str(costly_root), "--window", "future"])
    assert window.exit_code == 2 and "validation, test, all" in window.output
    missing = runner.invoke(app, ["evaluate", "--root", str(costly_root), "--trial", "99"])
    assert missing.exit_code == 1
    assert "has no COMPLETE trial number 99" in missing.output
    with pytest.raises(EvaluateError, match="deployment slot 0"):
        evaluate(costly_root, "deployment")


@pytest.mark.slow
def test_the_sim_trader_refuses_to_replay_bars_its_models_trained_on(
    costly_root: Path, tmp_path: Path
) -> None:
    root = copy_root(costly_root, tmp_path / "root")
    argv = [
        sys.executable,
        "-m",
        "daemon.cli",
        "trade",
        "--root",
        str(root),
        "--broker",
        "sim",
        "--speed",
        "0",
    ]
    argv += ["--holdout-cut", "2019-03-01T00:00:00Z", "--max-bars", "5"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert "member 0 (PPO-" in done.stderr and "was trained on bars up to its hold-out cut" in done.stderr
