"""Closed-form inverse kinematics for the tabletop arm with its tool pointing straight down.

The arm is a pan joint followed by three parallel pitch joints, so a top-down tool pose
reduces to a two-link planar problem in the vertical plane through the pan axis. Closed form
beats iterative Jacobian IK here: exact, no iterations, and the same answer every time, which
keeps the expert's demonstrations consistent for behaviour cloning.
"""

from __future__ import annotations

import numpy as np

from vla_ros.sim.scene import ARM_JOINTS, FOREARM, JOINT_RANGES, SHOULDER_HEIGHT, TOOL_LENGTH, UPPER_ARM


class UnreachableError(ValueError):
    """A tool position the arm cannot reach with its tool pointing down."""


def top_down_ik(position: np.ndarray, finger_yaw: float = np.pi / 2) -> np.ndarray:
    """Arm joint angles [pan, lift, elbow, wrist_flex, wrist_roll] putting the tool point at
    ``position`` (world, metres), tool pointing down, fingers closing along world yaw
    ``finger_yaw`` (default: along world y)."""
    x, y, z = (float(v) for v in position)
    pan = float(np.arctan2(y, x))
    radius = float(np.hypot(x, y))
    height = z + TOOL_LENGTH - SHOULDER_HEIGHT  # wrist_flex axis relative to the shoulder
    reach = np.hypot(radius, height)
    cos_elbow = (reach**2 - UPPER_ARM**2 - FOREARM**2) / (2 * UPPER_ARM * FOREARM)
    if not -1.0 <= cos_elbow <= 1.0:
        raise UnreachableError(f"tool position {tuple(np.round(position, 3))} is out of the arm's reach")
    elbow = float(np.arccos(cos_elbow))  # elbow-up branch
    lift = float(np.arctan2(radius, height) - np.arctan2(FOREARM * np.sin(elbow),
                                                           UPPER_ARM + FOREARM * np.cos(elbow)))
    wrist = float(np.pi - lift - elbow)
    # The finger axis's world yaw is pan + pi/2 - roll; fingers are symmetric, so wrap to +-pi/2.
    roll = float((pan + np.pi / 2 - finger_yaw + np.pi / 2) % np.pi - np.pi / 2)
    joints = np.array([pan, lift, elbow, wrist, roll])
    for name, value in zip(ARM_JOINTS, joints, strict=True):
        lo, hi = JOINT_RANGES[name]
        if not lo <= value <= hi:
            raise UnreachableError(f"tool position {tuple(np.round(position, 3))} needs {name}="
                                   f"{value:.2f} rad, outside [{lo}, {hi}]")
    return joints
