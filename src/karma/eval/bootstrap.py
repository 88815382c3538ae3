"""Percentile bootstrap confidence intervals over users (the CIs `karma evaluate` reports)."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(
    values: dict[str, np.ndarray], resamples: int, seed: int, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of the mean of each per-user array (users resampled together)."""
    if resamples <= 0 or not values:
        return {}
    names = list(values)
    table = np.stack([values[n] for n in names], axis=1)  # (U, M)
    num_users = len(table)
    if num_users == 0:
        return {}
    rng = np.random.default_rng(seed)
    means = []
    # Resample-count weights instead of index arrays: (B, U) @ (U, M) per batch of resamples.
    for start in range(0, resamples, 100):
        batch = min(100, resamples - start)
        counts = rng.multinomial(num_users, np.full(num_users, 1.0 / num_users), size=batch)
        means.append(counts @ table / num_users)  # (B, M)
    stacked = np.concatenate(means)  # (resamples, M)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(stacked, [tail, 100.0 - tail], axis=0)
    return {n: (float(lo[i]), float(hi[i])) for i, n in enumerate(names)}
