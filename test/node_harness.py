"""A fake robot for the vla_node tests: camera and joint-state publishers, command recorders.

Everything goes over real DDS. The node under test runs in-process with an injected
ScriptedPolicy (vla_ros.core.scripted_policy) so the tests need no checkpoint. Goals go through
vla_ros.tools.goal_client.InstructionClient: the ExecuteInstruction action where the generated types
exist (Jazzy's colcon install), else the ~/instruction topic (Humble); ~/status is read as the
type the node publishes (VlaStatus, or its JSON fallback).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_ros.core.scripted_policy import ARM_JOINTS, ScriptedPolicy
from vla_ros.ros.diagnostics import subscribe_status
from vla_ros.ros.executors import low_latency_executor
from vla_ros.ros.vla_node import VlaNode
from vla_ros.tools.goal_client import GoalOutcome, InstructionClient

CAMERAS = ("scene", "wrist")
# Not "vla_node": the launch tests look that name up in the same DDS domain, and a node destroyed in
# this process can linger in discovery for a while. For the same reason each Rig numbers its node
# (rig_vla_0, rig_vla_1, ...): an action client once found its server "not available" for 10 s
# beside the lingering action endpoints of earlier Rigs of the same name.
NODE_NAME = "rig_vla"
_RIG_NUMBERS = itertools.count()


def node_parameters(**overrides) -> list[Parameter]:
    """Parameters for a test node: cameras on /test/<name>/image_raw, fast status, short timeouts."""
    values = {
        "camera_names": list(CAMERAS),
        "cameras.scene.topic": "/test/scene/image_raw",
        "cameras.scene.transport": "raw",
        "cameras.wrist.topic": "/test/wrist/image_raw",
        "cameras.wrist.transport": "raw",
        "joint_states_topic": "/test/joint_states",
        "output_topic": "/test/arm/commands",
        "control_rate_hz": 50.0,
        "status_rate_hz": 10.0,
        "goal_timeout_s": 0.0,
        "max_observation_age_s": 0.5,
        "stale_grace_s": 0.3,
    }
    values.update(overrides)
    return [Parameter(name, value=value) for name, value in values.items()]


class FakeRobot(Node):
    """Publishes camera frames + joint states at ``rate_hz``; records commands and ~/status."""

    def __init__(
        self,
        context,
        *,
        rate_hz: float = 30.0,
        output_type=Float64MultiArray,
        output_topic: str = "/test/arm/commands",
        image_size=(48, 64),
        compressed=(),
        joint_names=(*ARM_JOINTS, "gripper"),
        node_name: str = "rig_vla",
    ) -> None:
        super().__init__("fake_robot", context=context)
        self.joint_names = list(joint_names)
        self.image_size = image_size
        self.silent: set[str] = set()  # cameras (or "joint_states") that stop publishing
        self.frame_override: dict[str, Callable[[Image], Image]] = {}
        self.joint_override: Callable[[JointState], JointState] | None = None
        self.camera_pubs = {
            name: self.create_publisher(
                CompressedImage if name in compressed else Image,
                f"/test/{name}/image_raw",
                qos_profile_sensor_data,
            )
            for name in CAMERAS
        }
        self.compressed = set(compressed)
        self.joint_pub = self.create_publisher(JointState, "/test/joint_states", 10)
        self.instruction_pub = self.create_publisher(String, f"/{node_name}/instruction", 10)
        self.success_pub = self.create_publisher(Bool, "/test/success", 10)
        self.stop_client = self.create_client(Trigger, f"/{node_name}/stop")
        self.estop_client = self.create_client(SetBool, f"/{node_name}/estop")
        self.commands: list = []
        self.statuses: list[dict] = []
        self._lock = threading.Lock()
        self.create_subscription(output_type, output_topic, self._on_command, 100)
        subscribe_status(self, f"/{node_name}/status", self._on_status)
        self.frames_sent = 0
        self.create_timer(1.0 / rate_hz, self._publish)

    def _frame(self, name: str, stamp):
        h, w = self.image_size
        pixels = np.full((h, w, 3), (self.frames_sent * 7) % 256, np.uint8)
        if name in self.compressed:
            import cv2

            ok, data = cv2.imencode(".jpg", pixels)
            msg = CompressedImage(format="jpeg", data=data.tobytes())
        else:
            msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=pixels.tobytes())
        msg.header.stamp = stamp
        msg.header.frame_id = name
        return self.frame_override.get(name, lambda m: m)(msg)

    def _publish(self) -> None:
        stamp = self.get_clock().now().to_msg()
        for name, pub in self.camera_pubs.items():
            if name not in self.silent:
                pub.publish(self._frame(name, stamp))
        if "joint_states" not in self.silent:
            msg = JointState(name=self.joint_names, position=[0.0] * len(self.joint_names))
            msg.header.stamp = stamp
            self.joint_pub.publish(self.joint_override(msg) if self.joint_override else msg)
        self.frames_sent += 1

    def _on_command(self, msg) -> None:
        with self._lock:
            self.commands.append(msg)

    def _on_status(self, fields: dict) -> None:
        with self._lock:
            self.statuses.append(fields)

    def command_count(self) -> int:
        with self._lock:
            return len(self.commands)

    def last_command(self):
        with self._lock:
            return self.commands[-1] if self.commands else None

    def last_status(self) -> dict:
        with self._lock:
            return dict(self.statuses[-1]) if self.statuses else {}

    def call(self, client, request, timeout_s: float = 5.0):
        assert client.wait_for_service(timeout_sec=timeout_s), f"service {client.srv_name} not available"
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert future.done(), f"service {client.srv_name} did not answer"
        return future.result()


def positions_of(msg) -> list[float]:
    if isinstance(msg, Float64MultiArray):
        return list(msg.data)
    if isinstance(msg, JointTrajectory):
        return list(msg.points[0].positions)
    return list(msg.position)


class GoalRun:
    """One goal sent by InstructionClient.run in a thread of its own (tests go on meanwhile)."""

    def __init__(self, client: InstructionClient, text: str, **kwargs) -> None:
        self.text = text
        self.started = threading.Event()
        self.cancel = threading.Event()
        self._outcome: GoalOutcome | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(client, kwargs), daemon=True)
        self._thread.start()

    def _run(self, client: InstructionClient, kwargs: dict) -> None:
        try:
            self._outcome = client.run(self.text, on_started=self.started.set, cancel=self.cancel, **kwargs)
        except BaseException as exc:  # handed to the test thread by outcome()
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def outcome(self, timeout_s: float = 15.0) -> GoalOutcome:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"goal {self.text!r} has no result after {timeout_s} s"
        if self._error is not None:
            raise self._error
        return self._outcome


class Rig:
    """A VlaNode + FakeRobot spun by one executor in a background thread.

    ``interface`` ("auto", "action" or "topic") picks how goals are sent (see the module doc).
    ``executor``: "multi-threaded" (3 threads, as embedders run the node) or "node" (the vla_node
    executable's, ros.executors.low_latency_executor: one thread).
    """

    def __init__(self, context, policy=None, robot_kwargs=None, interface: str = "auto",
                 executor: str = "multi-threaded", **params) -> None:
        self.policy = policy or ScriptedPolicy()
        self.name = f"{NODE_NAME}_{next(_RIG_NUMBERS)}"
        self.node = VlaNode(
            self.name, policy=self.policy, context=context, parameter_overrides=node_parameters(**params)
        )
        self.robot = FakeRobot(context, node_name=self.name, **(robot_kwargs or {}))
        self.client = InstructionClient(self.robot, f"/{self.name}", interface)
        if executor == "node":
            self.executor, _ = low_latency_executor(context)
        else:
            self.executor = MultiThreadedExecutor(num_threads=3, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.robot)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.executor.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def spinning(self) -> bool:
        """False once the executor's thread has ended (a callback raised into it, or close())."""
        return self._thread.is_alive()

    def start(self) -> None:
        assert self.node.autostart(), self.node.last_error

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition"):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.01)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def send(self, text: str, **kwargs) -> GoalRun:
        """Send a goal and return at once; ``GoalRun.outcome()`` waits for its result."""
        return GoalRun(self.client, text, **kwargs)

    def start_moving(self, moving_ticks: int = 10) -> GoalRun:
        """Activate, wait for inputs, send a goal and wait until it has moved the arm this many ticks."""
        self.start()
        wait_ready(self)
        goal = self.instruct()
        self.wait_for(lambda: sum(not c.held for c in list(self.node.command_log)) > moving_ticks, 5.0,
                      "moving commands")
        return goal

    def instruct(self, text: str = "wave the arm", **kwargs) -> GoalRun:
        """Send a goal until the runtime runs it (the first may find no fresh observation yet)."""

        def active():
            rt = self.node.runtime
            return rt is not None and rt.feedback().goal_id >= 0

        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            goal = self.send(text, **kwargs)
            while not goal.done() and not active():
                time.sleep(0.01)
            if active():
                return goal
            outcome = goal.outcome()
            assert outcome.termination_reason == "rejected", outcome
            time.sleep(0.2)
        raise AssertionError(f"goal never started: last result {self.node.last_result}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        try:
            self.node.hold_and_shutdown()
        finally:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
            self.client.destroy()
            self.robot.destroy_node()


def wait_ready(rig: Rig, timeout_s: float = 10.0) -> None:
    """Until the node has synced observations and published commands."""
    rig.wait_for(
        lambda: (
            rig.node.inputs is not None and rig.node.inputs.observations > 2 and rig.robot.command_count() > 2
        ),
        timeout_s,
        "observations and commands",
    )


__all__ = ["CAMERAS", "FakeRobot", "GoalRun", "Rig", "node_parameters", "positions_of", "rclpy", "wait_ready"]
