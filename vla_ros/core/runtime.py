"""The runtime facade: one object that turns a ``Policy`` into a fixed-rate stream of safe commands.

Threads: an inference worker (calls the policy) and a control loop (reads the action buffer,
applies the safety filter, calls ``on_command``). The control loop never waits on inference.
Everything is driven by ``clock`` (seconds); pass a fake clock and call ``tick()`` /
``infer_once()`` yourself to test the logic without threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from vla_ros.core.policy import Observation, Policy
from vla_ros.core.runtime_types import (
    Command,
    Feedback,
    GoalDecision,
    GoalResult,
    RejectReason,
    RuntimeConfig,
    TerminationReason,
)

__all__ = [
    "Command",
    "Feedback",
    "GoalDecision",
    "GoalResult",
    "RejectReason",
    "Runtime",
    "RuntimeConfig",
    "TerminationReason",
]


class Runtime:
    """Inference worker + action buffer + control loop + safety filter + goal lifecycle.

    ``policy`` may be None (goals are then rejected with "no model") and set later with
    ``set_policy``. ``on_command`` is called from the control-loop thread at the control rate;
    ``on_result`` once per goal with its terminal ``GoalResult`` (from whichever thread ended it).
    Callbacks must be quick and must not call back into ``stop()``.
    """

    def __init__(
        self,
        policy: Policy | None,
        config: RuntimeConfig,
        on_command: Callable[[Command], None],
        clock: Callable[[], float] = time.monotonic,
        on_result: Callable[[GoalResult], None] | None = None,
    ) -> None:
        raise NotImplementedError

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the inference worker and the control loop threads."""
        raise NotImplementedError

    def stop(self) -> None:
        """End the active goal with "shutdown", stop both threads (bounded wait), idempotent."""
        raise NotImplementedError

    def set_policy(self, policy: Policy | None) -> None:
        """Swap the model; only allowed while no goal is active (raises RuntimeError otherwise)."""
        raise NotImplementedError

    # inputs ------------------------------------------------------------------------------
    def submit_observation(self, obs: Observation) -> None:
        """Single-slot mailbox: the newest observation replaces any older one. Also updates
        the measured state used by the "hold_measured" starvation policy."""
        raise NotImplementedError

    def set_measured_state(self, state: np.ndarray, stamp: float | None = None) -> None:
        """Measured joint positions without images (e.g. from /joint_states between frames)."""
        raise NotImplementedError

    # goals -------------------------------------------------------------------------------
    def start_goal(self, instruction: str, timeout_s: float = 0, max_steps: int = 0) -> GoalDecision:
        """Accept or reject a goal. 0 means the config's default (which may itself be 0 = none)."""
        raise NotImplementedError

    def cancel_goal(self, goal_id: int | None = None) -> bool:
        """Cancel the active goal (or only if it has ``goal_id``); False if there was none."""
        raise NotImplementedError

    def complete_goal(self, goal_id: int | None = None) -> bool:
        """External success signal: end the active goal with "completed"."""
        raise NotImplementedError

    def set_estop(self, engaged: bool) -> None:
        """Latch (or release) the e-stop; the next tick holds and the active goal ends "estop"."""
        raise NotImplementedError

    # outputs -----------------------------------------------------------------------------
    def feedback(self) -> Feedback:
        raise NotImplementedError

    def stats(self) -> dict:
        """Period p50/p99/max and errors, missed/starved ticks, latency p50/p95, faults, buffer."""
        raise NotImplementedError

    # single steps (the threads call these; tests may call them with a fake clock) ----------
    def tick(self) -> Command | None:
        """One control step at ``clock()``: buffer -> safety -> ``on_command``."""
        raise NotImplementedError

    def infer_once(self) -> bool:
        """One inference-worker step: infer if the refill rule says so; True if a chunk landed."""
        raise NotImplementedError
