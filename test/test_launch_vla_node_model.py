"""launch_testing: vla.launch.py with use_lifecycle:=false and checkpoint:=<a tiny random checkpoint>:
the node process loads the real model through vla_ros.models.load_policy, runs an instruction from
~/instruction on synthetic cameras, publishes commands, and exits cleanly when launch stops it. The
model runs in the node's policy worker process (the default): killed mid-goal, the goal faults and
the next goal runs on a restarted worker."""

from __future__ import annotations

import os
import tempfile
import time
import unittest

import pytest

pytest.importorskip("launch_testing", reason="launch_testing comes with the ROS runtime (. scripts/env.sh)")
pytest.importorskip("torch", reason="the model needs torch")
import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

NODE = "/model_vla"
PARAMS = """/**:
  ros__parameters:
    camera_names: [scene, wrist]
    cameras:
      scene: {topic: /test/scene/image_raw, transport: raw}
      wrist: {topic: /test/wrist/image_raw, transport: raw}
    joint_states_topic: /test/joint_states
    output_topic: /test/arm/commands
    status_rate_hz: 10.0
    goal_timeout_s: 2.0
"""


def _tiny_checkpoint(directory: str) -> str:
    import torch

    from vla_ros.core.scripted_policy import SO100_NAMES
    from vla_ros.models.checkpoint import RobotMeta, new_checkpoint, save_checkpoint
    from vla_ros.models.normalization import Normalizer
    from vla_ros.models.vla import make_config

    torch.manual_seed(0)
    names = list(SO100_NAMES)
    ckpt = new_checkpoint(
        make_config("tiny", cameras=["scene", "wrist"]),
        Normalizer.identity(len(names), len(names)),
        RobotMeta(state_names=names, action_names=names, cameras=["scene", "wrist"], action_period=0.1),
    )
    path = os.path.join(directory, "tiny")
    save_checkpoint(path, ckpt)
    return path


@pytest.mark.launch_test
def generate_test_description():
    from ament_index_python.packages import get_package_share_directory

    tmp = tempfile.mkdtemp(prefix="vla_launch_")
    params_file = os.path.join(tmp, "params.yaml")
    with open(params_file, "w") as f:
        f.write(PARAMS)
    launch_file = os.path.join(get_package_share_directory("vla_ros"), "launch", "vla.launch.py")
    include = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(launch_file),
        launch_arguments={
            "use_lifecycle": "false",
            "params_file": params_file,
            "node_name": NODE[1:],
            "checkpoint": _tiny_checkpoint(tmp),
        }.items(),
    )
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()]), {}


class TestVlaNodeWithModel(unittest.TestCase):
    def test_instruction_runs_on_the_real_model(self):
        import numpy as np
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray, String

        from vla_ros.ros.diagnostics import subscribe_status

        context = Context()
        rclpy.init(context=context)
        node = rclpy.create_node("model_probe", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        cams = {
            n: node.create_publisher(Image, f"/test/{n}/image_raw", qos_profile_sensor_data)
            for n in ("scene", "wrist")
        }
        joints = node.create_publisher(JointState, "/test/joint_states", 10)
        instruction = node.create_publisher(String, f"{NODE}/instruction", 10)
        commands, statuses = [], []
        node.create_subscription(
            Float64MultiArray, "/test/arm/commands", lambda m: commands.append(list(m.data)), 100
        )
        subscribe_status(node, f"{NODE}/status", statuses.append)  # VlaStatus, or its JSON fallback
        pixels = np.full((96, 128, 3), 120, np.uint8).tobytes()

        def publish():
            stamp = node.get_clock().now().to_msg()
            for pub in cams.values():
                msg = Image(height=96, width=128, encoding="rgb8", step=128 * 3, data=pixels)
                msg.header.stamp = stamp
                pub.publish(msg)
            js = JointState(
                name=["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"],
                position=[0.0] * 6,
            )
            js.header.stamp = stamp
            joints.publish(js)

        node.create_timer(1 / 30, publish)
        try:
            deadline = time.monotonic() + 120.0  # the process imports torch and loads the model
            ran, next_try = False, 0.0
            while time.monotonic() < deadline and not ran:
                executor.spin_once(timeout_sec=0.05)
                ran = any(s.get("goal_active") for s in statuses)
                if not ran and time.monotonic() > next_try and statuses:
                    # once the node reports status it is active; repeat only if no goal shows up
                    instruction.publish(String(data="pick up the red cube"))
                    next_try = time.monotonic() + 1.5
            self.assertTrue(ran, f"no goal ran; last status {statuses[-1:]}")
            deadline = time.monotonic() + 20.0
            # an instruction sent before the first observation is refused; "rejected" is not the end we await
            while time.monotonic() < deadline and statuses[-1]["last_termination_reason"] in ("", "rejected"):
                executor.spin_once(timeout_sec=0.05)
            self.assertEqual(statuses[-1]["last_termination_reason"], "timeout")
            self.assertGreater(statuses[-1]["inference_latency_p50_s"], 0.0)
            self.assertGreater(len(commands), 20)
            self.assertTrue(all(len(c) == 6 and np.all(np.isfinite(c)) for c in commands))

            # The model runs in the node's worker process (policy_process: child, the default): torch
            # is mapped there, not in the node. Killed mid-goal, the goal faults, the arm holds with
            # finite commands, and the next goal runs on a restarted worker.
            node_pid, worker_pid = _node_and_worker(NODE[1:])
            self.assertNotIn("libtorch", _maps(node_pid))
            self.assertIn("libtorch", _maps(worker_pid))

            def run_goal_until(reason, during=None):
                del statuses[:]
                end, next_try = time.monotonic() + 30.0, 0.0
                while time.monotonic() < end and not any(s.get("goal_active") for s in statuses):
                    if time.monotonic() > next_try:  # refused ("model not ready") while the worker restarts
                        instruction.publish(String(data="pick up the red cube"))
                        next_try = time.monotonic() + 1.0
                    executor.spin_once(timeout_sec=0.05)
                if during is not None:
                    during()
                # a status published as the goal ends can still carry the reason before it (a
                # "rejected" instruction sent while the worker restarted): the goal's own comes next
                while time.monotonic() < end and (not statuses or statuses[-1]["goal_active"]
                                                  or statuses[-1]["last_termination_reason"] == "rejected"):
                    executor.spin_once(timeout_sec=0.05)
                self.assertEqual(statuses[-1]["last_termination_reason"], reason, statuses[-1:])

            start = len(commands)
            run_goal_until("fault", during=lambda: os.kill(worker_pid, 9))
            self.assertTrue(all(np.all(np.isfinite(c)) for c in commands[start:]))
            run_goal_until("timeout")
            _, new_worker = _node_and_worker(NODE[1:])
            self.assertNotEqual(new_worker, worker_pid)
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=context)


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def _node_and_worker(node_name: str) -> tuple[int, int]:
    """(vla_node's pid, its policy worker's pid), found in /proc by command line and parent."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if "vla_ros.core.policy_process" not in _cmdline(int(entry)):
                continue
            with open(f"/proc/{entry}/status") as f:
                parent = int(next(line for line in f if line.startswith("PPid:")).split()[1])
            if f"__node:={node_name}" in _cmdline(parent):
                return parent, int(entry)
        except (FileNotFoundError, ProcessLookupError):
            continue
    raise AssertionError(f"no policy worker process whose parent is the node {node_name}")


@launch_testing.post_shutdown_test()
class TestVlaNodeWithModelShutdown(unittest.TestCase):
    def test_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
