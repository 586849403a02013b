"""The observation layout shared by the environment, the backtest and the paper trader.

An observation for a decision at bar ``t`` is the float32 vector
``[window (lookback, n_assets, n_channels) flattened C-order, weights (n_assets), cash (1)]``
where ``window`` holds the normalised features of bars ``t - lookback + 1 .. t`` (and, for
a model with a predictor, its channel after them: ``n_channels = n_features + 1``,
:mod:`trainers.predictor`).
"""

from __future__ import annotations

import numpy as np


def observation_dim(lookback: int, n_assets: int, n_features: int) -> int:
    """Length of one observation vector."""
    return lookback * n_assets * n_features + n_assets + 1


def build_observations(features: np.ndarray, t: np.ndarray, lookback: int, weights: np.ndarray) -> np.ndarray:
    """Observations of ``n`` portfolios deciding at bars ``t``.

    Args:
        features: ``(T, n_assets, n_channels)`` normalised features (float32), with the
            predictor channel last when the model has one.
        t: ``(n,)`` int decision bars, each ``>= lookback - 1``.
        lookback: bars in the window.
        weights: ``(n, n_assets)`` current weights (cash = 1 - sum).

    Returns:
        ``(n, observation_dim)`` float32.
    """
    n = len(t)
    idx = t[:, None] + np.arange(1 - lookback, 1)  # (n, lookback)
    window = features[idx].reshape(n, -1)
    out = np.empty((n, window.shape[1] + weights.shape[1] + 1), dtype=np.float32)
    out[:, : window.shape[1]] = window
    out[:, window.shape[1] : -1] = weights
    out[:, -1] = 1.0 - weights.sum(axis=1)
    return out
