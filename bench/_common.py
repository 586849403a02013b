"""Shared set-up of the benchmarks: one core, one torch thread, the embedded data."""

from __future__ import annotations

import os
import platform

import numpy as np
import torch

from trainers.data import load_panel, split_holdout
from trainers.features import WARMUP_BARS, NormStats, compute_features


def pin_one_core() -> str:
    """Pin this process to one CPU core and one torch thread; returns a description."""
    try:
        core = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {core})
        where = f"core {core}"
    except (AttributeError, OSError):
        where = "unpinned"
    torch.set_num_threads(1)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, pinned to {where}"


def training_slice(n_bars: int = 4320) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Normalised features and prices of the embedded study data; a train slice of ``n_bars``."""
    study, _ = split_holdout(load_panel())
    raw = compute_features(study.prices)
    start, stop = WARMUP_BARS, WARMUP_BARS + n_bars
    features = NormStats.fit(raw[start:stop]).apply(raw)
    return features, study.prices, start, stop
