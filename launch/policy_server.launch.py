"""Launch a policy_server: the model, served over DDS to a vla_node with policy_process: remote.

    ros2 launch vla_ros policy_server.launch.py checkpoint:=/path/ckpt device:=cuda

Arguments:
  checkpoint   model checkpoint directory ("" = the package's default checkpoint)
  device       torch device: cpu, cuda or cuda:N
  dtype        float32, float16 or bfloat16
  rtc          real-time chunking of a flow-head model: exact, cheap or off ("" = the backend's
               default); vla_node's real_time_chunking must match when it is on
  rtc_max_guidance  real-time chunking's cap on the guidance weight (vla_node's must match)
  node_name    node name (default policy_server; vla_node's policy_server parameter must match)
  namespace    namespace of the node
  log_level    log level
"""

from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    args = [
        ("checkpoint", "", "model checkpoint directory (empty: the default checkpoint)"),
        ("device", "cpu", "torch device"),
        ("dtype", "float32", "inference dtype"),
        ("rtc", "", "real-time chunking of a flow-head model: exact, cheap, off (empty: default)"),
        ("rtc_max_guidance", "5.0", "real-time chunking: cap on the guidance weight"),
        ("node_name", "policy_server", "node name"),
        ("namespace", "", "namespace of the node"),
        ("log_level", "info", "log level"),
    ]
    server = Node(
        package="vla_ros", executable="policy_server", name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"), output="screen", emulate_tty=True,
        # rtc as a string: YAML would read off as false
        parameters=[{"checkpoint_dir": LaunchConfiguration("checkpoint"),
                     "device": LaunchConfiguration("device"), "dtype": LaunchConfiguration("dtype"),
                     "rtc": ParameterValue(LaunchConfiguration("rtc"), value_type=str),
                     "rtc_max_guidance": ParameterValue(LaunchConfiguration("rtc_max_guidance"),
                                                        value_type=float)}],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([DeclareLaunchArgument(n, default_value=d, description=h) for n, d, h in args]
                             + [server])
