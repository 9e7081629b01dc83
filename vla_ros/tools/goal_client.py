"""Sending an instruction to a running vla_node and following it to its result.

The interface is the ExecuteInstruction action (`<vla_node>/execute_instruction`): goal, feedback,
result. Where the generated types are missing (a pip install, the Humble test runtime) the
client falls back to the documented convenience front-end: it publishes std_msgs/String on
`<vla_node>/instruction` and follows the goal on `<vla_node>/status` (the result then carries the
termination reason and steps the status reported, and no message).

Used by `vla_ros instruct`, the simulated-episode client (demo, eval-ros) and the tests, so every
caller sends goals the same way. The caller spins the node (any executor, any thread); the
methods here block the calling thread only.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vla_ros.ros import interface_fields
from vla_ros.ros.diagnostics import subscribe_status

INTERFACES = ("auto", "action", "topic")


@dataclass
class GoalOutcome:
    """How a goal ended, whichever interface carried it."""

    interface: str  # "action" or "topic"
    success: bool
    termination_reason: str  # the action result's constants, lower case ("completed", "rejected", ...)
    message: str
    steps: int
    duration_s: float  # as the node reports it (topic: measured here from the start to the end)
    feedback: list[dict[str, Any]] = field(default_factory=list)  # every feedback received, in order
    # time.monotonic() when the node took the request (action: the goal response arrived; topic:
    # the publish that started the goal); NaN when it never did
    sent_at: float = float("nan")


class InstructionClient:
    """Sends instructions to the vla_node named ``vla_node`` (a fully qualified node name)."""

    def __init__(self, node, vla_node: str = "/vla_node", interface: str = "auto") -> None:
        from std_msgs.msg import String

        if interface not in INTERFACES:
            raise ValueError(f"interface must be one of {INTERFACES}, got {interface!r}")
        self.node = node
        self.vla_node = vla_node.rstrip("/")
        action_type, _, why = interface_fields.load_interfaces()
        if interface == "action" and action_type is None:
            raise RuntimeError(f"interface 'action' asked for, but {why}")
        self.interface = "action" if action_type is not None and interface != "topic" else "topic"
        self.action_type = action_type
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {}
        self._status_time = 0.0
        self.status_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._status_sub = subscribe_status(node, f"{self.vla_node}/status", self._on_status)
        self._action_client = None
        self._instruction_pub = None
        if self.interface == "action":
            from rclpy.action import ActionClient

            self._action_client = ActionClient(node, action_type, f"{self.vla_node}/execute_instruction")
        else:
            self._instruction_pub = node.create_publisher(String, f"{self.vla_node}/instruction", 10)

    # ------------------------------------------------------------------ status
    def _on_status(self, fields: dict[str, Any]) -> None:
        with self._lock:
            self._status, self._status_time = fields, time.monotonic()
        for listener in self.status_listeners:
            listener(fields)

    def status(self) -> tuple[dict[str, Any], float]:
        """The newest ~/status fields and when they arrived (time.monotonic(); 0 = none yet)."""
        with self._lock:
            return dict(self._status), self._status_time

    def wait_for_node(self, timeout_s: float) -> bool:
        """Until the node's status (and, for the action, its server) is visible."""
        deadline = time.monotonic() + timeout_s
        if self._action_client is not None and not self._action_client.wait_for_server(timeout_sec=timeout_s):
            return False
        return _wait(lambda: self.status()[1] > 0, deadline - time.monotonic())

    # ------------------------------------------------------------------ goals
    def run(
        self,
        instruction: str,
        timeout_s: float = 0.0,
        max_steps: int = 0,
        *,
        on_feedback: Callable[[dict[str, Any]], None] | None = None,
        on_started: Callable[[], None] | None = None,
        result_timeout_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> GoalOutcome:
        """Send one goal and block until it ends.

        ``on_started`` runs once when the node has taken the goal; ``cancel`` set by another
        thread cancels it. ``result_timeout_s`` bounds the wait for the end (default: the goal's
        timeout plus 30 s, or none without a timeout); TimeoutError past it. ValueError, before
        anything is sent, for an instruction with a NUL (ROS strings end there: the node would run
        the text before it) or a timeout that is not a finite number >= 0.
        """
        if "\0" in instruction:
            cut = instruction.index("\0")
            raise ValueError(f"instruction has a NUL character at index {cut}; ROS strings end there, so "
                             f"the node would run {instruction[:cut]!r}")
        if not (math.isfinite(timeout_s) and timeout_s >= 0) or max_steps < 0:
            raise ValueError(f"timeout_s={timeout_s} must be finite and >= 0, max_steps={max_steps} >= 0")
        if result_timeout_s is None and timeout_s > 0:
            result_timeout_s = timeout_s + 30.0
        if self.interface == "action":
            return self._run_action(instruction, timeout_s, max_steps, on_feedback, on_started,
                                    result_timeout_s, cancel)
        return self._run_topic(instruction, timeout_s, max_steps, on_feedback, on_started,
                               result_timeout_s, cancel)

    def _run_action(self, instruction, timeout_s, max_steps, on_feedback, on_started, result_timeout_s,
                    cancel) -> GoalOutcome:
        goal = interface_fields.fill(self.action_type.Goal(), interface_fields.EXECUTE_GOAL,
                                     instruction=instruction, timeout_s=timeout_s, max_steps=max_steps)
        feedback: list[dict[str, Any]] = []
        started = threading.Event()

        def on_feedback_msg(msg) -> None:
            fields = interface_fields.read(msg.feedback, interface_fields.EXECUTE_FEEDBACK)
            feedback.append(fields)
            if not started.is_set():
                started.set()
                if on_started is not None:
                    on_started()
            if on_feedback is not None:
                on_feedback(fields)

        if not self._action_client.wait_for_server(timeout_sec=10.0):
            raise TimeoutError(f"the action server {self.vla_node}/execute_instruction is not available")
        sent = self._action_client.send_goal_async(goal, feedback_callback=on_feedback_msg)
        answered = threading.Event()
        sent.add_done_callback(lambda _future: answered.set())
        if not answered.wait(10.0):
            raise TimeoutError(f"{self.vla_node}/execute_instruction did not answer the goal request")
        handle = sent.result()
        sent_at = time.monotonic()
        if not handle.accepted:  # the server accepts every well-formed request and aborts with a reason
            return GoalOutcome("action", False, "rejected", "goal rejected by the action server", 0, 0.0,
                               feedback)
        result_future = handle.get_result_async()
        ended = threading.Event()
        result_future.add_done_callback(lambda _future: ended.set())
        deadline = None if result_timeout_s is None else time.monotonic() + result_timeout_s
        canceled = False
        while not ended.wait(0.05):  # wakes at once on the result; polls only for cancel and deadline
            if deadline is not None and time.monotonic() > deadline:
                handle.cancel_goal_async()
                raise TimeoutError(f"no result for {instruction[:80]!r} within {result_timeout_s:.0f} s")
            if cancel is not None and cancel.is_set() and not canceled:
                canceled = True
                handle.cancel_goal_async()
        result = interface_fields.read(result_future.result().result, interface_fields.EXECUTE_RESULT)
        if not started.is_set() and result["termination_reason"] != "rejected" and on_started is not None:
            on_started()  # ended before its first feedback
        return GoalOutcome("action", bool(result["success"]), result["termination_reason"],
                           result["message"], int(result["steps"]), float(result["duration_s"]), feedback,
                           sent_at)

    def _run_topic(self, instruction, timeout_s, max_steps, on_feedback, on_started, result_timeout_s,
                   cancel) -> GoalOutcome:
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        if timeout_s or max_steps:
            raise ValueError("the ~/instruction topic takes no timeout_s or max_steps (the node's defaults "
                             "apply); build the interfaces for the action")
        accept_s = 10.0
        deadline = time.monotonic() + accept_s
        while True:  # the first message may go out before the subscription matched: resend
            self._instruction_pub.publish(String(data=instruction))
            sent = time.monotonic()

            def started(sent=sent) -> bool:
                status, at = self.status()
                return at > sent and status.get("goal_active") and status.get("instruction") == instruction

            if _wait(started, 1.5):
                break
            if time.monotonic() > deadline:
                status, _ = self.status()
                return GoalOutcome("topic", False, "rejected",
                                   f"not started within {accept_s:.0f} s (last termination reason "
                                   f"{status.get('last_termination_reason', '')!r})", 0, 0.0)
        if on_started is not None:
            on_started()
        stop = self.node.create_client(Trigger, f"{self.vla_node}/stop")
        end = None if result_timeout_s is None else sent + result_timeout_s
        steps, feedback, canceled = 0, [], False
        try:
            while True:
                status, at = self.status()
                if not status.get("goal_active") and at > sent:
                    break
                if status.get("goal_active"):
                    steps = int(status.get("step", 0))
                    fields = {"step": steps, "elapsed_s": status.get("elapsed_s", 0.0),
                              "inference_latency_s": status.get("inference_latency_s", 0.0),
                              "actions_buffered": status.get("actions_buffered", 0),
                              "state": status.get("state", "")}
                    if not feedback or feedback[-1] != fields:
                        feedback.append(fields)
                        if on_feedback is not None:
                            on_feedback(fields)
                if cancel is not None and cancel.is_set() and not canceled:
                    canceled = True
                    stop.call_async(Trigger.Request())
                if end is not None and time.monotonic() > end:
                    raise TimeoutError(f"{instruction[:80]!r} did not end within {result_timeout_s:.0f} s")
                time.sleep(0.01)
        finally:
            self.node.destroy_client(stop)
        reason = str(status.get("last_termination_reason", ""))
        return GoalOutcome("topic", reason == "completed", reason, "", steps, time.monotonic() - sent,
                           feedback, sent)

    def destroy(self) -> None:
        if self._action_client is not None:
            self._action_client.destroy()
        if self._instruction_pub is not None:
            self.node.destroy_publisher(self._instruction_pub)
        self.node.destroy_subscription(self._status_sub)


def _wait(predicate: Callable[[], Any], timeout_s: float, poll_s: float = 0.01) -> bool:
    deadline = time.monotonic() + max(timeout_s, 0.0)
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
