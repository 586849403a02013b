"""``<root>/.current_study``: the name of the active study, the single source of truth every
component reads (written atomically by ``cappuccino set-study`` / ``bin/sync_training_study``)."""

from __future__ import annotations

from pathlib import Path

CURRENT_STUDY_FILE = ".current_study"


def read_current_study(root: str | Path) -> str | None:
    """The study name in ``<root>/.current_study`` (stripped), or None when the file is
    missing or empty.

    Raises:
        ValueError: the file exists but cannot be read.
    """
    path = Path(root) / CURRENT_STUDY_FILE
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
        path = Path(root) / CURRENT_STUDY_FILE
        raise ValueError(f"{path}: missing or empty; pass --study or run bin/sync_training_study NAME")
    return name
