"""Hot reload of the ensemble (paper_trader.reload): real files, the real watchdog observer,
real loader threads and real signals.

Ensembles are published the way the sync job does it (docs/ARCHITECTURE.md section 5): new immutable
member directories, an atomic manifest replace with ``generation`` + 1, then a touch of
``ensemble/.reload``. Members are tiny random-weight actors saved with the real
``save_bundle``, so every load runs the real hash, spec and weight checks.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from ensemble.manifest import (
    MANIFEST_FILE,
    RELOAD_FILE,
    Manifest,
    Member,
    member_dir_name,
    touch_reload,
    write_manifest,
)
from ensemble.policy import EnsemblePolicy
from paper_trader.reload import ReloadWatcher, peek_generation
from trainers.accounting import Costs
from trainers.actor import Actor
from trainers.bundle import ObservationSpec, PipelineSpec, atomic_write_bytes, save_bundle
from trainers.features import FEATURE_NAMES, FEATURE_PIPELINE_VERSION, NormStats

SYMBOLS = ("ETHUSD", "LTCUSD", "XRPUSD")
PIPELINE = PipelineSpec(SYMBOLS)
LOOKBACK = 4
WAIT_S = 60.0  # generous bound for a busy machine; no test asserts on how long anything takes


def wait_until(cond: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``cond`` until it returns a truthy value (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def make_bundle(
    directory: Path,
    seed: int,
    study: str,
    trial_id: int,
    symbols: tuple[str, ...] = SYMBOLS,
    nan: bool = False,
) -> str:
    """A tiny real bundle (random actor weights, valid model.json); returns its sha256."""
    torch.manual_seed(seed)
    spec = ObservationSpec(
        symbols,
        FEATURE_NAMES,
        LOOKBACK,
        FEATURE_PIPELINE_VERSION,
        NormStats(np.zeros((len(symbols), len(FEATURE_NAMES))), np.ones((len(symbols), len(FEATURE_NAMES)))),
    )
    actor = Actor(spec.obs_dim, len(symbols), 8, 1, "tanh")
    state = {k: v.clone() for k, v in actor.state_dict().items()}
    if nan:
        state["action_net.bias"][0] = float("nan")
    meta = {
        "algorithm": "PPO",
        "architecture": {
            "type": "mlp",
            "obs_dim": spec.obs_dim,
            "n_assets": len(symbols),
            "width": 8,
            "depth": 1,
            "activation": "tanh",
        },
        "observation_spec": spec.to_json(),
        "action_spec": {"shape": [len(symbols)], "low": -1.0, "high": 1.0},
        "costs": Costs().as_dict(),
        "hyperparameters": {"lookback": LOOKBACK},
        "study": study,
        "trial_number": trial_id,
        "trial_id": trial_id,
        "value": 0.1 * seed,
        "vin": f"TEST-{trial_id}",
        "grade": "A",
        "metrics": {},
        "data_fingerprint": "test",
        "created_at": "2024-01-01T00:00:00+00:00",
    }
    return save_bundle(directory, state, meta)


class Publisher:
    """Writes ensembles into ``<root>/ensemble`` the way the sync job does."""

    def __init__(self, root: Path, study: str = "study_a") -> None:
        self.root = root
        self.study = study
        self.dir = root / "ensemble"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest = self.dir / MANIFEST_FILE
        self._next_trial = 0

    def member(self, study: str | None = None, **bundle_kw: Any) -> Member:
        """Write a new immutable member directory and return its manifest entry."""
        study = study or self.study
        trial_id = self._next_trial
        self._next_trial += 1
        tmp = self.dir / f".building_{trial_id}"
        sha = make_bundle(tmp, seed=trial_id, study=study, trial_id=trial_id, **bundle_kw)
        name = member_dir_name(trial_id, sha)
        os.replace(tmp, self.dir / name)
        return Member(
            slot=0,
            study=study,
            trial_number=trial_id,
            trial_id=trial_id,
            value=0.1 * trial_id,
            vin=f"TEST-{trial_id}",
            grade="A",
            bundle_path=name,
            sha256=sha,
        )

    def manifest_for(self, generation: int, members: list[Member], study: str | None = None) -> Manifest:
        members = [m.model_copy(update={"slot": i}) for i, m in enumerate(members)]
        return Manifest(study=study or self.study, generation=generation, members=members)

    def publish(
        self,
        generation: int,
        members: list[Member] | None = None,
        study: str | None = None,
        touch: bool = True,
    ) -> None:
        """Atomic manifest replace (then ``.reload`` touch), as ensemble sync does."""
        members = members if members is not None else [self.member(study), self.member(study)]
        write_manifest(self.manifest, self.manifest_for(generation, members, study))
        if touch:
            touch_reload(self.dir)


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    pub = Publisher(tmp_path)
    (tmp_path / ".current_study").write_text("study_a\n")
    pub.publish(1)
    return pub


@pytest.fixture
def initial(publisher: Publisher) -> EnsemblePolicy:
    """The policy a trader starts with: generation 1."""
    policy = EnsemblePolicy.from_manifest(publisher.manifest, PIPELINE, "study_a")
    assert policy.generation == 1
    return policy


@pytest.fixture
def watcher(publisher: Publisher, initial: EnsemblePolicy) -> Iterator[ReloadWatcher]:
    w = ReloadWatcher(publisher.root, PIPELINE, initial, debounce_s=0.05)
    yield w
    w.stop()


def take_generation(w: ReloadWatcher, generation: int) -> EnsemblePolicy:
    """Wait until the watcher hands over a policy, and check its generation."""
    policy = wait_until(w.take_pending, f"a pending policy of generation {generation}")
    assert policy.generation == generation, w.status
    return policy


# -- picking up a new ensemble ------------------------------------------------------------------


def test_new_manifest_picked_up_by_file_event(watcher: ReloadWatcher, publisher: Publisher) -> None:
    watcher.start()
    publisher.publish(2, touch=False)  # only the manifest replace: the moved-to event must do it
    policy = take_generation(watcher, 2)
    assert policy.study == "study_a" and len(policy.bundles) == 2
    assert watcher.take_pending() is None  # handed over once
    status = watcher.status
    assert status["generation"] == 2 and status["reloads"] == 1 and status["rejections"] == 0
    assert status["file_events"] >= 1 and status["last_reload_at"] is not None
    assert watcher.current is policy


def test_new_manifest_picked_up_by_reload_touch(watcher: ReloadWatcher, publisher: Publisher) -> None:
    publisher.publish(2, touch=False)  # replaced before the observer starts: no event for it
    watcher.start()
    touch_reload(publisher.dir)
    take_generation(watcher, 2)
    assert watcher.status["file_events"] >= 1


def test_missed_event_caught_by_check_generation(watcher: ReloadWatcher, publisher: Publisher) -> None:
    watcher.start(observe=False)  # no file observer: every file event is missed
    assert watcher.check_generation() == 1
    publisher.publish(2)
    assert watcher.check_generation() == 2
    take_generation(watcher, 2)
    assert watcher.status["file_events"] == 0
    assert watcher.check_generation() == 2


def test_burst_is_debounced_and_last_generation_wins(publisher: Publisher, initial: EnsemblePolicy) -> None:
    members = [publisher.member() for _ in range(10)]  # member dirs written before the burst
    with ReloadWatcher(publisher.root, PIPELINE, initial, debounce_s=1.0) as w:
        for gen in range(2, 12):
            publisher.publish(gen, [members[gen - 2]])
        wait_until(lambda: w.status["pending_generation"] == 11, "generation 11 to be loaded")
        policy = w.take_pending()
        assert policy is not None and policy.generation == 11
        assert policy.bundles[0].sha256 == members[9].sha256
        status = w.status
        assert status["file_events"] >= 10  # at least one event per replacement...
        # ...but only a few loads: the first event loads at once, the rest of the burst waits
        # for a second of quiet and becomes one more load (4 leaves room for a stalled write).
        assert 1 <= status["reloads"] <= 4, status
        assert status["rejections"] == 0


def test_sighup_forces_reload(watcher: ReloadWatcher, publisher: Publisher) -> None:
    publisher.publish(2, touch=False)
    watcher.start(observe=False)  # nothing but the signal can trigger the load
    previous = signal.signal(signal.SIGHUP, lambda _signum, _frame: watcher.request_reload())
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        take_generation(watcher, 2)
        # Forced: the same generation is loaded again on request.
        os.kill(os.getpid(), signal.SIGHUP)
        again = take_generation(watcher, 2)
        assert watcher.status["reloads"] == 2
        assert watcher.current is again
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_loading_happens_on_the_loader_thread(watcher: ReloadWatcher, publisher: Publisher) -> None:
    target = EnsemblePolicy.from_manifest.__func__.__code__
    loaded_in: set[int] = set()

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event == "call" and frame.f_code is target:
            loaded_in.add(threading.get_ident())

    threading.setprofile(profile)  # threads started from now on
    sys.setprofile(profile)  # this (the "trading") thread
    try:
        watcher.start()
        loader = watcher.loader_thread
        assert loader is not None
        publisher.publish(2)
        while watcher.take_pending() is None:  # the trading thread polls between "bars"
            assert watcher.check_generation() in (1, 2)
            time.sleep(0.01)
            assert len(loaded_in) <= 1
        assert loaded_in == {loader.ident}
        assert threading.get_ident() not in loaded_in
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    watcher.stop()
    assert not loader.is_alive() and watcher.loader_thread is None
    assert watcher.status["watching"] is False


# -- rejected ensembles -----------------------------------------------------------------------------


def publish_truncated(pub: Publisher) -> None:
    good = pub.manifest_for(2, [pub.member(), pub.member()])
    raw = good.model_dump_json(indent=2).encode()
    atomic_write_bytes(pub.manifest, raw[: len(raw) // 2])
    assert peek_generation(pub.manifest) == 2  # the generation survives the truncation
    touch_reload(pub.dir)


def publish_missing_member(pub: Publisher) -> None:
    gone = pub.member()
    (pub.dir / gone.bundle_path / "actor.pth").unlink()
    (pub.dir / gone.bundle_path / "model.json").unlink()
    (pub.dir / gone.bundle_path).rmdir()
    pub.publish(2, [pub.member(), gone])


def publish_hash_mismatch(pub: Publisher) -> None:
    good, tampered = pub.member(), pub.member()
    other = pub.member()  # another actor's bytes where `tampered`'s should be
    (pub.dir / tampered.bundle_path / "actor.pth").write_bytes(
        (pub.dir / other.bundle_path / "actor.pth").read_bytes()
    )
    pub.publish(2, [good, tampered])


def publish_nan_weights(pub: Publisher) -> None:
    pub.publish(2, [pub.member(), pub.member(nan=True)])


def publish_spec_mismatch(pub: Publisher) -> None:
    pub.publish(2, [pub.member(), pub.member(symbols=("BTCUSD", "ETHUSD", "LTCUSD"))])


def publish_other_study(pub: Publisher) -> None:
    pub.publish(2, [pub.member("study_b"), pub.member("study_b")], study="study_b")


BAD_ENSEMBLES = {
    "truncated_json": (publish_truncated, "not valid JSON"),
    "missing_member": (publish_missing_member, "missing"),
    "hash_mismatch": (publish_hash_mismatch, "sha256"),
    "nan_weights": (publish_nan_weights, "NaN"),
    "spec_mismatch": (publish_spec_mismatch, "cannot be fed by this pipeline"),
    "other_study": (publish_other_study, "current study is 'study_a'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENSEMBLES))
def test_bad_ensemble_is_rejected(
    case: str, watcher: ReloadWatcher, publisher: Publisher, initial: EnsemblePolicy
) -> None:
    publish, reason_part = BAD_ENSEMBLES[case]
    watcher.start()
    with capture_logs() as logs:
        publish(publisher)
        status = wait_until(lambda: (s := watcher.status)["rejections"] >= 1 and s, "a rejection")
    assert status["rejected_generation"] == 2, status
    assert reason_part in status["rejection_reason"], status["rejection_reason"]
    assert status["rejected_at"] is not None
    # The current ensemble stays: nothing to swap in, generation 1 still trades.
    assert watcher.take_pending() is None
    assert watcher.current is initial
    assert status["generation"] == 1 and status["reloads"] == 0 and status["rejections"] == 1
    rejected = [e for e in logs if e["event"] == "ensemble_reload_rejected"]
    assert len(rejected) == 1 and rejected[0]["log_level"] == "error"
    assert rejected[0]["generation"] == 2 and reason_part in rejected[0]["reason"]
    # Trading on the current ensemble still works.
    raw = np.zeros((initial.max_lookback, len(SYMBOLS), len(FEATURE_NAMES)))
    action = initial.act(raw, np.zeros(len(SYMBOLS)))
    assert action.shape == (len(SYMBOLS),) and np.isfinite(action).all()


def test_rejected_generation_not_retried_until_newer_or_forced(
    watcher: ReloadWatcher, publisher: Publisher, initial: EnsemblePolicy
) -> None:
    watcher.start()
    publish_nan_weights(publisher)
    wait_until(lambda: watcher.status["rejections"] == 1, "the rejection of generation 2")

    # More events and per-bar checks for the same bad generation: handled, not retried.
    assert watcher.check_generation() == 2
    checks = watcher.status["load_checks"]
    touch_reload(publisher.dir)
    wait_until(lambda: watcher.status["load_checks"] > checks, "the .reload touch to be handled")
    for _ in range(20):
        watcher.check_generation()
    checks = watcher.status["load_checks"]
    touch_reload(publisher.dir)  # handled after any wake-up check_generation may have queued
    wait_until(lambda: watcher.status["load_checks"] > checks, "the second touch to be handled")
    assert watcher.status["rejections"] == 1
    assert watcher.take_pending() is None and watcher.current is initial

    # An explicit request retries it (and rejects it again).
    watcher.request_reload()
    wait_until(lambda: watcher.status["rejections"] == 2, "the forced retry")
    assert watcher.status["rejected_generation"] == 2

    # A newer, valid generation is loaded.
    publisher.publish(3)
    take_generation(watcher, 3)
    status = watcher.status
    assert status["generation"] == 3 and status["reloads"] == 1 and status["rejections"] == 2


def test_unreadable_manifest_without_generation_rejected_once(
    watcher: ReloadWatcher, publisher: Publisher, initial: EnsemblePolicy
) -> None:
    watcher.start(observe=False)
    atomic_write_bytes(publisher.manifest, b'{"schema_version": 1, "stu')
    assert watcher.check_generation() is None
    wait_until(lambda: watcher.status["rejections"] == 1, "the rejection")
    assert watcher.status["rejected_generation"] is None
    assert "not valid JSON" in watcher.status["rejection_reason"]
    checks = watcher.status["load_checks"]
    for _ in range(20):  # the same unreadable file is not requested again
        assert watcher.check_generation() is None
    watcher.request_reload()
    wait_until(lambda: watcher.status["load_checks"] > checks, "the forced check")
    assert watcher.status["rejections"] == 2  # forced retries count; the per-bar checks did not
    assert watcher.current is initial
    publisher.publish(2)
    assert watcher.check_generation() == 2
    take_generation(watcher, 2)


def test_start_creates_missing_ensemble_dir_and_loads_first_ensemble(tmp_path: Path) -> None:
    with ReloadWatcher(tmp_path, PIPELINE, None, debounce_s=0.05) as w:
        assert (tmp_path / "ensemble").is_dir()
        assert w.check_generation() is None and w.status["generation"] is None
        Publisher(tmp_path).publish(5)  # no .current_study: any study is accepted
        take_generation(w, 5)
        assert w.status["generation"] == 5 and w.status["study"] == "study_a"
        assert (tmp_path / "ensemble" / RELOAD_FILE).exists()
