"""A storage password never leaves the environment: a real supervisor on PostgreSQL (URL
with a password, given the way a user gives it: ``CAPPUCCINO_STUDY__STORAGE``) runs
workers and jobs that all reach the storage, yet the password is in no child's command
line, in no file under the root (``run/children.json`` is owner-only) and in no log."""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from optuna.trial import TrialState

from daemon.config import load_config
from daemon.fleet import child_specs
from tests.conftest import postgres_database
from tests.daemon._supervisor_proc import Supervisors, clean_env, write_config
from trainers.storage import STORAGE_ENV, default_storage_url, make_storage, redact_argv

STUDY = "secrets"
SECRET = "s3cretXYZ"  # trust auth on the test server: any password is accepted


@pytest.fixture
def pg_secret_url() -> Iterator[str]:
    """A fresh database's URL with a password in it."""
    with postgres_database() as url:
        yield url.replace("postgresql://postgres@", f"postgresql+psycopg://postgres:{SECRET}@")


def test_redact_argv_hides_url_passwords_and_nothing_else() -> None:
    argv = [
        "python",
        "-m",
        "x",
        "--storage",
        f"postgresql://u:{SECRET}@h/db",
        f"--storage=mysql://u:{SECRET}@h/d",
    ]
    argv += ["--data", "sqlite:///a/optuna.db", "--note", "not://a url with spaces", "plain"]
    out = redact_argv(argv)
    assert SECRET not in " ".join(out)
    assert out[4] == "postgresql://u:***@h/db" and out[5] == "--storage=mysql://u:***@h/d"
    assert out[:4] == argv[:4] and out[6:] == argv[6:]


def test_children_get_the_storage_in_their_environment_not_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/db"
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    cfg = load_config(None, {"root": tmp_path, "workers": {"count": 2}})
    specs = child_specs(cfg, STUDY, url)
    workers = [s for s in specs if s.name.startswith("worker-")]
    assert len(workers) == 2
    for spec in workers:
        assert not any(SECRET in a for a in spec.argv) and "--storage" not in spec.argv
        assert dict(spec.env)[STORAGE_ENV] == url
    # what a child started without --storage reads back
    monkeypatch.setenv(STORAGE_ENV, url)
    assert default_storage_url(tmp_path) == url
    monkeypatch.delenv(STORAGE_ENV)
    assert default_storage_url(tmp_path) == f"sqlite:///{tmp_path / 'optuna.db'}"


def _complete_trials(url: str) -> int:
    storage = make_storage(url, heartbeat_interval=None)
    try:
        sid = storage.get_study_id_from_name(STUDY)
        return sum(t.state == TrialState.COMPLETE for t in storage.get_all_trials(sid, deepcopy=False))
    except KeyError:
        return 0
    finally:
        storage.engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(480)
def test_storage_password_is_in_no_argv_file_or_log(
    tmp_path: Path, sups: Supervisors, pg_secret_url: str
) -> None:
    root = tmp_path / "root"
    # the sync job every 2 s and the cleanup job (archive + clean) every 3 s: every kind of
    # job command runs against the storage while the test watches
    cfg = write_config(
        tmp_path / "c.toml",
        root,
        study={"name": STUDY},
        jobs={"sync_interval_s": 2},
        archive={"interval_s": 3},
        cleanup={"interval_s": 3},
    )
    assert SECRET not in cfg.read_text()
    sup = sups.start(cfg, root, env=clean_env(**{STORAGE_ENV: pg_secret_url}))
    cmdlines: dict[int, list[str]] = {}

    def watch() -> None:
        for proc in sup.descendants():
            with contextlib.suppress(psutil.NoSuchProcess):
                cmdlines[proc.pid] = proc.cmdline()

    def children_file_checked() -> bool:
        watch()
        path = root / "run" / "children.json"
        with contextlib.suppress(FileNotFoundError):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            return "worker-0" in path.read_text()
        return False

    sup.wait_for("run/children.json with worker-0", children_file_checked)

    def jobs_ran() -> bool:
        watch()
        status = sup.status() or {}
        jobs = (status.get("supervisor") or {}).get("jobs") or {}
        return (
            _complete_trials(pg_secret_url) >= 1
            and (jobs.get("ensemble_sync") or {}).get("last_outcome") == "ok"
            and (jobs.get("cleanup") or {}).get("last_outcome") == "ok"
        )

    # sync and cleanup end "ok" only after reading the study in PostgreSQL: the URL reached them
    sup.wait_for("a COMPLETE trial in PostgreSQL and ok sync + cleanup jobs", jobs_ran)
    assert sup.terminate() == 0, sup.describe()

    assert any("trainers.worker" in " ".join(c) for c in cmdlines.values()), cmdlines
    assert any("daemon.cli" in " ".join(c) for c in cmdlines.values()), cmdlines
    leaked = [c for c in cmdlines.values() if any(SECRET in a for a in c)]
    assert not leaked, leaked
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in files) and (root / "logs" / "supervisor.log").is_file()
    leaking = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaking, leaking
    assert SECRET not in sup.output()  # the supervisor's console log
    assert not (root / "optuna.db").exists()  # every process used PostgreSQL, none the default
