"""Storage outage drill: the real supervisor with 2 real workers on a private PostgreSQL
server (:mod:`tests.pg_instance`), stopped with ``pg_ctl stop -m fast`` for 120 s and
started again. The workers wait (heartbeat ``storage_unavailable``), a worker SIGKILLed
during the outage is restarted without counting against the budget and waits too, the status
and the webhook say "storage unavailable", and afterwards both workers train on, no child is
failed and no trial is lost."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.daemon._supervisor_proc import Supervisors, log_events, run_cli, write_config
from tests.daemon.webhook_server import webhook_server
from tests.pg_instance import private_postgres
from trainers.storage import make_storage

STUDY = "outage"
OUTAGE_S = 120.0
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _trials(url: str) -> list[FrozenTrial]:
    storage = make_storage(url, heartbeat_interval=None)
    try:
        return storage.get_all_trials(storage.get_study_id_from_name(STUDY), deepcopy=False)
    except KeyError:
        return []
    finally:
        storage.engine.dispose()


def _heartbeat(root: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads((root / "run" / "heartbeats" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}


def _resolved(trials: list[FrozenTrial], numbers: set[int]) -> bool:
    """Every trial in ``numbers`` finished, or failed with a retry (same parameters) that
    finished: nothing lost."""
    by_number = {t.number: t for t in trials}
    for n in numbers:
        t = by_number[n]
        while t.state == TrialState.FAIL:
            retries = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
            if not retries:
                return False
            t = retries[0]
        if t.state not in FINISHED:
            return False
    return True


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_postgresql_outage_of_120_s_is_waited_out(tmp_path: Path, sups: Supervisors) -> None:
    with private_postgres() as pg, webhook_server() as hook:
        root = tmp_path / "root"
        cfg = write_config(
            tmp_path / "c.toml",
            root,
            study={"name": STUDY, "storage": pg.url},
            workers={"count": 2},
            alerts={"webhook_url": hook.url(), "storage_unavailable_after_s": 10, "backoff_s": 0.2},
        )
        sup = sups.start(cfg, root)
        for name in ("worker-0", "worker-1"):
            sup.wait_for(f"{name} running", lambda n=name: sup.running_child(n))

        def both_training() -> bool:
            running = [t for t in _trials(pg.url) if t.state == TrialState.RUNNING and t.params]
            return len(running) >= 2

        sup.wait_for("both workers in a trial", both_training)
        pids = {n: sup.child(n)["pid"] for n in ("worker-0", "worker-1")}

        pg.stop()
        stopped_at = time.monotonic()

        def storage_state(state: str) -> bool:
            return ((sup.status() or {}).get("storage") or {}).get("state") == state

        sup.wait_for("status: storage unavailable", lambda: storage_state("unavailable"))
        for name in pids:
            sup.wait_for(
                f"{name} waiting for the storage",
                lambda n=name: _heartbeat(root, n).get("state") == "storage_unavailable",
            )
        alerts = sup.wait_for(
            "the storage_unavailable alert at the webhook",
            lambda: [b for b in hook.bodies() if b.get("alert") == "storage_unavailable"],
        )
        assert alerts[0]["severity"] == "critical" and alerts[0]["study"] == STUDY
        shown = run_cli("status", "--config", str(cfg))
        assert "storage unavailable" in shown.stdout, shown.stdout + shown.stderr

        # a worker that dies during the outage is restarted, not counted, and waits too
        os.kill(pids["worker-1"], signal.SIGKILL)
        second = sup.wait_for(
            "worker-1 restarted", lambda: sup.running_child("worker-1", not_pid=pids["worker-1"])
        )
        assert second["restarts_last_hour"] == 0
        sup.wait_for(
            "the new worker-1 waiting for the storage",
            lambda: (
                _heartbeat(root, "worker-1").get("state") == "storage_unavailable"
                and _heartbeat(root, "worker-1").get("pid") == second["pid"]
            ),
        )

        left = OUTAGE_S - (time.monotonic() - stopped_at)
        if left > 0:
            time.sleep(left)
        for name in pids:  # still alive after the whole outage: nobody took them for hung
            assert sup.child(name)["state"] == "running", sup.describe()
        assert sup.child("worker-0")["pid"] == pids["worker-0"]
        pg.start()
        restarted_at, outage_s = time.time(), time.monotonic() - stopped_at

        sup.wait_for("status: storage available", lambda: storage_state("available"))
        before = {t.number for t in _trials(pg.url)}
        sup.wait_for("every trial of before the outage resolved", lambda: _resolved(_trials(pg.url), before))

        def trained_after(name: str) -> bool:
            done = log_events(root, name, "trial_finished")
            return any(_epoch(e["timestamp"]) > restarted_at for e in done)

        for name in pids:
            sup.wait_for(f"{name} finishing a trial after the outage", lambda n=name: trained_after(n))

        for name in pids:
            child = sup.child(name)
            assert child["state"] == "running" and child["restarts_last_hour"] == 0, child
        assert sup.child("worker-0")["pid"] == pids["worker-0"]  # it waited, it never exited
        unhealthy = log_events(root, event="child_unhealthy")
        assert [(e["child"], e.get("counted")) for e in unhealthy] == [("worker-1", False)]
        assert not log_events(root, event="alert_child_failed")
        resolved = [
            e for e in log_events(root, event="alert_resolved") if e["alert"] == "storage_unavailable"
        ]
        assert resolved
        assert log_events(root, "worker-0", "storage_available")
        trained_s = time.time() - restarted_at
        assert sup.terminate() == 0, sup.describe()
        after = _trials(pg.url)
        assert _resolved(after, before), [(t.number, t.state.name) for t in after]
        failed = [t.number for t in after if t.state == TrialState.FAIL and t.number in before]
        taken = sum(len(log_events(root, n, "trial_taken_over")) for n in pids)
        print(  # the drill's figures (pytest -s)
            f"outage {outage_s:.0f} s; trials before {len(before)}, failed as stale and retried "
            f"{failed}; tells refused (taken over) {taken}; both workers finished a trial "
            f"{trained_s:.0f} s after the restart"
        )


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_a_supervisor_started_while_the_storage_is_down_waits_for_it(
    tmp_path: Path, sups: Supervisors
) -> None:
    """At boot the database may still be starting: the supervisor waits (logged, never an
    exit that systemd would count), starts its workers once it answers, and a SIGTERM during
    the wait ends it cleanly."""
    with private_postgres() as pg:
        pg.stop()
        root = tmp_path / "root"
        cfg = write_config(
            tmp_path / "c.toml", root, study={"name": STUDY, "storage": pg.url}, workers={"count": 1}
        )
        sup = sups.start(cfg, root)
        sup.wait_for(
            "two logged attempts", lambda: len(log_events(root, event="storage_unavailable_at_start")) >= 2
        )
        assert sup.proc.poll() is None and sup.child("worker-0") is None  # alive, no worker yet
        pg.start()
        sup.wait_for("worker-0 running", lambda: sup.running_child("worker-0"))
        assert log_events(root, event="storage_available")
        assert sup.terminate() == 0, sup.describe()

        pg.stop()
        again = sups.start(cfg, root)
        again.wait_for(
            "a wait at the second start",
            lambda: len(log_events(root, event="storage_unavailable_at_start")) >= 3,
        )
        assert again.terminate(timeout=30) == 0, again.describe()
        assert log_events(root, event="supervisor_stopped")[-1]["reason"].startswith("signal")
