"""The runtime root's layout: the one place that knows every path under the root.

The root is ``train_results/`` under the working directory unless ``--root`` or
``CAPPUCCINO_ROOT`` says otherwise; nothing is ever written outside it. Each file has one
writer (named below); every other component only reads it. See ``docs/ARCHITECTURE.md``.

======================================  ================================================
path under the root                     writer
======================================  ================================================
``optuna.db``                           Optuna (workers) when the storage is SQLite
``.current_study``                      ``cappuccino set-study`` / ``start-training``
``training.toml``                       ``cappuccino start-training``
``run/supervisor.pid``                  the supervisor (its pid lock)
``run/status.json``                     the supervisor
``run/children.json``                   the supervisor
``run/alerts.json``                     the supervisor's alert sink
``run/pipeline.lock``, ``pipeline.json``  ``cappuccino pipeline``
``run/training.lock``                   ``start-training`` / ``stop-training`` / ``set-study``
``run/api.token``                       the control API (or ``cappuccino api-token``)
``run/heartbeats/<component>.json``     that component (a worker, the paper trader)
``logs/<component>.log``                that component
``artifacts/``                          workers (Optuna's artifact store, ``store = "file"``)
``cache/bundles/``                      readers of a remote artifact store (verified copies)
``trials/<study>/<number>/bundle/``     the worker that ran the trial
``ensemble/``                           the ensemble sync
``deployments/``                        the deployer
``trial_archive/``                      the archive job
``paper_trader/``                       the paper trader (ledger, status, lock)
======================================  ================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("train_results")
CURRENT_STUDY_FILE = ".current_study"
TRAINING_REQUEST_FILE = "training.toml"
OPTUNA_DB_FILE = "optuna.db"


@dataclass(frozen=True)
class Layout:
    """Paths under one runtime root (relative roots stay relative).

    Args:
        root: the runtime root folder.
    """

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # -- top level ------------------------------------------------------------------------
    @property
    def optuna_db(self) -> Path:
        """``optuna.db``: the default SQLite storage."""
        return self.root / OPTUNA_DB_FILE

    @property
    def current_study(self) -> Path:
        """``.current_study``: the name of the study every component follows."""
        return self.root / CURRENT_STUDY_FILE

    @property
    def training_request(self) -> Path:
        """``training.toml``: the training request of ``cappuccino start-training``."""
        return self.root / TRAINING_REQUEST_FILE

    # -- run/: the supervisor's and the pipeline's state ----------------------------------
    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def supervisor_pid(self) -> Path:
        """``run/supervisor.pid``: the supervisor's pid lock."""
        return self.run_dir / "supervisor.pid"

    @property
    def status(self) -> Path:
        """``run/status.json``: the supervisor's picture of the whole system."""
        return self.run_dir / "status.json"

    @property
    def children(self) -> Path:
        """``run/children.json``: the supervisor's children (pid + create time)."""
        return self.run_dir / "children.json"

    @property
    def alerts_state(self) -> Path:
        """``run/alerts.json``: active and recent alerts."""
        return self.run_dir / "alerts.json"

    @property
    def pipeline_lock(self) -> Path:
        """``run/pipeline.lock``: the pid lock of ``cappuccino pipeline``."""
        return self.run_dir / "pipeline.lock"

    @property
    def pipeline_result(self) -> Path:
        """``run/pipeline.json``: the pipeline's running state, then its summary."""
        return self.run_dir / "pipeline.json"

    @property
    def training_lock(self) -> Path:
        """``run/training.lock``: held while a training request (start, stop, study switch)
        rewrites ``training.toml`` / ``.current_study`` and signals the supervisor."""
        return self.run_dir / "training.lock"

    @property
    def sequential(self) -> Path:
        """``run/sequential.json``: the stage of a sequential (quick, then full) training run
        (:mod:`daemon.sequential_state`); written under ``run/training.lock`` by the training
        requests and the supervisor's ``sequential`` job."""
        return self.run_dir / "sequential.json"

    @property
    def api_token(self) -> Path:
        """``run/api.token``: the control API's bearer token (mode 0600), created at its first
        start unless ``CAPPUCCINO_API_TOKEN`` is set."""
        return self.run_dir / "api.token"

    def heartbeat(self, component: str) -> Path:
        """``run/heartbeats/<component>.json``."""
        return self.run_dir / "heartbeats" / f"{component}.json"

    # -- logs/ ----------------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def log(self, component: str) -> Path:
        """``logs/<component>.log``: JSON lines, rotated."""
        return self.logs_dir / f"{component}.log"

    def job_output(self, job: str) -> Path:
        """``logs/<job>.out``: stdout and stderr of the last run of a job command."""
        return self.logs_dir / f"{job}.out"

    def child_output(self, child: str) -> Path:
        """``logs/<child>.stdout``: what a child process printed (its log goes to ``.log``)."""
        return self.logs_dir / f"{child}.stdout"

    # -- training -------------------------------------------------------------------------
    @property
    def artifacts_dir(self) -> Path:
        """``artifacts/``: Optuna's file-system artifact store (bundle tars), when
        ``[artifacts] store = "file"`` (:mod:`trainers.artifact_store`)."""
        return self.root / "artifacts"

    @property
    def bundle_cache_dir(self) -> Path:
        """``cache/bundles/``: verified copies of bundles from a remote artifact store
        (:mod:`trainers.bundle_cache`)."""
        return self.root / "cache" / "bundles"

    @property
    def trials_dir(self) -> Path:
        """``trials/``: per-trial scratch folders."""
        return self.root / "trials"

    def trial_dir(self, study: str, number: int) -> Path:
        """``trials/<study>/<number>/``."""
        return self.trials_dir / study / str(number)

    def trial_bundle(self, study: str, number: int) -> Path:
        """``trials/<study>/<number>/bundle/``: the trial's model bundle."""
        return self.trial_dir(study, number) / "bundle"

    # -- ensemble, deployments, archive ---------------------------------------------------
    @property
    def ensemble_dir(self) -> Path:
        """``ensemble/``: manifest, ``generations.json``, ``.reload``, ``.sync.lock`` and member
        folders (and unreadable manifests kept aside, ``ensemble_manifest.json.corrupt-*``)."""
        return self.root / "ensemble"

    @property
    def deployments_dir(self) -> Path:
        """``deployments/``: slots ``model_<n>``, ``deploy_log.jsonl``, ``.deploy.lock``."""
        return self.root / "deployments"

    def slot(self, slot: int) -> Path:
        """``deployments/model_<slot>/``."""
        return self.deployments_dir / f"model_{slot}"

    @property
    def archive_dir(self) -> Path:
        """``trial_archive/``: archived trials and ``trial_registry.json``."""
        return self.root / "trial_archive"

    # -- paper trader ---------------------------------------------------------------------
    @property
    def trader_dir(self) -> Path:
        """``paper_trader/``: the trader's ledger, status file and lock."""
        return self.root / "paper_trader"

    @property
    def ledger(self) -> Path:
        """``paper_trader/ledger.db``."""
        return self.trader_dir / "ledger.db"

    @property
    def trader_status(self) -> Path:
        """``paper_trader/status.json``."""
        return self.trader_dir / "status.json"

    @property
    def trader_lock(self) -> Path:
        """``paper_trader/trader.lock``: one trader per root."""
        return self.trader_dir / "trader.lock"
