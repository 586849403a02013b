"""The supervisor's monitor job: study figures from Optuna's RDB schema, and the alert
conditions they and the other components' files show.

:func:`compute_monitor` runs a handful of aggregate and ordered queries (``COUNT ...
GROUP BY``, a window ``MAX``/``MIN ... OVER (ORDER BY number)`` that returns only the
trials that improved the best value, ``ORDER BY number DESC LIMIT n``): the database does
the scanning and only small results come back, so a study of any size costs the same few
round trips. Works on SQLite (>= 3.25, window functions) and PostgreSQL.

:func:`monitor_alerts` turns the figures, the supervisor's children and
``<root>/paper_trader/status.json`` into :class:`daemon.alerts.Alert` conditions for
:meth:`daemon.alerts.AlertSink.update`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from daemon.alerts import Alert
from trainers.atomic_io import read_json_object

FINISHED = ("COMPLETE", "PRUNED", "FAIL")


class MonitorError(RuntimeError):
    """The storage URL cannot be used; the message says why."""


@lru_cache(maxsize=8)
def _engine(url: str) -> sa.Engine:
    try:
        parsed = sa.engine.make_url(url)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:" and not Path(parsed.database).is_file():
                raise MonitorError(f"storage {parsed.database}: no such SQLite file")
            return sa.create_engine(parsed, connect_args={"timeout": 30})
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise MonitorError(f"storage URL: {exc}") from None


def _naive_utc(dt: datetime) -> datetime:
    """Optuna's RDB storage keeps trial datetimes as naive UTC."""
    return dt.astimezone(UTC).replace(tzinfo=None)


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
        "finished_last_hour": {state: count}, "trials_per_hour": finished in the last hour,
        "trials_per_hour_24h": finished in the last 24 h / 24,
        "best": {"number", "value", "vin", "grade"} | None,
        "best_over_time": [[trial number, best value so far], ...]`` (only the trials that
        improved the best value, in trial-number order: a step function), ``"rates":
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
        "finished_last_hour": {},
        "trials_per_hour": 0.0,
        "trials_per_hour_24h": 0.0,
        "best": None,
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
    with _engine(storage_url).connect() as con:
        row = con.execute(sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": study}).first()
        if row is None:
            return out
        sid = int(row[0])
        direction = con.execute(
            sa.text("SELECT direction FROM study_directions WHERE study_id = :s ORDER BY objective LIMIT 1"),
            {"s": sid},
        ).scalar()
        maximize = str(getattr(direction, "name", direction)).upper() != "MINIMIZE"
        out.update(exists=True, direction="maximize" if maximize else "minimize")
        out["trials"] = {
            str(getattr(s, "name", s)): int(n)
            for s, n in con.execute(
                sa.text("SELECT state, COUNT(*) FROM trials WHERE study_id = :s GROUP BY state"), {"s": sid}
            )
        }
        _throughput(con, sid, at, out)
        _best(con, sid, maximize, max_points, out)
        _rates(con, sid, history, out)
        best = out["best"]
        if best is not None:
            since = con.execute(
                sa.text(
                    "SELECT COUNT(*) FROM trials WHERE study_id = :s AND state = 'COMPLETE' AND number > :n"
                ),
                {"s": sid, "n": best["number"]},
            ).scalar_one()
            out["stagnation"] = {
                "trials_since_best": int(since),
                "limit": stagnation_trials,
                "stagnant": int(since) >= stagnation_trials,
            }
    return out


def _throughput(con: sa.Connection, sid: int, at: datetime, out: dict[str, Any]) -> None:
    hour, day = _naive_utc(at - timedelta(hours=1)), _naive_utc(at - timedelta(hours=24))
    rows = con.execute(
        sa.text(
            "SELECT state, SUM(CASE WHEN datetime_complete >= :h THEN 1 ELSE 0 END), COUNT(*) "
            "FROM trials WHERE study_id = :s AND state IN ('COMPLETE', 'PRUNED', 'FAIL') "
            "AND datetime_complete >= :d AND datetime_complete <= :now GROUP BY state"
        ),
        {"s": sid, "h": hour, "d": day, "now": _naive_utc(at)},
    ).all()
    last_hour = {str(getattr(s, "name", s)): int(h or 0) for s, h, _ in rows}
    out["finished_last_hour"] = {k: v for k, v in last_hour.items() if v}
    out["trials_per_hour"] = float(sum(last_hour.values()))
    out["trials_per_hour_24h"] = round(sum(int(n) for *_, n in rows) / 24.0, 3)


def _best(con: sa.Connection, sid: int, maximize: bool, max_points: int, out: dict[str, Any]) -> None:
    agg, better = ("MAX", ">") if maximize else ("MIN", "<")
    rows = con.execute(
        sa.text(
            "SELECT trial_id, number, value FROM ("
            "  SELECT t.trial_id AS trial_id, t.number AS number, v.value AS value, "
            f"   {agg}(v.value) OVER (ORDER BY t.number ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) "
            "     AS previous "
            "  FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0 "
            "  WHERE t.study_id = :s AND t.state = 'COMPLETE' AND v.value_type = 'FINITE'"
            f") x WHERE previous IS NULL OR value {better} previous ORDER BY number DESC LIMIT :k"
        ),
        {"s": sid, "k": max_points},
    ).all()
    if not rows:
        return
    out["best_over_time"] = [[int(n), float(v)] for _, n, v in reversed(rows)]
    trial_id, number, value = rows[0]
    attrs = {
        k: json.loads(v)
        for k, v in con.execute(
            sa.text(
                "SELECT key, value_json FROM trial_user_attributes "
                "WHERE trial_id = :t AND key IN ('vin', 'grade')"
            ),
            {"t": trial_id},
        )
    }
    out["best"] = {"number": int(number), "value": float(value), **attrs}


def _rates(con: sa.Connection, sid: int, history: int, out: dict[str, Any]) -> None:
    counts = {
        str(getattr(s, "name", s)): int(n)
        for s, n in con.execute(
            sa.text(
                "SELECT state, COUNT(*) FROM (SELECT state FROM trials WHERE study_id = :s "
                "AND state IN ('COMPLETE', 'PRUNED', 'FAIL') ORDER BY number DESC LIMIT :n) x GROUP BY state"
            ),
            {"s": sid, "n": history},
        )
    }
    window = sum(counts.values())
    complete, pruned, failed = counts.get("COMPLETE", 0), counts.get("PRUNED", 0), counts.get("FAIL", 0)
    out["rates"] = {
        "window": window,
        "complete": complete,
        "pruned": pruned,
        "failed": failed,
        "fail_rate": failed / window if window else None,
        "prune_rate": pruned / window if window else None,
    }


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
    * ``drawdown`` (critical): the paper trader's ``drawdown`` (fraction of peak equity,
      ``<root>/paper_trader/status.json``) above ``drawdown_limit``.
    * ``reload_rejected`` (warning): the paper trader's ``rejected_generation`` is set
      (with ``rejection_reason``); one alert per rejected generation.

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
                    "best_number": best.get("number"),
                    "best_value": best.get("value"),
                    "best_vin": best.get("vin"),
                    "trials_since_best": stag.get("trials_since_best"),
                    "limit": stag.get("limit"),
                },
            )
        )
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
    return alerts
