"""Disk cleanup (``cappuccino clean`` and the supervisor's daily job).

What goes (each a *candidate*):

* **logs**: files under ``<root>/logs/`` (rotated ``*.log.N``, job outputs ``*.out``,
  child ``*.stdout``, stale ``*.log`` of components no longer running) not modified for
  ``keep_days`` days and not held open by any process;
* **trial scratch directories** ``<root>/trials/<study>/<number>/`` of FAIL and PRUNED
  trials, and of COMPLETE trials ranked outside the top ``keep_top`` of their study (rank:
  objective value best first, ties by trial number then trial id, finite values only: the
  ensemble's order, :mod:`ensemble.selection`);
* **artifacts** in the artifact store (:mod:`trainers.artifact_store`: named
  ``artifacts/<artifact_id>`` for the file store under the root,
  ``s3://bucket/prefix/<artifact_id>`` for an S3-compatible one) whose trial's scratch
  directory would go by the same rule. They are listed and removed through the store only,
  so a services host cleans what workers on other hosts uploaded; a store that cannot be
  listed stops the cleanup (nothing removed).
* **cached bundles** ``<root>/cache/bundles/<sha256>_<trial id>/`` (verified local copies
  of bundles fetched from a remote store, :mod:`trainers.bundle_cache`) of trials whose
  scratch directory would go by the same rule; a cached copy of a protected trial stays.

What never goes: anything a *reference* points at. References are read from the ensemble
manifest (``ensemble/ensemble_manifest.json`` members), every deployment slot
(``deployments/*/deployment_info.json`` and ``model.json``, ``.previous`` included) and the
archive (``trial_archive/trial_registry.json`` and the archived ``metadata.json`` /
``model.json`` files). A reference protects a trial by trial id, by (study, trial number),
by the sha256 of its actor and by its VIN; each is matched against the storage and against
the ``model.json`` inside the scratch directory, so a trial matched by any one of them is
kept. A reference file that exists but cannot be read stops the cleanup
(:class:`CleanupError`): nothing is removed when what is referenced cannot be known.

Also left alone: RUNNING and WAITING trials, scratch directories and artifacts the storage
does not know (another storage's, or a deleted study's; reported as *skipped*), and anything
whose real path leaves the root. Symbolic links are removed as links, never followed.

Removal re-reads the references right before deleting (a sync, deploy or archive may have
run since the plan was made) and drops any candidate that has become referenced.
Sizes are apparent sizes in bytes (sum of ``lstat().st_size`` of everything below a path).

Modules: :mod:`~daemon.cleanup.plan` (what goes), :mod:`~daemon.cleanup.remove` (removal),
:mod:`~daemon.cleanup.format` (terminal lines), :mod:`~daemon.cleanup.result` (the result
types), :mod:`~daemon.cleanup.files` (file-system helpers),
:mod:`~daemon.cleanup.references` (what the ensemble, deployments and archive refer to) and
:mod:`~daemon.cleanup.storage` (the reader of Optuna's tables).
"""

from daemon.cleanup.format import format_result
from daemon.cleanup.plan import plan_cleanup
from daemon.cleanup.remove import run_cleanup
from daemon.cleanup.result import CleanupError, CleanupResult, Kept, Removal, human_size

__all__ = [
    "CleanupError",
    "CleanupResult",
    "Kept",
    "Removal",
    "format_result",
    "human_size",
    "plan_cleanup",
    "run_cleanup",
]
