"""``cappuccino train``: a training worker in the foreground, with the options of
``python -m trainers.worker`` (see :mod:`trainers.worker`) plus ``--config``.

``--config`` and ``--root`` work as for every command (:mod:`daemon.cli._options`); without
``--storage`` the worker uses the configuration's ``study.storage``, else
``sqlite:///<root>/optuna.db``.
"""

from __future__ import annotations

from typing import Any

from daemon.cli._options import runtime_storage, with_runtime_options
from daemon.config import Config
from trainers import worker


def _storage(cfg: Config, kwargs: dict[str, Any]) -> None:
    kwargs["storage"] = runtime_storage(cfg, kwargs.get("storage"))


train = with_runtime_options(worker.main, _storage)
