"""bag_record: live rclpy topics -> MCAP bag that rosbags reads back with the same content."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from vla_ros.tools.bag_record import BagRecorder, BagRecordError, discover_types  # noqa: E402


@pytest.fixture
def node():
    rclpy.init()
    n = rclpy.create_node("bag_record_test")
    yield n
    n.destroy_node()
    rclpy.shutdown()


def _spin_until(executor, predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not predicate():
        executor.spin_once(timeout_sec=0.02)


def test_recorded_bag_holds_every_message_in_order(tmp_path, node):
    pub_js = node.create_publisher(JointState, "/rec_test/joint_states", 10)
    pub_cmd = node.create_publisher(Float64MultiArray, "/rec_test/commands", 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    types = discover_types(node, ["/rec_test/joint_states", "/rec_test/commands"])
    assert types == {"/rec_test/joint_states": "sensor_msgs/msg/JointState",
                     "/rec_test/commands": "std_msgs/msg/Float64MultiArray"}
    recorder = BagRecorder(node, tmp_path / "bag", types)
    _spin_until(executor, lambda: pub_js.get_subscription_count() and pub_cmd.get_subscription_count(), 5)
    rng = np.random.default_rng(0)
    sent_js, sent_cmd = [], []
    for i in range(20):
        js = JointState(name=["a", "b"], position=rng.normal(size=2).tolist())
        js.header.stamp.sec = i
        cmd = Float64MultiArray(data=rng.normal(size=6).tolist())
        pub_js.publish(js)
        pub_cmd.publish(cmd)
        sent_js.append((i, list(js.position)))
        sent_cmd.append(list(cmd.data))
        executor.spin_once(timeout_sec=0.01)
    _spin_until(executor, lambda: min(recorder.counts.values()) >= 20, 5)
    counts = recorder.close()
    executor.shutdown()
    assert counts == {"/rec_test/joint_states": 20, "/rec_test/commands": 20}

    got_js, got_cmd = [], []
    with AnyReader([tmp_path / "bag"]) as reader:
        assert reader.connections[0].ext.serialization_format == "cdr"
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == "/rec_test/joint_states":
                got_js.append((msg.header.stamp.sec, list(msg.position)))
            else:
                got_cmd.append(list(msg.data))
    assert got_js == sent_js
    assert got_cmd == sent_cmd
    assert (tmp_path / "bag" / "bag.mcap").exists()


def test_recording_refuses_existing_directory_and_unknown_topics(tmp_path, node):
    (tmp_path / "bag").mkdir()
    with pytest.raises(BagRecordError, match="exists"):
        BagRecorder(node, tmp_path / "bag", {"/x": "std_msgs/msg/String"})
    with pytest.raises(BagRecordError, match=r"\['/never_published'\] have no publisher"):
        discover_types(node, ["/never_published"], timeout_s=0.5)
