"""The supervisor's monitor job: study figures from Optuna's RDB schema, and the alert
conditions they and the other components' files show.

:func:`compute_monitor` runs a handful of aggregate and ordered queries (``COUNT ...
GROUP BY``, a window ``MAX``/``MIN ... OVER (ORDER BY number)`` that returns only the
trials that improved the best value, ``ORDER BY number DESC LIMIT n``): the database does
the scanning and only small results come back, so a study of any size costs the same few
round trips. Works on SQLite (>= 3.25, window functions) and PostgreSQL.

:func:`monitor_alerts` turns the figures, the supervisor's children,
``<root>/paper_trader/status.json`` and the manifests the ensemble sync rebuilt
(:func:`manifest_alerts`) into :class:`daemon.alerts.Alert` conditions for
:meth:`daemon.alerts.AlertSink.update`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon.alerts import Alert
from ensemble.generations import read_generations, set_aside_files
from ensemble.manifest import ManifestError
from trainers.atomic_io import read_json_object
from trainers.naming import baseline_note, beats_baselines
from trainers.study_db import (
    StudyDBError,
    best_progression,
    best_summary,
    complete_after,
    ended_between,
    find_study,
    open_engine,
    recent_outcomes,
    state_counts,
)
from trainers.study_db.baselines import baseline_values, study_baselines


class MonitorError(RuntimeError):
    """The storage URL cannot be used; the message says why."""


def compute_monitor(
    storage_url: str,
    study: str,
    history: int = 100,
    stagnation_trials: int = 50,
    max_points: int = 200,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Figures of one study for the log, ``status.json`` and the alerts.

    Args:
        storage_url: Optuna RDB storage URL.
        study: study name.
        history: fail and prune rates are over this many latest finished (COMPLETE,
            PRUNED, FAIL) trials, latest by trial number (>= 1).
        stagnation_trials: the study stagnates when this many COMPLETE trials numbered
            after the best one have not improved on it (>= 1).
        max_points: at most this many (latest) points of ``best_over_time``.
        now: the time "last hour" is measured back from (default: now; aware datetime).

    Returns:
        ``{"study", "exists", "time", "direction", "trials": {state: count},
        "ended_last_hour": {state: count}`` (trials that ended, COMPLETE, PRUNED or
        FAIL, in the last hour), ``"ended_per_hour"``: their number, ``"ended_per_hour_24h"``:
        trials ended in the last 24 h / 24,
        "best": {"number", "value", "vin", "grade", "beats_baselines"} | None,
        "baselines": {"invested", "cash", "n_folds", "computed_at"} | None`` (the objective
        values of the constant policies on the study's folds, recorded by its first worker:
        :mod:`trainers.fold_baselines`; ``beats_baselines``: the best value is above both,
        None while they are not recorded), ``"best_over_time": [[trial number, best value so
        far], ...]`` (only the trials that improved the best value, in trial-number order: a
        step function), ``"rates":
        {"window", "complete", "pruned", "failed", "fail_rate", "prune_rate"}`` (rates are
        fractions of ``window``, None when no trial finished), ``"stagnation":
        {"trials_since_best", "limit", "stagnant"}``. A study that does not exist gives
        ``exists: False`` and empty figures.

    Raises:
        MonitorError: unusable storage URL.
        sqlalchemy.exc.SQLAlchemyError: the storage cannot be read.
    """
    if history < 1 or stagnation_trials < 1 or max_points < 1:
        raise ValueError("history, stagnation_trials and max_points must be >= 1")
    at = now or datetime.now(UTC)
    out: dict[str, Any] = {
        "study": study,
        "exists": False,
        "time": at.isoformat(),
        "direction": None,
        "trials": {},
        "ended_last_hour": {},
        "ended_per_hour": 0.0,
        "ended_per_hour_24h": 0.0,
        "best": None,
        "baselines": None,
        "best_over_time": [],
        "rates": {
            "window": 0,
            "complete": 0,
            "pruned": 0,
            "failed": 0,
            "fail_rate": None,
            "prune_rate": None,
        },
        "stagnation": {"trials_since_best": 0, "limit": stagnation_trials, "stagnant": False},
    }
    try:
        engine = open_engine(storage_url)
    except StudyDBError as exc:
        raise MonitorError(str(exc)) from None
    with engine.connect() as con:
        row = find_study(con, study)
        if row is None:
            return out
        out.update(exists=True, direction="maximize" if row.maximize else "minimize")
        out["trials"] = state_counts(con, row)
        last_day = ended_between(con, row, at - timedelta(hours=24), at)
        last_hour = ended_between(con, row, at - timedelta(hours=1), at)
        out["ended_last_hour"] = last_hour
        out["ended_per_hour"] = float(sum(last_hour.values()))
        out["ended_per_hour_24h"] = round(sum(last_day.values()) / 24.0, 3)
        baselines = study_baselines(con, row)
        out["baselines"] = baselines.as_dict() if baselines is not None else None
        progression = best_progression(con, row, max_points)
        if progression:
            out["best_over_time"] = [[n, v] for _, n, v in progression]
            out["best"] = best_summary(con, *progression[-1])
            out["best"]["beats_baselines"] = beats_baselines(
                out["best"]["value"], baselines.values() if baselines is not None else None
            )
        counts = recent_outcomes(con, row, history)
        window = sum(counts.values())
        pruned, failed = counts.get("PRUNED", 0), counts.get("FAIL", 0)
        out["rates"] = {
            "window": window,
            "complete": counts.get("COMPLETE", 0),
            "pruned": pruned,
            "failed": failed,
            "fail_rate": failed / window if window else None,
            "prune_rate": pruned / window if window else None,
        }
        if out["best"] is not None:
            since = complete_after(con, row, out["best"]["number"])
            out["stagnation"] = {
                "trials_since_best": since,
                "limit": stagnation_trials,
                "stagnant": since >= stagnation_trials,
            }
    return out


