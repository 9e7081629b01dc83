"""Real rclpy over real DDS: messages cross between separate DDS participants and processes.

Runs against whichever runtime scripts/env.sh selected (`make test` = Jazzy,
`make test ROS_DISTRO=humble` = Humble).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.ros


def _spin_until(executor, condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return condition()


def test_runtime_is_the_selected_distro():
    import rclpy  # noqa: F401 (the import itself is under test)
    from ament_index_python.packages import get_package_share_directory

    distro = os.environ.get("ROS_DISTRO")
    assert distro, "ROS_DISTRO unset: tests must run in the environment of scripts/env.sh"
    if "isaacsim.ros2.core" in os.environ.get("VLA_ROS_RUNTIME", ""):
        assert f"/{distro}/" in rclpy.__file__, f"rclpy {rclpy.__file__} is not the {distro} runtime"
    # std_msgs resolves through AMENT_PREFIX_PATH, like every package the nodes use.
    assert os.path.isdir(get_package_share_directory("std_msgs"))


def test_joint_state_crosses_between_two_participants(rclpy_context):
    """Two nodes in separate contexts (two DDS participants) exchange a JointState intact."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    second_context = Context()
    rclpy.init(context=second_context)
    talker = rclpy.create_node("dds_talker", context=rclpy_context)
    listener = rclpy.create_node("dds_listener", context=second_context)
    executors = [SingleThreadedExecutor(context=c) for c in (rclpy_context, second_context)]
    try:
        received: list[JointState] = []
        listener.create_subscription(JointState, "dds_test/joint_states", received.append, 10)
        publisher = talker.create_publisher(JointState, "dds_test/joint_states", 10)
        executors[0].add_node(talker)
        executors[1].add_node(listener)
        # Discovery takes a moment: the publisher must see the subscription before data flows.
        assert _spin_until(executors[1], lambda: publisher.get_subscription_count() > 0, 10.0), \
            "the talker never discovered the listener over DDS"

        sent = JointState(name=["shoulder_pan", "gripper"], position=[0.25, 1.0])
        sent.header.stamp.sec = 42

        def publish_and_check():
            publisher.publish(sent)
            return bool(received)

        assert _spin_until(executors[1], publish_and_check, 10.0), "no JointState arrived over DDS"
        got = received[0]
        assert list(got.name) == ["shoulder_pan", "gripper"]
        assert list(got.position) == pytest.approx([0.25, 1.0])
        assert got.header.stamp.sec == 42
    finally:
        for executor in executors:
            executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
        rclpy.shutdown(context=second_context)


def test_messages_cross_between_processes(rclpy_context):
    """A talker in another process (this package's selftest executable) reaches us over DDS."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    listener = rclpy.create_node("selftest_listener", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(listener)
    received: list[str] = []
    listener.create_subscription(String, "/vla_ros_selftest/chatter", lambda m: received.append(m.data), 10)
    talker = subprocess.Popen(
        [sys.executable, "-m", "vla_ros.tools.selftest", "--ros-args", "-p", "period_s:=0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _spin_until(executor, lambda: len(received) >= 3, 20.0), \
            f"received {received} from the talker process"
        assert received[0].startswith("vla_ros ")
        numbers = [int(m.split("#")[1].split()[0]) for m in received]
        assert numbers == sorted(numbers), "messages arrived out of order on a reliable topic"
    finally:
        talker.terminate()
        output = talker.communicate(timeout=10)[0]
        executor.shutdown()
        listener.destroy_node()
    assert talker.returncode in (0, -15), f"talker exited with {talker.returncode}:\n{output}"
