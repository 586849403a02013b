"""The control API's bearer token.

The token is the ``CAPPUCCINO_API_TOKEN`` environment variable when it is set (at least
16 characters), else the content of ``<root>/run/api.token``: a file of mode 0600 created
with 32 random bytes (URL-safe base64, :func:`secrets.token_urlsafe`) by the first process
that needs it (the API at its start, or ``cappuccino api-token``). A token file that others
can read is refused. Requests present it as ``Authorization: Bearer <token>``; it is
compared in constant time (:func:`secrets.compare_digest`) and never logged.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from trainers.runtime.layout import Layout

TOKEN_ENV = "CAPPUCCINO_API_TOKEN"
MIN_TOKEN_LENGTH = 16
TOKEN_BYTES = 32


class TokenError(ValueError):
    """The token cannot be used (too short, unreadable, or a file others can read); the
    message names the variable or the file and what to do."""


@dataclass(frozen=True)
class ApiToken:
    """The token and where it comes from.

    Attributes:
        value: the token (kept out of ``repr``).
        source: ``environment variable CAPPUCCINO_API_TOKEN`` or the token file's path.
        path: the token file, or None when the token comes from the environment.
    """

    value: str = field(repr=False)
    source: str
    path: Path | None = None

    def matches(self, presented: str | None) -> bool:
        """Whether ``presented`` is the token (constant-time comparison of the UTF-8 bytes)."""
        if presented is None:
            return False
        return secrets.compare_digest(presented.encode(), self.value.encode())


def token_source(root: Path) -> str:
    """Where the token comes from, without reading or creating it: the environment
    variable's name, or the token file's path."""
    return f"environment variable {TOKEN_ENV}" if os.environ.get(TOKEN_ENV) else str(Layout(root).api_token)


def _create_token_file(path: Path) -> None:
    """Create ``path`` (mode 0600, exclusively: a concurrent creator's file wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, (secrets.token_urlsafe(TOKEN_BYTES) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def load_token(root: Path, create: bool = True) -> ApiToken:
    """The API token: ``CAPPUCCINO_API_TOKEN``, else ``<root>/run/api.token`` (created when
    missing and ``create``).

    Raises:
        TokenError: the variable is shorter than 16 characters; the file is missing (and not
            ``create``), unreadable, empty, or readable or writable by group or others.
    """
    env = os.environ.get(TOKEN_ENV)
    if env is not None and env.strip():
        value = env.strip()
        if len(value) < MIN_TOKEN_LENGTH:
            raise TokenError(
                f"environment variable {TOKEN_ENV}: a token needs at least {MIN_TOKEN_LENGTH} characters "
                f"(got {len(value)}); unset it to use a generated token file"
            )
        return ApiToken(value, f"environment variable {TOKEN_ENV}")
    path = Layout(root).api_token
    if create and not path.exists():
        _create_token_file(path)
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TokenError(
                f"{path}: the token file is accessible to others (mode {stat.S_IMODE(mode):04o}); "
                f"run chmod 600 {path}, or delete it and a new token is created"
            )
        value = path.read_text().strip()
    except FileNotFoundError:
        raise TokenError(
            f"{path}: no token file yet (the control API creates it at its first start; or set {TOKEN_ENV})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"{path}: cannot read the token file ({exc})") from None
    if not value:
        raise TokenError(f"{path}: the token file is empty; delete it and a new token is created")
    return ApiToken(value, str(path), path)
