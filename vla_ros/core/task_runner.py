"""The goal lifecycle: idle -> running -> exactly one terminal result.

One goal is active at a time. Every way a goal can end (completed, timeout, max_steps,
canceled, preempted, fault, estop, shutdown) goes through ``_finish``, which moves the goal
out of the active slot under the lock, so a goal ends once however many threads race to end it.
Results are delivered after the lock is released, so ``on_result`` may call back in.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from vla_ros.core.runtime_types import (
    GoalDecision,
    GoalResult,
    RejectReason,
    RuntimeConfig,
    TerminationReason,
)


@dataclass
class Goal:
    goal_id: int
    instruction: str
    started_at: float
    timeout_s: float  # 0 = none
    max_steps: int  # 0 = none
    executed_s: float = 0.0  # time the goal spent executing actions (not starved)
    starved_since: float | None = None
    first_chunk_at: float | None = None  # when the first chunk of this goal reached the buffer
    steps: int = 0
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. a truncation)
    # The text the model encodes: the instruction, or the policy's phrasing of what grounding read.
    model_instruction: str = ""

    def __post_init__(self) -> None:
        self.model_instruction = self.model_instruction or self.instruction


class TaskRunner:
    """Thread-safe goal state; the runtime calls it from the user, worker and control threads."""

    def __init__(
        self,
        config: RuntimeConfig,
        action_period: float,
        on_result: Callable[[GoalResult], None] | None = None,
        on_activate: Callable[[int], None] | None = None,
        first_goal_id: int = 1,
    ) -> None:
        self.config = config
        self.action_period = action_period
        self._on_result = on_result
        self._on_activate = on_activate  # called under the lock when a goal becomes active
        self._lock = threading.RLock()
        self._active: Goal | None = None
        self._next_id = first_goal_id  # a restarted runtime continues its predecessor's ids
        self.results: deque[GoalResult] = deque(maxlen=100)
        self.faults: deque[str] = deque(maxlen=20)
        self.fault_count = 0
        # What explains a fault beyond its own message (the ROS shell: silent or skipped inputs);
        # appended to a fault result's message when it adds something. Must be quick.
        self.fault_context: Callable[[], str] | None = None

    # queries ------------------------------------------------------------------------------
    def active(self) -> Goal | None:
        """A copy of the active goal (None when idle)."""
        with self._lock:
            if self._active is None:
                return None
            g = self._active
            return Goal(**g.__dict__)

    @property
    def active_id(self) -> int:
        with self._lock:
            return self._active.goal_id if self._active is not None else -1

    # transitions --------------------------------------------------------------------------
    def start_goal(
        self,
        instruction: str,
        now: float,
        timeout_s: float = 0,
        max_steps: int = 0,
        not_ready: str = "",
        model_instruction: str = "",
    ) -> GoalDecision:
        """Accept a goal, preempting the active one or rejecting the new one per ``goal_policy``.

        ``not_ready``: a reason the runtime cannot take goals now (rejects with it).
        ``model_instruction``: the text the model is to encode instead of ``instruction``; the
        goal's result names it.
        """
        if not_ready:
            return GoalDecision(False, not_ready, -1)
        if not isinstance(instruction, str) or not instruction.strip():
            return GoalDecision(False, f"{RejectReason.BAD_REQUEST}: the instruction is empty", -1)
        if not (0 <= timeout_s < math.inf) or max_steps < 0:  # NaN fails too: it would never time out
            detail = f"timeout_s={timeout_s} must be finite and >= 0, max_steps={max_steps} >= 0"
            return GoalDecision(False, f"{RejectReason.BAD_REQUEST}: {detail}", -1)
        preempted: GoalResult | None = None
        with self._lock:
            if self._active is not None:
                if self.config.goal_policy == "reject":
                    busy = f"{RejectReason.BUSY}: goal {self._active.goal_id} is active"
                    return GoalDecision(False, busy, -1)
                preempted = self._finish_locked(
                    now, TerminationReason.PREEMPTED, f"preempted by a new goal: {instruction!r}"
                )
            goal = Goal(
                goal_id=self._next_id,
                instruction=instruction,
                started_at=now,
                timeout_s=timeout_s or self.config.goal_timeout_s,
                max_steps=max_steps or self.config.goal_max_steps,
                model_instruction=model_instruction,
            )
            if goal.model_instruction != instruction:
                goal.notes.append(f"instruction read as {goal.model_instruction!r}")
            self._next_id += 1
            self._active = goal
            if self._on_activate is not None:
                self._on_activate(goal.goal_id)
        if preempted is not None:
            self._deliver(preempted)
        return GoalDecision(True, "", goal.goal_id)

    @property
    def next_goal_id(self) -> int:
        """The id the next accepted goal gets."""
        with self._lock:
            return self._next_id

    def finish(self, now: float, reason: TerminationReason, message: str, goal_id: int | None = None) -> bool:
        """End the active goal (only if it is ``goal_id`` when given); False if there was none."""
        with self._lock:
            if self._active is None or (goal_id is not None and goal_id != self._active.goal_id):
                return False
            result = self._finish_locked(now, reason, message)
        self._deliver(result)
        return True

    def fault(self, now: float, message: str, goal_id: int | None = None) -> bool:
        """Record a fault; the active goal (or ``goal_id`` if still active) aborts with "fault"."""
        context = self.fault_context() if self.fault_context is not None else ""
        if context and context not in message:
            message = f"{message}; {context}" if message else context
        with self._lock:
            self.fault_count += 1
            self.faults.append(message)
        return self.finish(now, TerminationReason.FAULT, message, goal_id)

    def note(self, goal_id: int, text: str) -> None:
        """Attach ``text`` to goal ``goal_id`` (if still active); its result's message carries it."""
        with self._lock:
            if self._active is not None and self._active.goal_id == goal_id:
                self._active.notes.append(text)

    def mark_first_chunk(self, goal_id: int, now: float) -> None:
        with self._lock:
            goal = self._active
            if goal is not None and goal.goal_id == goal_id and goal.first_chunk_at is None:
                goal.first_chunk_at = now

    def on_tick(self, now: float, period: float, executing: bool, starved: bool) -> None:
        """Advance the active goal by one control tick and end it on timeout, step budget or starvation."""
        ending: tuple[TerminationReason, str] | None = None
        with self._lock:
            goal = self._active
            if goal is None:
                return
            if executing:
                goal.executed_s += period
                goal.steps = int(goal.executed_s / self.action_period + 1e-9)
            if starved:
                goal.starved_since = now if goal.starved_since is None else goal.starved_since
            else:
                goal.starved_since = None
            if goal.max_steps and goal.steps >= goal.max_steps:
                ending = (TerminationReason.MAX_STEPS, f"executed {goal.steps} of {goal.max_steps} steps")
            elif goal.timeout_s and now - goal.started_at >= goal.timeout_s:
                ending = (TerminationReason.TIMEOUT, f"no result within {goal.timeout_s:g} s")
            elif goal.starved_since is not None and now - goal.starved_since > self.config.max_starved_s:
                waiting = "before its first chunk" if goal.first_chunk_at is None else "mid-goal"
                ending = (
                    TerminationReason.FAULT,
                    f"starved {waiting}: no action for {now - goal.starved_since:.3f} s "
                    f"(max_starved_s={self.config.max_starved_s:g})",
                )
        if ending is not None:
            reason, message = ending
            if reason is TerminationReason.FAULT:
                self.fault(now, message, goal.goal_id)
            else:
                self.finish(now, reason, message, goal.goal_id)

    # internals ----------------------------------------------------------------------------
    def _finish_locked(self, now: float, reason: TerminationReason, message: str) -> GoalResult:
        goal = self._active
        assert goal is not None
        self._active = None
        result = GoalResult(
            goal_id=goal.goal_id,
            success=reason is TerminationReason.COMPLETED,
            reason=reason,
            message="; ".join([message, *goal.notes]) if message else "; ".join(goal.notes),
            steps=goal.steps,
            duration_s=max(0.0, now - goal.started_at),
        )
        self.results.append(result)
        return result

    def _deliver(self, result: GoalResult) -> None:
        if self._on_result is not None:
            self._on_result(result)
