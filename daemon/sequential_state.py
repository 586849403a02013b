"""The state of a sequential training run (``start-training --sequential``): the file
``<root>/run/sequential.json`` (:attr:`trainers.runtime.layout.Layout.sequential`).

Its writers are the training requests (:mod:`daemon.training_control`: start, set-study;
:func:`daemon.sequential.continue_training`) and the supervisor's ``sequential`` job
(:mod:`daemon.sequential`), each under ``run/training.lock``; it is written atomically
(:func:`trainers.atomic_io.atomic_write_json`). Readers: the supervisor (which study its
workers train), the status document and the dashboard.

Stages (``stage``):

* ``quick``: stage 1, the workers train ``<name>_quick`` in quick mode;
* ``gate_refused``: the quick study reached its target but the gate refused it: it stays in
  stage 1 (the gate is evaluated again at every check, so a changed ``[sequential]``
  configuration can still let it through);
* ``awaiting_confirmation``: the gate passed and the run was started with ``--confirm``:
  waiting for ``cappuccino continue``;
* ``full_warmup``: stage 2 has begun: the best quick parameter sets are enqueued in
  ``<name>_full`` and the workers train it in full mode, while ``.current_study`` (the
  ensemble, deployer and trader) still names the quick study;
* ``full``: the full study has ``top_k`` COMPLETE trials and is the current study;
* ``superseded``: another training request (a plain ``start-training``, or ``set-study`` to
  another study) replaced the run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainers.atomic_io import atomic_write_json, read_json
from trainers.runtime.current_study import MAX_STUDY_NAME
from trainers.runtime.layout import Layout

SCHEMA = 1
QUICK_SUFFIX = "_quick"
FULL_SUFFIX = "_full"
Stage = Literal["quick", "gate_refused", "awaiting_confirmation", "full_warmup", "full", "superseded"]
ACTIVE_STAGES: frozenset[str] = frozenset(
    {"quick", "gate_refused", "awaiting_confirmation", "full_warmup", "full"}
)
STAGE_NUMBER: dict[str, int | None] = {
    "quick": 1,
    "gate_refused": 1,
    "awaiting_confirmation": 1,
    "full_warmup": 2,
    "full": 2,
    "superseded": None,
}


def now_iso() -> str:
    """The current UTC time, ISO 8601 (seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def study_names(name: str) -> tuple[str, str]:
    """``(<name>_quick, <name>_full)``.

    Raises:
        ValueError: ``name`` is empty, has a line break, or the names would exceed
            :data:`MAX_STUDY_NAME` characters.
    """
    if not name or "\n" in name or "\r" in name:
        raise ValueError(f"invalid study name {name!r}: one non-empty line expected")
    quick, full = name + QUICK_SUFFIX, name + FULL_SUFFIX
    if len(quick) > MAX_STUDY_NAME:
        raise ValueError(
            f"study name {name!r} too long for a sequential run: {quick!r} would exceed "
            f"{MAX_STUDY_NAME} characters"
        )
    return quick, full


class SequentialRun(BaseModel):
    """The content of ``run/sequential.json`` (schema 1).

    Attributes:
        name: the base name; the studies are ``quick_study`` and ``full_study``.
        n_trials: the full study's trial target (the request's ``n_trials``).
        quick_trials: the quick study's trial target (finished trials before the gate).
        budget_steps: env steps per fold of both stages (None: ``study.budget_steps``).
        confirm: wait for ``cappuccino continue`` between the stages.
        stage: see the module docstring.
        training_study: the study the workers train (the quick study in stage 1, the full
            study in stage 2).
        gate: the last gate evaluation (:func:`daemon.sequential.evaluate_gate`), or None.
        enqueued: the quick trials whose parameters were enqueued in the full study
            (``{"quick_trial", "value", "params"}``).
        history: ``{"at", "stage", "note"}`` per stage change, oldest first.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(SCHEMA, alias="schema")
    name: str
    quick_study: str
    full_study: str
    n_trials: int = Field(ge=1)
    quick_trials: int = Field(ge=1)
    budget_steps: int | None = None
    confirm: bool = False
    stage: Stage = "quick"
    training_study: str
    started_at: str
    updated_at: str
    stage_since: str
    gate: dict[str, Any] | None = None
    enqueued: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []

    @property
    def active(self) -> bool:
        return self.stage in ACTIVE_STAGES

    def studies(self) -> tuple[str, str]:
        return self.quick_study, self.full_study

    def to_stage(self, stage: Stage, note: str) -> None:
        """Move to ``stage`` (recorded in ``history`` with ``note``)."""
        at = now_iso()
        self.stage, self.stage_since, self.updated_at = stage, at, at
        self.history.append({"at": at, "stage": stage, "note": note})

    def as_dict(self) -> dict[str, Any]:
        """The JSON document (``schema`` key; ``stage_number`` 1 or 2, None when superseded)."""
        return {**self.model_dump(by_alias=True), "stage_number": STAGE_NUMBER[self.stage]}


class SequentialStateError(ValueError):
    """``run/sequential.json`` exists but is not a readable state (the message names it)."""


def read_run(root: str | Path) -> SequentialRun | None:
    """The sequential run recorded under ``root``, None when there is none.

    Raises:
        SequentialStateError: the file is not JSON or not of the schema.
    """
    path = Layout(root).sequential
    try:
        data = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SequentialStateError(f"{path}: unreadable ({exc})") from None
    try:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "stage_number"}  # derived, see as_dict
        return SequentialRun.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SequentialStateError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def write_run(root: str | Path, run: SequentialRun) -> None:
    """Write ``run/sequential.json`` atomically (the caller holds ``run/training.lock``).

    Raises:
        OSError: it cannot be written.
    """
    run.updated_at = now_iso()
    path = Layout(root).sequential
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, run.as_dict())


def status_view(root: str | Path) -> dict[str, Any] | None:
    """What the status document shows: the run's JSON, ``{"error": ...}`` for an unreadable
    file, None without a run."""
    try:
        run = read_run(root)
    except SequentialStateError as exc:
        return {"error": str(exc)}
    return None if run is None else run.as_dict()


def worker_study(root: str | Path, current: str) -> str:
    """The study the supervisor's workers train: the active sequential run's
    ``training_study`` when ``current`` is one of its studies, else ``current``. An
    unreadable state file counts as no run."""
    try:
        run = read_run(root)
    except SequentialStateError:
        return current
    if run is not None and run.active and current in run.studies():
        return run.training_study
    return current


def supersede(root: str | Path, note: str, keep: str | None = None) -> bool:
    """Mark an active run ``superseded`` (the caller holds ``run/training.lock``) unless
    ``keep`` is one of its studies; returns whether it did. An unreadable file is left as it is."""
    try:
        run = read_run(root)
    except SequentialStateError:
        return False
    if run is None or not run.active or (keep is not None and keep in run.studies()):
        return False
    run.to_stage("superseded", note)
    write_run(root, run)
    return True
