"""Hot reload of the trading ensemble (issue 3, "Hot reload"; docs/ARCHITECTURE.md section 5).

The ensemble sync job writes new member directories, replaces
``<root>/ensemble/ensemble_manifest.json`` atomically (``generation`` + 1) and then touches
``<root>/ensemble/.reload``. :class:`ReloadWatcher` notices that in three ways:

* a watchdog observer on ``<root>/ensemble`` (manifest moved-to / created / modified,
  ``.reload`` created / modified); events are debounced: the first event after a quiet
  spell loads at once, a burst that follows is collected into one more load after
  ``debounce_s`` of quiet;
* :meth:`ReloadWatcher.request_reload`, e.g. from the trader's SIGHUP handler (forces a load);
* :meth:`ReloadWatcher.check_generation`, called by the trading loop each bar: a cheap look at
  the manifest's generation and digest, so a missed file event never leaves a stale ensemble.

An ensemble is identified by its generation *and* its content digest
(:func:`ensemble.manifest.content_digest`, recorded in the manifest): a manifest that names
the generation in use with other content (e.g. rebuilt by hand from scratch) is a different
ensemble and is loaded. The sync job never reuses a generation
(:mod:`ensemble.generations`), so this is the second line of defence.

Loading (manifest validation, every member's hash, spec and weights) runs on the watcher's
loader thread, never on the trading thread. The loop picks the new policy up between bars
with :meth:`ReloadWatcher.take_pending`, so a swap never happens inside a decision.

A bad new ensemble is rejected: the current policy stays, one structlog line names the
problem, :attr:`ReloadWatcher.status` shows the rejected generation and the reason, and the
same bad generation is not retried until a newer generation appears or a reload is
explicitly requested.

Wake-ups travel over a non-blocking self-pipe (one byte each), because
:meth:`~ReloadWatcher.request_reload` must be safe inside a signal handler: a handler that
called ``threading.Event.set`` while the interrupted main thread held that event's lock
would deadlock, whereas ``os.write`` cannot.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import (
    EVENT_TYPE_CREATED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ensemble.manifest import (
    MANIFEST_FILE,
    RELOAD_FILE,
    ManifestError,
    content_digest,
    peek_digest,
    peek_generation,
    read_manifest,
)
from ensemble.policy import EnsembleError, EnsemblePolicy
from trainers.bundle import PipelineSpec
from trainers.runtime.current_study import read_current_study

ENSEMBLE_DIR = "ensemble"

_WAKE_EVENT = b"e"  # a file event or a generation change seen by check_generation
_WAKE_FORCED = b"f"  # request_reload: load even if the generation is known
_WAKE_STOP = b"q"
_MAX_DEBOUNCE_FACTOR = 10  # a continuous stream of events still loads after this many debounce_s

FileSignature = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)
__all__ = ["ReloadWatcher", "file_signature", "peek_digest", "peek_generation", "same_ensemble"]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def file_signature(path: Path) -> FileSignature | None:
    """Identity of a file's current content for change detection, or None if it is missing.

    ``os.replace`` gives a new inode, an in-place write a new size or mtime.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def same_ensemble(
    gen: int | None, digest: str | None, other_gen: int | None, other_digest: str | None
) -> bool:
    """Whether ``(gen, digest)`` names the ensemble ``(other_gen, other_digest)``: same
    generation and, where both digests are known, same digest (a manifest written before
    digests were recorded is compared by generation)."""
    if gen is None or other_gen is None or gen != other_gen:
        return False
    return digest is None or other_digest is None or digest == other_digest


class _Superseded(Exception):
    """The manifest was replaced between reading it and loading its members."""


class _EnsembleDirHandler(FileSystemEventHandler):
    """Turns watchdog events on the ensemble folder into loader wake-ups."""

    def __init__(self, watcher: ReloadWatcher) -> None:
        super().__init__()
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if event.event_type == EVENT_TYPE_MOVED:
            name = os.path.basename(os.fsdecode(event.dest_path))
            relevant = name == MANIFEST_FILE
        elif event.event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED):
            name = os.path.basename(os.fsdecode(event.src_path))
            relevant = name in (MANIFEST_FILE, RELOAD_FILE)
        else:
            relevant = False
        if relevant:
            self._watcher._file_events += 1
            self._watcher._wake(_WAKE_EVENT)


