"""What the dashboard shows, gathered from the files and storage each component owns.

:func:`collect` builds one snapshot (a JSON-able dict). It works with the supervisor down:
the study figures and the top trials always come straight from the Optuna storage (a few
aggregate queries and one ``ORDER BY value LIMIT n``; a study of any size is never loaded),
the ensemble from its manifest, the paper trader from its ``status.json``, heartbeat and
ledger (opened read-only). Only the workers and the jobs need the supervisor: they come
from ``<root>/run/status.json`` while ``run/supervisor.pid`` names a live process.

Every section that cannot be read holds an ``error`` line naming the file or storage and
why, so one broken part never hides the rest. :mod:`daemon.views.dashboard` renders it.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from daemon.monitor import MonitorError, compute_monitor
from daemon.sequential_state import status_view as sequential_view
from daemon.views.ledger import LedgerReadError, ledger_path, ledger_summary
from ensemble.manifest import MANIFEST_FILE, ManifestError, read_manifest
from trainers.atomic_io import read_json
from trainers.naming import beats_baselines
from trainers.runtime.current_study import read_current_study
from trainers.runtime.heartbeat import heartbeat_age
from trainers.runtime.pidlock import supervisor_pid
from trainers.storage import redact_url
from trainers.study_db import StudyDBError, open_engine, rank_trials
from trainers.study_db.baselines import baseline_values

TOP_N = 10


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object written atomically by another process; None when absent.

    Raises:
        ValueError: the file exists but is not a JSON object.
    """
    try:
        data = read_json(path)
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _age_s(iso: Any, now: float) -> float | None:
    """Seconds from an ISO 8601 time (UTC when naive) to ``now`` (epoch s); None if unparsable."""
    if not isinstance(iso, str):
        return None
    try:
        dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return max(0.0, now - dt.timestamp())


def supervisor_section(root: Path, now: float) -> dict[str, Any]:
    """``{"running", "pid", "status", "status_age_s", "error"}``: the supervisor's own part
    of ``run/status.json`` (``children``, ``jobs``, ``monitor``...) while it runs."""
    pid = supervisor_pid(root)
    out: dict[str, Any] = {"running": pid is not None, "pid": pid, "status": None, "status_age_s": None}
    if pid is None:
        return out
    path = root / "run" / "status.json"
    try:
        doc = _read_json(path)
    except ValueError as exc:
        out["error"] = str(exc)
        return out
    sup = (doc or {}).get("supervisor")
    if not isinstance(sup, dict):
        out["error"] = f"{path}: not written yet (the supervisor is starting)"
    elif sup.get("pid") != pid:
        out["error"] = f"{path}: written by supervisor pid {sup.get('pid')}, not the running pid {pid}"
    else:
        out["status"] = sup
        out["status_age_s"] = _age_s(sup.get("updated_at"), now)
    return out


def study_section(storage_url: str, study: str | None, stagnation_trials: int = 50) -> dict[str, Any]:
    """:func:`daemon.monitor.compute_monitor` figures of ``study`` (trials by state,
    trials/hour, best value and its VIN, the constant-policy baselines and whether the best
    value beats both, fail/prune rates, stagnation), or ``{"error"}``."""
    if not study:
        return {"study": None, "error": "no study: write <root>/.current_study (cappuccino set-study NAME)"}
    try:
        return compute_monitor(storage_url, study, stagnation_trials=stagnation_trials, max_points=50)
    except MonitorError as exc:
        return {"study": study, "error": str(exc)}
    except sa.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return {"study": study, "error": f"storage {redact_url(storage_url)}: {type(exc).__name__}: {first}"}


def _fold_summary(folds: Any) -> tuple[float | None, float | None]:
    """Mean Sharpe ratio and worst maximum drawdown over a trial's walk-forward folds."""
    if not isinstance(folds, list) or not folds:
        return None, None
    sharpe = [f.get("sharpe") for f in folds if isinstance(f, dict)]
    dd = [f.get("max_drawdown") for f in folds if isinstance(f, dict)]
    sharpe = [float(s) for s in sharpe if isinstance(s, int | float) and math.isfinite(s)]
    dd = [float(d) for d in dd if isinstance(d, int | float) and math.isfinite(d)]
    return (sum(sharpe) / len(sharpe) if sharpe else None), (max(dd) if dd else None)


