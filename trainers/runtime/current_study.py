"""``<root>/.current_study``: the name of the active study, the single source of truth every
component reads. Written atomically by :func:`write_current_study` (``cappuccino
set-study`` / ``bin/sync_training_study`` and ``cappuccino start-training``)."""

from __future__ import annotations

from pathlib import Path

from trainers.atomic_io import atomic_write_bytes
from trainers.runtime.layout import Layout

MAX_STUDY_NAME = 200


def read_current_study(root: str | Path) -> str | None:
    """The study name in ``<root>/.current_study`` (stripped), or None when the file is
    missing or empty.

    Raises:
        ValueError: the file exists but cannot be read.
    """
    path = Layout(root).current_study
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    return name or None


def require_current_study(root: str | Path) -> str:
    """Like :func:`read_current_study`, for commands that need a study.

    Raises:
        ValueError: one line naming the file: missing, empty or unreadable, and what to do.
    """
    name = read_current_study(root)
    if name is None:
        path = Layout(root).current_study
        raise ValueError(f"{path}: missing or empty; pass --study or run bin/sync_training_study NAME")
    return name


def write_current_study(root: str | Path, name: str) -> None:
    """Write ``<root>/.current_study`` atomically.

    Raises:
        ValueError: an empty name, one with a line break, or one over 200 characters.
        OSError: the file cannot be written.
    """
    if not name or "\n" in name or len(name) > MAX_STUDY_NAME:
        raise ValueError(f"invalid study name {name!r}")
    atomic_write_bytes(Layout(root).current_study, (name + "\n").encode())
