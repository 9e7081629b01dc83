"""vla_node as its own process (main() with --autostart and a params file): commands over DDS, and
SIGINT/SIGTERM end the goal with "shutdown", hold the arm and exit 0. Plus the action server's test,
which needs the generated interfaces."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
from node_harness import FakeRobot, positions_of  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from std_msgs.msg import String  # noqa: E402

pytestmark = pytest.mark.ros

PARAMS = """/**:
  ros__parameters:
    camera_names: [scene, wrist]
    cameras:
      scene: {topic: /test/scene/image_raw, transport: raw}
      wrist: {topic: /test/wrist/image_raw, transport: raw}
    joint_states_topic: /test/joint_states
    output_topic: /test/arm/commands
    control_rate_hz: 50.0
    status_rate_hz: 10.0
    goal_timeout_s: 0.0
"""
# The node process with the deterministic test policy instead of a checkpoint.
LAUNCHER = (
    "import sys; from vla_ros.core.fixtures import ScriptedPolicy; from vla_ros.ros.vla_node import main; "
    "sys.exit(main(sys.argv, policy=ScriptedPolicy()))"
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_node_process_runs_a_goal_and_holds_on_signal(rclpy_context, tmp_path, sig):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(PARAMS)
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCHER,
            "--autostart",
            "--ros-args",
            "--params-file",
            str(params_file),
            "-r",
            "__node:=proc_vla",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    robot = FakeRobot(rclpy_context, node_name="proc_vla")
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(robot)
    stop = threading.Event()
    spinner = threading.Thread(
        target=lambda: [executor.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)]
    )
    spinner.start()
    try:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not robot.last_status().get("goal_active"):
            assert process.poll() is None, process.communicate()[0]
            robot.instruction_pub.publish(String(data="wave"))
            time.sleep(0.3)
        assert robot.last_status().get("goal_active"), "the process never ran a goal"
        moving = robot.command_count()
        time.sleep(0.5)
        assert robot.command_count() > moving + 5
        process.send_signal(sig)
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0, output
        assert "shutting down: holding the arm" in output
        assert "ended: shutdown" in output, output
        time.sleep(0.3)  # let the last messages arrive
        last = np.array(positions_of(robot.commands[-1]))
        before = np.array(positions_of(robot.commands[-2]))
        np.testing.assert_allclose(last, before)  # the final message repeats the last command: a hold
    finally:
        stop.set()
        spinner.join(5)
        if process.poll() is None:
            process.kill()
            process.communicate()
        executor.shutdown()
        robot.destroy_node()
