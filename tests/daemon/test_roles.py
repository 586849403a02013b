"""Host roles (``python -m daemon.supervisor --role``): which children and jobs one host runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.supervisor import Supervisor, main


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
