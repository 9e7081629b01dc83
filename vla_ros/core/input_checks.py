"""Plausibility checks for what enters the node: header stamps and joint states.

Pure functions on plain values (the ROS shell takes the fields out of its messages), each
returning "" when the input is fine or a reason that names the field, the value and the limit.
A message that fails a check is dropped where it enters (before any synchronizer) and reported;
the freshness guard then ends a goal whose inputs stay bad (see docs/vla_node.md, "Bad input").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NS = 1_000_000_000
# A stamp this far behind the previous one of the same input is a new time base (a bag loop, a
# simulation reset, use_sim_time restarted), not a late message: the input starts again from it.
TIME_JUMP_S = 1.0


def stamp_problem(sec: int, nanosec: int, now_ns: int, max_lead_s: float) -> str:
    """Why a header stamp is unusable: negative, unset (zero), nanosec out of range, or ahead
    of the receiving clock ``now_ns`` by more than ``max_lead_s``."""
    if sec < 0:
        return f"header.stamp.sec is negative ({sec})"
    if not 0 <= nanosec < NS:
        return f"header.stamp.nanosec {nanosec} is outside [0, 1e9)"
    if sec == 0 and nanosec == 0:
        return "header.stamp is zero (unset)"
    if now_ns <= 0:
        return "the node's clock is at zero (use_sim_time set and nothing received on /clock yet)"
    lead = (sec * NS + nanosec - now_ns) / NS
    if lead > max_lead_s:
        return f"header.stamp is {lead:.3g} s ahead of the node's clock (max_stamp_lead_s={max_lead_s:g})"
    return ""


class StampOrder:
    """Per-input stamp order: a stamp older than the last accepted one is dropped as out of order,
    unless it is more than TIME_JUMP_S older (a new time base), which is accepted and flagged."""

    def __init__(self) -> None:
        self.last_ns: int | None = None

    def check(self, stamp_ns: int) -> tuple[str, bool]:
        """(problem, jumped): problem is "" to accept; jumped says the time base went back."""
        last = self.last_ns
        if last is not None and stamp_ns < last:
            back = (last - stamp_ns) / NS
            if back <= TIME_JUMP_S:
                return f"header.stamp went back {back:.3g} s (out of order)", False
            self.last_ns = stamp_ns
            return "", True
        self.last_ns = stamp_ns
        return "", False


def joint_names_problem(names: Sequence[str], positions: int, velocities: int, efforts: int) -> str:
    """Duplicate names, or position/velocity/effort arrays whose length matches no name list
    (velocity and effort may be empty, as sensor_msgs/JointState allows)."""
    seen, duplicates = set(), []
    for name in names:
        if name in seen and name not in duplicates:
            duplicates.append(name)
        seen.add(name)
    if duplicates:
        return f"duplicate joint name(s) {duplicates}"
    if positions != len(names):
        return f"{len(names)} names but {positions} positions"
    for field, count in (("velocity", velocities), ("effort", efforts)):
        if count not in (0, len(names)):
            return f"{len(names)} names but {count} {field} values"
    return ""


def joint_values_problem(
    names: Sequence[str],
    values: Sequence[float],
    lower: Sequence[float],
    upper: Sequence[float],
    margin: float,
    field: str = "position",
) -> str:
    """Non-finite values, or values more than ``margin`` outside [lower, upper] (same order)."""
    for name, value, lo, hi in zip(names, values, lower, upper, strict=True):
        if not math.isfinite(value):
            return f"joint {name!r} {field} is {value}"
        if value < lo - margin or value > hi + margin:
            return (
                f"joint {name!r} {field} {value:.6g} is outside [{lo:.6g}, {hi:.6g}] by more than "
                f"joint_state_limit_margin={margin:g}"
            )
    return ""


def finite_problem(names: Sequence[str], values: Sequence[float], field: str) -> str:
    """The first non-finite value of ``field`` (velocity, effort), named."""
    for name, value in zip(names, values, strict=False):
        if not math.isfinite(value):
            return f"joint {name!r} {field} is {value}"
    return ""
