"""The name of the active study, the single source of truth every component reads.

With a SQLite storage (one machine) it is ``<root>/.current_study``, written atomically by
:func:`write_current_study` (``cappuccino set-study`` / ``bin/sync_training_study`` and
``cappuccino start-training``).

With a shared storage (any other URL: PostgreSQL; the process's storage is
:data:`trainers.storage.STORAGE_ENV` unless ``storage`` is given) the study lives in that
database (:mod:`trainers.study_db.current`, table ``cappuccino_current_study``), so every
host sharing the study follows a switch made on any of them; ``.current_study`` is then
this host's mirror of it, rewritten by every write and by a read that finds it differs.
While the database cannot be read, the mirror is used; a write fails (nothing changed).
A shared storage that has no current study yet is seeded from this host's file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from trainers.atomic_io import atomic_write_bytes
from trainers.runtime.layout import Layout

MAX_STUDY_NAME = 200


def shared_storage(storage: str | None = None) -> str | None:
    """The storage URL whose database holds the current study, or None (SQLite: the file).

    ``storage`` defaults to the process's (:data:`trainers.storage.STORAGE_ENV`)."""
    from trainers.storage import STORAGE_ENV

    url = storage or os.environ.get(STORAGE_ENV) or ""
    return url if url and not url.startswith("sqlite") else None


def read_current_study(root: str | Path, storage: str | None = None) -> str | None:
    """The current study (stripped), or None when there is none: from the shared storage
    when there is one (module docstring), else ``<root>/.current_study``.

    Raises:
        ValueError: the file exists but cannot be read.
    """
    local = _read_file(root)
    url = shared_storage(storage)
    if url is None:
        return local
    from trainers.study_db import current

    try:
        shared = current.read_shared(url)
        if shared is None and local is not None:
            current.write_shared(url, local)  # the first host of a shared study seeds it
            return local
    except current.StudyDBError:
        return local  # the database is down: this host's last known study
    if shared is not None and shared != local:
        with contextlib.suppress(OSError):  # the mirror is a convenience; the database is the truth
            write_current_study(root, shared, storage="")
    return shared


def _read_file(root: str | Path) -> str | None:
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


def write_current_study(root: str | Path, name: str, storage: str | None = None) -> None:
    """Record the current study: in the shared storage first when there is one (``storage``
    ``""`` writes the file only), then ``<root>/.current_study`` atomically.

    Raises:
        ValueError: an empty name, one with a line break, or one over 200 characters; or the
            shared storage cannot be written (nothing changed).
        OSError: the file cannot be written.
    """
    if not name or "\n" in name or len(name) > MAX_STUDY_NAME:
        raise ValueError(f"invalid study name {name!r}")
    url = None if storage == "" else shared_storage(storage)
    if url is not None:
        from trainers.study_db import current

        current.write_shared(url, name)  # StudyDBError is a ValueError
    atomic_write_bytes(Layout(root).current_study, (name + "\n").encode())
