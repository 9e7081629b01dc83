"""vla_node goals over DDS: a goal to its timeout, ~/stop and ~/estop hold within one control tick,
success_topic completes, preempt/reject per goal policy; results read back from ~/status.

Goals go as ExecuteInstruction where the generated types exist, else on ~/instruction (see
node_harness); the last test drives the ~/instruction topic front-end on its own either way.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
from node_harness import Rig, positions_of, wait_ready  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

pytestmark = pytest.mark.ros


def _ended(rig: Rig, reason: str, timeout_s: float = 10.0) -> dict:
    rig.wait_for(
        lambda: rig.robot.last_status().get("last_termination_reason") == reason,
        timeout_s,
        f"~/status last_termination_reason == {reason!r} (now {rig.robot.last_status()})",
    )
    return rig.robot.last_status()


def _assert_held_from(rig: Rig, index: int) -> np.ndarray:
    """Every command the node sent from ``index`` on is a hold of one and the same position."""
    rig.wait_for(lambda: len(rig.node.command_log) > index + 10, 5.0, "ten more ticks")
    after = list(rig.node.command_log)[index:]
    assert all(c.held for c in after), [c.reason for c in after]
    held = np.array([c.positions for c in after])
    assert np.all(held == held[0])
    return held[0]


def test_instruction_runs_until_its_timeout(rclpy_context):
    rig = Rig(rclpy_context, goal_timeout_s=0.8)
    try:
        rig.start()
        wait_ready(rig)
        rig.instruct("pick up the red cube")
        rig.wait_for(lambda: rig.robot.last_status().get("goal_active"), 5.0, "goal_active on ~/status")
        assert rig.robot.last_status()["instruction"] == "pick up the red cube"
        status = _ended(rig, "timeout")
        assert status["goal_active"] is False and status["instruction"] == ""
        result = rig.node.last_result
        assert str(result.reason) == "timeout" and not result.success
        assert result.steps >= 5  # 0.8 s of 0.1 s action periods ran, give or take the start-up
        assert rig.policy.instructions[-1] == "pick up the red cube"
        # after the goal the arm holds
        _assert_held_from(rig, len(rig.node.command_log))
    finally:
        rig.close()


@pytest.mark.parametrize("how", ["stop", "estop"])
def test_stop_and_estop_hold_within_one_control_tick(rclpy_context, how):
    rig = Rig(rclpy_context)
    try:
        rig.start()
        wait_ready(rig)
        rig.instruct()
        rig.wait_for(lambda: sum(not c.held for c in list(rig.node.command_log)) > 20, 5.0, "moving commands")
        if how == "stop":
            response = rig.robot.call(rig.robot.stop_client, Trigger.Request())
        else:
            response = rig.robot.call(rig.robot.estop_client, SetBool.Request(data=True))
        assert response.success, response.message
        # The service has answered: at most the tick already running may still move; every later one holds.
        answered_at = len(rig.node.command_log)
        held = _assert_held_from(rig, answered_at + 1)
        log = list(rig.node.command_log)
        last_moving = max(i for i, c in enumerate(log) if not c.held)
        assert last_moving <= answered_at
        np.testing.assert_array_equal(held, log[last_moving].positions)  # held where it was, not elsewhere
        status = _ended(rig, "canceled" if how == "stop" else "estop")
        # The robot receives the held value (its newest command; not every command: under load a
        # reader's queue may overflow, and which ones it kept is not what this test is about).
        rig.wait_for(
            lambda: (last := rig.robot.last_command()) is not None
            and np.allclose(positions_of(last), held),
            5.0,
            "the held command at the robot",
        )
        if how == "estop":
            assert status["estop"] is True
            outcome = rig.send("move again").outcome()
            assert outcome.termination_reason == "rejected", outcome
            _ended(rig, "rejected")
            assert "e-stop" in rig.node.last_result.message
            _assert_held_from(rig, len(rig.node.command_log))
            rig.robot.call(rig.robot.estop_client, SetBool.Request(data=False))
            rig.instruct("move again")  # released: goals run again
    finally:
        rig.close()


def test_success_topic_completes_the_goal(rclpy_context):
    rig = Rig(rclpy_context, success_topic="/test/success")
    try:
        rig.start()
        wait_ready(rig)
        goal = rig.instruct()
        rig.robot.success_pub.publish(Bool(data=False))  # false is not success
        rig.wait_for(lambda: rig.node.status()["step"] >= 3, 5.0, "three steps")
        assert not goal.done()
        rig.robot.success_pub.publish(Bool(data=True))
        _ended(rig, "completed")
        assert rig.node.last_result.success
        outcome = goal.outcome()
        assert outcome.success and outcome.termination_reason == "completed", outcome
    finally:
        rig.close()


@pytest.mark.parametrize("policy", ["preempt", "reject"])
def test_second_instruction_follows_the_goal_policy(rclpy_context, policy):
    rig = Rig(rclpy_context, goal_policy=policy)
    try:
        rig.start()
        wait_ready(rig)
        rig.instruct("first")
        first = rig.node.runtime.feedback().goal_id
        second = rig.send("second")
        if policy == "preempt":
            _ended(rig, "preempted")
            assert rig.node.last_result.goal_id == first
            rig.wait_for(lambda: rig.node.status()["instruction"] == "second", 5.0, "second goal running")
        else:
            _ended(rig, "rejected")
            assert "busy" in rig.node.last_result.message
            assert second.outcome().termination_reason == "rejected"
            assert rig.node.runtime.feedback().goal_id == first  # the first goal still runs
            assert rig.node.status()["instruction"] == "first"
    finally:
        rig.close()


def test_topic_front_end_rejects_an_empty_instruction_with_a_reason(rclpy_context):
    rig = Rig(rclpy_context, interface="topic", goal_timeout_s=0.5)
    try:
        rig.start()
        wait_ready(rig)
        rig.robot.instruction_pub.publish(String(data="   "))
        status = _ended(rig, "rejected")
        assert status["goal_active"] is False
        assert "whitespace-only instruction" in rig.node.last_result.message
        outcome = rig.instruct("wave over the topic").outcome()  # and a good one runs to its end
        assert outcome.interface == "topic" and outcome.termination_reason == "timeout", outcome
    finally:
        rig.close()


def test_an_instruction_of_invalid_utf8_is_rejected_by_name(rclpy_context):
    """A std_msgs/String whose bytes are not UTF-8 (a C++ or embedded publisher can send one):
    rclpy decodes it with replacement characters; the node refuses it instead of guessing."""
    import struct

    rig = Rig(rclpy_context, interface="topic", goal_timeout_s=0.5)
    try:
        rig.start()
        wait_ready(rig)
        payload = b"pick \xff\xfe up\x00"  # CDR string: length with the NUL, then the bytes
        rig.robot.instruction_pub.publish(b"\x00\x01\x00\x00" + struct.pack("<I", len(payload)) + payload)
        _ended(rig, "rejected")
        assert "not valid UTF-8 (undecodable bytes at index 5)" in rig.node.last_result.message
    finally:
        rig.close()
