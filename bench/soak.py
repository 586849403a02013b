"""Soak test: the real supervisor (``python -m daemon.cli supervise``) with 2 training
workers and the paper trader (sim broker replaying the hold-out bars) for ``--minutes``,
with every job on a short interval, while faults drawn with ``--seed`` are injected every
``--fault-every`` minutes:

* SIGKILL of a random child (pid from ``run/children.json``, checked by create time);
* SIGKILL of the supervisor, restarted at once with the same command;
* the ensemble manifest corrupted (truncated JSON) or removed;
* the study storage unavailable for 30 s: SQLite held under ``BEGIN EXCLUSIVE`` by another
  process, or ``pg_ctl stop`` of the private PostgreSQL server (``--storage postgres``);
  with ``--storage URL`` (a server this script did not start) this fault is skipped;
* the disk full for a minute: only with ``--tmpfs-mb N`` (root only), where the runtime root
  is a tmpfs this script mounted; otherwise skipped.

No fault is injected in the last ``--quiet-end-s`` seconds (time to recover), then the
supervisor is stopped with SIGTERM and the figures are read from the root:

* trials lost: RUNNING without a live heartbeat, or FAIL never retried (target 0);
* ledger: bars missing between the first and last equity row, duplicate bars (target 0);
* restarts per child and alerts raised (reported next to the faults injected);
* RSS slope per component (each child's process tree and the supervisor, sampled every
  ``--sample-every`` s after a ``--rss-warmup-s`` warm-up of each process; least squares
  with one intercept per process incarnation) in MB/hour (target < 5 MB/h).
  Every sample is written to ``rss_samples.csv`` beside the root (``--keep DIR``).

Everything started is stopped by process group at the end and on Ctrl-C (the first Ctrl-C
or SIGTERM ends the soak early and still reports; a second one aborts the report); what
was mounted is unmounted.

    python bench/soak.py [--minutes 60] [--fault-every 4] [--seed 0] [--workers 2]
        [--budget-steps 2048] [--n-envs 4] [--storage sqlite|postgres|URL] [--tmpfs-mb N]
        [--keep DIR] [--quiet-end-s 300] [--sample-every 30] [--rss-warmup-s 120]

Smoke run (about 4 minutes, few figures): ``--minutes 3 --fault-every 0.4 --quiet-end-s 40
--rss-warmup-s 20 --sample-every 10``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _soak_faults import (
    DISK_FULL_S,
    FILL_FILE,
    STORAGE_OUTAGE_S,
    break_manifest,
    fill_disk,
    kill_random_child,
    lock_sqlite,
    mounted_tmpfs,
    private_postgres_server,
    read_children,
    same_process,
)
from _soak_figures import RssSamples, alerts_raised, child_restarts, ledger_figures, trial_figures

REPO = Path(__file__).resolve().parents[1]
STUDY = "bench_soak"
TARGET_RSS_SLOPE_MB_H = 5.0
GRACE_PERIOD_S = 30  # [workers] optuna_grace_period_s of the soak's config
TICK_S = 1.0


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _config(path: Path, root: Path, args: argparse.Namespace, storage_url: str | None) -> None:
    """The soak's configuration: short job intervals, a small training budget."""
    storage = f'storage = "{storage_url}"\n' if storage_url else ""
    disk = "[preflight]\nmin_free_disk_mb = 64\npause_free_disk_mb = 32\n\n" if args.tmpfs_mb else ""
    path.write_text(
        f'root = "{root}"\nstatus_interval_s = 5\n\n'
        f'[study]\nname = "{STUDY}"\n{storage}mode = "quick"\nbudget_steps = {args.budget_steps}\n'
        f"n_envs = {args.n_envs}\nn_trials = 100000\n\n"
        f"[workers]\ncount = {args.workers}\nmax_trials_per_process = 1000\n"
        f"optuna_heartbeat_interval_s = 5\noptuna_grace_period_s = {GRACE_PERIOD_S}\n\n"
        f'[paper_trader]\nenabled = true\nbroker = "sim"\nspeed = {args.speed}\n\n'
        "[jobs]\nsync_interval_s = 60\ndeploy_interval_s = 90\nwatchdog_interval_s = 5\n"
        "monitor_interval_s = 60\n\n"
        "[restart]\nbudget_per_hour = 20\n\n"  # the soak's own kills must not exhaust a child
        "[alerts]\nstorage_unavailable_after_s = 20\n\n"
        "[archive]\ninterval_s = 60\n\n[cleanup]\ninterval_s = 60\n\n"
        f"{disk}[api]\nenabled = false\n"
    )


