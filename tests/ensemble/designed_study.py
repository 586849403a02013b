"""A runtime root with a small study trained under given design options and costs, and its
ensemble synced: what the design-to-trading tests (design, predictor, feature set) start from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from ensemble.sync import sync_ensemble
from paper_trader.ledger import Decision, Ledger
from tests.paper_trader.ensemble_root import PIPELINE, REPO
from trainers.objective import Objective, StudyData, TrainingConfig
from trainers.storage import default_storage_url, make_storage
from trainers.worker import check_study_design, create_study


def designed_root(
    parent: Path, study: str, config: TrainingConfig, n_trials: int = 2, top_n: int = 2
) -> Path:
    """Train ``n_trials`` trials of ``study`` under ``config`` (its design and costs recorded
    in the study, as a worker does) in ``parent/root``, sync the top ``top_n`` as the
    ensemble and make the study current; returns the root."""
    torch.set_num_threads(1)
    root = parent / "root"
    root.mkdir()
    url = default_storage_url(root)
    created = create_study(make_storage(url, heartbeat_interval=None), study, seed=0, costs=config.costs)
    check_study_design(created, config.design)
    created.optimize(Objective(StudyData.load(None, config), config, root), n_trials=n_trials)
    (root / ".current_study").write_text(study + "\n")
    sync_ensemble(root, url, study, PIPELINE, top_n=top_n)
    return root


def trade_replay(root: Path, n_bars: int) -> tuple[subprocess.CompletedProcess[str], list[Decision]]:
    """Run the real paper trader (``cappuccino trade``, sim broker, full speed) on the root's
    ensemble for ``n_bars`` bars; returns the finished process and the ledger's decisions."""
    argv = [sys.executable, "-m", "daemon.cli", "trade", "--root", str(root), "--broker", "sim"]
    argv += ["--speed", "0", "--max-bars", str(n_bars), "--min-notional", "0"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done, Ledger(root / "paper_trader" / "ledger.db").decisions()
