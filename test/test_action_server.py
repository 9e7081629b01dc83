"""The ExecuteInstruction action server over DDS with a real rclpy ActionClient: every goal path.

Accept; reject (empty, whitespace-only and oversized instructions, busy under
goal_policy=reject, no model, not active) with the reason in the result; preempt; cancel;
timeout; max_steps; completed; goals that end at once; e-stop and deactivate while running.
Every result is checked for consistency (success only for completed, a protocol status that
matches the reason) and every feedback for filled, finite fields.

Needs the generated interfaces (the colcon install of `make interfaces`, Jazzy). The Humble
runtime has none, so there these tests skip; anywhere else (CI on Jazzy) a missing build fails.
"""

from __future__ import annotations

import math
import os
import threading
import time

import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
from action_msgs.msg import GoalStatus  # noqa: E402
from node_harness import Rig, wait_ready  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from vla_ros.ros import interface_fields as fields  # noqa: E402

pytestmark = pytest.mark.ros

ACTION, _STATUS, WHY = fields.load_interfaces()
if ACTION is None:
    if os.environ.get("ROS_DISTRO") == "humble":
        pytest.skip(f"no generated interfaces on Humble (the fallback is tested): {WHY}",
                    allow_module_level=True)
    raise ImportError(f"ExecuteInstruction is missing outside Humble; run `make interfaces`: {WHY}")

STATES = {"waiting", "running", "holding", "idle"}
PROTOCOL_STATUS = {"completed": GoalStatus.STATUS_SUCCEEDED, "canceled": GoalStatus.STATUS_CANCELED}


class Goal:
    """One goal sent with the raw ActionClient; records feedback and the wrapped result."""

    def __init__(self, rig: Rig, client: ActionClient, instruction: str, timeout_s=0.0, max_steps=0) -> None:
        self.rig = rig
        self.feedback: list[dict] = []
        request = fields.fill(ACTION.Goal(), fields.EXECUTE_GOAL, instruction=instruction,
                              timeout_s=timeout_s, max_steps=max_steps)
        sent = client.send_goal_async(request, feedback_callback=self._on_feedback)
        rig.wait_for(sent.done, 5.0, "the goal response")
        self.handle = sent.result()
        assert self.handle.accepted, "the server accepts every request and answers refusals in the result"
        self._result = self.handle.get_result_async()

    def _on_feedback(self, msg) -> None:
        self.feedback.append(fields.read(msg.feedback, fields.EXECUTE_FEEDBACK))

    def result(self, timeout_s: float = 10.0) -> dict:
        self.rig.wait_for(self._result.done, timeout_s, "the goal's result")
        wrapped = self._result.result()
        result = fields.read(wrapped.result, fields.EXECUTE_RESULT)
        check_consistent(result, wrapped.status)
        for fb in self.feedback:
            check_feedback(fb)
        return result


def check_consistent(result: dict, status: int) -> None:
    reason = result["termination_reason"]
    assert reason in fields.TERMINATION_REASONS, result
    assert result["success"] == (reason == "completed"), result
    assert status == PROTOCOL_STATUS.get(reason, GoalStatus.STATUS_ABORTED), (status, result)
    assert math.isfinite(result["duration_s"]) and result["duration_s"] >= 0, result
    if reason == "rejected":
        assert result["message"] and result["steps"] == 0, result


def check_feedback(fb: dict) -> None:
    assert set(fb) == set(fields.EXECUTE_FEEDBACK)
    for name in ("elapsed_s", "inference_latency_s"):
        assert math.isfinite(fb[name]) and fb[name] >= 0, fb
    assert fb["state"] in STATES, fb


@pytest.fixture(params=["multi-threaded", "node"])
def make_rig(rclpy_context, request):
    """Rigs spun by a MultiThreadedExecutor, then by the vla_node executable's single-threaded one
    (where the execute coroutines must not hold the thread)."""
    rigs: list[Rig] = []

    def make(start: bool = True, **params) -> tuple[Rig, ActionClient]:
        params.setdefault("feedback_rate_hz", 20.0)
        rig = Rig(rclpy_context, interface="action", executor=request.param, **params)
        rigs.append(rig)
        client = ActionClient(rig.robot, ACTION, f"/{rig.name}/execute_instruction")
        assert client.wait_for_server(timeout_sec=10.0)
        if start:
            rig.start()
            wait_ready(rig)
        return rig, client

    yield make
    for rig in rigs:
        rig.close()


