"""Request bodies of the control API. Every body forbids unknown fields, so a misspelt or
unsupported field is a 422 that names it, like a bad value.

``POST /api/training/start`` takes the fields of ``cappuccino start-training``. The seed
system's window fields map onto the walk-forward mode (``trainers/splits.py``), whose
windows are fixed: ``quick`` = fixed 180-day train windows and five 60-day test windows,
``full`` = an expanding train window from 120 days and 21-day test windows.
``use_expanding_window`` chooses the mode (true = ``full``, false = ``quick``);
``test_period_days`` and ``min_train_days`` are accepted only when they equal the mode's
(otherwise 422 naming the field). ``symbol`` and ``timeframe`` are not fields: the dataset
(``study.data``) decides both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from trainers.accounting import CostOverrides
from trainers.runtime.current_study import MAX_STUDY_NAME
from trainers.splits import FULL_FIRST_TRAIN_DAYS, FULL_TEST_DAYS, QUICK_TEST_DAYS, QUICK_TRAIN_DAYS

StudyName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_STUDY_NAME,
        pattern=r"^[^\r\n]+$",
        description="Optuna study name (one line, at most 200 characters)",
    ),
]

WINDOWS: dict[str, dict[str, int]] = {
    "quick": {"test_period_days": QUICK_TEST_DAYS, "min_train_days": QUICK_TRAIN_DAYS},
    "full": {"test_period_days": FULL_TEST_DAYS, "min_train_days": FULL_FIRST_TRAIN_DAYS},
}
"""The fixed windows of each walk-forward mode, in days (``trainers/splits.py``)."""


class Body(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class TrainingStart(Body, CostOverrides):
    """``POST /api/training/start``: what ``cappuccino start-training`` takes. The cost
    fields (fee, slippage, min_cash, max_weight, trailing_stop, min_trade) choose a new
    study's execution model; unset = the configuration's ``[costs]``."""

    study: StudyName
    n_trials: int = Field(ge=1, description="finished trials to reach")
    workers: int = Field(ge=0, le=256, description="training worker processes")
    mode: Literal["quick", "full"] | None = Field(
        None, description="walk-forward mode; default: the configuration's study.mode"
    )
    budget_steps: int | None = Field(
        None, ge=1, description="env steps per fold; default: study.budget_steps"
    )
    use_expanding_window: bool | None = Field(
        None, description="true = mode full (expanding train window), false = mode quick (fixed windows)"
    )
    test_period_days: int | None = Field(
        None, ge=1, description=f"must equal the mode's: quick {QUICK_TEST_DAYS}, full {FULL_TEST_DAYS}"
    )
    min_train_days: int | None = Field(
        None,
        ge=1,
        description=f"must equal the mode's: quick {QUICK_TRAIN_DAYS}, full {FULL_FIRST_TRAIN_DAYS}",
    )
    sequential: bool = Field(
        False,
        description="two stages: <study>_quick (quick mode), the gate, then <study>_full (full mode) "
        "seeded with the best quick parameters; n_trials is the full study's; no mode",
    )
    quick_trials: int | None = Field(
        None, ge=1, description="sequential: quick trials before the gate; default sequential.quick_trials"
    )
    confirm: bool = Field(
        False, description="sequential: wait for POST /api/training/continue between the stages"
    )

    @field_validator("use_expanding_window")
    @classmethod
    def _expanding_is_full(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        mode = info.data.get("mode")
        if value is not None and mode is not None and value != (mode == "full"):
            raise ValueError(
                f"use_expanding_window={str(value).lower()} contradicts mode {mode!r} "
                "(mode full has the expanding train window, mode quick fixed ones)"
            )
        return value

    def resolved_mode(self) -> Literal["quick", "full"] | None:
        """``mode``, else the one ``use_expanding_window`` names, else None (the config's)."""
        if self.mode is not None:
            return self.mode
        if self.use_expanding_window is not None:
            return "full" if self.use_expanding_window else "quick"
        return None

    def window_errors(self, config_mode: str) -> list[dict[str, Any]]:
        """Validation errors (``loc`` ``("body", field)``) of ``test_period_days`` and
        ``min_train_days`` against the windows of the mode in force (:meth:`resolved_mode`,
        else ``config_mode``); empty when they fit."""
        mode = self.resolved_mode() or config_mode
        errors = []
        for name, days in WINDOWS[mode].items():
            given = getattr(self, name)
            if given is not None and given != days:
                errors.append(
                    {
                        "type": "value_error",
                        "loc": ("body", name),
                        "msg": f"mode {mode!r} has fixed {days}-day windows here, not {given}; "
                        f"windows: quick = {QUICK_TRAIN_DAYS}-day train, {QUICK_TEST_DAYS}-day tests; "
                        f"full = expanding from {FULL_FIRST_TRAIN_DAYS} days, {FULL_TEST_DAYS}-day tests",
                        "input": given,
                    }
                )
        return errors


class TrainingContinue(Body):
    """``POST /api/training/continue``: ``force`` also begins stage 2 after a refused gate."""

    force: bool = False


class StudySelect(Body):
    """``POST /api/study/current``: the study every component should follow."""

    study: StudyName


class DeployRequest(Body):
    """``POST /api/deploy``: ``dry_run`` evaluates the gates and changes nothing."""

    dry_run: bool = False