# --------------------------------------------------------------------------- alert conditions


def monitor_alerts(
    root: str | Path,
    monitor: dict[str, Any] | None,
    children: list[dict[str, Any]] | None = None,
    drawdown_limit: float = 0.20,
) -> list[Alert]:
    """The alert conditions active now.

    * ``worker_budget_exhausted`` (critical): a child in state ``failed`` (its restart
      budget is spent and it is left stopped); ``children`` are
      :meth:`daemon.children.Child.snapshot` dicts.
    * ``stagnation`` (warning): ``monitor["stagnation"]["stagnant"]``; the key names the
      best trial, so a new best that stagnates again alerts again.
    * ``below_baselines`` (warning): the study's best value is not above the better of its
      two constant-policy baselines (``monitor["baselines"]``: always invested, always in
      cash); the key names the study, so it resolves once a trial beats both.
    * ``drawdown`` (critical): the paper trader's ``drawdown`` (fraction of peak equity,
      ``<root>/paper_trader/status.json``) above ``drawdown_limit``.
    * ``reload_rejected`` (warning): the paper trader's ``rejected_generation`` is set
      (with ``rejection_reason``); one alert per rejected generation.
    * ``ledger_mismatch`` (critical): the paper trader's reconciliation at start found the
      ledger and the broker's account disagreeing (``reconciliation`` in its status,
      :mod:`paper_trader.reconcile`: orders unknown to the ledger or missing at the broker,
      fills or positions that differ); one alert per reconciliation, resolved once a later
      start reconciles clean.
    * ``manifest_rebuilt`` (warning): see :func:`manifest_alerts`.

    Args:
        root: runtime root.
        monitor: a :func:`compute_monitor` result, or None.
        children: the supervisor's children snapshots.
        drawdown_limit: fraction in (0, 1].
    """
    alerts: list[Alert] = []
    for child in children or []:
        if child.get("state") == "failed":
            name = str(child.get("name"))
            alerts.append(
                Alert(
                    "worker_budget_exhausted",
                    "critical",
                    f"{name} exhausted its restart budget and is left stopped "
                    f"(last: {child.get('last_reason')}); fix the cause, then SIGHUP the supervisor",
                    f"worker_budget_exhausted:{name}",
                    details={
                        "child": name,
                        "restarts": child.get("restarts"),
                        "restarts_last_hour": child.get("restarts_last_hour"),
                        "last_reason": child.get("last_reason"),
                        "last_exit": child.get("last_exit"),
                    },
                )
            )
    stag = (monitor or {}).get("stagnation") or {}
    best = (monitor or {}).get("best") or {}
    if stag.get("stagnant") and best:
        study = monitor.get("study") if monitor else None
        alerts.append(
            Alert(
                "stagnation",
                "warning",
                f"study {study}: the best value {best.get('value')} (trial {best.get('number')}) has not "
                f"improved in the last {stag.get('trials_since_best')} COMPLETE trials "
                f"(limit {stag.get('limit')})",
                f"stagnation:{study}:{best.get('number')}",
                study=study,
                details={
                    **_best_details(best),
                    "trials_since_best": stag.get("trials_since_best"),
                    "limit": stag.get("limit"),
                },
            )
        )
    below = _below_baselines(monitor)
    if below is not None:
        alerts.append(below)
    trader = read_json_object(Path(root) / "paper_trader" / "status.json") or {}
    study = trader.get("study")
    drawdown = trader.get("drawdown")
    if isinstance(drawdown, (int, float)) and drawdown > drawdown_limit:
        alerts.append(
            Alert(
                "drawdown",
                "critical",
                f"paper trader drawdown {drawdown:.1%} is past the limit {drawdown_limit:.1%} "
                f"(equity {trader.get('equity')}, peak {trader.get('peak_equity')})",
                "drawdown:paper_trader",
                study=study if isinstance(study, str) else None,
                details={
                    "drawdown": drawdown,
                    "limit": drawdown_limit,
                    "equity": trader.get("equity"),
                    "peak_equity": trader.get("peak_equity"),
                    "generation": trader.get("generation"),
                },
            )
        )
    rejected = trader.get("rejected_generation")
    if rejected is not None:
        reason = trader.get("rejection_reason")
        alerts.append(
            Alert(
                "reload_rejected",
                "warning",
                f"paper trader rejected ensemble generation {rejected}: {reason}; "
                f"it keeps trading generation {trader.get('generation')}",
                f"reload_rejected:{rejected}",
                study=study if isinstance(study, str) else None,
                details={
                    "rejected_generation": rejected,
                    "reason": reason,
                    "generation": trader.get("generation"),
                },
            )
        )
    recon = trader.get("reconciliation")
    if isinstance(recon, dict) and recon.get("ok") is False:
        diffs = [d for d in recon.get("differences") or [] if isinstance(d, dict)]
        kinds = sorted({str(d.get("kind")) for d in diffs})
        alerts.append(
            Alert(
                "ledger_mismatch",
                "critical",
                f"paper trader ledger and broker account differ at {recon.get('at')}: "
                f"{len(diffs)} difference(s) ({', '.join(kinds)}); see reconciliation in "
                "paper_trader/status.json and the reconciliation_difference log lines",
                f"ledger_mismatch:{recon.get('at')}",
                study=study if isinstance(study, str) else None,
                details={"reconciled_at": recon.get("at"), "differences": diffs[:20]},
            )
        )
    alerts += manifest_alerts(root)
    return alerts


