"""File-system helpers of the cleanup: apparent sizes, the root boundary, open files,
log kinds and a scratch directory's ``model.json``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import psutil

from trainers.atomic_io import read_json_object


def path_size(path: Path) -> int:
    """Apparent size in bytes of a file, a symbolic link (the link itself) or a folder tree
    (links inside are counted as links, never followed)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return st.st_size
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def inside(root: Path, path: Path) -> bool:
    """Whether ``path``'s folder really is inside ``root`` (no symbolic link on the way out)."""
    real_root, real_parent = os.path.realpath(root), os.path.realpath(path.parent)
    return real_parent == real_root or real_parent.startswith(real_root + os.sep)


def open_files_under(directory: Path) -> set[str]:
    """Real paths of files under ``directory`` held open by any process we may inspect."""
    prefix = os.path.realpath(directory) + os.sep
    held: set[str] = set()
    for proc in psutil.process_iter():
        try:
            files = proc.open_files()
        except (psutil.Error, OSError):
            continue
        held.update(os.path.realpath(f.path) for f in files if os.path.realpath(f.path).startswith(prefix))
    return held


def log_kind(name: str) -> str:
    if re.search(r"\.\d+$", name):
        return "rotated log"
    if name.endswith(".out"):
        return "job output"
    return "log file"


def read_meta(scratch: Path) -> dict[str, Any] | None:
    """``model.json`` of the bundle in a scratch directory (None when absent/unreadable)."""
    for candidate in (scratch / "bundle" / "model.json", scratch / "model.json"):
        if candidate.is_file() and not candidate.is_symlink():
            return read_json_object(candidate)
    return None
