"""Recorded streams (cameras, joint states, commands: each with its own stamps) sampled onto one
fixed-rate frame grid, as a dataset at a fixed fps needs them.

Rule: at each grid time t, every stream contributes its nearest *earlier* sample (stamp <= t:
what a controller running at t could have seen) if that sample is at most ``tolerance`` old;
a grid frame where any stream has no such sample is dropped, and counted against each stream
that lacked one. The grid runs from the first time every stream has a sample to the last
time every stream's last sample is still within the tolerance, narrowed to ``start_ns`` ..
``end_ns`` where given (an episode's span).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Alignment:
    grid_ns: np.ndarray  # int64 [G]: every grid time from start to end
    kept: np.ndarray  # bool [G]: frames every stream had a sample for
    indices: dict[str, np.ndarray] = field(default_factory=dict)  # stream -> sample index per kept frame
    dropped: dict[str, int] = field(default_factory=dict)  # stream -> grid frames it had no sample for

    @property
    def frames(self) -> int:
        return int(self.kept.sum())

    @property
    def dropped_frames(self) -> int:
        return int(len(self.kept) - self.kept.sum())


def align(stamps: dict[str, np.ndarray], fps: float, tolerance_s: float, start_ns: int | None = None,
          end_ns: int | None = None) -> Alignment:
    """``stamps``: stream name -> its samples' times (ns, any order; indices refer to this order)."""
    if fps <= 0 or tolerance_s < 0:
        raise ValueError(f"fps {fps} must be > 0 and tolerance {tolerance_s} s >= 0")
    empty = [name for name, s in stamps.items() if len(s) == 0]
    if empty:
        raise ValueError(f"streams with no samples: {empty}")
    order = {name: np.argsort(np.asarray(s, dtype=np.int64), kind="stable") for name, s in stamps.items()}
    ordered = {name: np.asarray(s, dtype=np.int64)[order[name]] for name, s in stamps.items()}
    tolerance_ns = int(round(tolerance_s * 1e9))
    start = max(int(s[0]) for s in ordered.values())
    end = min(int(s[-1]) for s in ordered.values()) + tolerance_ns
    start = start if start_ns is None else max(start, int(start_ns))
    end = end if end_ns is None else min(end, int(end_ns))
    period_ns = 1e9 / fps
    count = int(np.floor((end - start) / period_ns + 1e-9)) + 1 if end >= start else 0
    grid = start + np.round(np.arange(count) * period_ns).astype(np.int64)
    kept = np.ones(count, dtype=bool)
    at: dict[str, np.ndarray] = {}
    dropped = {}
    for name, s in ordered.items():
        i = np.searchsorted(s, grid, side="right") - 1  # the last sample at or before each grid time
        ok = (i >= 0) & (grid - s[np.maximum(i, 0)] <= tolerance_ns)
        dropped[name] = int((~ok).sum())
        kept &= ok
        at[name] = i
    indices = {name: order[name][at[name][kept]] for name in ordered}
    return Alignment(grid_ns=grid, kept=kept, indices=indices, dropped=dropped)
