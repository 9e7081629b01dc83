"""The ExecuteInstruction action server (where the generated interfaces exist).

Every goal request is accepted by the action protocol, and the node then decides: a refusal
(bad request, no model, node inactive, busy under goal_policy=reject, e-stop latched, no fresh
observation) aborts the goal at once with termination_reason "rejected" and the reason as message,
because the protocol's own rejection cannot carry a reason. An accepted goal publishes feedback at
`feedback_rate_hz` until the runtime ends it; its result comes from the node's GoalResults, which
keeps every result whichever thread ended the goal and however early, so no goal waits for a
result that was delivered before it started waiting. A goal whose runtime went away (deactivate,
shutdown) ends "shutdown".
"""

from __future__ import annotations

import math

from rclpy.action import ActionServer, CancelResponse, GoalResponse

from vla_ros.ros import interface_fields as fields


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


class ExecuteInstructionServer:
    def __init__(self, node, action_type, callback_group) -> None:
        self._node = node
        self._type = action_type
        self._server = ActionServer(
            node,
            action_type,
            "~/execute_instruction",
            execute_callback=self._execute,
            goal_callback=lambda _request: GoalResponse.ACCEPT,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            callback_group=callback_group,
        )

    def _result(self, **values):
        return fields.fill(self._type.Result(), fields.EXECUTE_RESULT, **values)

    def _execute(self, handle):
        goal = fields.read(handle.request, fields.EXECUTE_GOAL)
        decision = self._node.start_goal(goal["instruction"], goal["timeout_s"], goal["max_steps"])
        if not decision.accepted:
            handle.abort()
            return self._result(
                success=False, termination_reason="rejected", message=decision.reason, steps=0, duration_s=0.0
            )
        period = 1.0 / float(self._node.get_parameter("feedback_rate_hz").value)
        cancel_sent = False
        while (result := self._node.wait_result(decision.goal_id, timeout_s=period)) is None:
            runtime = self._node.runtime
            if runtime is None:  # deactivated: the runtime ended the goal "shutdown" before it went
                result = self._node.wait_result(decision.goal_id, timeout_s=1.0)
                break
            if handle.is_cancel_requested and not cancel_sent:
                cancel_sent = True  # False: it ended meanwhile, and its result is already kept
                runtime.cancel_goal(decision.goal_id)
                continue
            fb = runtime.feedback()
            if handle.is_active and fb.goal_id == decision.goal_id:
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