def top_section(
    engine: Engine | None,
    study: str | None,
    n: int = TOP_N,
    baselines: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The best ``n`` COMPLETE trials (:func:`trainers.study_db.rank_trials`: one ordered
    ``LIMIT n`` query plus their attributes), as ``{"trials": [{"rank", "number",
    "trial_id", "value", "vin", "grade", "beats_baselines" (above both of ``baselines``,
    the study section's ``{"invested", "cash"}`` values; None when unknown), "sharpe" (mean
    over folds, annualised), "max_drawdown" (worst fold, fraction)}]}`` or ``{"error"}``."""
    if engine is None or not study:
        return {"trials": [], "error": "no storage or no study"}
    try:
        ranked = rank_trials(engine, study, n)
    except StudyDBError as exc:
        return {"trials": [], "error": str(exc)}
    values = baseline_values(baselines)
    rows = []
    for i, t in enumerate(ranked, 1):
        sharpe, dd = _fold_summary(t.user_attrs.get("fold_metrics"))
        rows.append(
            {
                "rank": i,
                "number": t.number,
                "trial_id": t.trial_id,
                "value": t.value,
                "vin": t.user_attrs.get("vin"),
                "grade": t.user_attrs.get("grade"),
                "beats_baselines": beats_baselines(t.value, values),
                "sharpe": sharpe,
                "max_drawdown": dd,
            }
        )
    return {"trials": rows}


def ensemble_section(root: Path) -> dict[str, Any] | None:
    """The live manifest (validated): ``{"study", "generation", "created_at", "combine",
    "members": [{"slot", "trial_number", "trial_id", "vin", "grade", "value"}]}``, None when
    there is none yet, ``{"error"}`` when it is unusable."""
    path = root / "ensemble" / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        m = read_manifest(path)
    except ManifestError as exc:
        return {"error": str(exc)}
    return {
        "study": m.study,
        "generation": m.generation,
        "created_at": m.created_at,
        "combine": m.combine,
        "members": [
            {k: getattr(x, k) for k in ("slot", "trial_number", "trial_id", "vin", "grade", "value")}
            for x in m.members
        ],
    }


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def trader_section(root: Path, now: float) -> dict[str, Any]:
    """The paper trader: ``{"status"}`` (its ``status.json``: equity, positions, drawdown,
    generation in use, last reload, rejected generation), ``{"heartbeat"}``, ``"alive"``
    (the heartbeat's pid runs and its state is not ``stopped``), ``"status_age_s"``,
    ``"heartbeat_age_s"``, ``{"ledger"}``
    (:func:`daemon.views.ledger.ledger_summary`), with ``status_error`` / ``ledger_error``."""
    out: dict[str, Any] = {"status": None, "heartbeat": None, "alive": False, "ledger": None}
    try:
        out["status"] = _read_json(root / "paper_trader" / "status.json")
    except ValueError as exc:
        out["status_error"] = str(exc)
    try:
        out["heartbeat"] = _read_json(root / "run" / "heartbeats" / "paper_trader.json")
    except ValueError:
        out["heartbeat"] = None
    latest = out["heartbeat"] or out["status"] or {}
    out["alive"] = latest.get("state") != "stopped" and _pid_alive(latest.get("pid"))
    out["status_age_s"] = heartbeat_age(out["status"], now)
    out["heartbeat_age_s"] = heartbeat_age(out["heartbeat"], now)
    try:
        out["ledger"] = ledger_summary(ledger_path(root))
    except LedgerReadError as exc:
        out["ledger_error"] = str(exc)
    return out


class Collector:
    """Gathers snapshots of one root; keeps one storage engine across refreshes.

    Args:
        root: runtime root.
        storage_url: Optuna storage URL.
        study: the study to show; None: the one in ``<root>/.current_study`` at each
            refresh, else ``fallback_study``.
        fallback_study: the config's study name.
        n_trials: the study's trial target (for the progress figure), or None.
        stagnation_trials: see :func:`daemon.monitor.compute_monitor`.
        top_n: rows of the top-trials table.
    """

    def __init__(
        self,
        root: Path,
        storage_url: str,
        study: str | None = None,
        fallback_study: str | None = None,
        n_trials: int | None = None,
        stagnation_trials: int = 50,
        top_n: int = TOP_N,
    ) -> None:
        self.root = root
        self.storage_url = storage_url
        self.study = study
        self.fallback_study = fallback_study
        self.n_trials = n_trials
        self.stagnation_trials = stagnation_trials
        self.top_n = top_n
        self._engine: Engine | None = None

    def engine(self) -> Engine | None:
        """The engine on the storage (created on first success; None while unusable)."""
        if self._engine is None:
            try:
                self._engine = open_engine(self.storage_url)
            except StudyDBError:
                return None
        return self._engine

    def close(self) -> None:
        """Dispose of the storage engine."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def collect(self) -> dict[str, Any]:
        """One snapshot: ``{"time", "root", "storage", "study", "n_trials", "supervisor",
        "study_stats", "top", "ensemble", "paper_trader", "sequential"}`` (see the ``*_section``
        functions; each part holds an ``error`` line instead when it cannot be read)."""
        now = time.time()
        study = self.study or read_current_study(self.root) or self.fallback_study
        stats = study_section(self.storage_url, study, self.stagnation_trials)
        top = (
            {"trials": [], "error": stats["error"]}
            if "error" in stats
            else top_section(self.engine(), study, self.top_n, stats.get("baselines"))
        )
        return {
            "time": datetime.fromtimestamp(now, UTC).isoformat(),
            "root": str(self.root),
            "storage": redact_url(self.storage_url),
            "study": study,
            "n_trials": self.n_trials,
            "supervisor": supervisor_section(self.root, now),
            "study_stats": stats,
            "top": top,
            "ensemble": ensemble_section(self.root),
            "paper_trader": trader_section(self.root, now),
            "sequential": sequential_view(self.root),
        }
