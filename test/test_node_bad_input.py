"""Bad input over DDS never stops vla_node: each class of bad joint state or header stamp is
dropped where it enters, named (problem log, /diagnostics, the faulted goal's result), the arm
holds within its limits, and the node runs goals again once good messages return.

Which class ends a goal: none directly. A bad message is dropped and reported; if no good one
follows, the observations go stale and the freshness guard faults the goal (after
max_observation_age_s + stale_grace_s) with the dropped input's reason appended. A single bad
message among good ones only costs that message.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
from node_harness import Rig, wait_ready  # noqa: E402

pytestmark = pytest.mark.ros


def _position(value):
    def corrupt(msg):
        msg.position = [value, *list(msg.position)[1:]]
        return msg
    return corrupt


def _duplicate_name(msg):
    msg.name = [*msg.name, msg.name[0]]
    msg.position = [*msg.position, 0.3]
    return msg


def _short_velocity(msg):
    msg.velocity = [0.0]
    return msg


def _nan_velocity(msg):
    msg.velocity = [math.nan] * len(msg.name)
    return msg


def _stamp(sec=None, nanosec=None, ahead_s=None):
    def corrupt(msg):
        if ahead_s is not None:
            msg.header.stamp.sec += int(ahead_s)
        if sec is not None:
            msg.header.stamp.sec = sec
        if nanosec is not None:
            msg.header.stamp.nanosec = nanosec
        return msg
    return corrupt


JOINT_CASES = [
    (_position(math.nan), "position is nan"),
    (_position(math.inf), "position is inf"),
    (_position(-math.inf), "position is -inf"),
    (_position(1e6), "outside [-3.14159, 3.14159]"),
    (_position(-10.0), "outside [-3.14159, 3.14159]"),
    (_duplicate_name, "duplicate joint name(s) ['shoulder_pan']"),
    (_short_velocity, "names but 1 velocity values"),
    (_nan_velocity, "velocity is nan"),
    (_stamp(sec=-5), "sec is negative (-5)"),
    (_stamp(nanosec=2_000_000_000), "nanosec 2000000000 is outside [0, 1e9)"),
    (_stamp(sec=0, nanosec=0), "stamp is zero"),
    (_stamp(ahead_s=10), "ahead of the node's clock"),
    (_stamp(ahead_s=10**6), "ahead of the node's clock"),
]


def _commands_within_limits(rig: Rig) -> None:
    config = rig.node.config
    positions = np.array([c.positions for c in list(rig.node.command_log)])
    assert np.all(np.isfinite(positions))
    assert np.all(positions >= np.array(config.position_lower) - 1e-9)
    assert np.all(positions <= np.array(config.position_upper) + 1e-9)


@pytest.mark.parametrize("corrupt, words", JOINT_CASES, ids=[w for _, w in JOINT_CASES])
def test_bad_joint_states_are_dropped_named_held_and_recovered(rclpy_context, corrupt, words):
    rig = Rig(rclpy_context)
    try:
        goal = rig.start_moving()
        rig.robot.joint_override = corrupt
        rig.wait_for(lambda: rig.node.inputs.skipped["joint_states"] >= 5, 5.0, "dropped joint states")
        problem = [p for p in rig.node._problems if p.startswith("joint_states")][-1]
        assert "joint_states: message dropped" in problem and words in problem, problem
        # Nothing good arrives: the goal faults on stale observations, naming the dropped input.
        rig.wait_for(lambda: rig.robot.last_status().get("last_termination_reason") == "fault", 10.0,
                     "the goal to fault")
        assert words in rig.node.last_result.message, rig.node.last_result.message
        outcome = goal.outcome()
        assert outcome.termination_reason == "fault", outcome
        statuses = rig.node._diagnostic_statuses()
        assert any(words in s.message for s in statuses), [s.message for s in statuses]
        # Holding, alive, within limits and finite throughout.
        start = len(rig.node.command_log)
        rig.wait_for(lambda: len(rig.node.command_log) > start + 10, 5.0, "ticks while input is bad")
        assert all(c.held for c in list(rig.node.command_log)[start:])
        _commands_within_limits(rig)
        # Good messages again: the node runs a goal.
        rig.robot.joint_override = None
        rig.instruct()
        _commands_within_limits(rig)
    finally:
        rig.close()


def test_a_burst_stamped_in_the_future_does_not_block_good_frames(rclpy_context):
    """Frames stamped +60 s used to sit in the synchronizer's queues, which evict the oldest
    stamps, so every good frame after them was discarded until the clock caught up."""
    rig = Rig(rclpy_context)
    try:
        rig.start()
        wait_ready(rig)
        future = _stamp(ahead_s=60)
        rig.robot.frame_override["scene"] = future
        rig.robot.joint_override = future
        rig.wait_for(lambda: rig.node.inputs.skipped["scene"] >= 15, 5.0, "dropped future frames")
        scene = [p for p in rig.node._problems if p.startswith("camera 'scene'")]
        assert "ahead of the node's clock" in scene[-1], scene
        during = rig.node.inputs.observations
        del rig.robot.frame_override["scene"]
        rig.robot.joint_override = None
        rig.wait_for(lambda: rig.node.inputs.observations > during + 5, 2.0, "observations right after")
        rig.instruct()
    finally:
        rig.close()


def test_an_unexpected_exception_in_a_callback_faults_the_goal_and_the_node_lives(rclpy_context, monkeypatch):
    """The last-resort guard: a bug in the input path (injected: frame conversion raises) must not
    end the executor's spin; the goal faults naming it, the arm holds, and goals run once it stops."""
    from vla_ros.ros import observation_sync

    real = observation_sync.image_msg_to_rgb
    broken = {"on": False}

    def convert(msg, size):
        if broken["on"]:
            raise RuntimeError("injected failure")
        return real(msg, size)

    monkeypatch.setattr(observation_sync, "image_msg_to_rgb", convert)
    rig = Rig(rclpy_context)
    try:
        goal = rig.start_moving()
        broken["on"] = True
        outcome = goal.outcome()
        assert outcome.termination_reason == "fault", outcome
        message = rig.node.last_result.message
        assert "internal error in the synchronizer callback: RuntimeError: injected" in message, message
        start = len(rig.node.command_log)
        rig.wait_for(lambda: len(rig.node.command_log) > start + 10, 5.0, "ticks after the failure")
        assert all(c.held for c in list(rig.node.command_log)[start:])
        assert rig.spinning(), "the executor's spin ended"
        broken["on"] = False
        rig.instruct()
    finally:
        rig.close()
