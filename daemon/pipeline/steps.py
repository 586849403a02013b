"""The steps of :mod:`daemon.pipeline` that run once: clean, archive, deploy (training is
:mod:`daemon.pipeline.training`). Each returns a :class:`daemon.pipeline.plan.StepResult`;
none raises for an error a user can meet (the result says ``failed`` and why)."""

from __future__ import annotations

from pathlib import Path

import structlog

from daemon.pipeline.plan import Outcome, Plan, StepResult, fmt_value

log = structlog.get_logger("pipeline")

POLL_S = 0.2
STATS_EVERY_S = 1.0


def step_clean(plan: Plan) -> StepResult:
    """Run :func:`daemon.cleanup.run_cleanup` (all studies, the config's keep rules)."""
    from sqlalchemy.engine import make_url

    from daemon.cleanup import CleanupError, run_cleanup

    cfg = plan.config
    url = make_url(plan.storage)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        return StepResult("clean", "skipped", "no storage yet: nothing to clean")
    keep_top = max(cfg.cleanup.keep_top, cfg.ensemble.top_n)
    try:
        res = run_cleanup(plan.root, plan.storage, cfg.cleanup.keep_days, keep_top)
    except CleanupError as exc:
        return StepResult("clean", "failed", str(exc))
    figures = {
        "removed": len(res.removed),
        "freed_bytes": res.freed_bytes,
        "protected": len(res.protected),
        "errors": list(res.errors),
        "keep_days": cfg.cleanup.keep_days,
        "keep_top": keep_top,
    }
    outcome: Outcome = "failed" if res.errors else "ok"
    return StepResult("clean", outcome, res.summary(), figures, [f"failed: {e}" for e in res.errors])


def step_archive(plan: Plan) -> StepResult:
    """Run :func:`ensemble.archive.run_archive` with the config's ``[archive]`` cut."""
    from ensemble.archive import ArchiveError, run_archive
    from trainers.study_db import StudyDBError

    a = plan.config.archive
    try:
        res = run_archive(plan.root, plan.storage, plan.study, a.top_percent, a.min_grade)
    except (ArchiveError, StudyDBError, ValueError) as exc:
        return StepResult("archive", "failed", str(exc))
    figures = {
        "ranked": res.ranked,
        "top": res.top,
        "eligible": res.eligible,
        "added": list(res.added),
        "repaired": list(res.repaired),
        "unchanged": len(res.unchanged),
        "skipped": [{"trial": s.trial_number, "reason": s.reason, "detail": s.detail} for s in res.skipped],
        "total": res.total,
        "top_percent": res.top_percent,
        "min_grade": res.min_grade,
    }
    detail = (
        f"{len(res.added)} archived, {len(res.repaired)} repaired, {len(res.unchanged)} unchanged, "
        f"{len(res.skipped)} skipped (top {res.top_percent:g}% of {res.ranked} = {res.top}, "
        f"{res.eligible} graded {res.min_grade} or better); registry {res.total} models"
    )
    notes = [f"archived {n}" for n in res.added] + [f"repaired {n}" for n in res.repaired]
    notes += [f"skipped trial {s.trial_number}: {s.reason}: {s.detail}" for s in res.skipped]
    return StepResult("archive", "ok", detail, figures, notes)


def step_deploy(plan: Plan) -> StepResult:
    """Run :func:`ensemble.deploy.run_deploy` with the config's ``[deploy]`` thresholds."""
    from ensemble.deploy import DeployError, run_deploy
    from ensemble.deploy_gate import DeployThresholds

    d, st = plan.config.deploy, plan.config.study
    try:
        thresholds = DeployThresholds(
            d.min_improvement, d.min_grade, d.min_sharpe, d.max_drawdown, d.validation_fraction
        )
        dec = run_deploy(
            plan.root,
            plan.study,
            plan.storage,
            int(d.slot),
            thresholds,
            st.data,
            st.holdout_cut,
            candidates=d.candidates,
        )
    except (DeployError, ValueError) as exc:
        return StepResult("deploy", "failed", str(exc))
    figures = {
        "decision": dec.decision,
        "slot": dec.slot,
        "trial": dec.trial_number,
        "vin": dec.vin,
        "grade": dec.grade,
        "value": dec.value,
        "deployed_value": dec.deployed_value,
        "reasons": list(dec.reasons),
        "thresholds": thresholds.as_dict(),
    }
    outcome: Outcome = "ok" if dec.decision in ("promoted", "unchanged") else "refused"
    detail = dec.summary()
    notes: list[str] = []
    if dec.decision == "refused":  # the reasons go on lines of their own
        who = f"trial {dec.trial_number} ({dec.vin}, value {fmt_value(dec.value)})"
        detail, notes = f"refused {who} for slot {dec.slot}", list(dec.reasons)
    return StepResult("deploy", outcome, detail, figures, notes)
