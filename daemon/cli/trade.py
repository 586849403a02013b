"""``cappuccino trade``: run the paper trader in the foreground, with the options of
``python -m paper_trader`` (see :mod:`paper_trader.cli`) plus ``--config``.

``--config`` and ``--root`` work as for every command (:mod:`daemon.cli._options`); ``--live``
also honours ``paper_trader.allow_live`` from that configuration.
"""

from __future__ import annotations

import os
from typing import Any

from daemon.cli._options import with_runtime_options
from daemon.config import Config
from paper_trader import cli


def _allow_live(cfg: Config, kwargs: dict[str, Any]) -> None:
    if kwargs.get("live") and cfg.paper_trader.allow_live:
        os.environ[cli.ALLOW_LIVE_ENV] = "true"


trade = with_runtime_options(cli.trade, _allow_live)
