"""Where the trader's policy comes from: the live ensemble (hot-reloaded by
:class:`paper_trader.reload.ReloadWatcher`) or one deployment slot.

Both offer the same small interface to the trading loop, called between bars only:
``start()``, ``poll() -> EnsemblePolicy | None`` (a new policy to swap in, else None),
``request_reload()`` (signal-safe), ``status -> dict``, ``name``, ``stop()``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from ensemble.deploy_slot import DEPLOYMENT_INFO_FILE, SlotError, verify_slot
from ensemble.policy import EnsembleError, EnsemblePolicy
from paper_trader.reload import ReloadWatcher
from trainers.bundle import BundleError, PipelineSpec, load_bundle


class ModelSource(Protocol):
    name: str

    def start(self) -> None: ...

    def poll(self) -> EnsemblePolicy | None: ...

    def request_reload(self) -> None: ...

    @property
    def status(self) -> dict[str, Any]: ...

    def stop(self) -> None: ...


class EnsembleSource:
    """The ensemble in ``<root>/ensemble`` through a :class:`ReloadWatcher`: each poll is the
    watcher's cheap generation check plus :meth:`ReloadWatcher.take_pending`. Before a first
    ensemble exists, polls return None (the trader waits)."""

    name = "ensemble"

    def __init__(self, root: Path, pipeline: PipelineSpec, debounce_s: float = 0.2) -> None:
        self.watcher = ReloadWatcher(root, pipeline, None, debounce_s)

    def start(self) -> None:
        self.watcher.start()
        self.watcher.request_reload()  # load an existing manifest now, without waiting for an event

    def poll(self) -> EnsemblePolicy | None:
        self.watcher.check_generation()
        return self.watcher.take_pending()

    def request_reload(self) -> None:
        self.watcher.request_reload()

    @property
    def status(self) -> dict[str, Any]:
        return self.watcher.status

    def stop(self) -> None:
        self.watcher.stop()


class DeploymentSource:
    """The single model in ``<root>/deployments/model_<slot>/``, loaded with
    :meth:`EnsemblePolicy.from_bundles`. A new deployment (its ``deployment_info.json``
    replaced) or a reload request is picked up at the next poll; a slot that fails its
    checks is rejected and the current model stays. :attr:`name` (recorded with every
    decision) is ``deployment:<slot>@<sha256[:12]>`` of the model in use."""

    def __init__(self, root: Path, slot: str, pipeline: PipelineSpec) -> None:
        self.slot = slot
        self.directory = Path(root) / "deployments" / f"model_{slot}"
        self.name = f"deployment:{slot}"
        self.pipeline = pipeline
        self._current: EnsemblePolicy | None = None
        self._seen: tuple[int, int, int] | None = None
        self._requested = True
        self._status: dict[str, Any] = {
            "generation": None,
            "study": None,
            "sha256": None,
            "last_reload_at": None,
            "reloads": 0,
            "rejections": 0,
            "rejected_generation": None,
            "rejection_reason": None,
        }
        self._log = structlog.get_logger("paper_trader.model").bind(component="paper_trader", pid=os.getpid())

    def start(self) -> None:
        """Nothing to start: the slot is looked at in :meth:`poll`."""

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.directory / DEPLOYMENT_INFO_FILE)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def poll(self) -> EnsemblePolicy | None:
        sig = self._signature()
        if sig is None or (sig == self._seen and not self._requested):
            return None
        self._seen, self._requested = sig, False
        try:
            info = verify_slot(self.directory)
            bundle = load_bundle(self.directory, self.pipeline, expect_sha256=info["sha256"])
            policy = EnsemblePolicy.from_bundles([bundle], study=str(bundle.meta.get("study", "")))
        except (SlotError, BundleError, EnsembleError) as exc:
            self._status.update(rejections=self._status["rejections"] + 1, rejection_reason=str(exc))
            self._log.error("deployment_rejected", slot=self.slot, reason=str(exc))
            return None
        if self._current is not None and self._current.bundles[0].sha256 == bundle.sha256:
            return None
        self._current = policy
        self.name = f"deployment:{self.slot}@{bundle.sha256[:12]}"
        self._status.update(
            study=policy.study,
            sha256=bundle.sha256,
            generation=policy.generation,
            last_reload_at=datetime.now(UTC).isoformat(),
            reloads=self._status["reloads"] + 1,
        )
        self._log.info("deployment_loaded", slot=self.slot, study=policy.study, sha256=bundle.sha256[:12])
        return policy

    def request_reload(self) -> None:
        """Signal-safe: only sets a flag; the next :meth:`poll` reloads the slot."""
        self._requested = True

    @property
    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def stop(self) -> None:
        """Nothing to stop."""
