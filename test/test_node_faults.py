"""vla_node input faults over DDS: a silent camera holds and aborts naming it; malformed frames and
missing joints are reported and skipped while the node keeps ticking."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
from node_harness import Rig, wait_ready  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("silent", ["wrist", "joint_states"])
def test_input_that_stops_publishing_holds_and_aborts_naming_it(rclpy_context, silent):
    rig = Rig(rclpy_context)
    try:
        goal = rig.start_moving()
        rig.robot.silent.add(silent)
        rig.wait_for(
            lambda: rig.robot.last_status().get("last_termination_reason") == "fault",
            10.0,
            "the goal to fault",
        )
        result = rig.node.last_result
        assert str(result.reason) == "fault" and not result.success
        assert silent in result.message, result.message
        outcome = goal.outcome()  # the same reason reaches the goal's sender
        assert outcome.termination_reason == "fault", outcome
        if outcome.interface == "action":  # (the topic front-end carries no message)
            assert silent in outcome.message, outcome
        others = {"scene", "wrist", "joint_states"} - {silent}
        assert not any(f"from {name}" in result.message for name in others), result.message
        # holding: every command after the fault is the same held position
        start = len(rig.node.command_log)
        rig.wait_for(lambda: len(rig.node.command_log) > start + 10, 5.0, "ticks after the fault")
        after = list(rig.node.command_log)[start:]
        assert all(c.held for c in after)
        assert np.all(np.array([c.positions for c in after]) == after[0].positions)
        # diagnostics name it too
        statuses = rig.node._diagnostic_statuses()
        assert silent in statuses[0].message and statuses[0].level == statuses[0].ERROR
    finally:
        rig.close()


def _wrong_step(msg):
    msg.step = msg.width * 3 - 1
    return msg


def _unknown_encoding(msg):
    msg.encoding = "yuv422_yuy2"
    return msg


def _truncated(msg):
    msg.data = bytes(msg.data)[: len(msg.data) // 2]
    return msg


def _zero_height(msg):
    msg.height = 0
    return msg


def _garbage_jpeg(msg):
    msg.data = b"\xff\xd8 not a jpeg at all" * 10
    return msg


def _empty_payload(msg):
    msg.data = b""
    return msg


def _depth_format(msg):
    msg.format = "16UC1; compressedDepth png"
    return msg


RAW, COMPRESSED = {}, {"robot_kwargs": {"compressed": ("scene",)}, "cameras.scene.transport": "compressed"}
SMALL_LIMIT = {"max_image_bytes": 20_000}  # the rig's 48x64 rgb8 frames are 9216 bytes


def _padded_to_30000(msg):
    msg.data = bytes(msg.data) + bytes(30_000 - len(msg.data))
    return msg


@pytest.mark.parametrize(
    "corrupt, setup, words",
    [
        (_wrong_step, RAW, "step 191 is smaller than width 64 x 3 bytes per pixel = 192"),
        (_unknown_encoding, RAW, "unknown encoding 'yuv422_yuy2'"),
        (_truncated, RAW, "data has 4608 bytes, expected step 192 x height 48 = 9216"),
        (_zero_height, RAW, "empty image: height=0, width=64"),
        (_padded_to_30000, {**RAW, **SMALL_LIMIT}, "frame is 30000 bytes, over max_image_bytes=20000"),
        (_garbage_jpeg, COMPRESSED, "could not decode 200 bytes as jpeg"),
        (_empty_payload, COMPRESSED, "empty jpeg payload"),
        (_depth_format, COMPRESSED, "unsupported compressed format '16UC1; compressedDepth png'"),
    ],
    ids=["step", "encoding", "truncated", "zero-height", "oversized", "undecodable", "empty", "depth"],
)
def test_malformed_frames_are_reported_and_skipped(rclpy_context, corrupt, setup, words):
    rig = Rig(rclpy_context, **setup)
    try:
        rig.start()
        wait_ready(rig)
        good = rig.node.inputs.observations
        rig.robot.frame_override["scene"] = corrupt
        rig.wait_for(lambda: rig.node.inputs.skipped["scene"] >= 5, 5.0, "skipped scene frames")
        problem = list(rig.node._problems)[-1]
        assert "camera 'scene'" in problem and words in problem, problem
        statuses = rig.node._diagnostic_statuses()
        assert statuses[0].level == statuses[0].WARN and "scene" in statuses[0].message
        assert any(kv.key == "scene skipped" and int(kv.value) >= 5 for kv in statuses[0].values)
        # still ticking (holding: no observation means no goal can start)
        ticks = len(rig.node.command_log)
        rig.wait_for(lambda: len(rig.node.command_log) > ticks + 5, 5.0, "ticks during bad frames")
        during = rig.node.inputs.observations
        # refused at once (no fresh observation) or accepted on the last good one and then faulted
        outcome = rig.send("go").outcome(10.0)
        assert outcome.termination_reason in ("rejected", "fault"), outcome
        if outcome.termination_reason == "fault" or outcome.interface == "action":
            assert "camera 'scene'" in (outcome.message or rig.node.last_result.message), outcome
        # good frames again: observations flow again
        del rig.robot.frame_override["scene"]
        rig.wait_for(lambda: rig.node.inputs.observations > during + 3, 5.0, "observations after recovery")
        assert during <= good + 2  # (at most what was in flight when the corruption began)
        rig.instruct()
    finally:
        rig.close()


def test_joint_state_missing_a_joint_is_reported_by_name(rclpy_context):
    rig = Rig(
        rclpy_context,
        robot_kwargs=dict(
            joint_names=("gripper", "wrist_flex", "elbow_flex", "shoulder_lift", "shoulder_pan")
        ),
    )
    try:
        rig.start()
        rig.wait_for(lambda: rig.node.inputs.skipped["joint_states"] >= 3, 5.0, "skipped joint states")
        problem = list(rig.node._problems)[-1]
        assert "['wrist_roll']" in problem, problem
        assert rig.node.inputs.observations == 0
    finally:
        rig.close()


def test_joint_states_in_any_order_and_compressed_camera(rclpy_context):
    order = (
        "wrist_roll",
        "gripper",
        "extra_joint",
        "shoulder_pan",
        "elbow_flex",
        "wrist_flex",
        "shoulder_lift",
    )
    rig = Rig(
        rclpy_context,
        robot_kwargs=dict(joint_names=order, compressed=("wrist",)),
        **{"cameras.wrist.transport": "compressed"},
    )
    values = {
        "wrist_roll": 0.5,
        "gripper": 0.25,
        "extra_joint": 9.0,
        "shoulder_pan": 0.1,
        "elbow_flex": 0.3,
        "wrist_flex": 0.4,
        "shoulder_lift": 0.2,
    }
    states = []
    original = rig.node._on_joint_state
    rig.node._on_joint_state = lambda state, stamp: (states.append(state), original(state, stamp))
    from sensor_msgs.msg import JointState

    def publish_named():
        msg = JointState(name=list(order), position=[values[n] for n in order])
        msg.header.stamp = rig.robot.get_clock().now().to_msg()
        rig.robot.joint_pub.publish(msg)

    rig.robot.silent.add("joint_states")
    rig.robot.create_timer(1 / 30, publish_named)
    try:
        rig.start()
        wait_ready(rig)
        np.testing.assert_allclose(states[-1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.25], rtol=1e-6)
        rig.instruct()  # the compressed wrist camera feeds observations too
    finally:
        rig.close()
