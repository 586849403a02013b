"""The artifact store's health, as the supervisor sees it at every watchdog run.

A services host (role ``all`` or ``services``) checks that its artifact store answers
(:meth:`trainers.artifact_store.S3ArtifactStore.check`: ``HeadBucket``; a file store: its
folder is readable). While it does not, the ``artifact_store_unavailable`` alert (critical)
is active; it is resolved at the first check that passes. The paper trader is unaffected
(its ensemble's bundles are local member folders); syncs and deployments that need a bundle
from the store fail and leave what is installed as it is.
"""

from __future__ import annotations

from pathlib import Path

from daemon.alerts import Alert
from trainers.artifact_store import ArtifactStore, ArtifactStoreError, artifact_store_for

ALERT_KIND = "artifact_store_unavailable"


def artifact_store_alert(
    root: str | Path, study: str | None, store: ArtifactStore | None = None
) -> Alert | None:
    """The alert while the store (default: this process's, :func:`artifact_store_for`)
    cannot be used, else None. The message names the store, never a credential."""
    try:
        store = store if store is not None else artifact_store_for(root)
        problem = store.check()
    except ArtifactStoreError as exc:
        problem = str(exc)
    if problem is None:
        return None
    return Alert(
        ALERT_KIND,
        "critical",
        f"{problem}; the paper trader keeps trading its ensemble, syncs and deployments that "
        "need a bundle from the store fail",
        key=ALERT_KIND,
        study=study,
        details={"error": problem},
    )
