"""Optional per-trial TensorBoard logs: SB3's training scalars of every fold land under
``<root>/tensorboard/<study>/<trial>/fold_<k>``; without the option nothing is written."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY
from trainers.objective import Objective, StudyData
from trainers.storage import default_storage_url, make_storage
from trainers.worker import create_study


def test_each_fold_writes_sb3_scalars_only_when_asked(study_data: StudyData, tmp_path: Path) -> None:
    for on in (True, False):
        root = tmp_path / str(on)
        study = create_study(make_storage(default_storage_url(root), heartbeat_interval=None), "tb", seed=0)
        study.optimize(Objective(study_data, replace(TINY, tensorboard=on), root), n_trials=1)
        logs = root / "tensorboard" / "tb" / "0"
        if not on:
            assert not (root / "tensorboard").exists()
            continue
        assert sorted(p.name for p in logs.iterdir()) == [f"fold_{f.index}" for f in study_data.folds]
        events = EventAccumulator(str(next((logs / "fold_0").rglob("events.out.tfevents.*")).parent))
        events.Reload()
        # SB3 dumps its log after each rollout; one rollout (this tiny budget) logs its speed
        assert "time/fps" in events.Tags()["scalars"]
