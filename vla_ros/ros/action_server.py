"""The ExecuteInstruction action server (only where the generated interfaces exist).

Goals pass a cheap request check (non-empty instruction, no negative limits) to be accepted by
the action protocol; the runtime then decides. A runtime refusal (busy under goal_policy=reject,
e-stop latched, no fresh observation) aborts the goal with termination_reason "rejected" and the
runtime's reason as message, because the protocol's own rejection cannot carry a reason.
"""

from __future__ import annotations

import time

from rclpy.action import ActionServer, CancelResponse, GoalResponse

from vla_ros.ros import interface_fields as fields


class ExecuteInstructionServer:
    def __init__(self, node, action_type, callback_group) -> None:
        self._node = node
        self._type = action_type
        self._server = ActionServer(
            node,
            action_type,
            "~/execute_instruction",
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT,
            callback_group=callback_group,
        )

    def _on_goal(self, request) -> GoalResponse:
        goal = fields.read(request, fields.EXECUTE_GOAL)
        if not goal["instruction"].strip() or goal["timeout_s"] < 0:
            self._node.get_logger().warning(f"ExecuteInstruction goal rejected: bad request {goal}")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

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
        result = None
        canceled = False
        while result is None:
            result = self._node.wait_result(decision.goal_id, timeout_s=period)
            if result is not None:
                break
            if handle.is_cancel_requested and not canceled:
                canceled = True
                runtime = self._node.runtime
                if runtime is None or not runtime.cancel_goal(decision.goal_id):
                    time.sleep(period)  # the goal ended meanwhile; its result is on its way
                continue
            runtime = self._node.runtime
            if runtime is None:  # deactivated: the runtime's "shutdown" result is on its way or gone
                result = self._node.wait_result(decision.goal_id, timeout_s=1.0)
                break
            if handle.is_active:
                fb = runtime.feedback()
                handle.publish_feedback(
                    fields.fill(
                        self._type.Feedback(),
                        fields.EXECUTE_FEEDBACK,
                        step=fb.step,
                        elapsed_s=fb.elapsed_s,
                        inference_latency_s=fb.latency_s if fb.latency_s == fb.latency_s else 0.0,
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
