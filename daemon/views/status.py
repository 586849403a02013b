"""``run/status.json``: one picture of the whole system, built from the files and storage
each component owns (so ``cappuccino status`` works with the supervisor down too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.sequential_state import status_view as sequential_view
from daemon.study_stats import study_stats
from trainers.atomic_io import read_json_object
from trainers.naming import beats_baselines
from trainers.runtime.current_study import read_current_study
from trainers.runtime.layout import Layout
from trainers.runtime.pidlock import supervisor_pid


def ensemble_summary(root: Path, baselines: dict[str, float] | None = None) -> dict[str, Any] | None:
    """Generation, study and members of the live manifest (None when there is none); each
    member's ``beats_baselines`` verdict against the study's constant baselines (None when
    they are not recorded)."""
    manifest = read_json_object(root / "ensemble" / "ensemble_manifest.json")
    if manifest is None:
        return None
    members = []
    for m in manifest.get("members", []):
        member = {k: m.get(k) for k in ("slot", "trial_number", "vin", "grade", "value")}
        value = m.get("value")
        member["beats_baselines"] = beats_baselines(value if isinstance(value, float) else None, baselines)
        members.append(member)
    return {
        "study": manifest.get("study"),
        "generation": manifest.get("generation"),
        "created_at": manifest.get("created_at"),
        "combine": manifest.get("combine"),
        "members": members,
    }


def storage_summary(supervisor: dict[str, Any] | None, reached: bool) -> dict[str, Any]:
    """``{"state": "available" | "unavailable", "since", "outage_s", "error"}``: the
    supervisor's storage check (:mod:`daemon.storage_health`) when it runs, else whether the
    study could be read just now."""
    checked = (supervisor or {}).get("storage")
    if isinstance(checked, dict) and checked.get("state") in ("available", "unavailable"):
        return {k: checked.get(k) for k in ("state", "since", "outage_s", "error")}
    state = "available" if reached else "unavailable"
    return {"state": state, "since": None, "outage_s": None, "error": None}


def build_status(
    root: Path, storage_url: str, study: str | None, supervisor: dict[str, Any] | None
) -> dict[str, Any]:
    """The status document. Every component's study name is shown; ``mismatches`` lists
    components that follow another study than ``.current_study``; ``storage`` says whether
    the study storage answers (:func:`storage_summary`), ``disk`` whether the supervisor
    paused for a full disk (:mod:`daemon.disk_guard`; None without a supervisor);
    ``sequential`` the stage and gate evidence of a sequential training run
    (:mod:`daemon.sequential_state`; None without one)."""
    current = read_current_study(root) or study
    out: dict[str, Any] = {"root": str(root), "current_study": current, "supervisor": supervisor}
    try:
        out["study"] = study_stats(storage_url, current) if current else None
        reached = True
    except Exception as exc:  # storage down: say so, keep the rest
        out["study"] = {"study": current, "error": f"{type(exc).__name__}: {exc}"}
        reached = False
    out["storage"] = storage_summary(supervisor, reached)
    out["disk"] = (supervisor or {}).get("disk")
    out["sequential"] = sequential_view(root)
    baselines = ((out["study"] or {}).get("baselines")) if isinstance(out["study"], dict) else None
    out["ensemble"] = ensemble_summary(root, baselines)
    out["paper_trader"] = read_json_object(root / "paper_trader" / "status.json")
    out["deployments"] = {
        p.name: read_json_object(p / "deployment_info.json")
        for p in sorted((root / "deployments").glob("model_*"))
        if p.is_dir() and not p.name.endswith(".previous")
    }
    studies = {
        "current_study": current,
        "supervisor": (supervisor or {}).get("study"),
        "ensemble": (out["ensemble"] or {}).get("study"),
        "paper_trader": (out["paper_trader"] or {}).get("study"),
    }
    out["studies"] = studies
    out["mismatches"] = [k for k, v in studies.items() if v is not None and current and v != current]
    return out


def status_document(root: Path, storage_url: str, study: str | None) -> dict[str, Any]:
    """What ``cappuccino status`` and ``GET /api/status`` show: the running supervisor's
    ``run/status.json`` (rewritten every ``status_interval_s``), or, with no supervisor
    running, :func:`build_status` now (``study`` is the configured study, used when there is
    no ``.current_study``); ``supervisor_running`` (bool) is added either way."""
    pid = supervisor_pid(root)
    doc = read_json_object(Layout(root).status) if pid is not None else None
    if doc is None:
        doc = build_status(root, storage_url, study, supervisor=None)
    doc["supervisor_running"] = pid is not None
    return doc
