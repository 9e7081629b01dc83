"""The layout's rules, read from the sources' imports (docs/ARCHITECTURE.md): the core, the models,
the simulator and the data format never import ROS; the node (vla_ros/ros) never imports the tools
wing or the simulator; nothing below the tools imports them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vla_ros"
ROS_MODULES = ("rclpy", "launch", "launch_ros", "message_filters", "rosidl_runtime_py",
               "builtin_interfaces", "sensor_msgs", "std_msgs", "trajectory_msgs", "control_msgs",
               "diagnostic_msgs", "rcl_interfaces",
               "vla_ros.ros", "vla_ros.tools", "vla_ros_interfaces")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def offenders(layer: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        bad = sorted(m for m in imports_of(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(PACKAGE.parent))] = bad
    return found


@pytest.mark.parametrize("layer", ["core", "models", "sim", "data"])
def test_the_ros_free_layers_import_no_ros(layer):
    assert (PACKAGE / layer).is_dir()
    assert offenders(layer, ROS_MODULES) == {}


def test_the_node_imports_neither_the_tools_nor_the_simulator():
    assert offenders("ros", ("vla_ros.tools", "vla_ros.sim", "vla_ros.bench", "mujoco")) == {}


def test_the_checker_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from rclpy.node import Node\n    import sensor_msgs.msg\n")
    assert imports_of(source) == {"rclpy.node", "sensor_msgs.msg"}
