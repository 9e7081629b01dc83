"""Launch the vla_node.

    ros2 launch vla_ros vla.launch.py                                   # sim robot config, autostart
    ros2 launch vla_ros vla.launch.py params_file:=/path/robot.yaml checkpoint:=/path/ckpt
    ros2 launch vla_ros vla.launch.py use_lifecycle:=true autostart:=false   # a lifecycle manager drives it

Arguments:
  params_file    YAML with the node's parameters (default: config/sim_robot.yaml of this package)
  checkpoint     model checkpoint directory; overrides checkpoint_dir of params_file when not empty
  namespace      namespace of the node (its topics ~/instruction, ~/status, ... move with it)
  node_name      node name (default vla_node)
  use_lifecycle  true: a managed node (launch_ros LifecycleNode), false: plain start-up (--autostart)
  autostart      with use_lifecycle: configure and activate at start-up (default true)
  log_level      rclcpp/rclpy log level (default info)
"""

from __future__ import annotations

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node


def _default_params_file() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return os.path.join(get_package_share_directory("vla_ros"), "config", "sim_robot.yaml")
    except Exception:  # not installed as an ament package: the source tree next to this file
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config", "sim_robot.yaml")


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on")


def _node(context, *_args, **_kwargs):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {}
    if value("checkpoint"):
        overrides["checkpoint_dir"] = value("checkpoint")
    use_lifecycle = _truthy(value("use_lifecycle"))
    overrides["autostart"] = _truthy(value("autostart")) if use_lifecycle else True
    common = dict(
        package="vla_ros",
        executable="vla_node",
        name=value("node_name"),
        namespace=value("namespace"),
        parameters=[value("params_file"), overrides],
        arguments=["--ros-args", "--log-level", value("log_level")],
        output="screen",
        emulate_tty=True,
        sigterm_timeout="10",  # the node holds the arm and stops its threads on SIGINT/SIGTERM
    )
    return [LifecycleNode(**common) if use_lifecycle else Node(**common)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=_default_params_file(),
                description="YAML file with the vla_node parameters",
            ),
            DeclareLaunchArgument(
                "checkpoint",
                default_value="",
                description="model checkpoint directory (overrides checkpoint_dir when set)",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
            DeclareLaunchArgument("node_name", default_value="vla_node", description="name of the node"),
            DeclareLaunchArgument(
                "use_lifecycle",
                default_value="true",
                description="true: managed lifecycle node; false: plain node that starts at once",
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                description="with use_lifecycle: configure and activate at start-up",
            ),
            DeclareLaunchArgument("log_level", default_value="info", description="log level"),
            OpaqueFunction(function=_node),
        ]
    )
