"""Shared fixtures: one torch thread per test process, the embedded panel, and a small real
study trained on the embedded dataset with a tiny budget (for the ensemble, deployer and
paper-trader tests)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import psycopg
import pytest
import torch

from tests.s3_server import s3_server  # noqa: F401  (the fixture of the tests marked s3)
from trainers.data import Panel, load_panel
from trainers.objective import Objective, StudyData, TrainingConfig
from trainers.storage import default_storage_url, make_storage
from trainers.worker import create_study

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = TrainingConfig(budget_steps=256, n_envs=2, seed=0)


@pytest.fixture(scope="session")
def panel() -> Panel:
    """The embedded dataset, aligned."""
    return load_panel()


@pytest.fixture(scope="session")
def study_data() -> StudyData:
    """Study bars, features and quick-mode folds of the embedded dataset."""
    return StudyData.load(None, TINY)


@dataclass(frozen=True)
class TrainedStudy:
    root: Path
    storage_url: str
    study_name: str


@pytest.fixture(scope="session")
def trained_study(tmp_path_factory: pytest.TempPathFactory, study_data: StudyData) -> TrainedStudy:
    """A real 3-trial quick-mode study (tiny budget) in a temp root, with bundles and
    artifacts. Treat it as read-only; copy the root to modify it."""
    root = tmp_path_factory.mktemp("trained_root")
    url = default_storage_url(root)
    study = create_study(make_storage(url, heartbeat_interval=None), "fixture_study", seed=0)
    study.optimize(Objective(study_data, TINY, root), n_trials=3)
    return TrainedStudy(root, url, "fixture_study")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A uniquely named database on the PostgreSQL server at 127.0.0.1:5432 (user postgres,
    trust auth), dropped afterwards. Yields its ``postgresql://`` URL."""
    name = f"cappuccino_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """:func:`postgres_database` as a fixture."""
    with postgres_database() as url:
        yield url
