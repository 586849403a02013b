"""One command-line convention: every ``cappuccino`` command that reads the runtime (every
command registered, whatever its module, except those listed in :data:`OWN_RUNTIME`) takes
``--config``/``-c`` and ``--root`` with the same help, shows them in its ``--help``, and
resolves them the same way (a missing ``--config`` file is the same one-line error, exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from daemon.cli import app
from daemon.cli._options import CONFIG_HELP, ROOT_HELP

# commands that build their own runtime and configuration, with the reason
OWN_RUNTIME = {
    ("quickstart",): "creates a fresh root and runs the supervisor with its own daemon/quickstart.toml",
}


# required values a command checks before it reads its configuration (a usage error comes first)
ACCEPTED = {"mode": "deploy"}


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):  # a group (typer's own click classes: duck-typed)
            out += _commands(cmd, (*prefix, name))
        elif not cmd.hidden:
            out.append(((*prefix, name), cmd))
    return out


COMMANDS = _commands(typer.main.get_command(app))  # type: ignore[arg-type]
RUNTIME_COMMANDS = [(path, cmd) for path, cmd in COMMANDS if path not in OWN_RUNTIME]


def _option(cmd: Any, name: str) -> Any:
    return next((p for p in cmd.params if p.param_type_name == "option" and name in p.opts), None)


def _ids(items: list[tuple[tuple[str, ...], Any]]) -> list[str]:
    return [" ".join(path) for path, _ in items]


def test_the_walk_finds_the_commands() -> None:
    names = set(_ids(COMMANDS))
    assert {"supervise", "status", "sync", "deploy", "train", "trade", "models list", "models info"} <= names
    assert set(OWN_RUNTIME) <= {path for path, _ in COMMANDS}, "an exemption names a command that is gone"


@pytest.mark.parametrize(("path", "cmd"), RUNTIME_COMMANDS, ids=_ids(RUNTIME_COMMANDS))
def test_runtime_command_offers_config_and_root_the_same_way(path: tuple[str, ...], cmd: Any) -> None:
    config, root = _option(cmd, "--config"), _option(cmd, "--root")
    assert config is not None and root is not None, f"cappuccino {' '.join(path)}: needs --config and --root"
    assert config.opts == ["--config", "-c"] and root.opts == ["--root"]
    assert config.help == CONFIG_HELP and root.help == ROOT_HELP
    assert config.default is None and root.default is None and root.envvar is None  # resolved by the config
    shown = CliRunner().invoke(app, [*path, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "--config" in shown.output and "--root" in shown.output and "-c" in shown.output


def _required_args(cmd: Any, tmp_path: Path) -> list[str]:
    """Placeholder values for the command's required arguments and options."""
    args: list[str] = []
    for p in cmd.params:
        if not p.required:
            continue
        kind = p.type_descriptor.annotation
        value = "1" if kind in (int, float) else str(tmp_path / "out") if kind is Path else "x"
        value = ACCEPTED.get(p.name, value)
        if p.param_type_name == "option":
            args += [p.opts[0], value]
        else:
            args.append(value)
    return args


@pytest.mark.parametrize(("path", "cmd"), RUNTIME_COMMANDS, ids=_ids(RUNTIME_COMMANDS))
def test_a_missing_config_file_is_the_same_error_everywhere(
    path: tuple[str, ...], cmd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "missing.toml"
    argv = [*path, "--config", str(missing), "--root", str(tmp_path), *_required_args(cmd, tmp_path)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, (argv, result.output)
    assert f"error: {missing}: config file not found" in result.output, (argv, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing is written before the config is read"
