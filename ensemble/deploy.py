"""The auto-deployer: promote the study's best trial to a deployment slot when it proves
itself on the validation window of the hold-out bars (``cappuccino deploy``, and the
supervisor's hourly job; :mod:`trainers.windows`).

:func:`run_deploy` takes the best COMPLETE trial of the current study (``--study`` or
``<root>/.current_study``), runs every gate of :mod:`ensemble.deploy_gate` (value
improvement, grade, not rolled back, bundle validity, validation-window Sharpe ratio and
drawdown)
and, only if all
pass, installs it as ``<root>/deployments/model_<slot>/`` with the safe replacement of
:mod:`ensemble.deploy_slot` (the replaced deployment becomes ``model_<slot>.previous``).
:func:`rollback` swaps the previous deployment back in.

Every decision (``promoted``, ``refused`` with all failing reasons, ``unchanged`` when the
best trial is already the deployed one, ``no_candidate``, ``rolled_back``,
``rollback_refused``, ``failed``) is appended as one JSON line to
``<root>/deployments/deploy_log.jsonl``. A dry run evaluates every gate and changes no file.
Deploys and rollbacks of one root are serialised by an ``flock`` on
``deployments/.deploy.lock``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
from optuna.distributions import distribution_to_json
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ensemble.deploy_gate import (
    DeployThresholds,
    GateResult,
    check_bundle,
    check_grade,
    check_holdout,
    check_improvement,
    check_not_rolled_back,
    parse_cut,
)
from ensemble.deploy_slot import (
    SlotError,
    current_deployment,
    deployments_dir,
    install_slot,
    repair_slot,
    slot_dir,
    stage_slot,
    swap_previous,
)
from trainers.bundle import PipelineSpec
from trainers.data import DataError, Panel, load_panel
from trainers.features import ALL_FEATURE_NAMES, compute_features
from trainers.runtime.current_study import require_current_study
from trainers.runtime.pidlock import holding
from trainers.storage import default_storage_url, make_storage, redact_url
from trainers.study_db import StudyDBError, open_engine, rank_trials

log = logging.getLogger(__name__)

DEPLOY_LOG_FILE = "deploy_log.jsonl"
DEFAULT_CANDIDATES = 5
LOCK_FILE = ".deploy.lock"

Decision = Literal[
    "promoted", "refused", "unchanged", "no_candidate", "rolled_back", "rollback_refused", "failed"
]


class DeployError(RuntimeError):
    """The deployer cannot run (unknown study, no storage, bad data or arguments, a failed
    install); the message names what is wrong. The slot keeps its last good deployment."""


@dataclass
class DeployDecision:
    """What the deployer decided, and why (the deploy-log line, see :meth:`to_json`).

    ``deployed`` summarises the deployment the decision was measured against (or, for a
    rollback, the one that was rolled back); ``gates`` maps gate name to its result.
    """

    decision: Decision
    study: str | None
    slot: int
    dry_run: bool = False
    trial_number: int | None = None
    trial_id: int | None = None
    vin: str | None = None
    grade: str | None = None
    value: float | None = None
    deployed: dict[str, Any] | None = None
    gates: dict[str, GateResult] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    earlier: list[DeployDecision] = field(default_factory=list)

    @property
    def deployed_value(self) -> float | None:
        return None if self.deployed is None else self.deployed.get("value")

    def to_json(self) -> dict[str, Any]:
        """The deploy-log record: time, study, slot, trial, VIN, value, deployed value,
        gate results, decision and reasons."""
        return {
            "time": self.time,
            "decision": self.decision,
            "dry_run": self.dry_run,
            "study": self.study,
            "slot": self.slot,
            "trial": self.trial_number,
            "trial_id": self.trial_id,
            "vin": self.vin,
            "grade": self.grade,
            "value": self.value,
            "deployed_value": self.deployed_value,
            "deployed": self.deployed,
            "gates": {name: g.as_dict() for name, g in self.gates.items()},
            "reasons": list(self.reasons),
        }

    def summary(self) -> str:
        """One line for a person: the outcome and its reasons."""
        who = f"study {self.study!r} trial {self.trial_number} ({self.vin}, value {_fmt(self.value)})"
        prefix = "dry run: would have " if self.dry_run else ""
        d = self.decision
        if d == "promoted":
            h = self.gates["holdout"].details
            return (
                f"{prefix}promoted: {who} to deployments/model_{self.slot} "
                f"(deployed value {_fmt(self.deployed_value)}; validation-window Sharpe {h['sharpe']:.3f}, "
                f"max drawdown {h['max_drawdown']:.3f})"
            )
        if d == "refused":
            return f"{prefix}refused: {who}: " + "; ".join(self.reasons)
        if d == "unchanged":
            return f"unchanged: {who} is already deployed in slot {self.slot}"
        if d == "no_candidate":
            return f"no candidate: study {self.study!r} has no COMPLETE trial"
        if d == "rolled_back":
            was = self.deployed or {}
            return (
                f"rolled back: slot {self.slot} now holds {who}; "
                f"trial {was.get('trial_number')} ({was.get('vin')}) moved to model_{self.slot}.previous"
            )
        return f"{d.replace('_', ' ')}: " + "; ".join(self.reasons)


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"


def _summary_of(info: dict[str, Any] | None) -> dict[str, Any] | None:
    keys = ("study", "trial_number", "trial_id", "vin", "grade", "value", "sha256", "deployed_at")
    return None if info is None else {k: info.get(k) for k in keys}


def open_study(storage_url: str, study: str) -> optuna.Study:
    """Load an existing maximising study; never creates a storage or a study.

    Raises:
        DeployError: bad URL, a SQLite file that does not exist, an unreachable server,
            an unknown study, or a study that is not maximising.
    """
    try:
        url = make_url(storage_url)
    except ArgumentError:
        raise DeployError(f"storage URL {redact_url(storage_url)!r} cannot be parsed") from None
    if url.get_backend_name() == "sqlite":
        database = url.database
        if not database or database == ":memory:" or not Path(database).is_file():
            raise DeployError(
                f"no storage: SQLite database {database!r} does not exist (check --storage/--root)"
            )
    try:
        storage = make_storage(storage_url, heartbeat_interval=None)
        loaded = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        raise DeployError(f"unknown study {study!r} in storage {redact_url(storage_url)}") from None
    except (ValueError, SQLAlchemyError) as exc:
        raise DeployError(f"storage {redact_url(storage_url)}: {type(exc).__name__}: {exc}") from None
    if loaded.direction != StudyDirection.MAXIMIZE:
        raise DeployError(f"study {study!r} is not maximising; the deployer promotes the highest value")
    return loaded


def trial_metadata(study: str, trial: FrozenTrial) -> dict[str, Any]:
    """``trial_metadata.json``: the trial as Optuna recorded it (params decoded)."""
    return {
        "study": study,
        "trial_number": trial.number,
        "trial_id": trial._trial_id,
        "state": trial.state.name,
        "value": trial.value,
        "params": dict(trial.params),
        "distributions": {k: json.loads(distribution_to_json(d)) for k, d in trial.distributions.items()},
        "user_attrs": dict(trial.user_attrs),
        "datetime_start": None if trial.datetime_start is None else trial.datetime_start.isoformat(),
        "datetime_complete": None if trial.datetime_complete is None else trial.datetime_complete.isoformat(),
    }


def append_log(root: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``<root>/deployments/deploy_log.jsonl`` (single write, fsync)."""
    path = deployments_dir(root) / DEPLOY_LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_log(root: str | Path) -> list[dict[str, Any]]:
    """Every record of the deploy log, oldest first (empty when there is none; a line that
    is not a JSON object, e.g. cut short by a full disk, is skipped)."""
    path = deployments_dir(root) / DEPLOY_LOG_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def rolled_back_from(root: str | Path, slot: int, study: str, trial_id: int) -> dict[str, Any] | None:
    """The deploy-log record of the latest rollback that removed this trial from ``slot``,
    or None if there was none or a later rollback restored it."""
    hit = None
    for record in read_log(root):
        if record.get("decision") != "rolled_back" or record.get("slot") != slot:
            continue
        removed = record.get("deployed") or {}
        if (removed.get("study"), removed.get("trial_id")) == (study, trial_id):
            hit = record
        elif (record.get("study"), record.get("trial_id")) == (study, trial_id):
            hit = None
    return hit


