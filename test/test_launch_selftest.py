"""launch_testing: launch_ros starts this package's executable the way `ros2 launch` does on a robot.

Node(package='vla_ros', executable='vla_ros_selftest') is resolved through ament_index and
AMENT_PREFIX_PATH to PREFIX/lib/vla_ros/vla_ros_selftest. Here PREFIX is build/ament_prefix, the
development install layout scripts/env.sh builds (scripts/ament_layout.py); after a colcon build it
is install/vla_ros. The test checks that the process really came from that prefix, that its
messages arrive over DDS, and that it exits cleanly when launch shuts it down.
"""

from __future__ import annotations

import os
import time
import unittest

import pytest

pytest.importorskip(
    "launch_testing", reason="launch_testing comes with the ROS runtime (make test / . scripts/env.sh)")
import launch  # noqa: E402
import launch_ros.actions  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402

EXECUTABLE = "vla_ros_selftest"
TOPIC = "/vla_ros_selftest/chatter"


@pytest.mark.launch_test
def generate_test_description():
    talker = launch_ros.actions.Node(
        package="vla_ros", executable=EXECUTABLE, name="vla_ros_selftest",
        parameters=[{"period_s": 0.05}], output="screen")
    return launch.LaunchDescription([talker, launch_testing.actions.ReadyToTest()]), {"talker": talker}


class TestSelftestTalker(unittest.TestCase):
    def test_executable_comes_from_the_ament_prefix(self, talker, proc_info):
        from ament_index_python.packages import get_package_prefix

        proc_info.assertWaitForStartup(process=talker, timeout=20)
        prefix = get_package_prefix("vla_ros")
        self.assertIn(prefix, os.environ["AMENT_PREFIX_PATH"].split(os.pathsep))
        command = talker.process_details["cmd"]
        self.assertEqual(command[0], os.path.join(prefix, "lib", "vla_ros", EXECUTABLE))

    def test_messages_arrive_over_dds(self, talker):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import String

        context = Context()
        rclpy.init(context=context)
        node = rclpy.create_node("selftest_launch_listener", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            received: list[str] = []
            node.create_subscription(String, TOPIC, lambda msg: received.append(msg.data), 10)
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline and len(received) < 3:
                executor.spin_once(timeout_sec=0.1)
            self.assertGreaterEqual(len(received), 3, f"messages on {TOPIC}: {received}")
            self.assertTrue(received[0].startswith("vla_ros "), received[0])
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=context)


@launch_testing.post_shutdown_test()
class TestSelftestShutdown(unittest.TestCase):
    def test_exits_cleanly_on_shutdown(self, proc_info, talker):
        # launch stops the node with SIGINT; the node treats it as a normal end.
        launch_testing.asserts.assertExitCodes(proc_info, process=talker)
