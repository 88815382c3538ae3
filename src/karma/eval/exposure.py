"""What a ranking shows, apart from whether it finds the target: long-tail share and coverage.

    tail_share@K = (1 / |U|) Σ_u (1 / K) |{ i ∈ top_K(u) : i ∈ T }|     T: the long-tail items
    coverage@K   = |∪_u top_K(u)| / N                                   N: the catalog size

`T` is the long-tail set of the evaluation's segments (`karma.eval.evaluate.long_tail_items`: the
items outside the most clicked 20 % in training, new items included). A model that ranks like a
popularity list has a tail share near 0 and a coverage near K / N; the share of test targets that
are long-tail (the `long_tail` segment's users / all users) is what a ranking that matched the
targets' own spread would show. Neither says whether the right item is found: that is HR@K's job.
Padding in `top` (-1, a user with fewer than K candidates left) counts as a slot that shows
nothing: not long-tail, not covered.
"""

from __future__ import annotations

import numpy as np

EXPOSURE_K = 10
"""The cut-off the reports use (`tail_share@10`, `coverage@10`)."""
EXPOSURE_METRICS = (f"tail_share@{EXPOSURE_K}", f"coverage@{EXPOSURE_K}")


def tail_share_per_user(top: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """(U,) share of each user's K listed items that are long-tail.

    top: (U, K) item indices, best first (-1 = padding). tail: (N,) bool over the catalog."""
    top = np.asarray(top, dtype=np.int64)
    tail = np.asarray(tail, dtype=bool)
    if top.ndim != 2:
        raise ValueError(f"top must be (users, K), got shape {top.shape}")
    if top.shape[1] == 0:
        return np.zeros(len(top))
    listed = top >= 0
    return (listed & tail[np.where(listed, top, 0)]).mean(axis=1)


def coverage(top: np.ndarray, num_items: int) -> float:
    """Share of the `num_items` catalog that appears in at least one user's list."""
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    shown = np.unique(np.asarray(top, dtype=np.int64))
    return float((shown >= 0).sum() / num_items)
