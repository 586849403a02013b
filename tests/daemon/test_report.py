"""``cappuccino report --out DIR`` on a real small root: valid PNGs of the equity curve
(from the ledger) and of the study's best value over trials (from the storage) with its
recorded baselines, the data behind them equal to what the ledger and Optuna hold, and clear
lines for what is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image

from daemon.views.ledger import LedgerReadError, equity_curve, ledger_path
from daemon.views.report import (
    BEST_VALUE_PNG,
    DPI,
    EQUITY_PNG,
    ReportError,
    best_value_figure,
    plot_equity,
    study_values,
)
from paper_trader.ledger import Ledger
from tests.conftest import TINY, TrainedStudy
from tests.daemon._supervisor_proc import run_cli, trials
from tests.daemon.traded_root import REPLAY_BARS, make_traded_root, pg_study
from trainers.fold_baselines import ensure_fold_baselines
from trainers.naming import baseline_note
from trainers.objective import StudyData
from trainers.storage import default_storage_url

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def traded(trained_study: TrainedStudy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared traded root (read-only for the tests: copy it to modify)."""
    dest = tmp_path_factory.mktemp("report") / "root"
    return make_traded_root(trained_study.root, dest, trained_study.study_name)


def _report(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = run_cli("report", "--out", str(out), "--root", str(root), *extra)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def _check_png(path: Path, size_in: tuple[float, float]) -> None:
    """A valid PNG of the figure's size with a real drawing (many colours, not a blank)."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (round(size_in[0] * DPI), round(size_in[1] * DPI))
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50
        # the page is mostly white background, but lines, labels and fills cover a good part
        white = max(count for count, rgb in colours if rgb == (255, 255, 255))
        assert white < 0.95 * img.size[0] * img.size[1]


def test_report_writes_readable_pngs(traded: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "today"  # created when missing
    result = _report(traded, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"wrote {out / EQUITY_PNG}", f"wrote {out / BEST_VALUE_PNG}"]
    _check_png(out / EQUITY_PNG, (11, 6.5))
    _check_png(out / BEST_VALUE_PNG, (11, 5.5))
    assert sorted(p.name for p in out.iterdir()) == [BEST_VALUE_PNG, EQUITY_PNG]  # no temp files left


def test_plotted_data_is_the_ledgers_and_the_studys(traded: Path, trained_study: TrainedStudy) -> None:
    curve = equity_curve(ledger_path(traded))
    ledger = Ledger(ledger_path(traded))
    try:
        rows = ledger.equity_rows()
        initial = ledger.state().initial_cash
    finally:
        ledger.close()
    assert len(rows) == REPLAY_BARS
    assert curve.bar_ts.tolist() == [r.bar_ts for r in rows]
    assert curve.equity.tolist() == [r.equity for r in rows]
    assert curve.drawdown.tolist() == [r.drawdown for r in rows]
    assert curve.generation.tolist() == [r.generation for r in rows]
    assert curve.initial_cash == initial
    assert np.all(np.diff(curve.bar_ts) > 0)

    study = trained_study.study_name
    complete = [t for t in trials(traded, study) if t.state == TrialState.COMPLETE]
    complete.sort(key=lambda t: t.number)
    values = study_values(default_storage_url(traded), study)
    assert values.maximize is True
    assert values.numbers.tolist() == [t.number for t in complete]
    assert values.values.tolist() == [t.value for t in complete]
    assert values.vins == [t.user_attrs["vin"] for t in complete]
    running_best = [max(t.value for t in complete[: i + 1]) for i in range(len(complete))]
    assert values.best_so_far().tolist() == running_best
    assert values.counts == {"COMPLETE": len(complete)}


def test_missing_ledger_still_writes_the_study_plot_and_says_so(
    trained_study: TrainedStudy, tmp_path: Path
) -> None:
    root = make_traded_root(trained_study.root, tmp_path / "root", trained_study.study_name, bars=0)
    out = tmp_path / "out"
    result = _report(root, out)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"wrote {out / BEST_VALUE_PNG}"]
    assert result.stderr.splitlines() == [
        f"error: equity curve: no ledger at {root / 'paper_trader' / 'ledger.db'} "
        "(the paper trader has not run on this root yet)"
    ]
    _check_png(out / BEST_VALUE_PNG, (11, 5.5))
    assert not (out / EQUITY_PNG).exists()
    assert not (root / "paper_trader").exists()  # the reader never creates a ledger


def test_a_ledger_without_bars_and_an_unknown_study_are_named(traded: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(traded, root)
    ledger_file = ledger_path(root)
    for p in ledger_file.parent.glob("ledger.db*"):
        p.unlink()
    fresh = Ledger(ledger_file)
    fresh.open_account("sim", ("ETHUSD", "LTCUSD", "XRPUSD"), 10_000.0)
    fresh.close()
    with pytest.raises(ReportError, match="no processed bar yet"):
        plot_equity(equity_curve(ledger_file), tmp_path / "x.png")

    out = tmp_path / "out"
    result = _report(root, out, "--study", "no_such_study")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: equity curve: the ledger has no processed bar yet: nothing to plot",
        f"error: best value over trials: storage {default_storage_url(root)}: no study named 'no_such_study'",
    ]


def test_no_storage_and_a_broken_ledger_are_clear_lines(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "paper_trader").mkdir(parents=True)
    (root / ".current_study").write_text("some_study\n")
    (root / "paper_trader" / "ledger.db").write_bytes(b"not a database at all " * 64)
    with pytest.raises(LedgerReadError, match="not a readable paper-trader ledger"):
        equity_curve(ledger_path(root))
    result = _report(root, tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: equity curve: {root / 'paper_trader' / 'ledger.db'}: not a readable paper-trader ledger "
        "(file is not a database)",
        f"error: best value over trials: storage {root / 'optuna.db'}: no such SQLite file "
        "(check --root / --storage)",
    ]
    assert not (root / "optuna.db").exists()
    assert (root / "paper_trader" / "ledger.db").read_bytes() == b"not a database at all " * 64

    missing = run_cli("report", "--out", str(tmp_path / "o"), "--root", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"error: runtime root {tmp_path / 'nope'} does not exist")


@pytest.mark.postgres
def test_best_value_plot_from_a_postgresql_storage(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    out = tmp_path / "out"
    with pg_study("pg_report", [0.1, None, 0.3, 0.2, 0.35]) as url:
        values = study_values(url, "pg_report")
        result = _report(root, out, "--storage", url, "--study", "pg_report")
    assert values.numbers.tolist() == [0, 2, 3, 4]
    assert values.best_so_far().tolist() == [0.1, 0.3, 0.3, 0.35]
    assert values.counts == {"COMPLETE": 4, "FAIL": 1}
    assert result.returncode == 1  # no ledger on this root: the equity curve is left out
    assert result.stdout.splitlines() == [f"wrote {out / BEST_VALUE_PNG}"]
    _check_png(out / BEST_VALUE_PNG, (11, 5.5))


def test_the_best_value_plot_draws_the_studys_baselines(
    traded: Path, trained_study: TrainedStudy, study_data: StudyData, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(traded, root)
    url, name = default_storage_url(root), trained_study.study_name
    bare = study_values(url, name)
    assert bare.baselines is None
    fig = best_value_figure(bare)
    assert not any("always" in t.get_text() or "untrained" in t.get_text() for t in fig.axes[0].texts)
    assert "(baselines not recorded)" in fig.axes[0].get_title()
    plt.close(fig)

    record, _ = ensure_fold_baselines(optuna.load_study(study_name=name, storage=url), study_data, TINY)
    want = {k: record["baselines"][k]["value"] for k in ("invested", "cash")}
    values = study_values(url, name)
    assert values.baselines is not None and values.baselines.values() == want
    fig = best_value_figure(values)
    ax = fig.axes[0]
    flat = [float(line.get_ydata()[0]) for line in ax.get_lines() if len(set(line.get_ydata())) == 1]
    assert want["invested"] in flat and want["cash"] in flat
    texts = [t.get_text() for t in ax.texts]
    assert f"always invested {want['invested']:+.4f}" in texts
    assert f"always in cash {want['cash']:+.4f}" in texts
    start = record["zero_action"]["value"]  # the untrained start: a dash-dotted reference line
    assert values.baselines.zero_action == start and start in flat
    assert f"untrained start {start:+.4f}" in texts
    low, high = ax.get_ylim()
    assert low < min(want.values()) and max(want.values()) < high  # both lines are in view
    best = float(values.values.max())
    assert f"({baseline_note(best, want)})" in ax.get_title()
    plt.close(fig)
    result = _report(root, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    _check_png(tmp_path / "out" / BEST_VALUE_PNG, (11, 5.5))
