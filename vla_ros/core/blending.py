"""Rules for merging a new chunk's actions with the buffered ones that are due at the same times.

All rules take the overlap as arrays sampled at the new chunk's due times:
``old`` [n, A] (rows where ``has_old`` is False are ignored), ``old_count`` [n] (how many
predictions each old row already blends), ``new`` [n, A]. They return the merged rows and counts.
"""

from __future__ import annotations

import numpy as np

from vla_ros.core.runtime_types import BLEND_RULES


def _ensemble_weight_sum(count: np.ndarray, decay: float) -> np.ndarray:
    """sum_{i < count} exp(-decay * i): the total weight of ``count`` earlier predictions."""
    count = count.astype(np.float64)
    if abs(decay) < 1e-12:
        return count
    return (1.0 - np.exp(-decay * count)) / (1.0 - np.exp(-decay))


def blend(
    old: np.ndarray,
    old_count: np.ndarray,
    has_old: np.ndarray,
    new: np.ndarray,
    rule: str,
    *,
    average_new_weight: float = 0.7,
    crossfade_steps: int = 5,
    ensemble_decay: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge ``new`` into ``old`` where ``has_old``; elsewhere take ``new``.

    - replace: the new chunk wins.
    - average: ``w * new + (1 - w) * old`` (LeRobot's async aggregation uses w = 0.7).
    - crossfade: over the first N = min(``crossfade_steps``, overlap) overlapping actions the new
      chunk's weight ramps linearly, (i + 1) / (N + 1); after that the new chunk wins.
    - ensemble: exponential temporal ensembling (ACT): prediction i of a time step, 0 the oldest,
      weighs exp(-decay * i); decay > 0 favours older predictions, < 0 newer ones.
    """
    if rule not in BLEND_RULES:
        raise ValueError(f"unknown blend rule {rule!r}; expected one of {BLEND_RULES}")
    new = np.asarray(new, dtype=np.float64)
    has_old = np.asarray(has_old, dtype=bool)
    old_count = np.where(has_old, np.asarray(old_count), 0)
    if rule == "replace" or not has_old.any():
        return new.copy(), np.ones(len(new), dtype=np.int64)

    if rule == "average":
        w_new = np.where(has_old, average_new_weight, 1.0)
    elif rule == "crossfade":
        # a ramp longer than the overlap would end in a jump where the old actions run out
        steps = min(crossfade_steps, int(has_old.sum()))
        ramp_index = np.cumsum(has_old) - 1  # 0 for the first overlapping action
        w_new = np.where(has_old & (ramp_index < steps), (ramp_index + 1.0) / (steps + 1.0), 1.0)
    else:  # ensemble
        w_old_total = _ensemble_weight_sum(old_count, ensemble_decay)
        w_new_single = np.exp(-ensemble_decay * old_count.astype(np.float64))
        w_new = np.where(has_old, w_new_single / (w_old_total + w_new_single), 1.0)

    w_new = w_new[:, None]
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite action must stay non-finite
        mixed = w_new * new + (1.0 - w_new) * old
    merged = np.where(has_old[:, None], mixed, new)
    counts = np.where(has_old, old_count + 1, 1).astype(np.int64)
    return merged, counts
