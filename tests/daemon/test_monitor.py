"""Monitor figures (daemon.monitor) on real small SQLite studies built with Optuna's API,
checked against the same figures computed from ``study.get_trials()``; alert conditions from
real status files; the best value against the recorded fold baselines; the monitor -> alerts
-> webhook path end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from daemon.alerts import AlertSink
from daemon.monitor import MonitorError, compute_monitor, monitor_alerts
from tests.daemon.webhook_server import webhook_server
from trainers.atomic_io import atomic_write_json
from trainers.study_db.baselines import FOLD_BASELINES_ATTR

F, P, R = "FAIL", "PRUNED", "RUNNING"
# (state or value, hours ago it finished): improves to 0.5 at trial 6, then a stagnating tail
PLAN: list[tuple[Any, float]] = [
    (0.1, 30),
    (0.3, 30),
    (F, 30),
    (0.2, 29),
    (P, 29),
    (0.45, 28),
    (0.5, 2),
    (0.5, 2),  # a tie is no improvement
    (F, 2),
    (0.4, 1.5),
    (P, 1.5),
    (0.2, 0.5),
    (-0.1, 0.5),
    (0.49, 0.4),
    (F, 0.3),
    (0.3, 0.2),
    (P, 0.1),
    (0.0, 0.1),
    (R, 0.0),
]


def add(study: optuna.Study, item: Any, hours_ago: float, at: datetime) -> None:
    """Add one trial with Optuna's API, finished ``hours_ago`` before ``at``."""
    if item in (F, P, R):
        trial = create_trial(state=TrialState[item])
    else:
        trial = create_trial(value=float(item), user_attrs={"vin": f"VIN-{item}", "grade": "B"})
    done = (at - timedelta(hours=hours_ago)).astimezone().replace(tzinfo=None)  # Optuna: naive local
    trial.datetime_start = done - timedelta(minutes=5)
    trial.datetime_complete = None if item == R else done
    study.add_trial(trial)


def build(url: str, name: str, plan: list[tuple[Any, float]], at: datetime, direction: str) -> optuna.Study:
    study = optuna.create_study(storage=url, study_name=name, direction=direction)
    for item, hours in plan:
        add(study, item, hours, at)
    return study


def reference(study: optuna.Study, at: datetime, history: int, stagnation: int) -> dict[str, Any]:
    """The same figures from every trial loaded with Optuna (what the SQL must match)."""
    trials: list[FrozenTrial] = sorted(study.get_trials(), key=lambda t: t.number)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    better = (lambda a, b: a > b) if maximize else (lambda a, b: a < b)
    curve, best = [], None
    for t in trials:
        if t.state == TrialState.COMPLETE and (best is None or better(t.value, best[1])):
            best = (t.number, t.value)
            curve.append([t.number, t.value])
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    window = finished[-history:]
    since = sum(1 for t in trials if t.state == TrialState.COMPLETE and best and t.number > best[0])
    cut = (at - timedelta(hours=1)).astimezone().replace(tzinfo=None)
    day = (at - timedelta(hours=24)).astimezone().replace(tzinfo=None)
    return {
        "curve": curve,
        "best": best,
        "fail_rate": sum(t.state == TrialState.FAIL for t in window) / len(window),
        "prune_rate": sum(t.state == TrialState.PRUNED for t in window) / len(window),
        "window": len(window),
        "since": since,
        "stagnant": since >= stagnation,
        "last_hour": sum(1 for t in finished if t.datetime_complete >= cut),
        "last_day": sum(1 for t in finished if t.datetime_complete >= day),
        "states": {
            s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)
        },
    }


@pytest.fixture
def at() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def check_figures(
    url: str, name: str, at: datetime, direction: str, history: int, stagnation: int, monitor_url: str = ""
) -> None:
    """Build PLAN (negated for a minimising study) and compare compute_monitor with Optuna."""
    plan = PLAN if direction == "maximize" else [(-v if isinstance(v, float) else v, h) for v, h in PLAN]
    study = build(url, name, plan, at, direction)
    got = compute_monitor(monitor_url or url, name, history=history, stagnation_trials=stagnation, now=at)
    ref = reference(study, at, history, stagnation)
    assert got["exists"] and got["direction"] == direction
    assert got["trials"] == ref["states"]
    assert got["best_over_time"] == ref["curve"]
    assert (got["best"]["number"], got["best"]["value"]) == ref["best"]
    assert got["best"]["vin"] == f"VIN-{ref['best'][1]}"
    rates = got["rates"]
    assert rates["window"] == ref["window"]
    assert rates["fail_rate"] == pytest.approx(ref["fail_rate"])
    assert rates["prune_rate"] == pytest.approx(ref["prune_rate"])
    assert got["ended_per_hour"] == ref["last_hour"]
    assert got["ended_per_hour_24h"] == pytest.approx(ref["last_day"] / 24, abs=1e-3)
    assert got["stagnation"] == {
        "trials_since_best": ref["since"],
        "limit": stagnation,
        "stagnant": ref["stagnant"],
    }


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize(("history", "stagnation"), [(100, 10), (5, 11), (1, 3)])
def test_figures_match_optuna(
    tmp_path: Path, at: datetime, direction: str, history: int, stagnation: int
) -> None:
    check_figures(f"sqlite:///{tmp_path / 'mon.db'}", "s", at, direction, history, stagnation)


