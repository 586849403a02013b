"""Fixtures of the supervisor tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon._supervisor_proc import Supervisors, supervisors


@pytest.fixture
def sups(tmp_path: Path) -> Iterator[Supervisors]:
    """Start supervisors with ``sups.start(config, root)``; every process they (or the test,
    via ``sups.track(pid)``) started is stopped afterwards, by pid / process group."""
    with supervisors(tmp_path) as s:
        yield s
