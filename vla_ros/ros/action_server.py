"""The ExecuteInstruction action server (where the generated interfaces exist).

Every goal request is accepted by the action protocol, and the node then decides: a refusal
(bad request, no model, node inactive, busy under goal_policy=reject, e-stop latched, no fresh
observation) aborts the goal at once with termination_reason "rejected" and the reason as message,
because the protocol's own rejection cannot carry a reason. An accepted goal publishes feedback at
`feedback_rate_hz` until the runtime ends it; its result comes from the node's GoalResults, which
keeps every result whichever thread ended the goal and however early, so no goal waits for a
result that was delivered before it started waiting. A goal whose runtime went away (deactivate,
shutdown) ends "shutdown".

The execute callback is a coroutine: while its goal runs it awaits, holding no executor thread,
and wakes on a timer of its own every RESULT_POLL_S (and at once on a cancel request) to look
for the result and send feedback. So the node runs on one thread of rclpy's EventsExecutor,
however many goals wait, as well as on the multi-threaded executors tests and embedders use.
The timer polls because the EventsExecutor has no guard conditions for the runtime's result
thread to trigger.
"""

from __future__ import annotations

import math
import threading
import time

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.task import Future

from vla_ros.core.runtime_types import GoalResult
from vla_ros.ros import interface_fields as fields

RESULT_POLL_S = 0.05  # a result reaches the action client at most this late


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def _wake(futures: list[Future]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class ExecuteInstructionServer:
    def __init__(self, node, action_type, callback_group) -> None:
        self._node = node
        self._type = action_type
        self._callback_group = callback_group
        self._lock = threading.Lock()
        self._waiting: dict[int, Future] = {}  # goal id -> the future its execute coroutine awaits
        self._server = ActionServer(
            node,
            action_type,
            "~/execute_instruction",
            execute_callback=self._execute,
            goal_callback=lambda _request: GoalResponse.ACCEPT,
            cancel_callback=self._accept_cancel,
            callback_group=callback_group,
        )

    def _result(self, **values):
        return fields.fill(self._type.Result(), fields.EXECUTE_RESULT, **values)

    def _accept_cancel(self, _handle) -> CancelResponse:
        with self._lock:  # the goals' coroutines act on it now, not at their next poll
            waiting, self._waiting = list(self._waiting.values()), {}
        _wake(waiting)
        return CancelResponse.ACCEPT

    def _wake_one(self, goal_id: int) -> None:
        with self._lock:
            future = self._waiting.pop(goal_id, None)
        _wake([future] if future is not None else [])

    async def _next_wake(self, goal_id: int) -> GoalResult | None:
        """The goal's result after waiting until its timer fires or a cancel request comes; None if
        it has not ended yet."""
        future = Future()
        with self._lock:
            self._waiting[goal_id] = future
        result = self._node.wait_result(goal_id, timeout_s=0)  # arrived before we started waiting
        if result is None:
            await future
            result = self._node.wait_result(goal_id, timeout_s=0)
        with self._lock:
            self._waiting.pop(goal_id, None)
        return result

    async def _execute(self, handle):
        goal = fields.read(handle.request, fields.EXECUTE_GOAL)
        decision = self._node.start_goal(goal["instruction"], goal["timeout_s"], goal["max_steps"])
        if not decision.accepted:
            handle.abort()
            return self._result(
                success=False, termination_reason="rejected", message=decision.reason, steps=0, duration_s=0.0
            )
        period = 1.0 / float(self._node.get_parameter("feedback_rate_hz").value)
        timer = self._node.create_timer(min(period, RESULT_POLL_S), lambda: self._wake_one(decision.goal_id),
                                        callback_group=self._callback_group)
        try:
            result = await self._follow(handle, decision.goal_id, period)
        finally:
            self._node.destroy_timer(timer)
        return self._finish(handle, result)

    async def _follow(self, handle, goal_id: int, feedback_period: float) -> GoalResult | None:
        """Feedback and cancel requests until the goal's result arrives; None if the node stopped."""
        cancel_sent = False
        next_feedback = time.monotonic() + feedback_period
        while (result := await self._next_wake(goal_id)) is None:
            runtime = self._node.runtime
            if runtime is None:  # deactivated: the runtime ended the goal "shutdown" before it went
                return await self._next_wake(goal_id)
            if handle.is_cancel_requested and not cancel_sent:
                cancel_sent = True  # False: it ended meanwhile, and its result is already kept
                runtime.cancel_goal(goal_id)
                continue
            now = time.monotonic()
            if now < next_feedback:
                continue
            next_feedback = max(next_feedback + feedback_period, now)
            fb = runtime.feedback()
            if handle.is_active and fb.goal_id == goal_id:
                handle.publish_feedback(
                    fields.fill(
                        self._type.Feedback(),
                        fields.EXECUTE_FEEDBACK,
                        step=fb.step,
                        elapsed_s=_finite(fb.elapsed_s),
                        inference_latency_s=_finite(fb.latency_s),
                        actions_buffered=max(fb.buffered, 0),
                        state=fb.state,
                    )
                )
        return result

    def _finish(self, handle, result: GoalResult | None):
        if result is None:
            if handle.is_active:
                handle.abort()
            return self._result(
                success=False, termination_reason="shutdown", message="node stopped", steps=0, duration_s=0.0
            )
        reason = str(result.reason)
        if result.success:
            handle.succeed()
        elif reason == "canceled" and handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        return self._result(
            success=result.success,
            termination_reason=reason,
            message=result.message,
            steps=result.steps,
            duration_s=result.duration_s,
        )

    def destroy(self) -> None:
        self._server.destroy()
