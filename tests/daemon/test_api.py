"""The control API against a real supervisor that runs it as its child ``api`` (one
supervisor for the module, no paper trader, no workers until a test starts training), with
httpx over real HTTP: the token on every route but health, each route, bad bodies (422
naming the field), concurrent training requests (one wins, the other gets 409), the token
kept out of every log, and SIGTERM stopping the API with the supervisor. The last tests
run ``python -m daemon.api`` alone (environment token, non-loopback bind warning)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest

from tests.daemon._supervisor_proc import (
    REPO,
    SupervisorProc,
    clean_env,
    log_events,
    proc_gone,
    supervisors,
    write_config,
)
from trainers.atomic_io import atomic_write_json
from trainers.runtime.current_study import write_current_study
from trainers.runtime.layout import Layout
from trainers.runtime.pidlock import PidLock
from trainers.storage import default_storage_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STUDY = "api_study"
ROUTES = {
    ("GET", "/api/health"),
    ("GET", "/api/status"),
    ("POST", "/api/training/start"),
    ("POST", "/api/training/stop"),
    ("POST", "/api/training/continue"),
    ("POST", "/api/study/current"),
    ("GET", "/api/trials/top"),
    ("POST", "/api/ensemble/sync"),
    ("POST", "/api/deploy"),
    ("POST", "/api/deploy/rollback"),
    ("GET", "/api/paper_trader"),
}
# a body each POST route would act on, so a missing token check could not hide behind a 422
VALID_BODIES: dict[str, dict[str, Any]] = {
    "/api/training/start": {"study": "intruder", "n_trials": 1, "workers": 2},
    "/api/study/current": {"study": "intruder"},
    "/api/training/continue": {"force": True},
    "/api/deploy": {"dry_run": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrong_tokens(token: str) -> list[str]:
    last = "A" if token[-1] != "A" else "B"
    return [token[:-1] + last, token + "x", "x" * 43]


@dataclass
class Api:
    sup: SupervisorProc
    root: Path
    base: str
    token: str
    client: httpx.Client  # with the token

    def anonymous(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.base + path, timeout=60, **kwargs)

    def status(self) -> dict[str, Any]:
        response = self.client.get("/api/status")
        assert response.status_code == 200, response.text
        return response.json()

    def child_pid(self, name: str) -> int | None:
        for child in (self.status().get("supervisor") or {}).get("children", []):
            if child["name"] == name and child["state"] == "running":
                return int(child["pid"])
        return None


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("api")
    root = tmp / "root"
    root.mkdir()
    write_current_study(root, STUDY)
    port = free_port()
    cfg = write_config(
        tmp / "c.toml",
        root,
        workers={"count": 0},
        api={"enabled": True, "port": port},
        restart={"stop_timeout_s": 10},
    )
    base = f"http://127.0.0.1:{port}"
    with supervisors(tmp) as sups:
        sup = sups.start(cfg, root)
        sup.wait_for("the API answering", lambda: _answers(base))
        token = Layout(root).api_token.read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
            yield Api(sup, root, base, token, client)


def test_health_and_docs_need_no_token_and_the_token_file_is_owner_only(api: Api) -> None:
    assert stat.S_IMODE(Layout(api.root).api_token.stat().st_mode) == 0o600
    health = api.anonymous("GET", "/api/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    docs = api.anonymous("GET", "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = api.anonymous("GET", "/openapi.json").json()
    served = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    assert served == ROUTES
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_every_route_but_health_refuses_a_missing_or_wrong_token(api: Api) -> None:
    for method, path in sorted(ROUTES - {("GET", "/api/health")}):
        body = VALID_BODIES.get(path)
        attempts: list[dict[str, str]] = [{}, {"Authorization": f"Basic {api.token}"}]
        attempts += [{"Authorization": f"Bearer {t}"} for t in wrong_tokens(api.token)]
        for headers in attempts:
            response = api.anonymous(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json() == {"detail": "missing or wrong bearer token"}
    # nothing was done for the intruder
    assert (api.root / ".current_study").read_text().strip() == STUDY
    assert not Layout(api.root).training_request.exists()
    assert log_events(api.root, "api", "api_unauthorized")


def test_status_and_paper_trader(api: Api) -> None:
    status = api.status()
    assert status["supervisor_running"] is True
    assert status["supervisor"]["pid"] == api.sup.pid
    assert status["current_study"] == STUDY
    assert api.child_pid("api") is not None
    missing = api.client.get("/api/paper_trader")
    assert missing.status_code == 404 and "no paper trader status yet" in missing.json()["detail"]
    trader_status = {"study": STUDY, "equity": 10_250.5, "last_bar": "2024-01-02T03:00:00+00:00"}
    atomic_write_json(Layout(api.root).trader_status, trader_status)
    found = api.client.get("/api/paper_trader")
    assert found.status_code == 200 and found.json() == trader_status


def start_body(**fields: Any) -> dict[str, Any]:
    """A start body: ``study``, ``n_trials``, ``workers`` set, then ``fields`` (None drops one)."""
    body = {"study": "s", "n_trials": 5, "workers": 1, **fields}
    return {k: v for k, v in body.items() if v is not None}


START, CURRENT, DEPLOY, TOP = "/api/training/start", "/api/study/current", "/api/deploy", "/api/trials/top"
BAD_REQUESTS: list[tuple[str, str, Any, tuple[str, str], str]] = [
    # method, path, JSON body (a query string for GET), the error's loc, its type
    ("POST", START, start_body(study=None), ("body", "study"), "missing"),
    ("POST", START, start_body(n_trials=0), ("body", "n_trials"), "greater_than_equal"),
    ("POST", START, start_body(workers="two"), ("body", "workers"), "int_parsing"),
    ("POST", START, start_body(symbol="BTC"), ("body", "symbol"), "extra_forbidden"),
    ("POST", START, start_body(mode="fast"), ("body", "mode"), "literal_error"),
    ("POST", START, start_body(fee=1.5), ("body", "fee"), "less_than"),
    ("POST", START, start_body(study="a\nb"), ("body", "study"), "string_pattern_mismatch"),
    (
        "POST",
        START,
        start_body(mode="quick", use_expanding_window=True),
        ("body", "use_expanding_window"),
        "value_error",
    ),
    ("POST", START, start_body(test_period_days=30), ("body", "test_period_days"), "value_error"),
    (
        "POST",
        START,
        start_body(use_expanding_window=True, min_train_days=180),
        ("body", "min_train_days"),
        "value_error",
    ),
    ("POST", START, start_body(sequential=True, mode="full"), ("body", "mode"), "value_error"),
    (
        "POST",
        START,
        start_body(sequential=True, quick_trials=0),
        ("body", "quick_trials"),
        "greater_than_equal",
    ),
    ("POST", "/api/training/continue", {"forse": True}, ("body", "forse"), "extra_forbidden"),
    ("POST", CURRENT, {}, ("body", "study"), "missing"),
    ("POST", CURRENT, {"study": ""}, ("body", "study"), "string_too_short"),
    ("POST", CURRENT, {"study": "s", "force": True}, ("body", "force"), "extra_forbidden"),
    ("POST", DEPLOY, {"dry_run": "maybe"}, ("body", "dry_run"), "bool_parsing"),
    ("POST", DEPLOY, {"dryrun": True}, ("body", "dryrun"), "extra_forbidden"),
    ("GET", TOP, "n=0", ("query", "n"), "greater_than_equal"),
    ("GET", TOP, "n=ten", ("query", "n"), "int_parsing"),
]


@pytest.mark.parametrize(("method", "path", "body", "loc", "kind"), BAD_REQUESTS)
def test_bad_bodies_get_422_naming_the_field(
    api: Api, method: str, path: str, body: Any, loc: tuple[str, str], kind: str
) -> None:
    response = api.client.get(f"{path}?{body}") if method == "GET" else api.client.post(path, json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [(tuple(e["loc"]), e["type"]) for e in errors] == [(loc, kind)], errors
    assert all(e["msg"] for e in errors)
    assert (api.root / ".current_study").read_text().strip() == STUDY
    assert not Layout(api.root).training_request.exists()


def test_continue_without_a_sequential_run_is_a_409_naming_it(api: Api) -> None:
    response = api.client.post("/api/training/continue", json={"force": True})
    assert response.status_code == 409, response.text
    assert response.json()["detail"].startswith("no sequential run under ")
    assert not Layout(api.root).sequential.exists()


def test_a_body_that_is_not_json_gets_422(api: Api) -> None:
    response = api.client.post(
        "/api/training/start", content=b"study=s", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_top_trials_best_first(api: Api) -> None:
    study = optuna.create_study(
        storage=default_storage_url(api.root), study_name="ranked", direction="maximize"
    )
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for i, value in enumerate([0.1, 0.5, 0.3]):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"x": value},
                distributions=dist,
                user_attrs={"vin": f"VIN{i}", "grade": "B"},
            )
        )
    top = api.client.get("/api/trials/top", params={"n": 2, "study": "ranked"})
    assert top.status_code == 200, top.text
    doc = top.json()
    assert doc["study"] == "ranked"
    assert [(t["rank"], t["number"], t["value"], t["vin"]) for t in doc["trials"]] == [
        (1, 1, 0.5, "VIN1"),
        (2, 2, 0.3, "VIN2"),
    ]
    assert doc["trials"][0]["params"] == {"x": 0.5}
    unknown = api.client.get("/api/trials/top", params={"study": "no_such_study"})
    assert unknown.status_code == 404 and "no_such_study" in unknown.json()["detail"]
    current = api.client.get("/api/trials/top")  # the current study: no trials yet
    assert current.status_code == 200 and current.json()["trials"] == []


def test_concurrent_starts_one_wins_the_other_gets_409_then_stop(api: Api) -> None:
    layout = Layout(api.root)
    body = {"study": "api_trained", "n_trials": 3, "workers": 1, "mode": "quick", "budget_steps": 256}
    # a request that finds the lock held (here by this test) is refused at once
    with PidLock(layout.training_lock):
        held = api.client.post("/api/training/start", json=body)
    assert held.status_code == 409, held.text
    assert f"pid {os.getpid()}" in held.json()["detail"]
    assert not layout.training_request.exists()

    barrier = threading.Barrier(2)

    def start() -> httpx.Response:
        barrier.wait()
        return api.client.post("/api/training/start", json=body)

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: start(), range(2)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 409], [r.text for r in responses]
    won = next(r for r in responses if r.status_code == 200).json()
    lost = next(r for r in responses if r.status_code == 409).json()
    assert "another training request" in lost["detail"]
    assert won["study"] == "api_trained" and won["workers"] == 1
    assert won["supervisor_pid"] == api.sup.pid and won["supervisor_signalled"] is True
    request = tomllib.loads(layout.training_request.read_text())
    assert request["study"] == {"n_trials": 3, "mode": "quick", "budget_steps": 256}
    assert request["workers"] == {"count": 1}
    assert (api.root / ".current_study").read_text().strip() == "api_trained"

    def worker_on_new_study() -> int | None:
        status = api.status()
        return api.child_pid("worker-0") if status["supervisor"]["study"] == "api_trained" else None

    worker = api.sup.wait_for("worker-0 on the new study", worker_on_new_study)

    stop = api.client.post("/api/training/stop")
    assert stop.status_code == 200, stop.text
    assert stop.json()["workers_before"] == 1 and stop.json()["supervisor_signalled"] is True
    request = tomllib.loads(layout.training_request.read_text())
    assert request["workers"] == {"count": 0}
    assert request["study"]["n_trials"] == 3  # the rest of the request is kept
    api.sup.wait_for(
        "worker-0 stopped",
        lambda: (
            proc_gone(worker) and all(c["name"] != "worker-0" for c in api.status()["supervisor"]["children"])
        ),
    )
    assert api.child_pid("api") is not None  # the API and the supervisor keep running


def test_set_current_study(api: Api) -> None:
    switched = api.client.post("/api/study/current", json={"study": "api_other"})
    assert switched.status_code == 200, switched.text
    doc = switched.json()
    assert doc["study"] == "api_other" and doc["supervisor_signalled"] is True
    assert doc["ensemble_sync"]["ok"] is False  # no trial to sync yet; the output says so
    assert doc["ensemble_sync"]["output"]
    assert (api.root / ".current_study").read_text().strip() == "api_other"
    api.sup.wait_for(
        "the supervisor on api_other", lambda: api.status()["supervisor"]["study"] == "api_other"
    )


def test_sync_deploy_and_rollback_run_the_job_commands(api: Api) -> None:
    api_pid = api.child_pid("api")
    with ThreadPoolExecutor(3) as pool:  # three commands at once: each answer has its own output
        sync_future = pool.submit(api.client.post, "/api/ensemble/sync")
        deploy_future = pool.submit(api.client.post, "/api/deploy", json={"dry_run": True})
        rollback_future = pool.submit(api.client.post, "/api/deploy/rollback")
        sync, deploy, rollback = sync_future.result(), deploy_future.result(), rollback_future.result()
    # the current study has no COMPLETE trial: the sync command fails and says why
    assert sync.status_code == 409, sync.text
    detail = sync.json()["detail"]
    assert detail["job"] == "ensemble_sync" and detail["outcome"] == "failed"
    assert any("no usable COMPLETE trial" in line for line in detail["output"]), detail
    # a dry run without a candidate is a normal outcome
    assert deploy.status_code == 200, deploy.text
    assert deploy.json()["outcome"] == "ok"
    assert any("no candidate" in line for line in deploy.json()["output"]), deploy.json()
    # nothing deployed yet: nothing to roll back
    assert rollback.status_code == 409, rollback.text
    undo = rollback.json()["detail"]
    assert any("no previous deployment" in line for line in undo["output"]), undo
    # each answer carries its own command's lines only
    assert not set(undo["output"]) & (set(detail["output"]) | set(deploy.json()["output"]))
    # the API was not restarted meanwhile (its tree's memory limit covers the three commands)
    assert api.child_pid("api") == api_pid
    assert not (Layout(api.root).deployments_dir / "model_0").exists()


def test_the_token_never_reaches_a_log(api: Api) -> None:
    assert api.client.get("/api/status").status_code == 200
    for wrong in wrong_tokens(api.token):
        api.anonymous("GET", "/api/status", headers={"Authorization": f"Bearer {wrong}"})
    files = [p for p in api.root.rglob("*") if p.is_file() and p != Layout(api.root).api_token]
    files += list(api.root.parent.glob("supervisor*.out"))
    assert any(p.name == "api.log" for p in files)
    for path in files:
        text = path.read_bytes().decode(errors="replace")
        for secret in [api.token, *wrong_tokens(api.token)]:
            assert secret not in text, path


def test_sigterm_to_the_supervisor_stops_the_api(api: Api) -> None:
    """Runs last: it stops the module's supervisor."""
    pid = api.child_pid("api")
    assert pid is not None
    assert api.sup.terminate() == 0
    assert proc_gone(pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(api.base + "/api/health", timeout=5)
    assert log_events(api.root, "api", "api_stopped")


# --------------------------------------------------------------------------- API alone
@contextlib.contextmanager
def api_process(root: Path, port: int, *args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "daemon.api", "--root", str(root), "--port", str(port), *args]
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def wait_answering(proc: subprocess.Popen[bytes], base: str) -> None:
    """Poll the health route (at most 4 minutes); fail with the output if the process exits."""
    for _ in range(1200):
        if _answers(base):
            return
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "exited")
        time.sleep(0.2)
    raise AssertionError("the API did not answer")