class ReloadWatcher:
    """Watches ``<root>/ensemble`` and loads a new :class:`EnsemblePolicy` off the trading thread.

    Args:
        root: the runtime root (``train_results/`` by default); the manifest is
            ``<root>/ensemble/ensemble_manifest.json`` and the expected study is the content
            of ``<root>/.current_study`` when that file exists.
        pipeline: what the trader can feed a model; every member's observation spec must match.
        current: the policy the trader starts with (None if it has none yet).
        current_digest: the content digest of ``current``'s manifest, if known (else
            ``current`` is recognised by its generation alone).
        debounce_s: an event after ``debounce_s`` of quiet loads at once; events within
            ``debounce_s`` of the last handled one wait for ``debounce_s`` of quiet and then
            become one load (a burst costs at most two loads; a continuous stream still loads
            every ``10 * debounce_s``).

    Threads: :meth:`start` runs a watchdog observer and a loader thread; :meth:`stop` stops and
    joins both. :meth:`request_reload` is safe from any thread and from signal handlers;
    :meth:`check_generation` and :meth:`take_pending` are meant for the trading thread.
    """

    def __init__(
        self,
        root: Path,
        pipeline: PipelineSpec,
        current: EnsemblePolicy | None,
        debounce_s: float = 0.2,
        current_digest: str | None = None,
    ) -> None:
        if debounce_s < 0:
            raise ValueError(f"debounce_s must be >= 0, got {debounce_s}")
        self.root = Path(root)
        self.ensemble_dir = self.root / ENSEMBLE_DIR
        self.manifest_path = self.ensemble_dir / MANIFEST_FILE
        self.pipeline = pipeline
        self.debounce_s = float(debounce_s)
        self._log = structlog.get_logger("paper_trader.reload").bind(
            component="paper_trader", pid=os.getpid()
        )
        self._lock = threading.Lock()  # guards the state below (never taken in request_reload)
        self._current = current
        self._current_digest = current_digest
        self._pending: EnsemblePolicy | None = None
        self._pending_digest: str | None = None
        self._last_reload_at: str | None = None
        self._last_load_s: float | None = None
        self._reloads = 0
        self._rejections = 0
        self._load_checks = 0  # wake-ups the loader has handled (loads, rejections and skips)
        self._rejected_generation: int | None = None
        self._rejected_digest: str | None = None
        self._rejected_signature: FileSignature | None = None
        self._rejection_reason: str | None = None
        self._rejected_at: str | None = None
        self._file_events = 0  # relevant watchdog events seen (observer thread only)
        self._seen_signature: FileSignature | None = None  # check_generation's last look
        self._seen_generation: int | None = None
        self._seen_digest: str | None = None
        self._rfd = -1
        self._wfd = -1
        self._observer: Any = None
        self._loader: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, observe: bool = True) -> None:
        """Create ``<root>/ensemble`` if missing, start the observer and the loader thread.

        Args:
            observe: False runs the loader thread without the file observer (then only
                :meth:`check_generation` and :meth:`request_reload` trigger loads), as when
                file events are lost; for tests and file systems without change events.

        Raises:
            RuntimeError: already started.
            OSError: the folder cannot be created or watched.
        """
        if self._loader is not None:
            raise RuntimeError("ReloadWatcher already started")
        self.ensemble_dir.mkdir(parents=True, exist_ok=True)
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._loader = threading.Thread(target=self._run_loader, name="ensemble-reload", daemon=True)
        self._loader.start()
        if not observe:
            return
        observer = Observer()
        observer.schedule(_EnsembleDirHandler(self), str(self.ensemble_dir), recursive=False)
        observer.daemon = True
        try:
            observer.start()
        except BaseException:
            self.stop()
            raise
        self._observer = observer

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the observer and the loader thread and join both (a load in progress finishes)."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        if self._loader is not None:
            self._wake(_WAKE_STOP)
            self._loader.join(timeout)
            if self._loader.is_alive():  # a load longer than timeout: leave its pipe open
                self._log.warning("ensemble_loader_still_running", timeout_s=timeout)
                self._loader = None
                return
            self._loader = None
        rfd, wfd = self._rfd, self._wfd
        self._rfd = self._wfd = -1
        for fd in (wfd, rfd):
            if fd >= 0:
                os.close(fd)

    def __enter__(self) -> ReloadWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def loader_thread(self) -> threading.Thread | None:
        """The loader thread while started (the only thread that loads ensembles)."""
        return self._loader

    # -- called by the trader ----------------------------------------------------------------

    def request_reload(self) -> None:
        """Force a reload of the manifest, even of a known or rejected generation.

        Thread- and signal-safe: writes one byte to a non-blocking pipe and returns; the
        loader thread does the work. A no-op before :meth:`start` / after :meth:`stop`.
        """
        self._wake(_WAKE_FORCED)

    def check_generation(self) -> int | None:
        """Cheap per-bar look at the manifest; requests a load if it names a new ensemble.

        One ``stat`` per call while the manifest file is unchanged; after a change, one small
        read of its ``generation`` and ``digest``. A load is requested when that (generation,
        digest) is neither the current (or already loaded, pending) ensemble nor the last
        rejected one (see :func:`same_ensemble`), or when an unreadable manifest has not been
        rejected yet. Call from the trading thread.

        Returns:
            the manifest's generation as last seen (None if missing or unreadable).
        """
        sig = file_signature(self.manifest_path)
        if sig is None:
            self._seen_signature = None
            return None
        if sig == self._seen_signature:
            return self._seen_generation
        self._seen_signature = sig
        gen = peek_generation(self.manifest_path)
        digest = peek_digest(self.manifest_path)
        self._seen_generation, self._seen_digest = gen, digest
        with self._lock:
            known, known_digest = self._accepted()
            rejected = (self._rejected_generation, self._rejected_digest)
            rejected_sig = self._rejected_signature
        if gen is None:
            stale = sig != rejected_sig
        else:
            stale = not same_ensemble(gen, digest, known, known_digest) and not same_ensemble(
                gen, digest, *rejected
            )
        if stale:
            self._wake(_WAKE_EVENT)
        return gen

    def take_pending(self) -> EnsemblePolicy | None:
        """The newly loaded policy, once (then None until the next load); call between bars.

        The returned policy becomes the watcher's current one.
        """
        with self._lock:
            policy, self._pending = self._pending, None
            if policy is not None:
                self._current, self._current_digest = policy, self._pending_digest
        return policy

    @property
    def current(self) -> EnsemblePolicy | None:
        """The policy last handed to the trader (or given at construction)."""
        with self._lock:
            return self._current

    @property
    def status(self) -> dict[str, Any]:
        """JSON-ready snapshot of the reload state.

        Keys: ``generation``, ``digest`` (the content digest of its manifest, None if
        unknown), ``study``, ``members`` (count), ``member_dirs`` (the member folder names in
        ``ensemble/``) of the current policy, ``pending_generation``, ``last_reload_at``
        (UTC ISO time), ``last_load_s`` (seconds the last successful load took), ``reloads``,
        ``rejections``, ``rejected_generation``, ``rejected_digest``, ``rejection_reason``,
        ``rejected_at`` (the last rejection; None if never), ``load_checks`` (debounced
        wake-ups the loader handled: loads, rejections and skips), ``file_events``
        (relevant watchdog events seen), ``watching`` (loader thread alive).
        """
        with self._lock:
            cur, pend = self._current, self._pending
            return {
                "generation": cur.generation if cur is not None else None,
                "digest": self._current_digest if cur is not None else None,
                "study": cur.study if cur is not None else None,
                "members": len(cur.bundles) if cur is not None else 0,
                "member_dirs": [Path(b.path).name for b in cur.bundles] if cur is not None else [],
                "pending_generation": pend.generation if pend is not None else None,
                "last_reload_at": self._last_reload_at,
                "last_load_s": self._last_load_s,
                "reloads": self._reloads,
                "rejections": self._rejections,
                "rejected_generation": self._rejected_generation,
                "rejected_digest": self._rejected_digest,
                "rejection_reason": self._rejection_reason,
                "rejected_at": self._rejected_at,
                "load_checks": self._load_checks,
                "file_events": self._file_events,
                "watching": self._loader is not None and self._loader.is_alive(),
            }

    # -- internals ---------------------------------------------------------------------------

    def _accepted(self) -> tuple[int | None, str | None]:
        """(generation, digest) of the pending policy, else of the current one (caller holds
        the lock)."""
        if self._pending is not None:
            return self._pending.generation, self._pending_digest
        if self._current is not None:
            return self._current.generation, self._current_digest
        return None, None

    def _wake(self, kind: bytes) -> None:
        """Signal-safe wake-up of the loader thread (a full pipe already means 'wake up')."""
        fd = self._wfd
        if fd < 0:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(fd, kind)

    def _read_wakes(self, timeout: float | None) -> bytes:
        """Bytes written to the pipe, waiting up to ``timeout`` seconds (None: forever)."""
        ready, _, _ = select.select([self._rfd], [], [], timeout)
        if not ready:
            return b""
        chunks = []
        while True:
            try:
                chunk = os.read(self._rfd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _run_loader(self) -> None:
        """Loader thread: wait for wake-ups, debounce them, load.

        Debounce with a leading edge: a wake-up after ``debounce_s`` without activity loads at
        once (sync replaces the manifest atomically after writing every member, so the first
        event already sees a complete ensemble); wake-ups within ``debounce_s`` of the last
        handled one are collected until ``debounce_s`` of quiet (at most
        ``_MAX_DEBOUNCE_FACTOR * debounce_s``) and then handled as one. A burst therefore
        costs at most two loads, and the last one reads the newest manifest.
        """
        last_handled = -float("inf")
        while True:
            wakes = self._read_wakes(None)
            if _WAKE_STOP in wakes:
                return
            if not wakes:
                continue
            if time.monotonic() - last_handled < self.debounce_s:
                more = self._collect_burst()
                if more is None:
                    return
                wakes += more
            try:
                self._load(forced=_WAKE_FORCED in wakes)
            except Exception as exc:  # the loader thread must survive anything
                self._log.exception("ensemble_reload_error", error=f"{type(exc).__name__}: {exc}")
            finally:
                last_handled = time.monotonic()
                with self._lock:
                    self._load_checks += 1

    def _collect_burst(self) -> bytes | None:
        """Wake-ups until ``debounce_s`` of quiet (bounded); None when asked to stop."""
        wakes = b""
        deadline = time.monotonic() + _MAX_DEBOUNCE_FACTOR * self.debounce_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return wakes
            more = self._read_wakes(min(self.debounce_s, remaining))
            if _WAKE_STOP in more:
                return None
            if not more:
                return wakes
            wakes += more

    def _load(self, forced: bool) -> None:
        """Validate and load the manifest; publish it as pending or record the rejection."""
        sig = file_signature(self.manifest_path)
        gen = peek_generation(self.manifest_path)
        digest = peek_digest(self.manifest_path)
        with self._lock:
            known, known_digest = self._accepted()
            rejected = (self._rejected_generation, self._rejected_digest)
            rejected_sig = self._rejected_signature
        if sig is None:
            if forced:
                self._log.info("ensemble_reload_skipped", manifest=str(self.manifest_path), why="no manifest")
            return  # no manifest yet: nothing to load, nothing wrong
        if not forced:
            if same_ensemble(gen, digest, known, known_digest):
                return  # already trading (or holding) this ensemble
            if same_ensemble(gen, digest, *rejected) or sig == rejected_sig:
                return  # this bad ensemble was rejected already; wait for another one
        t0 = time.perf_counter()
        try:
            expected_study = read_current_study(self.root)
            manifest = read_manifest(self.manifest_path)
            digest = loaded_digest = content_digest(manifest)
            policy = EnsemblePolicy.from_manifest(self.manifest_path, self.pipeline, expected_study)
            if (policy.generation, [b.sha256 for b in policy.bundles]) != (
                manifest.generation,
                [m.sha256 for m in manifest.members],
            ):
                raise _Superseded(f"{self.manifest_path}: replaced while it was loaded")
        except Exception as exc:  # EnsembleError for bad ensembles; anything else is rejected too
            known_error = isinstance(exc, (EnsembleError, ManifestError, _Superseded))
            reason = str(exc) if known_error else f"{type(exc).__name__}: {exc}"
            if file_signature(self.manifest_path) != sig:
                # Replaced while loading (sync may then remove members of the old manifest):
                # not a verdict on either manifest; look at the new one.
                self._log.info("ensemble_reload_superseded", generation=gen, reason=reason)
                self._wake(_WAKE_FORCED if forced else _WAKE_EVENT)
                return
            # Log first, then publish: whoever sees the status change finds the log line.
            self._log.error(
                "ensemble_reload_rejected",
                generation=gen,
                current_generation=known,
                manifest=str(self.manifest_path),
                reason=reason,
                forced=forced,
            )
            with self._lock:
                self._rejections += 1
                self._rejected_generation = gen
                self._rejected_digest = digest
                self._rejected_signature = sig
                self._rejection_reason = reason
                self._rejected_at = _now()
            return
        elapsed = time.perf_counter() - t0
        self._log.info(
            "ensemble_reloaded",
            generation=policy.generation,
            digest=loaded_digest[:12],
            previous_generation=known,
            previous_digest=known_digest and known_digest[:12],
            study=policy.study,
            members=len(policy.bundles),
            load_s=round(elapsed, 4),
            forced=forced,
        )
        with self._lock:
            self._pending, self._pending_digest = policy, loaded_digest
            self._reloads += 1
            self._last_reload_at = _now()
            self._last_load_s = elapsed
