"""`vla_ros instruct` as a user runs it: a separate process sending a goal to a running vla_node."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")
from node_harness import Rig, wait_ready  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

pytestmark = pytest.mark.ros


def _instruct(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vla_ros.cli", "instruct", *args], capture_output=True,
                          text=True, timeout=timeout_s)


def test_instruct_prints_feedback_and_the_result_and_exits_by_it(rclpy_context):
    # The node's default timeout ends the first goal (the topic front-end takes no --timeout).
    # Generous freshness limits: the CLI process starting up competes with the rig for 2 cores.
    rig = Rig(rclpy_context, success_topic="/test/success", feedback_rate_hz=10.0, goal_timeout_s=1.0,
              max_observation_age_s=2.0, stale_grace_s=1.0)
    try:
        rig.start()
        wait_ready(rig)
        run = _instruct("wave the arm", "--node", f"/{rig.name}", "--json")
        assert run.returncode == 1, run.stdout + run.stderr  # ended "timeout": not completed
        lines = run.stdout.splitlines()
        assert f"sending 'wave the arm' to /{rig.name} over the {rig.client.interface}" in lines[0]
        assert sum(line.strip().startswith("step") for line in lines) >= 3, run.stdout
        assert any(line.startswith("result: timeout after") for line in lines), run.stdout
        assert '"termination_reason": "timeout"' in lines[-1]
        assert rig.node.last_result is not None and str(rig.node.last_result.reason) == "timeout"

        # Success only once the goal has run a while: over the topic the CLI sees its goal start in
        # ~/status, and a goal completed within one status period (by a success sent before it
        # started) would never be seen running (seen on Humble, where the topic is the interface).
        def complete_when_running():
            status = rig.node.status()
            if status["goal_active"] and status["elapsed_s"] > 0.3:  # the goal times out at 1 s
                rig.robot.success_pub.publish(Bool(data=True))

        completer = rig.robot.create_timer(0.1, complete_when_running)
        run = _instruct("wave again", "--node", f"/{rig.name}")
        rig.robot.destroy_timer(completer)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "result: completed" in run.stdout
    finally:
        rig.close()


def test_instruct_without_a_node_says_so_and_exits_2():
    run = _instruct("wave", "--node", "/nobody_here", "--wait", "1.5")
    assert run.returncode == 2
    assert "no /nobody_here within 1.5 s" in run.stderr


@pytest.mark.parametrize("timeout", ["-1", "nan", "inf"])
def test_instruct_refuses_negative_or_non_finite_limits(timeout):
    run = _instruct("wave", "--timeout", timeout)
    assert run.returncode == 2 and "must be finite and >= 0" in run.stderr
