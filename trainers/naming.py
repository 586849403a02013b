"""Trial names (VIN codes) and grades.

A VIN reads ``[TYPE]-[GRADE]-[ARCH]-[OPT]-[ENV]-[YYYYMMDD]``, for example
``PPO-A-N1024B4K-L2E6G98-LB5TD20-20260214``:

* TYPE: algorithm (``PPO``).
* GRADE: ``S``, ``A``, ``B``, ``C``, ``D`` or ``F`` (see :func:`grade_for`).
* ARCH: ``N<net width>B<batch size>``; a batch size that is a multiple of 1024 uses ``K``
  (``B4K`` = 4096).
* OPT: ``L<m>E<e>`` learning rate ``m * 10**-e`` with a 1-2 digit mantissa
  (``L2E6`` = 2e-6, ``L35E5`` = 3.5e-4), ``G<digits>`` gamma as its decimals
  (``G98`` = 0.98, ``G995`` = 0.995).
* ENV: ``LB<lookback bars>TD<trailing stop in percent>`` (``TD20`` = 0.20; the trailing
  stop of the study's execution model).
* date of creation, UTC.

A grade is shown with whether the trial beats both constant baselines of its study
(:func:`grade_with_baselines`): in falling folds the always-in-cash policy alone earns a
high grade, so a grade on its own does not say the agent learnt anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

GRADES = ("S", "A", "B", "C", "D", "F")
DEFAULT_GRADE_THRESHOLDS: dict[str, float] = {"S": 0.30, "A": 0.20, "B": 0.15, "C": 0.10, "D": 0.05}

_VIN_RE = re.compile(
    r"^(?P<type>[A-Z0-9]+)-(?P<grade>[SABCDF])-N(?P<width>\d+)B(?P<batch>\d+K?)"
    r"-L(?P<lr_m>\d{1,2})E(?P<lr_e>\d{1,2})G(?P<gamma>\d{1,4})"
    r"-LB(?P<lookback>\d+)TD(?P<trail>\d{1,2})-(?P<date>\d{8})$"
)


class VinError(ValueError):
    """A string that is not a valid VIN; the message names the string."""


@dataclass(frozen=True)
class Vin:
    """The decoded fields of a VIN."""

    algorithm: str
    grade: str
    net_width: int
    batch_size: int
    learning_rate: float
    gamma: float
    lookback: int
    trailing_stop: float
    created: date

    def __str__(self) -> str:
        return format_vin(self)


def grade_for(value: float | None, thresholds: dict[str, float] | None = None) -> str:
    """Grade of an objective value: the best grade whose threshold it reaches, else ``F``.

    Defaults: S >= 0.30, A >= 0.20, B >= 0.15, C >= 0.10, D >= 0.05. ``None``/NaN -> ``F``.
    """
    t = DEFAULT_GRADE_THRESHOLDS if thresholds is None else thresholds
    if value is None or math.isnan(value):
        return "F"
    for g in GRADES[:-1]:
        if g in t and value >= t[g]:
            return g
    return "F"


BASELINE_LABELS: dict[str, str] = {"invested": "always invested", "cash": "always in cash"}
"""Display names of the constant-policy baselines (:mod:`trainers.fold_baselines`)."""
ZERO_ACTION_LABEL = "untrained start"
"""Display name of where the study's design starts (:func:`trainers.fold_baselines.zero_action_folds`):
a reference for reading values, not one of the baselines of the verdict."""


def beats_baselines(value: float | None, baselines: Mapping[str, float] | None) -> bool | None:
    """True when the objective value is above every baseline value (a tie does not beat);
    None when the value or the baselines are unknown.

    Args:
        value: a trial's objective value.
        baselines: ``{"invested": value, "cash": value}`` on the same folds and costs
            (:meth:`trainers.study_db.baselines.StudyBaselines.values`), or None.
    """
    if value is None or not baselines or math.isnan(value):
        return None
    return all(value > b for b in baselines.values())


def baseline_note(value: float | None, baselines: Mapping[str, float] | None) -> str:
    """``beats both baselines``, ``below always in cash +1.3400`` (every baseline it does not
    beat, with its value), or ``baselines not recorded``."""
    if not baselines:
        return "baselines not recorded"
    verdict = beats_baselines(value, baselines)
    if verdict is None or value is None:
        return "no value"
    if verdict:
        return "beats both baselines"
    below = [f"{BASELINE_LABELS.get(k, k)} {b:+.4f}" for k, b in baselines.items() if not value > b]
    return "below " + " and ".join(below)


def grade_with_baselines(
    grade: str | None, value: float | None, baselines: Mapping[str, float] | None
) -> str:
    """A grade with its baseline verdict: ``A (beats both baselines)``,
    ``S (below always in cash +1.3400)``."""
    return f"{grade or '-'} ({baseline_note(value, baselines)})"


def grade_at_least(grade: str, minimum: str) -> bool:
    """True when ``grade`` is ``minimum`` or better (S best, F worst)."""
    return GRADES.index(grade) <= GRADES.index(minimum)


def _size(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _parse_size(s: str) -> int:
    return int(s[:-1]) * 1024 if s.endswith("K") else int(s)


def _lr_code(lr: float) -> tuple[int, int]:
    """``lr`` as ``(m, e)`` with ``lr ~= m * 10**-e`` and ``m`` of 1-2 significant digits."""
    if not (0 < lr < 1):
        raise VinError(f"learning rate {lr} outside (0, 1)")
    e = math.ceil(-math.log10(lr))  # lr in [10^-e, 10^-(e-1))
    m = round(lr * 10**e, 1)
    if m >= 10:
        m, e = round(m / 10, 1), e - 1
    if e < 1:
        raise VinError(f"learning rate {lr} rounds to 1 or more")
    if m != int(m):
        return round(m * 10), e + 1
    return int(m), e


def _gamma_code(gamma: float) -> str:
    if not (0 < round(gamma, 4) < 1):
        raise VinError(f"gamma {gamma} outside (0, 1) at 4 decimals")
    return f"{round(gamma, 4):.4f}"[2:].rstrip("0") or "0"


def format_vin(v: Vin) -> str:
    """VIN string of decoded fields (inverse of :func:`parse_vin`)."""
    m, e = _lr_code(v.learning_rate)
    return (
        f"{v.algorithm}-{v.grade}-N{v.net_width}B{_size(v.batch_size)}"
        f"-L{m}E{e}G{_gamma_code(v.gamma)}"
        f"-LB{v.lookback}TD{round(v.trailing_stop * 100)}-{v.created:%Y%m%d}"
    )


def parse_vin(text: str) -> Vin:
    """Decode a VIN.

    Raises:
        VinError: the string does not match the VIN grammar.
    """
    match = _VIN_RE.match(text.strip())
    if match is None:
        raise VinError(f"{text!r} is not a VIN (expected e.g. PPO-A-N1024B4K-L2E6G98-LB5TD20-20260214)")
    g = match.groupdict()
    try:
        created = datetime.strptime(g["date"], "%Y%m%d").date()
    except ValueError:
        raise VinError(f"{text!r}: {g['date']} is not a date") from None
    return Vin(
        algorithm=g["type"],
        grade=g["grade"],
        net_width=int(g["width"]),
        batch_size=_parse_size(g["batch"]),
        learning_rate=int(g["lr_m"]) * 10.0 ** -int(g["lr_e"]),
        gamma=float("0." + g["gamma"]),
        lookback=int(g["lookback"]),
        trailing_stop=int(g["trail"]) / 100.0,
        created=created,
    )


def vin_for(
    params: dict[str, Any],
    value: float | None,
    created: datetime | date | None = None,
    algorithm: str = "PPO",
    thresholds: dict[str, float] | None = None,
    trailing_stop: float | None = None,
) -> str:
    """VIN of a trial from its decoded hyperparameters (``FrozenTrial.params``) and value.

    Args:
        trailing_stop: the study's trailing stop (its execution model's, see
            :class:`trainers.accounting.Costs`); None = ``params["trailing_stop"]``.

    Raises:
        VinError: a required hyperparameter is missing or out of range.
    """
    if trailing_stop is not None:
        params = {**params, "trailing_stop": trailing_stop}
    missing = [
        k
        for k in ("net_width", "batch_size", "learning_rate", "gamma", "lookback", "trailing_stop")
        if k not in params
    ]
    if missing:
        raise VinError(f"cannot name a trial without {', '.join(missing)}")
    when = created or datetime.now(UTC)
    day = when.date() if isinstance(when, datetime) else when
    return format_vin(
        Vin(
            algorithm=algorithm,
            grade=grade_for(value, thresholds),
            net_width=int(params["net_width"]),
            batch_size=int(params["batch_size"]),
            learning_rate=float(params["learning_rate"]),
            gamma=float(params["gamma"]),
            lookback=int(params["lookback"]),
            trailing_stop=float(params["trailing_stop"]),
            created=day,
        )
    )
