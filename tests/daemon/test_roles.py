"""Host roles (``python -m daemon.supervisor --role``): which children and jobs one host runs;
a supervisor follows a study switch made on another host sharing its PostgreSQL storage."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.supervisor import Supervisor, main
from trainers.runtime.current_study import write_current_study


def _supervisor(tmp_path: Path, role: str) -> Supervisor:
    sup = Supervisor(None, {"root": tmp_path, "workers": {"count": 2}, "api": {"enabled": True}}, role=role)
    sup.study = "s"
    return sup


@pytest.mark.parametrize(
    ("role", "children"),
    [
        ("all", ["worker-0", "worker-1", "paper_trader", "api"]),
        ("workers", ["worker-0", "worker-1"]),
        ("services", ["paper_trader", "api"]),
    ],
)
def test_role_decides_the_children(tmp_path: Path, role: str, children: list[str]) -> None:
    sup = _supervisor(tmp_path, role)
    assert [s.name for s in sup.child_specs()] == children
    ran: list[str] = []
    body = sup.services_only(lambda: ran.append("sync") or "done")
    assert body() == ("skipped: role workers" if role == "workers" else "done")
    assert ran == ([] if role == "workers" else ["sync"])


def test_unknown_role_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--role", "trader"])
    assert exc.value.code == 2 and "invalid choice: 'trader'" in capsys.readouterr().err


@pytest.mark.postgres
def test_supervisor_follows_a_switch_made_on_another_host(tmp_path: Path, pg_url: str) -> None:
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    host_b.mkdir()
    sup = Supervisor(None, {"root": host_a, "study": {"storage": pg_url}}, role="workers")
    host_a.mkdir()
    write_current_study(host_a, "first", pg_url)
    sup.study = sup.resolve_study()
    assert sup.study == "first"
    sup.follow_shared_study()
    assert not sup._hup  # nothing changed
    write_current_study(host_b, "second", pg_url)  # set-study on host B
    sup.follow_shared_study()
    assert sup._hup  # the main loop reloads as after a SIGHUP
    assert (host_a / ".current_study").read_text() == "second\n"  # A's mirror follows


def test_sqlite_supervisor_does_not_poll(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path, "all")
    (tmp_path / ".current_study").write_text("other\n")  # only a SIGHUP applies a file edit
    sup.follow_shared_study()
    assert not sup._hup


def test_cli_refuses_an_unknown_role_before_anything_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["supervise", "--role", "trader", "--root", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "--role 'trader': expected one of all, workers, services" in result.output
    assert not (tmp_path / "r").exists()