@pytest.mark.postgres
def test_figures_match_optuna_on_postgresql(pg_url: str, at: datetime) -> None:
    driver_url = pg_url.replace("postgresql://", "postgresql+psycopg://")  # what Optuna itself needs
    check_figures(driver_url, "pg_max", at, "maximize", 10, 5, monitor_url=pg_url)
    check_figures(driver_url, "pg_min", at, "minimize", 100, 50, monitor_url=pg_url)


def test_the_plan_exercises_what_it_should(tmp_path: Path, at: datetime) -> None:
    """Fixed figures of PLAN, so the reference above cannot drift with the code."""
    url = f"sqlite:///{tmp_path / 'mon.db'}"
    build(url, "s", PLAN, at, "maximize")
    got = compute_monitor(url, "s", history=10, stagnation_trials=10, now=at)
    assert got["best_over_time"] == [[0, 0.1], [1, 0.3], [5, 0.45], [6, 0.5]]
    assert got["trials"] == {"COMPLETE": 12, "FAIL": 3, "PRUNED": 3, "RUNNING": 1}
    # last 10 finished: trials 8..17 -> FAIL 8, 14; PRUNED 10, 16
    assert (got["rates"]["fail_rate"], got["rates"]["prune_rate"]) == (0.2, 0.2)
    assert got["stagnation"] == {"trials_since_best": 7, "limit": 10, "stagnant": False}
    assert got["ended_per_hour"] == 7  # trials 11..17 finished within the hour
    got = compute_monitor(url, "s", stagnation_trials=7, max_points=2, now=at)
    assert got["stagnation"]["stagnant"] and got["best_over_time"] == [[5, 0.45], [6, 0.5]]


def test_unknown_study_and_missing_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mon.db'}"
    optuna.create_study(storage=url, study_name="present")
    got = compute_monitor(url, "absent")
    assert not got["exists"] and got["best"] is None and got["rates"]["fail_rate"] is None
    empty = compute_monitor(url, "present")
    assert empty["exists"] and empty["best_over_time"] == [] and not empty["stagnation"]["stagnant"]
    with pytest.raises(MonitorError, match="no such SQLite file"):
        compute_monitor(f"sqlite:///{tmp_path / 'none.db'}", "s")
    assert not (tmp_path / "none.db").exists()


def write_trader_status(root: Path, **fields: Any) -> None:
    base = {"study": "s", "generation": 3, "equity": 7000.0, "peak_equity": 10000.0, "drawdown": 0.3}
    atomic_write_json(root / "paper_trader" / "status.json", {**base, **fields})


def test_alert_conditions_from_monitor_children_and_trader_status(tmp_path: Path, at: datetime) -> None:
    url = f"sqlite:///{tmp_path / 'mon.db'}"
    build(url, "s", PLAN, at, "maximize")
    monitor = compute_monitor(url, "s", stagnation_trials=5, now=at)
    write_trader_status(tmp_path, rejected_generation=4, rejection_reason="spec mismatch: 2 assets, want 3")
    children = [
        {"name": "worker-0", "state": "running"},
        {"name": "worker-1", "state": "failed", "restarts": 3, "last_reason": "exited with code 1"},
    ]
    alerts = monitor_alerts(tmp_path, monitor, children, drawdown_limit=0.25)
    by_kind = {a.kind: a for a in alerts}
    assert sorted(by_kind) == ["drawdown", "reload_rejected", "stagnation", "worker_budget_exhausted"]
    assert by_kind["worker_budget_exhausted"].details["child"] == "worker-1"
    assert (
        by_kind["stagnation"].key == "stagnation:s:6"
        and by_kind["stagnation"].details["trials_since_best"] == 7
    )
    assert by_kind["drawdown"].severity == "critical" and by_kind["drawdown"].details["drawdown"] == 0.3
    rejected = by_kind["reload_rejected"]
    assert rejected.details["rejected_generation"] == 4 and "spec mismatch" in rejected.message

    write_trader_status(tmp_path, drawdown=0.1, rejected_generation=None)
    calm = monitor_alerts(tmp_path, compute_monitor(url, "s", stagnation_trials=50, now=at), [], 0.25)
    assert calm == []
    (tmp_path / "paper_trader" / "status.json").write_text("{half")  # unreadable: no trader alerts
    assert monitor_alerts(tmp_path, None, None) == []


