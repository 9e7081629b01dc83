"""`ros2 run vla_ros vla_ros_selftest`: the smallest end-to-end check of an installation.

Publishes std_msgs/String on `~/chatter` every `period_s` seconds, `count` times (0 = until
shut down); each message names the package version and whether the generated interfaces
(vla_ros.action / vla_ros.msg) import. It needs nothing but rclpy, so a failing launch points at the
installation (ament index, executables, environment), not at the model or the simulator.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import String

from vla_ros import __version__
from vla_ros.ros.interface_fields import load_interfaces


class SelfTestTalker(Node):
    def __init__(self) -> None:
        super().__init__("vla_ros_selftest")
        self.count = int(self.declare_parameter("count", 0).value)
        period_s = float(self.declare_parameter("period_s", 0.1).value)
        if period_s <= 0:
            raise ValueError(f"parameter period_s must be > 0, got {period_s}")
        action_type, _, why_not = load_interfaces()
        self.interfaces = "yes" if action_type is not None else "no"
        if why_not:
            self.get_logger().info(why_not)
        self.sent = 0
        self.publisher = self.create_publisher(String, "~/chatter", 10)
        self.timer = self.create_timer(period_s, self._publish)

    def _publish(self) -> None:
        if self.count and self.sent >= self.count:
            return
        self.sent += 1
        self.publisher.publish(
            String(data=f"vla_ros {__version__} #{self.sent} interfaces={self.interfaces}")
        )

    def done(self) -> bool:
        return bool(self.count) and self.sent >= self.count


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = SelfTestTalker()
    try:
        while rclpy.ok() and not node.done():
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT from `ros2 launch` or Ctrl-C: a normal end
    except RuntimeError:
        # Humble: a SIGTERM that shuts the context down while spin_once builds its wait set
        # surfaces as RCLError ("context is not valid") instead of ExternalShutdownException.
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
