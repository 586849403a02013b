"""The current study in a shared PostgreSQL storage: two roots (two hosts) follow one switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers.runtime.current_study import read_current_study, shared_storage, write_current_study
from trainers.storage import STORAGE_ENV
from trainers.study_db import current

pytestmark = pytest.mark.postgres


def test_sqlite_keeps_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert shared_storage() is None and shared_storage(f"sqlite:///{tmp_path}/optuna.db") is None
    write_current_study(tmp_path, "alpha")
    assert read_current_study(tmp_path) == "alpha"


def test_two_hosts_follow_one_switch(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STORAGE_ENV, pg_url)
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    host_a.mkdir(), host_b.mkdir()
    (host_a / ".current_study").write_text("seeded\n")
    assert current.read_shared(pg_url) is None
    assert read_current_study(host_a) == "seeded"  # the first host seeds the storage
    assert current.read_shared(pg_url) == "seeded"
    assert read_current_study(host_b) == "seeded"
    assert (host_b / ".current_study").read_text() == "seeded\n"  # B's mirror
    write_current_study(host_b, "switched")  # a switch on B ...
    assert read_current_study(host_a) == "switched"  # ... is followed on A
    assert (host_a / ".current_study").read_text() == "switched\n"
    with pytest.raises(ValueError, match="invalid study name"):
        write_current_study(host_a, "bad\nname")
    assert current.read_shared(pg_url) == "switched"


def test_database_down_uses_the_mirror_and_refuses_a_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = "postgresql://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1
    monkeypatch.setenv(STORAGE_ENV, down)
    (tmp_path / ".current_study").write_text("last-known\n")
    assert read_current_study(tmp_path) == "last-known"
    with pytest.raises(ValueError, match=r"cannot write cappuccino_current_study"):
        write_current_study(tmp_path, "other")
    assert (tmp_path / ".current_study").read_text() == "last-known\n"
