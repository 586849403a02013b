"""Budgets that follow promise: with a budget ladder every trial trains all folds to the
first rung; Optuna's successive-halving pruner stops the weaker ones there, and the models
of the others continue to the next rung."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from trainers.algorithms import PPOParams
from trainers.objective import (
    FoldLearner,
    Objective,
    StudyData,
    TrainingConfig,
    halving_pruner,
    objective_value,
)
from trainers.storage import default_storage_url, make_storage
from trainers.worker import create_study

LADDER = (256, 768)
CONFIG = TrainingConfig(n_envs=2, seed=0, budget_ladder=LADDER)


def test_a_learner_continues_the_same_model_up_the_ladder(study_data: StudyData) -> None:
    learner = FoldLearner(study_data, study_data.folds[0], PPOParams(n_steps=128), CONFIG, 0)
    learner.train_to(256)
    first = learner.evaluate()
    model = learner.model
    learner.train_to(768)
    second = learner.evaluate()
    assert learner.model is model
    assert first.metrics["train_steps"] == 256 and second.metrics["train_steps"] == 768
    assert first.state["action_net.weight"].ne(second.state["action_net.weight"]).any()


def test_the_ladder_is_validated() -> None:
    for bad in ((768, 256), (0, 256), (256, 256)):
        with pytest.raises(ValueError, match="budget_ladder"):
            TrainingConfig(budget_ladder=bad)
    assert TrainingConfig(budget_ladder=LADDER).final_budget == 768
    assert TrainingConfig(budget_steps=5000).final_budget == 5000
    pruner = halving_pruner((10_000, 30_000, 90_000))
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert pruner._min_resource == 10_000 and pruner._reduction_factor == 3


@pytest.mark.slow
def test_weak_trials_stop_at_the_first_rung_and_strong_ones_climb(
    study_data: StudyData, tmp_path: Path
) -> None:
    url = default_storage_url(tmp_path)
    storage = make_storage(url, heartbeat_interval=None)
    study = create_study(storage, "ladder", seed=0, pruner=halving_pruner(LADDER))
    study.optimize(Objective(study_data, CONFIG, tmp_path), n_trials=5)
    trials = study.get_trials(deepcopy=False)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete, [t.state for t in trials]
    for t in pruned:
        assert set(t.intermediate_values) == {256}
        # SB3 trains whole rollouts (n_steps * n_envs samples), so a rung rounds up to one
        assert all(256 <= m["train_steps"] < 768 + 2048 for m in t.user_attrs["fold_metrics"])
    for t in complete:
        assert set(t.intermediate_values) == {256, 768}
        folds = t.user_attrs["fold_metrics"]
        assert len(folds) == len(study_data.folds)
        assert all(m["train_steps"] >= 768 for m in folds)
        assert t.value == pytest.approx(objective_value([m["excess_sharpe"] for m in folds]))
        assert t.user_attrs["budget_ladder"] == [256, 768] and t.user_attrs["budget_steps"] == 768
    # a pruned trial was below the best value at the first rung
    best_first = max(t.intermediate_values[256] for t in trials if 256 in t.intermediate_values)
    assert all(t.intermediate_values[256] < best_first for t in pruned)