def test_environment_token_and_a_non_loopback_bind(tmp_path: Path) -> None:
    token = "env-token-" + "z" * 30
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with api_process(tmp_path, port, "--host", "0.0.0.0", env=clean_env(CAPPUCCINO_API_TOKEN=token)) as proc:
        wait_answering(proc, base)
        ok = httpx.get(base + "/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert ok.status_code == 200, ok.text
        assert ok.json()["supervisor_running"] is False
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
    assert not Layout(tmp_path).api_token.exists()  # the environment's token: no file
    warning = log_events(tmp_path, "api", "api_bind_not_loopback")
    assert warning and warning[0]["host"] == "0.0.0.0" and warning[0]["level"] == "warning"
    started = log_events(tmp_path, "api", "api_starting")
    assert started[0]["token_source"] == "environment variable CAPPUCCINO_API_TOKEN"
    assert token not in json.dumps(log_events(tmp_path, "api"))


def test_a_token_file_others_can_read_stops_the_api_with_one_line(tmp_path: Path) -> None:
    path = Layout(tmp_path).api_token
    path.parent.mkdir(parents=True)
    path.write_text("a-token-that-was-shared-too-widely\n")
    os.chmod(path, 0o644)
    with api_process(tmp_path, free_port(), env=clean_env()) as proc:
        assert proc.wait(120) == 2
        output = proc.stdout.read().decode() if proc.stdout else ""
    assert f"error: {path}: the token file is accessible to others (mode 0644)" in output
    assert "a-token-that-was-shared" not in output
