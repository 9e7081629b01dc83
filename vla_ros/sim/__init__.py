"""MuJoCo tabletop simulation: TabletopEnv, task families and the scripted expert (no ROS imports)."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco: headless CPU rendering

from vla_ros.sim.env import CAMERAS, TabletopEnv
from vla_ros.sim.scene import COLOURS, JOINT_NAMES, SHAPES
from vla_ros.sim.tasks import ALL_FAMILIES, EXTRA_FAMILIES, INSTRUCTION_TEMPLATES, TASK_FAMILIES, TaskSpec

__all__ = ["ALL_FAMILIES", "CAMERAS", "COLOURS", "EXTRA_FAMILIES", "INSTRUCTION_TEMPLATES", "JOINT_NAMES",
           "SHAPES", "TASK_FAMILIES", "TabletopEnv", "TaskSpec"]