def manifest_alerts(root: str | Path) -> list[Alert]:
    """``manifest_rebuilt`` (warning) for every unreadable manifest the ensemble sync kept
    aside (``<root>/ensemble/ensemble_manifest.json.corrupt-<UTC time>``,
    :mod:`ensemble.generations`) after rebuilding the manifest from the study: why it was
    unreadable and the generation the rebuilt one got, from ``ensemble/generations.json``.
    The key names the file, so the alert stays active until an operator has looked at the
    file and removed it, and each new rebuild alerts again.
    """
    ens = Path(root) / "ensemble"
    files = set_aside_files(ens)
    if not files:
        return []
    try:
        record = read_generations(ens)
    except ManifestError:
        record = None
    rebuilds = {r.set_aside: r for r in record.rebuilds} if record is not None else {}
    alerts = []
    for path in files:
        rebuild = rebuilds.get(path.name)
        why = rebuild.reason if rebuild is not None else "reason not recorded"
        gen = rebuild.generation if rebuild is not None else None
        alerts.append(
            Alert(
                "manifest_rebuilt",
                "warning",
                f"the ensemble manifest was unreadable ({why}); the sync rebuilt it from the study"
                + (f" as generation {gen}" if gen is not None else "")
                + f" and kept the bad file as ensemble/{path.name}: inspect it, then remove it "
                "to clear this alert",
                f"manifest_rebuilt:{path.name}",
                details={
                    "set_aside": path.name,
                    "generation": gen,
                    "reason": why,
                    "rebuilt_at": None if rebuild is None else rebuild.at,
                },
            )
        )
    return alerts


def _best_details(best: dict[str, Any]) -> dict[str, Any]:
    """The best trial's fields of an alert payload: ``best_number``, ``best_value``,
    ``best_vin``."""
    return {"best_number": best.get("number"), "best_value": best.get("value"), "best_vin": best.get("vin")}


def _below_baselines(monitor: dict[str, Any] | None) -> Alert | None:
    """The ``below_baselines`` alert while the study's best value does not beat both
    recorded baselines; None when it does, or when there is no best trial or no baselines."""
    best = (monitor or {}).get("best") or {}
    values = baseline_values((monitor or {}).get("baselines"))
    if monitor is None or values is None or best.get("beats_baselines") is not False:
        return None
    study = monitor.get("study")
    value = best.get("value")
    return Alert(
        "below_baselines",
        "warning",
        f"study {study}: the best value {value:.4f} (trial {best.get('number')}) is "
        f"{baseline_note(value, values)} (constant policies on the same folds and costs)",
        f"below_baselines:{study}",
        study=study,
        details={
            **_best_details(best),
            "baseline_invested": values["invested"],
            "baseline_cash": values["cash"],
        },
    )
