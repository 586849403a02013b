"""Alert delivery (daemon.alerts) against a real local HTTP server: payload, retry with
backoff, give-up, no blocking of the caller, de-duplication, state across restarts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.alerts import Alert, AlertSink
from daemon.config import load_config
from tests.daemon.webhook_server import webhook_server

SECRET = "T0KEN-s3cr3t"


def stagnation(best: int = 7) -> Alert:
    return Alert(
        "stagnation",
        "warning",
        f"best trial {best} has not improved",
        f"stagnation:s1:{best}",
        study="s1",
        details={"best_number": best, "trials_since_best": 60},
    )


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e.get("event") == name]


def test_alert_is_posted_as_json_and_logged(tmp_path: Path) -> None:
    with webhook_server() as hook, capture_logs() as logs:
        sink = AlertSink(hook.url(f"/hook/{SECRET}"), tmp_path, backoff_s=0.01)
        assert sink.emit(stagnation())
        assert sink.flush(30)
        sink.close()
    assert len(hook.received) == 1
    got = hook.received[0]
    assert got.path == f"/hook/{SECRET}" and got.headers["Content-Type"] == "application/json"
    body = got.body
    assert {k: body[k] for k in ("alert", "severity", "study", "root", "key")} == {
        "alert": "stagnation",
        "severity": "warning",
        "study": "s1",
        "root": str(tmp_path),
        "key": "stagnation:s1:7",
    }
    assert body["message"] == "best trial 7 has not improved"
    assert body["best_number"] == 7 and body["trials_since_best"] == 60
    assert body["time"].endswith("+00:00")
    logged = events(logs, "alert")
    assert len(logged) == 1 and logged[0]["alert"] == "stagnation" and logged[0]["log_level"] == "warning"
    assert events(logs, "alert_delivered")[0]["attempts"] == 1
    snap = sink.snapshot()
    assert snap["delivery"]["sent"] == 1 and snap["recent"][-1]["delivery"] == "delivered"
    assert SECRET not in json.dumps(snap) and SECRET not in repr(logs)


def test_retried_with_backoff_after_two_500s(tmp_path: Path) -> None:
    with webhook_server(statuses=[500, 500]) as hook, capture_logs() as logs:
        sink = AlertSink(hook.url(), tmp_path, max_attempts=5, backoff_s=0.01)
        sink.emit(stagnation())
        assert sink.flush(30)
        sink.close()
    assert [r.status for r in hook.received] == [500, 500, 200]
    assert all(b == hook.received[0].body for b in hook.bodies())  # the same alert each time
    retries = events(logs, "alert_retry")
    assert [(e["attempt"], e["error"]) for e in retries] == [(1, "HTTP 500"), (2, "HTTP 500")]
    assert retries[1]["wait_s"] == 2 * retries[0]["wait_s"]  # exponential backoff
    assert events(logs, "alert_delivered")[0]["attempts"] == 3
    assert sink.snapshot()["delivery"] == {"sent": 1, "failed": 0, "dropped": 0, "last_error": None}


def test_gives_up_after_max_attempts_and_logs_it(tmp_path: Path) -> None:
    with webhook_server(default=503) as hook, capture_logs() as logs:
        sink = AlertSink(hook.url(f"/x/{SECRET}"), tmp_path, max_attempts=3, backoff_s=0.01)
        sink.emit(stagnation())
        assert sink.flush(30)
        sink.close()
    assert len(hook.received) == 3
    failed = events(logs, "alert_delivery_failed")
    assert len(failed) == 1 and failed[0]["attempts"] == 3 and failed[0]["error"] == "HTTP 503"
    assert failed[0]["webhook"] == f"http://127.0.0.1:{hook.port}"  # never the path (token)
    snap = sink.snapshot()
    assert snap["delivery"]["failed"] == 1 and snap["delivery"]["last_error"] == "HTTP 503"
    assert snap["recent"][-1]["delivery"].startswith("failed")
    assert SECRET not in repr(logs)


def test_a_client_error_is_not_retried(tmp_path: Path) -> None:
    with webhook_server(default=404) as hook:
        sink = AlertSink(hook.url(), tmp_path, max_attempts=5, backoff_s=0.01)
        sink.emit(stagnation())
        assert sink.flush(30)
        sink.close()
    assert len(hook.received) == 1
    assert "not retried" in sink.snapshot()["delivery"]["last_error"]


def test_unreachable_webhook_is_retried_then_given_up(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with capture_logs() as logs:
        sink = AlertSink(f"http://127.0.0.1:{port}/hook", tmp_path, max_attempts=2, backoff_s=0.01)
        assert sink.emit(stagnation())
        assert sink.flush(30)
        sink.close()
    assert [e["error"] for e in events(logs, "alert_retry")] == ["ConnectionError"]
    assert events(logs, "alert_delivery_failed")[0]["attempts"] == 2


@pytest.mark.timeout(120)
def test_emit_never_waits_for_the_webhook(tmp_path: Path) -> None:
    with webhook_server() as hook:
        hook.hold.clear()  # the server receives but does not answer
        sink = AlertSink(hook.url(), tmp_path, timeout_s=60)
        assert sink.emit(stagnation(1))  # returns while the POST is outstanding
        assert sink.emit(stagnation(2))
        assert hook.wait_for(1)
        assert not sink.flush(0)  # still in flight
        hook.hold.set()
        assert sink.flush(30)
        sink.close()
    assert [b["best_number"] for b in hook.bodies()] == [1, 2]


def test_the_same_alert_is_not_sent_again_until_resolved(tmp_path: Path) -> None:
    clock = [1_000_000.0]
    with webhook_server() as hook:
        sink = AlertSink(hook.url(), tmp_path, backoff_s=0.01, repeat_after_s=3600, clock=lambda: clock[0])
        assert sink.update([stagnation(7)]) == [stagnation(7)]
        for _ in range(5):  # five more monitor runs with the condition still there
            clock[0] += 300
            assert sink.update([stagnation(7)]) == []
        assert not sink.emit(stagnation(7))
        assert sink.emit(stagnation(9))  # another best trial stagnating is another alert
        clock[0] += 300
        assert sink.update([]) == []  # resolved ...
        assert sink.update([stagnation(7)]) == [stagnation(7)]  # ... so it alerts when back
        clock[0] += 3600  # a still-active alert is repeated once per repeat_after_s
        assert sink.emit(stagnation(7)) and not sink.emit(stagnation(7))
        assert sink.flush(30)
        sink.close()
    assert [b["best_number"] for b in hook.bodies()] == [7, 9, 7, 7]
    assert sink.snapshot()["active"]["stagnation:s1:7"]["seen"] == 3


def test_repeat_zero_never_repeats_and_update_only_resolves_its_kinds(tmp_path: Path) -> None:
    clock = [0.0]
    sink = AlertSink(None, tmp_path, repeat_after_s=0, clock=lambda: clock[0])
    drawdown = Alert("drawdown", "critical", "dd", "drawdown:paper_trader")
    assert sink.emit(drawdown)
    clock[0] += 10 * 86400
    assert not sink.emit(drawdown)
    sink.update([], kinds=["stagnation"])  # another kind's reconciliation keeps it
    assert "drawdown:paper_trader" in sink.snapshot()["active"]
    sink.update([], kinds=["drawdown"])
    assert sink.snapshot()["active"] == {}


def test_state_file_keeps_alerts_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "run" / "alerts.json"
    with webhook_server() as hook:
        first = AlertSink(hook.url(), tmp_path, state_path=state, backoff_s=0.01)
        assert first.emit(stagnation())
        assert first.flush(30)
        first.close()
        saved = json.loads(state.read_text())
        assert list(saved["active"]) == ["stagnation:s1:7"] and saved["delivery"]["sent"] == 1
        second = AlertSink(hook.url(), tmp_path, state_path=state, backoff_s=0.01)  # a restart
        assert not second.emit(stagnation())
        second.update([])
        assert json.loads(state.read_text())["active"] == {}
        assert second.emit(stagnation())
        assert second.flush(30)
        second.close()
    assert len(hook.received) == 2
    state.write_text("{broken")  # our own cache: a bad one is ignored, not fatal
    with capture_logs() as logs:
        third = AlertSink(None, tmp_path, state_path=state)
    assert third.snapshot()["active"] == {} and events(logs, "alert_state_ignored")


def test_without_a_webhook_alerts_go_to_the_log_only(tmp_path: Path) -> None:
    with capture_logs() as logs:
        sink = AlertSink(None, tmp_path)
        assert sink.emit(Alert("drawdown", "critical", "dd past limit", "drawdown:paper_trader"))
        assert sink.flush(1)
    assert events(logs, "alert")[0]["log_level"] == "error"  # critical
    assert sink.snapshot()["recent"][0]["delivery"] == "log only"


def test_bad_webhook_url_is_one_clear_error_without_the_url(tmp_path: Path) -> None:
    for url in (f"ftp://u:{SECRET}@host/x", f"{SECRET}", "http:///nohost"):
        with pytest.raises(ValueError, match=r"alerts\.webhook_url") as err:
            AlertSink(url, tmp_path)
        assert SECRET not in str(err.value)


def test_sink_from_the_alerts_config_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with webhook_server() as hook:
        monkeypatch.setenv("CAPPUCCINO_ALERTS__WEBHOOK_URL", hook.url(f"/{SECRET}"))
        monkeypatch.setenv("CAPPUCCINO_ALERTS__MAX_ATTEMPTS", "2")
        cfg = load_config(None, {"root": str(tmp_path)})
        assert SECRET not in repr(cfg)  # the URL is a secret in the config object
        sink = AlertSink.from_config(cfg.alerts, tmp_path)
        assert sink.max_attempts == 2
        sink.emit(stagnation())
        assert sink.flush(30)
        sink.close()
    assert hook.received[0].path == f"/{SECRET}"