def test_monitor_runs_alert_once_then_again_after_a_new_best(tmp_path: Path, at: datetime) -> None:
    """The supervisor's monitor job path: figures -> conditions -> sink -> webhook."""
    url = f"sqlite:///{tmp_path / 'mon.db'}"
    study = build(url, "s", PLAN, at, "maximize")
    write_trader_status(tmp_path, drawdown=0.05)

    def monitor_run(sink: AlertSink) -> None:
        figures = compute_monitor(url, "s", stagnation_trials=5)
        sink.update(monitor_alerts(tmp_path, figures, [], drawdown_limit=0.2))

    with webhook_server() as hook:
        sink = AlertSink(hook.url(), tmp_path, backoff_s=0.01)
        for _ in range(3):
            monitor_run(sink)
        add(study, 0.9, 0.0, datetime.now(UTC))  # a new best: stagnation resolves
        monitor_run(sink)
        for _ in range(5):
            add(study, 0.1, 0.0, datetime.now(UTC))
        monitor_run(sink)  # stagnating again, behind the new best
        monitor_run(sink)
        write_trader_status(tmp_path, drawdown=0.35)
        monitor_run(sink)
        monitor_run(sink)
        assert sink.flush(30)
        sink.close()
    sent = [(b["alert"], b.get("best_number")) for b in hook.bodies()]
    assert sent == [("stagnation", 6), ("stagnation", 19), ("drawdown", None)]
    assert json.loads(json.dumps(hook.bodies()))[2]["drawdown"] == 0.35


def record_baselines(study: optuna.Study, invested: float, cash: float) -> None:
    """The study attribute as trainers.fold_baselines writes it (two folds each)."""
    folds = [{"fold": 0, "excess_sharpe": 0.0}, {"fold": 1, "excess_sharpe": 0.0}]
    study.set_user_attr(
        FOLD_BASELINES_ATTR,
        {
            "schema": 1,
            "key": {},
            "computed_at": "2026-03-01T12:00:00+00:00",
            "baselines": {
                "invested": {"value": invested, "folds": folds},
                "cash": {"value": cash, "folds": folds},
            },
        },
    )


def test_the_best_value_is_read_against_the_recorded_baselines(tmp_path: Path, at: datetime) -> None:
    url = f"sqlite:///{tmp_path / 'mon.db'}"
    study = build(url, "s", PLAN, at, "maximize")  # best 0.5
    bare = compute_monitor(url, "s", now=at)
    assert bare["baselines"] is None and bare["best"]["beats_baselines"] is None
    assert [a.kind for a in monitor_alerts(tmp_path, bare)] == []  # nothing to compare with

    record_baselines(study, invested=-0.04, cash=1.34)
    got = compute_monitor(url, "s", now=at)
    assert got["baselines"] == {
        "invested": -0.04,
        "cash": 1.34,
        "n_folds": 2,
        "computed_at": "2026-03-01T12:00:00+00:00",
        "zero_action": None,  # a record written without the untrained start
    }
    assert got["best"]["beats_baselines"] is False
    (alert,) = monitor_alerts(tmp_path, got)
    assert (alert.kind, alert.severity, alert.key, alert.study) == (
        "below_baselines",
        "warning",
        "below_baselines:s",
        "s",
    )
    assert "0.5000 (trial 6) is below always in cash +1.3400" in alert.message
    assert alert.details["baseline_cash"] == 1.34 and alert.details["best_value"] == 0.5

    record_baselines(study, invested=0.2, cash=0.5)  # a tie with the better one: not beaten
    assert compute_monitor(url, "s", now=at)["best"]["beats_baselines"] is False
    record_baselines(study, invested=0.49, cash=-2.89)
    beaten = compute_monitor(url, "s", now=at)
    assert beaten["best"]["beats_baselines"] is True and monitor_alerts(tmp_path, beaten) == []


def test_the_below_baselines_alert_is_raised_once_and_resolved_when_beaten(
    tmp_path: Path, at: datetime
) -> None:
    url = f"sqlite:///{tmp_path / 'mon.db'}"
    study = build(url, "s", PLAN, at, "maximize")
    record_baselines(study, invested=-0.04, cash=0.7)
    state = tmp_path / "alerts.json"

    def monitor_run(sink: AlertSink) -> list[str]:
        figures = compute_monitor(url, "s", stagnation_trials=50)
        return [a.kind for a in sink.update(monitor_alerts(tmp_path, figures, []))]

    with webhook_server() as hook:
        sink = AlertSink(hook.url(), tmp_path, backoff_s=0.01, state_path=state)
        assert monitor_run(sink) == ["below_baselines"]
        assert monitor_run(sink) == []  # still active: not sent again
        assert "below_baselines:s" in sink.snapshot()["active"]
        add(study, 0.8, 0.0, datetime.now(UTC))  # a trial beats both
        assert monitor_run(sink) == []
        assert "below_baselines:s" not in sink.snapshot()["active"]  # resolved
        record_baselines(study, invested=-0.04, cash=0.9)  # recomputed higher: below again
        assert monitor_run(sink) == ["below_baselines"]
        assert sink.flush(30)
        sink.close()
    sent = [(b["alert"], b["best_value"], b["baseline_cash"]) for b in hook.bodies()]
    assert sent == [("below_baselines", 0.5, 0.7), ("below_baselines", 0.8, 0.9)]