@contextlib.contextmanager
def deploy_lock(root: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``deployments/.deploy.lock`` (waits for another deployer)."""
    with holding(deployments_dir(root) / LOCK_FILE, blocking=True):
        yield


def _record(root: Path, decision: DeployDecision) -> DeployDecision:
    if not decision.dry_run:
        append_log(root, decision.to_json())
    log.info("deploy %s", decision.summary(), extra={"component": "deployer", "study": decision.study})
    return decision


def run_deploy(
    root: str | Path,
    study: str | None = None,
    storage: str | None = None,
    slot: int = 0,
    thresholds: DeployThresholds | None = None,
    data: str | Path | None = None,
    holdout_cut: str | None = None,
    dry_run: bool = False,
    candidates: int = DEFAULT_CANDIDATES,
) -> DeployDecision:
    """Try the study's best COMPLETE trials in value order (at most ``candidates``) and
    promote the first that passes every gate to ``deployments/model_<slot>`` (see the module
    docstrings of this module and :mod:`ensemble.deploy_gate`). Each refused candidate is a
    line of the deploy log; trying stops at a promotion, or at the trial already deployed.

    Args:
        root: runtime root.
        study: study name; None = ``<root>/.current_study``.
        storage: storage URL; None = ``sqlite:///<root>/optuna.db``.
        slot: deployment slot (>= 0).
        thresholds: gate thresholds (None = defaults: 1%, grade A, Sharpe 0.5, drawdown 0.25).
        data: dataset folder for the hold-out backtest; None = the embedded dataset.
        holdout_cut: first hold-out bar (UTC ISO 8601); None = the trial's own training cut.
        dry_run: evaluate everything, change no file (not even the deploy log).
        candidates: how many of the best trials to try (>= 1).

    Returns:
        The last decision (every decision is appended to the deploy log unless
        ``dry_run``); ``earlier`` holds the refusals before it.

    Raises:
        DeployError: unknown study, no storage, bad data or cut, or a failed install (the
            slot then still holds a valid deployment).
    """
    root = Path(root)
    if slot < 0:
        raise DeployError(f"slot must be >= 0, got {slot}")
    if candidates < 1:
        raise DeployError(f"candidates must be >= 1, got {candidates}")
    thresholds = thresholds or DeployThresholds()
    if holdout_cut is not None:
        try:
            parse_cut(holdout_cut)
        except ValueError as exc:
            raise DeployError(str(exc)) from None
    try:
        name = study or require_current_study(root)
    except ValueError as exc:
        raise DeployError(str(exc)) from None
    url = storage or default_storage_url(root)
    loaded = open_study(url, name)
    try:
        ranked = rank_trials(open_engine(url), name, candidates)
    except StudyDBError as exc:
        raise DeployError(str(exc)) from None
    lock = contextlib.nullcontext() if dry_run else deploy_lock(root)
    with lock:
        if not dry_run:
            for action in repair_slot(root, slot):
                log.warning("deployments/model_%d: %s", slot, action)
        current, problem = current_deployment(root, slot)
        if not ranked:
            return _record(
                root, DeployDecision("no_candidate", name, slot, dry_run, deployed=_summary_of(current))
            )
        try:
            panel = load_panel(data)
        except DataError as exc:
            raise DeployError(f"hold-out data: {exc}") from None
        features = compute_features(panel.prices, ALL_FEATURE_NAMES)
        earlier: list[DeployDecision] = []
        for candidate in ranked:
            trial = loaded._storage.get_trial(candidate.trial_id)
            decision = _record(
                root,
                _decide(
                    root,
                    trial,
                    name,
                    slot,
                    thresholds,
                    panel,
                    features,
                    holdout_cut,
                    dry_run,
                    current,
                    problem,
                ),
            )
            if decision.decision != "refused":
                break
            earlier.append(decision)
        decision.earlier = [d for d in earlier if d is not decision]
        return decision


def _decide(
    root: Path,
    trial: FrozenTrial,
    name: str,
    slot: int,
    thresholds: DeployThresholds,
    panel: Panel,
    features: np.ndarray,
    holdout_cut: str | None,
    dry_run: bool,
    current: dict[str, Any] | None,
    problem: str | None,
) -> DeployDecision:
    """The gates of one candidate trial (promoted: installed unless ``dry_run``)."""
    attrs = trial.user_attrs
    decision = DeployDecision(
        "refused",
        name,
        slot,
        dry_run,
        trial.number,
        trial._trial_id,
        attrs.get("vin"),
        attrs.get("grade"),
        trial.value,
        _summary_of(current),
    )
    if (
        current is not None
        and current.get("study") == name
        and current.get("trial_id") == trial._trial_id
        and current.get("sha256") == attrs.get("actor_sha256")
    ):
        decision.decision = "unchanged"
        return decision
    assert trial.value is not None
    gates = decision.gates
    gates["improvement"] = check_improvement(
        trial.value, None if current is None else float(current["value"]), thresholds.min_improvement
    )
    if problem is not None:
        gates["improvement"].details["current_deployment_problem"] = problem
    gates["grade"] = check_grade(attrs.get("grade"), thresholds.min_grade)
    gates["rollback"] = check_not_rolled_back(rolled_back_from(root, slot, name, trial._trial_id), slot)
    with tempfile.TemporaryDirectory(prefix="cappuccino-deploy-") as tmp:
        gates["bundle"], bundle, bundle_dir = check_bundle(
            root, trial, name, PipelineSpec(panel.symbols), Path(tmp)
        )
        if bundle is None:
            gates["holdout"] = GateResult("holdout", "skipped", [], {"why": "no valid bundle"})
        else:
            try:
                gates["holdout"] = check_holdout(bundle, panel, features, holdout_cut, thresholds)
            except ValueError as exc:
                raise DeployError(f"hold-out backtest: {exc}") from None
        decision.reasons = [r for g in gates.values() for r in g.reasons]
        if not all(g.passed for g in gates.values()):
            return decision
        decision.decision = "promoted"
        if not dry_run:
            assert bundle_dir is not None
            _install(root, slot, name, trial, bundle_dir, decision, thresholds, current)
    return decision


def _install(
    root: Path,
    slot: int,
    name: str,
    trial: FrozenTrial,
    bundle_dir: Path,
    decision: DeployDecision,
    thresholds: DeployThresholds,
    current: dict[str, Any] | None,
) -> None:
    info = {
        "slot": slot,
        "deployed_at": decision.time,
        "study": name,
        "trial_number": trial.number,
        "trial_id": trial._trial_id,
        "vin": decision.vin,
        "grade": decision.grade,
        "value": trial.value,
        "sha256": trial.user_attrs["actor_sha256"],
        "source": decision.gates["bundle"].details.get("source"),
        "holdout": decision.gates["holdout"].details,
        "gates": {n: g.as_dict() for n, g in decision.gates.items()},
        "thresholds": thresholds.as_dict(),
        "previous": _summary_of(current),
    }
    try:
        stage = stage_slot(root, slot, bundle_dir, trial_metadata(name, trial), info)
        install_slot(root, slot, stage)
    except (OSError, SlotError) as exc:
        decision.decision = "failed"
        decision.reasons = [f"install into {slot_dir(root, slot)} failed: {exc}"]
        _record(root, decision)
        raise DeployError(decision.reasons[0] + " (the slot keeps its deployment)") from None


def rollback(root: str | Path, slot: int = 0) -> DeployDecision:
    """Swap ``deployments/model_<slot>.previous`` back in (the current deployment becomes the
    previous one, so a second rollback undoes the first); recorded in the deploy log.

    Returns:
        ``rolled_back`` with the restored trial, or ``rollback_refused`` with the reason
        (no previous deployment, or one that fails verification; nothing is changed).
    """
    root = Path(root)
    if slot < 0:
        raise DeployError(f"slot must be >= 0, got {slot}")
    with deploy_lock(root):
        for action in repair_slot(root, slot):
            log.warning("deployments/model_%d: %s", slot, action)
        current, _ = current_deployment(root, slot)
        try:
            info = swap_previous(root, slot)
        except (SlotError, OSError) as exc:
            refused = DeployDecision(
                "rollback_refused", None if current is None else current.get("study"), slot
            )
            refused.deployed = _summary_of(current)
            refused.reasons = [str(exc)]
            return _record(root, refused)
        done = DeployDecision(
            "rolled_back",
            info.get("study"),
            slot,
            trial_number=info.get("trial_number"),
            trial_id=info.get("trial_id"),
            vin=info.get("vin"),
            grade=info.get("grade"),
            value=info.get("value"),
            deployed=_summary_of(current),
        )
        return _record(root, done)
