"""sim_robot_node: the simulated arm obeys ros2_control-style commands over DDS, resets by seed,
refuses bad commands (holding), and CommandedTarget follows trajectories like a JTC."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from vla_ros.tools.sim_robot_node import CommandedTarget, CommandError

ARM = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")


# ------------------------------------------------------------------------ pure target logic
def test_array_commands_set_arm_and_optionally_gripper():
    t = CommandedTarget(ARM, "gripper", np.zeros(6))
    t.set_array([0.1, 0.2, 0.3, 0.4, 0.5], 0.0)
    assert t.at(0.0).tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.0]
    t.set_array([1, 1, 1, 1, 1, 0.7], 0.0)
    assert t.at(1.0)[-1] == pytest.approx(0.7)
    t.set_gripper([0.2], 1.0)
    assert t.at(1.0).tolist() == [1, 1, 1, 1, 1, 0.2]


@pytest.mark.parametrize("bad, match", [([0.1] * 4, "4 values"), ([0.1, np.nan, 0, 0, 0], "non-finite"),
                                         ([0.0] * 7, "7 values")])
def test_bad_array_commands_are_refused_and_the_target_holds(bad, match):
    t = CommandedTarget(ARM, "gripper", np.full(6, 0.3))
    with pytest.raises(CommandError, match=match):
        t.set_array(bad, 0.0)
    assert t.at(0.0).tolist() == [0.3] * 6


def test_trajectory_interpolates_from_current_target_and_keeps_unnamed_joints():
    t = CommandedTarget(ARM, "gripper", np.zeros(6))
    t.set_trajectory(["elbow_flex", "shoulder_pan"], [1.0, 2.0], [[1.0, -1.0], [2.0, -2.0]], t_start=10.0)
    assert t.at(10.5)[[0, 2]] == pytest.approx([-0.5, 0.5])
    assert t.at(11.5)[[0, 2]] == pytest.approx([-1.5, 1.5])
    assert t.at(20.0).tolist() == [-2.0, 0.0, 2.0, 0.0, 0.0, 0.0]
    with pytest.raises(CommandError, match="unknown joints"):
        t.set_trajectory(["elbow"], [1.0], [[0.0]], 20.0)
    with pytest.raises(CommandError, match="increasing"):
        t.set_trajectory(["elbow_flex"], [1.0, 1.0], [[0.0], [1.0]], 20.0)
    t.set_trajectory([], [], [], 20.5)  # empty trajectory: stop where you are
    assert t.at(30.0).tolist() == [-2.0, 0.0, 2.0, 0.0, 0.0, 0.0]


# ------------------------------------------------------------------------ the node over DDS


class _Client:
    def __init__(self):
        import rclpy
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Float64MultiArray, String
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        self.node = rclpy.create_node("sim_robot_test_client")
        self.last: dict = {}
        self.counts: dict = {}
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for topic, msg_type, qos in (("/scene/image_raw", Image, 10), ("/wrist/image_raw", Image, 10),
                                     ("/joint_states", JointState, 10), ("/sim_robot/task_success", Bool, 10),
                                     ("/sim_robot/instruction", String, latched)):
            self.node.create_subscription(msg_type, topic, lambda m, t=topic: self._on(t, m), qos)
        self.arm = self.node.create_publisher(Float64MultiArray, "/arm_controller/commands", 10)
        self.gripper = self.node.create_publisher(Float64MultiArray, "/gripper_controller/commands", 10)
        self.traj = self.node.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", 10)
        self.reset = self.node.create_client(Trigger, "/sim_robot/reset")

    def _on(self, topic, msg):
        self.last[topic] = msg
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def joints(self) -> np.ndarray:
        return np.array(self.last["/joint_states"].position)

    def wait(self, predicate, timeout_s=10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return False

    def call_reset(self):
        from std_srvs.srv import Trigger

        assert self.reset.wait_for_service(10.0)
        # call_async + wait, not call(timeout_sec=...): Humble's Client.call has no timeout.
        future = self.reset.call_async(Trigger.Request())
        assert self.wait(future.done, 30.0), "~/reset did not answer"
        return future.result()


@pytest.fixture(scope="module")
def sim():
    rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from vla_ros.tools.sim_robot_node import SimRobotNode

    rclpy.init()
    node = SimRobotNode(parameter_overrides=[Parameter("seed", value=5)])
    client = _Client()
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    executor.add_node(client.node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    assert client.wait(lambda: {"/scene/image_raw", "/wrist/image_raw", "/joint_states",
                                "/sim_robot/instruction", "/sim_robot/task_success"} <= set(client.last))
    yield node, client
    node.shutdown()
    executor.shutdown()
    client.node.destroy_node()
    node.destroy_node()
    rclpy.shutdown()


@pytest.mark.ros
def test_publishes_cameras_joint_states_and_the_instruction(sim):
    node, client = sim
    img = client.last["/scene/image_raw"]
    assert (img.height, img.width, img.encoding, img.step) == (64, 64, "rgb8", 192)
    assert len(img.data) == 64 * 64 * 3 and np.asarray(img.data).std() > 0  # a rendered scene, not blank
    js = client.last["/joint_states"]
    assert list(js.name) == [*ARM, "gripper"] and np.all(np.isfinite(js.position))
    assert client.last["/sim_robot/instruction"].data == node.episode["instruction"]
    assert client.last["/sim_robot/task_success"].data is False


@pytest.mark.ros
def test_array_then_trajectory_commands_move_the_arm_and_bad_ones_hold(sim):
    from builtin_interfaces.msg import Duration
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    _, client = sim
    goal = np.array([0.3, 0.2, 0.9, 0.6, 0.1])
    client.arm.publish(Float64MultiArray(data=goal.tolist()))
    client.gripper.publish(Float64MultiArray(data=[1.0]))
    assert client.wait(lambda: np.allclose(client.joints()[:5], goal, atol=0.02)), client.joints()
    client.arm.publish(Float64MultiArray(data=[np.nan, 0, 0, 0, 0]))  # refused: the arm stays
    time.sleep(0.5)
    assert np.allclose(client.joints()[:5], goal, atol=0.02)
    traj = JointTrajectory(joint_names=["elbow_flex"],
                           points=[JointTrajectoryPoint(positions=[1.3], time_from_start=Duration(sec=1))])
    client.traj.publish(traj)
    assert client.wait(lambda: abs(client.joints()[2] - 1.3) < 0.02), client.joints()
    assert np.allclose(client.joints()[[0, 1, 3]], goal[[0, 1, 3]], atol=0.02)


@pytest.mark.ros
def test_reset_uses_the_seed_parameter_and_is_reproducible(sim):
    from rclpy.parameter import Parameter

    node, client = sim
    node.set_parameters([Parameter("seed", value=11)])
    first = client.call_reset()
    assert first.success, first.message
    episode = json.loads(first.message)
    assert episode["seed"] == 11 and episode["time_limit_s"] > 0
    assert client.wait(lambda: client.last["/sim_robot/instruction"].data == episode["instruction"])
    time.sleep(0.3)
    home = client.joints()
    node.set_parameters([Parameter("seed", value=11)])
    again = json.loads(client.call_reset().message)
    assert again == episode
    time.sleep(0.3)
    assert np.allclose(client.joints(), home, atol=1e-3)
    assert node.get_parameter("seed").value == 12  # the next reset takes the next seed


@pytest.mark.ros
def test_sim_time_stamps_with_clock_and_compressed_images():
    """stamp_source:=sim publishes /clock and stamps every message on it; JPEG frames decode."""
    rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
    import cv2
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage, JointState

    from vla_ros.tools.sim_robot_node import SimRobotNode

    context = Context()
    rclpy.init(context=context)
    node = SimRobotNode(context=context, namespace="/simtime", parameter_overrides=[
        Parameter("stamp_source", value="sim"), Parameter("publish_compressed", value=True),
        Parameter("publish_raw", value=False), Parameter("joint_states_topic", value="joint_states")])
    listener = rclpy.create_node("simtime_listener", context=context)
    got: dict[str, list] = {"clock": [], "joints": [], "jpeg": []}
    listener.create_subscription(Clock, "/clock", lambda m: got["clock"].append(m.clock), 100)
    listener.create_subscription(JointState, "/simtime/joint_states", lambda m: got["joints"].append(m), 100)
    listener.create_subscription(CompressedImage, "/simtime/scene/image_raw/compressed",
                                 lambda m: got["jpeg"].append(m), 10)
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    executor.add_node(node)
    executor.add_node(listener)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (len(got["joints"]) > 20 and got["jpeg"]):
            time.sleep(0.05)
        node_topics = {name for name, _ in node.get_topic_names_and_types()}
    finally:
        node.shutdown()
        executor.shutdown()
        listener.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=context)
    seconds = lambda t: t.sec + t.nanosec * 1e-9  # noqa: E731
    clock = [seconds(t) for t in got["clock"]]
    stamps = [seconds(m.header.stamp) for m in got["joints"]]
    assert len(stamps) > 20 and clock, got.keys()
    assert clock == sorted(clock) and clock[-1] > clock[0]  # sim time only moves forward
    assert max(stamps) < 100.0  # simulated seconds since start-up, not the wall clock's ~1.7e9
    # Stamps are /clock instants (those after our /clock subscription matched).
    later = [s for s in stamps if s >= clock[0]][:20]
    assert later and all(any(abs(s - c) < 1e-6 for c in clock) for s in later)
    frame = cv2.imdecode(np.frombuffer(bytes(got["jpeg"][-1].data), np.uint8), cv2.IMREAD_COLOR)
    assert frame.shape == (64, 64, 3) and frame.std() > 0
    assert "/simtime/scene/image_raw" not in node_topics  # publish_raw:=false
