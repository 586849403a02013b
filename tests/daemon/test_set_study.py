"""``bin/sync_training_study NEW`` realigns a running supervisor: ``.current_study`` is
written, the supervisor (SIGHUP) restarts its workers on the new study, and the status
shows it everywhere."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.daemon._supervisor_proc import (
    REPO,
    Supervisors,
    clean_env,
    cmdline,
    log_events,
    proc_gone,
    write_config,
)
from trainers.runtime.current_study import write_current_study


def _study_arg(pid: int) -> str | None:
    argv = cmdline(pid)
    return argv[argv.index("--study") + 1] if "--study" in argv else None


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_sync_training_study_realigns_the_workers(tmp_path: Path, sups: Supervisors) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_current_study(root, "old_study")
    cfg = write_config(tmp_path / "c.toml", root, workers={"count": 2})
    sup = sups.start(cfg, root)
    old = [
        sup.wait_for(f"{name} running", lambda name=name: sup.running_child(name))
        for name in ("worker-0", "worker-1")
    ]
    assert [_study_arg(c["pid"]) for c in old] == ["old_study", "old_study"]

    result = subprocess.run(
        [str(REPO / "bin" / "sync_training_study"), "new_study", "--root", str(root), "--config", str(cfg)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"supervisor pid {sup.pid} signalled (SIGHUP)" in result.stdout
    assert (root / ".current_study").read_text().strip() == "new_study"

    def realigned() -> list[dict] | None:
        status = sup.status()
        if not status or status["supervisor"]["study"] != "new_study":
            return None
        new = [sup.running_child(f"worker-{i}") for i in range(2)]
        if not all(new) or {c["pid"] for c in new} & {c["pid"] for c in old}:
            return None
        return new

    new = sup.wait_for("workers restarted on the new study", realigned)
    assert [_study_arg(c["pid"]) for c in new] == ["new_study", "new_study"]
    for c in old:
        assert proc_gone(c["pid"], c["create_time"])
    assert [c["restarts"] for c in new] == [0, 0]  # a realignment is not a crash
    status = sup.status()
    assert status["current_study"] == "new_study"
    assert status["studies"]["supervisor"] == "new_study"
    # The workers follow the new study at once; a live ensemble synced from the old study's
    # trials before the switch keeps trading until the new study has trials of its own, and
    # the status says so rather than hiding it.
    assert set(status["mismatches"]) <= {"ensemble"}, status["mismatches"]
    if status["mismatches"]:
        assert status["ensemble"]["study"] == "old_study"
    assert status["study"]["study"] == "new_study"
    reloads = log_events(root, event="reloaded")
    assert [(e["study"], e["previous_study"]) for e in reloads] == [("new_study", "old_study")]
    assert sup.terminate() == 0, sup.describe()
