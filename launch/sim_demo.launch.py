"""The closed loop in simulation: sim_robot_node (MuJoCo arm, cameras) + vla_node (default checkpoint).

    ros2 launch vla_ros sim_demo.launch.py                      # then send an instruction:
    ros2 topic pub --once /vla_node/instruction std_msgs/msg/String "{data: 'pick up the red cube'}"
    vla_ros demo                                                # all of it, with plot and video

Arguments:
  checkpoint       model checkpoint directory ("" = the package's default checkpoint)
  params_file      vla_node parameters (default: config/sim_robot.yaml of this package)
  seed             first scene seed of the simulated robot (each ~/reset takes the next one)
  task             task family: pick, place or any
  execution        async (infer while executing) or sync (infer when the buffer is used up)
  goal_timeout_s   default goal timeout of vla_node, seconds (the sim's episodes last 10 s)
  status_rate_hz   rate of /vla_node/status
  camera_rate_hz   rate of each simulated camera
  stamp_source     wall or sim (sim also publishes /clock and sets use_sim_time on vla_node)
  log_level        log level of both nodes
  vla_overrides    extra vla_node parameters as YAML text, e.g. "{extra_latency_s: 0.3}"; with
                   "{policy_process: remote}" a policy_server node runs the model (three processes;
                   real_time_chunking and rtc_max_guidance given here go to it as rtc and
                   rtc_max_guidance)
"""

from __future__ import annotations

import os

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _default_params_file() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return os.path.join(get_package_share_directory("vla_ros"), "config", "sim_robot.yaml")
    except Exception:  # not installed as an ament package: the source tree next to this file
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config", "sim_robot.yaml")


def _nodes(context, *_args, **_kwargs):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    sim_time = value("stamp_source") == "sim"
    task = value("task")
    sim = Node(
        package="vla_ros", executable="sim_robot_node", name="sim_robot", output="screen",
        on_exit=Shutdown(reason="sim_robot_node exited"),  # one half of the loop alone is useless
        parameters=[{"seed": int(value("seed")), "task": "" if task == "any" else task,
                     "camera_rate_hz": float(value("camera_rate_hz")),
                     "stamp_source": value("stamp_source")}],
        arguments=["--ros-args", "--log-level", value("log_level")],
    )
    overrides = {"autostart": True, "execution": value("execution"),
                 "goal_timeout_s": float(value("goal_timeout_s")),
                 "status_rate_hz": float(value("status_rate_hz")), "use_sim_time": sim_time}
    if value("checkpoint"):
        overrides["checkpoint_dir"] = value("checkpoint")
    extra = yaml.safe_load(value("vla_overrides") or "{}") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"vla_overrides must be a YAML mapping, got {value('vla_overrides')!r}")
    overrides.update(extra)
    vla = Node(
        package="vla_ros", executable="vla_node", name="vla_node", output="screen",
        on_exit=Shutdown(reason="vla_node exited"),
        parameters=[value("params_file"), overrides],
        arguments=["--ros-args", "--log-level", value("log_level")],
        sigterm_timeout="10",  # the node holds the arm and stops its threads on SIGINT/SIGTERM
    )
    nodes = [sim, vla]
    if overrides.get("policy_process") == "remote":  # the model in a third process, over DDS
        model = ("checkpoint_dir", "device", "dtype", "torch_threads")
        server = {k: overrides[k] for k in model if k in overrides}
        # real-time chunking as vla_node asks for it (it refuses a server that does otherwise)
        rtc = overrides.get("real_time_chunking", "off")
        if rtc not in ("off", False):
            server["rtc"] = str(rtc)
        if "rtc_max_guidance" in overrides:
            server["rtc_max_guidance"] = float(overrides["rtc_max_guidance"])
        nodes.append(Node(
            package="vla_ros", executable="policy_server", name="policy_server", output="screen",
            on_exit=Shutdown(reason="policy_server exited"), parameters=[server],
            arguments=["--ros-args", "--log-level", value("log_level")],
        ))
    return nodes


def generate_launch_description() -> LaunchDescription:
    args = [
        ("checkpoint", "", "model checkpoint directory (empty: the default checkpoint)"),
        ("params_file", _default_params_file(), "YAML file with the vla_node parameters"),
        ("seed", "0", "first scene seed"),
        ("task", "any", "task family: pick, place or any"),
        ("execution", "async", "async or sync inference"),
        ("goal_timeout_s", "10.0", "default goal timeout, seconds"),
        ("status_rate_hz", "10.0", "rate of /vla_node/status"),
        ("camera_rate_hz", "15.0", "rate of each simulated camera"),
        ("stamp_source", "wall", "wall or sim"),
        ("log_level", "info", "log level"),
        ("vla_overrides", "{}", "extra vla_node parameters as a YAML mapping"),
    ]
    return LaunchDescription([DeclareLaunchArgument(n, default_value=d, description=h) for n, d, h in args]
                             + [OpaqueFunction(function=_nodes)])
