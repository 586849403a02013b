"""The systemd unit as systemd/INSTALL.md installs it: with the checkout's drop-in it passes
``systemd-analyze verify`` (without the drop-in, and no checkout at ``~/cappuccino``, it
does not); its command starts a supervisor with no ``cappuccino.toml``; and the automation
scripts find a user unit as well as a system unit."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemon._supervisor_proc import REPO, clean_env

UNIT = REPO / "systemd" / "cappuccino.service"
INSTALL = REPO / "systemd" / "INSTALL.md"
PLACEHOLDER = "/path/to/cappuccino"


def install_drop_in() -> str:
    """The drop-in INSTALL.md tells the user to write, for this checkout."""
    blocks = re.findall(r"```ini\n(.*?)```", INSTALL.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "INSTALL.md shows one ini drop-in"
    assert PLACEHOLDER in blocks[0]
    return blocks[0].replace(PLACEHOLDER, str(REPO))


def verify(tmp_path: Path, drop_in: str | None) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze --user verify cappuccino.service`` with the unit (and ``drop_in``)
    in a user unit folder of its own and a home that holds no checkout."""
    units, run, home = tmp_path / "units", tmp_path / "run", tmp_path / "home"
    for d in (units, run, home):
        d.mkdir(parents=True, exist_ok=True)
    run.chmod(0o700)
    shutil.copy(UNIT, units / UNIT.name)
    if drop_in is not None:
        (units / f"{UNIT.name}.d").mkdir(exist_ok=True)
        (units / f"{UNIT.name}.d" / "override.conf").write_text(drop_in)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(run), "SYSTEMD_UNIT_PATH": f"{units}:"}
    return subprocess.run(
        ["systemd-analyze", "--user", "verify", UNIT.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian/Ubuntu package: systemd)",
)
def test_unit_with_the_install_drop_in_verifies(tmp_path: Path) -> None:
    bare = verify(tmp_path / "bare", None)
    assert bare.returncode != 0 and "is not executable" in bare.stderr, bare.stderr  # ~/cappuccino absent
    checked = verify(tmp_path / "checkout", install_drop_in())
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    # unknown keys or bad values are only warnings to verify: there must be none about the unit
    assert not [line for line in output.splitlines() if "cappuccino" in line], output


@pytest.mark.slow
def test_the_units_command_starts_without_a_config_file(tmp_path: Path) -> None:
    """The drop-in's ExecStart in an empty working directory: no cappuccino.toml, defaults."""
    exec_start = [
        line.split("=", 1)[1] for line in install_drop_in().splitlines() if line.startswith("ExecStart=")
    ][-1]
    argv = shlex.split(exec_start)
    assert "--config" not in argv and Path(argv[0]).is_file()
    work = tmp_path / "checkout"
    work.mkdir()
    env = clean_env(
        CAPPUCCINO_ROOT=str(tmp_path / "root"),
        CAPPUCCINO_STUDY__NAME="fresh",
        CAPPUCCINO_WORKERS__COUNT="0",
        CAPPUCCINO_PAPER_TRADER__ENABLED="false",
    )
    done = subprocess.run(
        [*argv, "--skip-preflight", "--duration", "1"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "root" / "run" / "status.json").is_file()
    assert not list(work.iterdir())  # nothing needed, nothing written in the working directory


FAKE_SYSTEMCTL = """#!/usr/bin/env bash
# systemd does not run here: answers `cat` for the unit the test installed, records the rest
echo "$*" >> "$CALLS"
case "$*" in
  "--user cat cappuccino.service") [ "$UNIT_KIND" = user ] ;;
  "cat cappuccino.service") [ "$UNIT_KIND" = system ] ;;
  *) exit 0 ;;
esac
"""


@pytest.mark.parametrize(
    ("kind", "script", "expected"),
    [
        ("user", "start_automation.sh", "--user start cappuccino.service"),
        ("user", "stop_automation.sh", "--user stop cappuccino.service"),
        pytest.param(  # then runs `cappuccino status` (a few seconds)
            "user",
            "status_automation.sh",
            "--user status cappuccino.service --no-pager",
            marks=pytest.mark.slow,
        ),
        ("system", "start_automation.sh", "start cappuccino.service"),
        ("system", "stop_automation.sh", "stop cappuccino.service"),
    ],
)
def test_automation_scripts_use_the_installed_unit(
    tmp_path: Path, kind: str, script: str, expected: str
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bindir / "systemctl").chmod(0o755)
    calls = tmp_path / "calls"
    env = clean_env(
        PATH=f"{bindir}:{os.environ['PATH']}",
        CALLS=str(calls),
        UNIT_KIND=kind,
        CAPPUCCINO_ROOT=str(tmp_path / "root"),
    )
    done = subprocess.run(
        [str(REPO / "bin" / script)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # every call that is not the unit lookup went to the manager that has the unit
    assert [c for c in calls.read_text().splitlines() if "cat" not in c.split()] == [expected]


def test_stop_script_without_a_unit_manages_the_pid_file(tmp_path: Path) -> None:
    env = clean_env(CAPPUCCINO_ROOT=str(tmp_path / "root"), PATH=f"{tmp_path}:{os.environ['PATH']}")
    (tmp_path / "systemctl").write_text("#!/usr/bin/env bash\nexit 1\n")  # no unit, user or system
    (tmp_path / "systemctl").chmod(0o755)
    done = subprocess.run(
        [str(REPO / "bin" / "stop_automation.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "supervisor is not running" in done.stdout, done.stdout + done.stderr
