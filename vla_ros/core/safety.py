"""The safety filter every command passes: limits, per-tick velocity clamp, gripper range, NaN/inf.

Guarantees, for any target (including NaN/inf) and any finite ``previous``:
the output is finite, within [lower, upper] (and the gripper within its range), and moves at
most ``max_step`` from ``previous`` projected into those limits. A non-finite target yields
the (projected) previous position and ``valid=False``: the runtime holds and reports a fault.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_ros.core.runtime_types import RuntimeConfig


@dataclass(frozen=True)
class SafetyLimits:
    lower: np.ndarray  # [A], -inf where unbounded
    upper: np.ndarray  # [A], +inf where unbounded
    max_step: np.ndarray  # [A], largest |change| per control tick, > 0

    @classmethod
    def from_config(cls, config: RuntimeConfig, action_dim: int, gripper_index: int | None) -> SafetyLimits:
        """Per-dimension arrays from the config; the gripper range narrows that dimension's limits."""
        lower = _per_dim(config.joint_lower, action_dim, -np.inf, "joint_lower")
        upper = _per_dim(config.joint_upper, action_dim, np.inf, "joint_upper")
        if gripper_index is not None:
            if not 0 <= gripper_index < action_dim:
                raise ValueError(f"gripper_index {gripper_index} out of range for {action_dim} action dims")
            lower[gripper_index] = max(lower[gripper_index], config.gripper_range[0])
            upper[gripper_index] = min(upper[gripper_index], config.gripper_range[1])
        if np.any(lower > upper):
            bad = np.flatnonzero(lower > upper).tolist()
            raise ValueError(f"safety limits: lower > upper for action dims {bad}")
        velocity = _per_dim(config.max_velocity, action_dim, None, "max_velocity")
        if not np.all(np.isfinite(velocity)) or np.any(velocity <= 0):
            raise ValueError(f"safety limits: max_velocity must be finite and > 0, got {velocity.tolist()}")
        return cls(lower=lower, upper=upper, max_step=velocity * config.control_period)


def _per_dim(value, action_dim: int, default: float | None, name: str) -> np.ndarray:
    if value is None:
        return np.full(action_dim, default, dtype=np.float64)
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(action_dim, float(arr))
    if arr.shape != (action_dim,):
        raise ValueError(f"RuntimeConfig.{name} has {arr.size} values; the policy has {action_dim} actions")
    if np.any(np.isnan(arr)):
        raise ValueError(f"RuntimeConfig.{name} contains NaN: {arr.tolist()}")
    return arr.copy()


@dataclass(frozen=True)
class SafetyOutput:
    positions: np.ndarray  # what may be sent
    valid: bool  # False when the target was non-finite (positions are then a hold)
    clamped: bool  # True when limits or the velocity clamp changed a valid target


class SafetyFilter:
    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits

    def project(self, positions: np.ndarray) -> np.ndarray:
        """Clip into the position limits (non-finite entries become the nearest finite bound or 0)."""
        lo, hi = self.limits.lower, self.limits.upper
        positions = np.asarray(positions, dtype=np.float64)
        clipped = np.clip(np.where(np.isnan(positions), 0.0, positions), lo, hi)
        # unbounded dims with +-inf input: fall back to 0 clipped into the limits
        return np.where(np.isfinite(clipped), clipped, np.clip(0.0, lo, hi))

    def apply(self, target: np.ndarray, previous: np.ndarray | None) -> SafetyOutput:
        """Filter ``target``; ``previous`` is the last command sent (None before the first)."""
        target = np.asarray(target, dtype=np.float64)
        if target.shape != self.limits.lower.shape:
            raise ValueError(f"safety filter: target shape {target.shape}, want {self.limits.lower.shape}")
        if previous is not None:
            previous = self.project(previous)
        if not np.all(np.isfinite(target)):
            hold = previous if previous is not None else None
            if hold is None:  # nothing sent yet and nothing sane to send: the limits' nearest point to 0
                hold = self.project(np.zeros_like(target))
            return SafetyOutput(hold, valid=False, clamped=True)
        out = np.clip(target, self.limits.lower, self.limits.upper)
        if previous is not None:
            step, max_step = out - previous, self.limits.max_step
            # only touch the dims that move too fast, so a safe target passes bit for bit
            out = np.where(np.abs(step) > max_step, previous + np.clip(step, -max_step, max_step), out)
            out = np.clip(out, self.limits.lower, self.limits.upper)  # rounding can push past a bound
        return SafetyOutput(out, valid=True, clamped=bool(np.any(out != target)))


    def future(
        self, start: np.ndarray, ahead_s: np.ndarray, targets: np.ndarray, period: float
    ) -> tuple[tuple[float, np.ndarray], ...]:
        """Points after a command at ``start``, each filtered as the control loop would filter it:
        inside the position limits and no faster than the velocity limit over its time gap
        (``max_step`` scaled by gap / ``period``). ((seconds ahead, positions), ...); a non-finite
        target ends the list (the loop would refuse it)."""
        lower, upper, max_step = self.limits.lower, self.limits.upper, self.limits.max_step
        points, previous, previous_t = [], np.asarray(start, dtype=np.float64), 0.0
        for t, target in zip(ahead_s, targets, strict=True):
            gap = max(float(t) - previous_t, 0.0) / period
            step = SafetyFilter(SafetyLimits(lower, upper, max_step * gap))
            out = step.apply(target, previous)
            if not out.valid:
                break
            previous, previous_t = out.positions, float(t)
            points.append((previous_t, previous))
        return tuple(points)


def to_absolute(actions: np.ndarray, reference: np.ndarray, mode: str) -> np.ndarray:
    """Absolute targets from a chunk's actions: unchanged in "absolute" mode, ``reference + a``
    in "delta" mode (``reference`` is the state of the observation the chunk came from)."""
    if mode == "absolute":
        return np.asarray(actions, dtype=np.float64)
    if mode != "delta":
        raise ValueError(f"action mode must be 'absolute' or 'delta', got {mode!r}")
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape != (np.shape(actions)[-1],):
        raise ValueError(
            f"delta actions need a reference state of {np.shape(actions)[-1]} values, "
            f"got shape {reference.shape}"
        )
    return reference + np.asarray(actions, dtype=np.float64)