def test_goal_runs_to_its_timeout_with_feedback(make_rig):
    rig, client = make_rig()
    goal = Goal(rig, client, "pick up the red cube", timeout_s=0.8)
    result = goal.result()
    assert result["termination_reason"] == "timeout" and not result["success"]
    assert result["steps"] >= 4 and result["duration_s"] >= 0.8 - 0.02, result  # a timeout never ends early
    assert len(goal.feedback) >= 5
    steps = [fb["step"] for fb in goal.feedback]
    assert steps == sorted(steps) and steps[-1] > 0
    assert any(fb["actions_buffered"] > 0 and fb["inference_latency_s"] > 0 for fb in goal.feedback)
    assert rig.policy.instructions[-1] == "pick up the red cube"


@pytest.mark.parametrize(
    ("instruction", "words"),
    [
        ("", "empty instruction"),
        ("  \t ", "whitespace-only"),
        ("x" * 65, "65 bytes, over max_instruction_bytes=64"),
        ("é" * 33, "66 bytes, over max_instruction_bytes=64"),
    ],
)
def test_bad_requests_are_rejected_with_the_reason(make_rig, instruction, words):
    rig, client = make_rig(max_instruction_bytes=64)
    result = Goal(rig, client, instruction).result()
    assert result["termination_reason"] == "rejected" and words in result["message"], result
    assert rig.node.runtime.feedback().goal_id == -1  # nothing started
    for timeout_s in (-1.0, float("nan"), float("inf")):  # NaN would never time out
        result = Goal(rig, client, "ok", timeout_s=timeout_s).result()
        assert result["termination_reason"] == "rejected", result
        assert "must be finite and >= 0" in result["message"], result


def test_busy_node_rejects_under_goal_policy_reject(make_rig):
    rig, client = make_rig(goal_policy="reject")
    first = Goal(rig, client, "first", timeout_s=2.0)
    rig.wait_for(lambda: rig.node.status()["goal_active"], 5.0, "the first goal running")
    second = Goal(rig, client, "second").result()
    assert second["termination_reason"] == "rejected" and "busy" in second["message"], second
    assert first.result()["termination_reason"] == "timeout"  # the first ran on undisturbed


def test_second_goal_preempts_the_first(make_rig):
    rig, client = make_rig(goal_policy="preempt")
    first = Goal(rig, client, "first")
    rig.wait_for(lambda: rig.node.status()["instruction"] == "first", 5.0, "the first goal running")
    second = Goal(rig, client, "second", timeout_s=0.5)
    assert first.result()["termination_reason"] == "preempted"
    assert second.result()["termination_reason"] == "timeout"
    assert rig.policy.instructions[-1] == "second"


def test_unconfigured_and_inactive_nodes_reject(make_rig):
    rig, client = make_rig(start=False)
    result = Goal(rig, client, "wave").result()
    assert result["termination_reason"] == "rejected" and "not configured" in result["message"], result
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    result = Goal(rig, client, "wave").result()
    assert result["termination_reason"] == "rejected" and "not active" in result["message"], result


def test_cancel_ends_the_goal_canceled_and_holds(make_rig):
    rig, client = make_rig()
    goal = Goal(rig, client, "wave")
    rig.wait_for(lambda: rig.node.status()["goal_active"], 5.0, "goal running")
    cancel = goal.handle.cancel_goal_async()
    rig.wait_for(cancel.done, 5.0, "the cancel response")
    assert cancel.result().goals_canceling
    result = goal.result()
    assert result["termination_reason"] == "canceled", result
    assert rig.node.runtime.feedback().goal_id == -1
    after = len(rig.node.command_log)
    rig.wait_for(lambda: len(rig.node.command_log) > after + 10, 5.0, "ten ticks after the cancel")
    assert all(c.held for c in list(rig.node.command_log)[after:]), "the arm did not hold after the cancel"


def test_max_steps_ends_after_exactly_that_many_steps(make_rig):
    rig, client = make_rig()
    result = Goal(rig, client, "three steps", max_steps=3).result()
    assert result["termination_reason"] == "max_steps" and result["steps"] == 3, result