class Soak:
    """The supervisor under test, the pids seen, the samples and the fault log."""

    def __init__(self, config: Path, root: Path, out_dir: Path, env: dict[str, str], warmup_s: float) -> None:
        self.config, self.root, self.out_dir, self.env = config, root, out_dir, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.seen: dict[int, float] = {}  # every pid we saw -> create time (cleanup)
        self.helpers: list[subprocess.Popen[bytes]] = []
        self.status_by_sup: dict[int, dict[str, Any]] = {}
        self.rss = RssSamples(warmup_s)
        self.faults: list[str] = []
        self.unexpected_exits: list[str] = []

    def start(self) -> None:
        """Start ``cappuccino supervise`` in its own session (stdout to a file)."""
        argv = [sys.executable, "-m", "daemon.cli", "supervise", "--config", str(self.config)]
        argv += ["--root", str(self.root)]
        out = self.out_dir / f"supervisor{self.starts}.out"
        with open(out, "wb") as fh:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1
        self.remember(self.proc.pid)

    def remember(self, pid: int) -> None:
        with contextlib.suppress(Exception):
            self.seen.setdefault(pid, same_process(pid, None).create_time())  # type: ignore[union-attr]

    def watch(self) -> None:
        """Remember the live descendants and children, keep the supervisor's last status,
        restart a supervisor that exited on its own (noted)."""
        assert self.proc is not None
        rc = self.proc.poll()
        if rc is not None:
            tail = (self.out_dir / f"supervisor{self.starts - 1}.out").read_text(errors="replace")[-600:]
            self.unexpected_exits.append(f"rc={rc}")
            _log(f"supervisor exited by itself (rc={rc}); restarting. Output tail:\n{tail}")
            self.start()
            return
        with contextlib.suppress(Exception):
            for p in same_process(self.proc.pid, None).children(recursive=True):  # type: ignore[union-attr]
                self.seen.setdefault(p.pid, p.create_time())
        for c in read_children(self.root):
            self.seen.setdefault(int(c["pid"]), float(c.get("create_time") or 0.0))
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads((self.root / "run" / "status.json").read_text())
            pid = (doc.get("supervisor") or {}).get("pid")
            if isinstance(pid, int):
                self.status_by_sup[pid] = doc

    def sample(self) -> None:
        """One RSS sample of the supervisor (its own process: its children are sampled as
        components, its job commands come and go) and of each child's process tree."""
        assert self.proc is not None
        self.rss.sample("supervisor", self.proc.pid, None, tree=False)
        for c in read_children(self.root):
            self.rss.sample(str(c.get("name")), int(c["pid"]), c.get("create_time"))

    def kill_supervisor(self) -> str:
        assert self.proc is not None
        self.watch()
        pid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.start()
        return f"SIGKILL supervisor pid {pid}; restarted as pid {self.proc.pid}"

    def stop(self, timeout_s: float = 180.0) -> int | None:
        """SIGTERM the supervisor and wait for it (SIGKILL of its group after ``timeout_s``)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.watch()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def cleanup(self) -> None:
        """Stop everything this soak started: the supervisor, then the process group of every
        pid seen that still runs as the same process (never our own group)."""
        with contextlib.suppress(Exception):
            self.stop(60.0)
        for helper in self.helpers:
            if helper.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(helper.pid, signal.SIGKILL)
                helper.wait(10)
        for pid, ctime in self.seen.items():
            if same_process(pid, ctime) is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                pgid = os.getpgid(pid)
                if pgid != os.getpgrp():
                    os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _report(soak: Soak, storage_url: str, minutes: float) -> bool:
    """Print the figures next to their targets; True when every target is met."""
    ok = True
    print(f"\n== soak report ({minutes:.1f} min, {soak.starts} supervisor start(s)) ==")
    print(f"faults injected ({len(soak.faults)}):")
    for line in soak.faults or ["(none)"]:
        print(f"  {line}")
    if soak.unexpected_exits:
        print(f"supervisor exits not caused by the soak: {', '.join(soak.unexpected_exits)}  (target: none)")
        ok = False
    trials = trial_figures(storage_url, STUDY, GRACE_PERIOD_S)
    if trials is None:
        print("trials: the study was never created")
    else:
        print(f"trial states at the end: {trials.states}")
        flag = "OK" if trials.lost == 0 else "MISSED"
        running = ", ".join(
            f"{n} ({'no heartbeat' if age is None else f'heartbeat {age:.0f} s old'})"
            for n, age in trials.running_lost.items()
        )
        print(
            f"trials lost: {trials.lost}  (RUNNING without a live heartbeat: [{running}]; "
            f"FAIL never retried: {trials.fail_not_retried})  target 0: {flag}"
        )
        if trials.running_lost:
            print(
                "  (a RUNNING trial is failed and re-queued by the next worker that starts a trial,\n"
                "   at the next supervisor start at the latest: lost to this run, not to the study)"
            )
        for n, why in trials.fail_reasons.items():
            print(f"  trial {n}: {why or 'no fail_reason recorded'}")
        ok &= trials.lost == 0
    ledger = ledger_figures(soak.root)
    if ledger is None:
        print("ledger: none (the paper trader never traded: no ensemble yet?)")
    else:
        bad = ledger.missing + ledger.duplicates
        print(
            f"ledger: {ledger.rows} equity rows, bars_processed {ledger.bars_processed}, "
            f"integrity {ledger.integrity}; gaps (bars missing) {ledger.missing}, duplicate bars "
            f"{ledger.duplicates}, irregular steps {ledger.irregular_steps}  target 0: "
            f"{'OK' if bad == 0 and ledger.integrity == 'ok' else 'MISSED'}"
        )
        ok &= bad == 0 and ledger.integrity == "ok"
    restarts = child_restarts(soak.status_by_sup)
    print(f"restarts per child (summed over supervisor incarnations): {restarts or '{}'}")
    alerts = alerts_raised(soak.root)
    print(f"alerts raised: {dict(alerts) or '{}'}")
    samples = soak.root.parent / "rss_samples.csv"  # beside the root (the tmpfs is the root)
    soak.rss.write_csv(samples)
    print(f"RSS slope per component (MB/hour, target < {TARGET_RSS_SLOPE_MB_H:g}; samples in {samples}):")
    for name, (slope, n, span) in soak.rss.slopes().items():
        if slope is None:
            print(f"  {name:<16} n/a ({n} samples over {span:.1f} min: too few after warm-up)")
            continue
        met = slope < TARGET_RSS_SLOPE_MB_H
        ok &= met
        print(
            f"  {name:<16} {slope:+8.2f} MB/h  ({n} samples over {span:.1f} min)  {'OK' if met else 'MISSED'}"
        )
    print(f"\nall targets met: {'yes' if ok else 'no'}")
    return ok


def _fault_kinds(args: argparse.Namespace, pg: Any) -> list[str]:
    kinds = ["child_kill", "supervisor_kill", "manifest"]
    if args.storage == "sqlite" or pg is not None:
        kinds.append("storage")
    else:
        _log("storage fault skipped: the storage is a server this script did not start (see --storage)")
    if args.tmpfs_mb:
        kinds.append("disk_full")
    else:
        _log(
            "disk-full fault skipped: the root is not on a tmpfs mounted by this script (--tmpfs-mb N, root)"
        )
    return kinds


def _inject(
    kind: str, soak: Soak, rng: random.Random, pg: Any
) -> tuple[str, float, Callable[[], str] | None]:
    """Inject one fault: (what was done, seconds until its undo, undo or None)."""
    if kind == "child_kill":
        return kill_random_child(soak.root, rng), 0.0, None
    if kind == "supervisor_kill":
        return soak.kill_supervisor(), 0.0, None
    if kind == "manifest":
        return break_manifest(soak.root, rng), 0.0, None
    if kind == "storage" and pg is not None:
        pg.stop()

        def restart_pg() -> str:
            pg.start()
            return "PostgreSQL started again"

        return (
            f"pg_ctl stop of the private PostgreSQL for {STORAGE_OUTAGE_S:.0f} s",
            STORAGE_OUTAGE_S,
            restart_pg,
        )
    if kind == "storage":
        db = soak.root / "optuna.db"
        if not db.is_file():
            return "skipped: no optuna.db yet", 0.0, None
        helper, what = lock_sqlite(db, STORAGE_OUTAGE_S, soak.env)
        soak.helpers.append(helper)
        return what, 0.0, None
    what, undo = fill_disk(soak.root)
    return what, DISK_FULL_S, undo


def run(args: argparse.Namespace, base: Path, root: Path, pg: Any) -> bool:
    storage_url = (
        pg.url
        if pg is not None
        else args.storage
        if args.storage != "sqlite"
        else f"sqlite:///{root}/optuna.db"
    )
    config = base / "soak.toml"
    _config(config, root, args, None if args.storage == "sqlite" else storage_url)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CAPPUCCINO_")}
    env.pop("NOTIFY_SOCKET", None)
    env["OMP_NUM_THREADS"] = "1"
    soak = Soak(config, root, base, env, args.rss_warmup_s)
    rng = random.Random(args.seed)
    kinds = _fault_kinds(args, pg)
    _log(f"root {root}; storage {'sqlite' if args.storage == 'sqlite' else storage_url.split('@')[-1]}")
    _log(f"faults drawn from {kinds} every {args.fault_every:g} min (seed {args.seed})")
    pending: list[tuple[float, Callable[[], str]]] = []
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    next_fault = t0 + args.fault_every * 60
    next_sample = t0
    try:
        soak.start()
        _log(f"supervisor started, pid {soak.proc.pid if soak.proc else '?'}")
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                soak.watch()
                for due, undo in [p for p in pending if p[0] <= now]:
                    pending.remove((due, undo))
                    _log(f"fault over: {undo()}")
                if now >= next_sample:
                    soak.sample()
                    next_sample = now + args.sample_every
                if now >= next_fault and now < end - args.quiet_end_s:
                    kind = rng.choice(kinds)
                    what, duration, undo = _inject(kind, soak, rng, pg)
                    soak.faults.append(f"{(now - t0) / 60:5.1f} min  {kind:<15} {what}")
                    _log(f"fault {kind}: {what}")
                    if undo is not None:
                        pending.append((now + duration, undo))
                    next_fault = now + args.fault_every * 60
                time.sleep(TICK_S)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: stop early, still report
            _log("interrupted: stopping early and reporting (Ctrl-C again aborts the report)")
        for _, undo in pending:
            _log(f"fault over: {undo()}")
        pending.clear()
        soak.sample()
        _log("stopping the supervisor (SIGTERM)")
        rc = soak.stop()
        _log(f"supervisor exited rc={rc}")
        return _report(soak, storage_url, (time.monotonic() - t0) / 60)
    finally:
        for _, undo in pending:
            with contextlib.suppress(Exception):
                undo()
        soak.cleanup()


def _copy_root(root: Path, dest: Path) -> None:
    """Copy the tmpfs root (without the disk-fill file) to ``dest`` before it is unmounted."""
    shutil.copytree(root, dest, symlinks=True, ignore=shutil.ignore_patterns(FILL_FILE), dirs_exist_ok=True)
    print(f"root copied to {dest} (the tmpfs is unmounted)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="soak duration")
    parser.add_argument("--fault-every", type=float, default=4.0, help="minutes between faults")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draw")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget-steps", type=int, default=2048, help="env steps per fold")
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--speed", type=float, default=1.0, help="paper trader sim: bars per second")
    parser.add_argument(
        "--storage",
        default="sqlite",
        help="sqlite (default), postgres (a private server this script starts and stops for the "
        "storage fault) or a postgresql+psycopg:// URL (no storage fault)",
    )
    parser.add_argument("--tmpfs-mb", type=int, default=0, help="root on a tmpfs of this size (root only)")
    parser.add_argument("--sample-every", type=float, default=30.0, help="seconds between RSS samples")
    parser.add_argument("--rss-warmup-s", type=float, default=120.0, help="ignore a process's first seconds")
    parser.add_argument("--quiet-end-s", type=float, default=300.0, help="no fault in the last seconds")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the root in (default: temp)")
    args = parser.parse_args()
    if args.minutes <= 0 or args.fault_every <= 0 or args.sample_every <= 0:
        parser.error("--minutes, --fault-every and --sample-every must be > 0")
    if args.storage not in ("sqlite", "postgres") and not args.storage.startswith("postgresql"):
        parser.error(f"--storage: sqlite, postgres or a postgresql URL, not {args.storage!r}")
    if args.tmpfs_mb < 0:
        parser.error("--tmpfs-mb must be >= 0")

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    base = args.keep.resolve() if args.keep is not None else Path(tempfile.mkdtemp(prefix="cappuccino-soak-"))
    root = base / "root"
    try:
        with contextlib.ExitStack() as stack:
            if args.tmpfs_mb:
                stack.enter_context(mounted_tmpfs(root, args.tmpfs_mb))
                if args.keep is not None:  # runs before the unmount: keep a copy of the root
                    stack.callback(_copy_root, root, base / "root.saved")
            pg = stack.enter_context(private_postgres_server()) if args.storage == "postgres" else None
            ok = run(args, base, root, pg)
    except KeyboardInterrupt:
        _log("interrupted: everything started was stopped")
        return 130
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept: {base}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
