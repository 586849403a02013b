"""The control API's token (real files, real environment), the loopback rule, the start
body's window fields, and ``cappuccino api-token`` (the real command in-process)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.api.auth import TOKEN_ENV, TokenError, load_token
from daemon.api.schemas import TrainingStart
from daemon.api.server import is_loopback
from daemon.cli import app
from trainers.runtime.layout import Layout


@pytest.fixture(autouse=True)
def _no_token_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def test_token_file_is_created_once_owner_only_and_reused(tmp_path: Path) -> None:
    first = load_token(tmp_path)
    path = Layout(tmp_path).api_token
    assert first.path == path and first.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.value) >= 40  # 32 random bytes, URL-safe base64
    assert load_token(tmp_path).value == first.value
    assert first.value not in repr(first)
    assert first.matches(first.value)
    assert not first.matches(first.value[:-1] + ("A" if first.value[-1] != "A" else "B"))
    assert not first.matches(None)
    assert not first.matches("")


def test_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_token(tmp_path)
    path = Layout(tmp_path).api_token
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match=r"accessible to others \(mode 0644\).*chmod 600"):
        load_token(tmp_path)


def test_missing_token_file_without_create(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="no token file yet"):
        load_token(tmp_path, create=False)
    assert not Layout(tmp_path).api_token.exists()


def test_environment_token_wins_and_must_be_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "x" * 20)
    token = load_token(tmp_path)
    assert token.value == "x" * 20 and token.path is None
    assert token.source == f"environment variable {TOKEN_ENV}"
    assert not Layout(tmp_path).api_token.exists()
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(TokenError, match=f"{TOKEN_ENV}: a token needs at least 16 characters"):
        load_token(tmp_path)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
    ],
)
def test_loopback_rule(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_window_fields_map_onto_the_mode() -> None:
    body = TrainingStart(study="s", n_trials=1, workers=0, use_expanding_window=True)
    assert body.resolved_mode() == "full"
    assert body.window_errors("quick") == []
    body = TrainingStart(study="s", n_trials=1, workers=0, test_period_days=60, min_train_days=180)
    assert body.resolved_mode() is None
    assert body.window_errors("quick") == []  # the config's mode decides
    errors = body.window_errors("full")
    assert [e["loc"] for e in errors] == [("body", "test_period_days"), ("body", "min_train_days")]
    assert "mode 'full' has fixed 21-day windows here, not 60" in errors[0]["msg"]


def test_api_token_command_prints_the_location_and_only_shows_the_token_when_asked(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["api-token", "--root", str(tmp_path), "--show"])
    assert shown.exit_code == 0, shown.output
    token = Layout(tmp_path).api_token.read_text().strip()
    assert shown.stdout.strip() == token
    where = runner.invoke(app, ["api-token", "--root", str(tmp_path)])
    assert where.exit_code == 0, where.output
    assert str(Layout(tmp_path).api_token) in where.stdout
    assert token not in where.output
    missing = runner.invoke(app, ["api-token", "--root", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
