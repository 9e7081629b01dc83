"""The action buffer: actions on a time axis, blended on arrival, sampled by the control loop.

Action ``k`` of a chunk observed at ``t_obs`` is due at ``t_obs + k * dt``. On arrival the
actions whose successor is already due are dropped (latency compensation: execution resumes
at the action due *now*, not at the chunk's first action); the rest are merged with what the
buffer holds for the same times by a blend rule. ``action_at(t)`` returns the action due at
``t`` (zero-order hold, or linear interpolation between consecutive actions) or ``None`` when
the buffer has nothing for ``t`` (starved).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from vla_ros.core.blending import BLEND_RULES, blend
from vla_ros.core.policy import ActionChunk


@dataclass(frozen=True)
class InsertResult:
    accepted: bool
    kept: int  # actions of the chunk now in the buffer
    dropped_past: int  # actions already in the past on arrival
    overlapped: int  # kept actions that were blended with buffered ones
    reason: str = ""  # why a chunk was not accepted


class ActionBuffer:
    """Thread-safe; every method holds the lock for a few microseconds of numpy work only."""

    def __init__(
        self,
        action_dim: int,
        interpolation: str = "linear",
        blend_rule: str = "crossfade",
        *,
        average_new_weight: float = 0.7,
        crossfade_steps: int = 5,
        ensemble_decay: float = 0.1,
    ) -> None:
        if interpolation not in ("linear", "hold"):
            raise ValueError(f"interpolation must be 'linear' or 'hold', got {interpolation!r}")
        if blend_rule not in BLEND_RULES:
            raise ValueError(f"blend rule must be one of {BLEND_RULES}, got {blend_rule!r}")
        self.action_dim = action_dim
        self.interpolation = interpolation
        self.blend_rule = blend_rule
        self.blend_params = dict(
            average_new_weight=average_new_weight,
            crossfade_steps=crossfade_steps,
            ensemble_decay=ensemble_decay,
        )
        self._lock = threading.Lock()
        self._tag = -1
        self._clear()
        self.chunks_inserted = 0
        self.actions_dropped_past = 0
        self.chunks_rejected = 0

    def _clear(self) -> None:
        self._times = np.zeros(0)
        self._values = np.zeros((0, self.action_dim))
        self._counts = np.zeros(0, dtype=np.int64)
        self._dt = 0.0

    # writers ------------------------------------------------------------------------------
    def reset(self, tag: int = -1, only_if: int | None = None) -> bool:
        """Empty the buffer; from now on only chunks inserted with ``tag`` are accepted.

        With ``only_if``, do so only while the buffer still belongs to that tag (atomically).
        """
        with self._lock:
            if only_if is not None and self._tag != only_if:
                return False
            self._clear()
            self._tag = tag
            return True

    @property
    def tag(self) -> int:
        return self._tag

    def insert(self, chunk: ActionChunk, now: float, tag: int | None = None) -> InsertResult:
        """Add a chunk at time ``now``. Raises ValueError for a malformed chunk."""
        actions = np.asarray(chunk.actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != self.action_dim:
            raise ValueError(
                f"ActionChunk.actions has shape {actions.shape}; "
                f"expected (chunk_size >= 1, {self.action_dim})"
            )
        if not (np.isfinite(chunk.dt) and chunk.dt > 0):
            raise ValueError(f"ActionChunk.dt must be finite and > 0, got {chunk.dt}")
        if not np.isfinite(chunk.t_obs):
            raise ValueError(f"ActionChunk.t_obs must be finite, got {chunk.t_obs}")
        due = chunk.t_obs + chunk.dt * np.arange(len(actions))
        with self._lock:
            if tag is not None and tag != self._tag:
                self.chunks_rejected += 1
                return InsertResult(False, 0, 0, 0, f"chunk for goal {tag}, buffer is for {self._tag}")
            if due[-1] + chunk.dt <= now:
                self.chunks_rejected += 1
                self.actions_dropped_past += len(actions)
                return InsertResult(False, 0, len(actions), 0, "every action of the chunk is in the past")
            first = max(0, int(np.searchsorted(due, now, side="right")) - 1)  # the action due now
            new_times, new_values = due[first:], actions[first:]
            old_values, old_counts, has_old = self._sample_locked(new_times)
            merged, counts = blend(
                old_values, old_counts, has_old, new_values, self.blend_rule, **self.blend_params
            )
            # buffered actions before the new chunk's first one stay only while they are still due
            keep = self._times < new_times[0]
            if new_times[0] > now and keep.any():
                current = max(0, int(np.searchsorted(self._times, now, side="right")) - 1)
                keep[:current] = False
            else:
                keep[:] = False
            self._times = np.concatenate([self._times[keep], new_times])
            self._values = np.concatenate([self._values[keep], merged])
            self._counts = np.concatenate([self._counts[keep], counts])
            self._dt = chunk.dt
            self.chunks_inserted += 1
            self.actions_dropped_past += first
            return InsertResult(True, len(new_times), first, int(has_old.sum()))

    # readers ------------------------------------------------------------------------------
    def _sample_locked(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Buffered values at ``times`` (NaN rows where nothing is buffered), counts, coverage mask."""
        n = len(self._times)
        values = np.full((len(times), self.action_dim), np.nan)
        counts = np.zeros(len(times), dtype=np.int64)
        if n == 0:
            return values, counts, np.zeros(len(times), dtype=bool)
        covered = (times >= self._times[0]) & (times < self._times[-1] + self._dt)
        idx = np.clip(np.searchsorted(self._times, times, side="right") - 1, 0, n - 1)
        values[:] = self._values[idx]
        if self.interpolation == "linear":
            nxt = np.minimum(idx + 1, n - 1)
            span = self._times[nxt] - self._times[idx]
            with np.errstate(invalid="ignore", divide="ignore"):
                alpha = np.where(span > 0, (times - self._times[idx]) / np.where(span > 0, span, 1.0), 0.0)
                values = values + np.clip(alpha, 0.0, 1.0)[:, None] * (self._values[nxt] - self._values[idx])
        counts[:] = self._counts[idx]
        values[~covered] = np.nan
        return values, counts, covered

    def sample(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The buffered actions at ``times`` (as ``action_at`` would return them; NaN rows where
        nothing is buffered) and which of them are covered."""
        with self._lock:
            values, _, covered = self._sample_locked(np.asarray(times, dtype=np.float64))
        return values, covered

    def action_at(self, t: float, tag: int | None = None) -> np.ndarray | None:
        """The action due at ``t``, or None if the buffer has none (starved) or is for another tag."""
        with self._lock:
            if (tag is not None and tag != self._tag) or len(self._times) == 0:
                return None
            values, _, covered = self._sample_locked(np.array([t], dtype=np.float64))
        return values[0] if covered[0] else None

    def remaining(self, now: float) -> float:
        """Seconds of buffered future: until the last action's period ends (0 when empty)."""
        with self._lock:
            if len(self._times) == 0:
                return 0.0
            return max(0.0, float(self._times[-1] + self._dt - now))

    def future_count(self, now: float) -> int:
        """Buffered actions due after ``now``."""
        with self._lock:
            return int(np.count_nonzero(self._times > now))

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the due times and values (for tests and plots)."""
        with self._lock:
            return self._times.copy(), self._values.copy()

    def __len__(self) -> int:
        with self._lock:
            return len(self._times)