def test_success_topic_completes_the_goal_with_success(make_rig):
    rig, client = make_rig(success_topic="/test/success")
    goal = Goal(rig, client, "wave")
    rig.wait_for(lambda: rig.node.status()["step"] >= 2, 5.0, "two steps")
    rig.robot.success_pub.publish(Bool(data=True))
    result = goal.result()
    assert result["termination_reason"] == "completed" and result["success"], result


def test_goals_that_end_at_once_all_get_their_result(make_rig):
    """A goal may end before its execute callback waits (timeout at the first tick); results are kept."""
    rig, client = make_rig(goal_policy="preempt")
    goals = [Goal(rig, client, f"blink {i}", timeout_s=1e-3) for i in range(8)]
    reasons = [g.result(10.0)["termination_reason"] for g in goals]
    assert set(reasons) <= {"timeout", "preempted"}, reasons
    # and in-process, the exact race: the goal ended and another result came before anyone waited
    decision = rig.node.start_goal("gone before asked", timeout_s=1e-3)
    assert decision.accepted
    rig.wait_for(lambda: rig.node.runtime.feedback().goal_id == -1, 5.0, "the goal to end")
    assert not rig.node.start_goal("").accepted  # the newest result is now this rejection
    assert str(rig.node.wait_result(decision.goal_id, timeout_s=0.0).reason) == "timeout"


def test_estop_while_running_aborts_with_estop(make_rig):
    rig, client = make_rig()
    goal = Goal(rig, client, "wave")
    rig.wait_for(lambda: rig.node.status()["goal_active"], 5.0, "goal running")
    assert rig.robot.call(rig.robot.estop_client, SetBool.Request(data=True)).success
    result = goal.result()
    assert result["termination_reason"] == "estop", result
    refused = Goal(rig, client, "again").result()
    assert refused["termination_reason"] == "rejected" and "e-stop" in refused["message"], refused


def test_deactivate_while_running_ends_shutdown(make_rig):
    rig, client = make_rig()
    goal = Goal(rig, client, "wave")
    rig.wait_for(lambda: rig.node.status()["goal_active"], 5.0, "goal running")
    done = threading.Event()
    threading.Thread(target=lambda: (rig.node.trigger_deactivate(), done.set()), daemon=True).start()
    result = goal.result()
    assert result["termination_reason"] == "shutdown", result
    assert done.wait(5.0)
    time.sleep(0.1)
    assert rig.node.runtime is None
    # Active again: goal ids go on, so the new goal's result is its own, not the old goal's "shutdown".
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    wait_ready(rig)
    result = Goal(rig, client, "after the restart", max_steps=2).result()
    assert result["termination_reason"] == "max_steps" and result["steps"] == 2, result


def test_an_instruction_the_policy_cannot_ground_is_rejected_and_status_reports_the_reading(make_rig):
    """A policy with a lexicon (core/grounding.py): "make me a coffee" is REJECTED by name before
    any model sees it; a valid goal runs, and ~/status carries what the check read and how sure."""
    from dataclasses import replace

    import numpy as np

    from vla_ros.core.scripted_policy import ScriptedPolicy, default_spec
    from vla_ros.sim.paraphrase import lexicon, paraphrase

    tasks = [{"family": f, "colour": c, "shape": "cube"} for f in ("pick", "place") for c in ("red", "blue")]
    rng = np.random.default_rng(0)
    texts = [paraphrase(t["family"], t["colour"], t["shape"], rng) for t in tasks for _ in range(8)]
    policy = ScriptedPolicy(spec=replace(default_spec(), lexicon=lexicon(tasks, texts)))
    rig, client = make_rig(policy=policy)
    result = Goal(rig, client, "make me a coffee").result()
    assert result["termination_reason"] == "rejected", result
    assert result["message"].startswith("instruction not understood: it names no task"), result
    assert "make me a coffee" not in policy.instructions  # the model never saw it
    goal = Goal(rig, client, "COULD YOU PUT THE BLEU CUBE IN THE BOWL?", timeout_s=1.5)
    rig.wait_for(lambda: rig.robot.last_status().get("goal_active") is True, 5.0, "the goal running")
    status = rig.robot.last_status()
    assert status["instruction_grounding"] == "place blue cube", status
    assert 0.5 < status["instruction_confidence"] < 1.0, status  # one typing slip corrected
    assert goal.result()["termination_reason"] == "timeout"
    rig.wait_for(lambda: rig.robot.last_status().get("goal_active") is False, 5.0, "the goal to end")
    assert rig.robot.last_status()["instruction_confidence"] == -1.0
