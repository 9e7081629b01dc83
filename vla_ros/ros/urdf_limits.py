"""Joint position and velocity limits from a URDF string (the `robot_description` parameter/topic)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class JointLimit:
    lower: float
    upper: float
    velocity: float  # rad/s (or m/s); math.inf when the URDF gives none


class UrdfError(ValueError):
    """The URDF could not be parsed or lacks a joint we need."""


def parse_joint_limits(urdf_xml: str) -> dict[str, JointLimit]:
    """Map joint name -> JointLimit for every joint with a <limit> element.

    Continuous joints have no position bounds (+-inf); a missing or zero velocity means unlimited.
    """
    try:
        root = ET.fromstring(urdf_xml)
    except ET.ParseError as exc:
        raise UrdfError(f"robot_description is not valid XML: {exc}") from exc
    limits: dict[str, JointLimit] = {}
    for joint in root.iter("joint"):
        name = joint.get("name")
        kind = joint.get("type", "")
        if not name or kind == "fixed":
            continue
        element = joint.find("limit")
        if kind == "continuous":
            velocity = _float(element, "velocity", math.inf) if element is not None else math.inf
            limits[name] = JointLimit(-math.inf, math.inf, velocity or math.inf)
        elif element is not None:
            lower = _float(element, "lower", 0.0)
            upper = _float(element, "upper", 0.0)
            velocity = _float(element, "velocity", math.inf)
            limits[name] = JointLimit(lower, upper, velocity or math.inf)
    return limits


def limits_for(urdf_xml: str, joint_names: list[str] | tuple[str, ...]) -> list[JointLimit]:
    """Limits for ``joint_names`` in order; a joint absent from the URDF is an error naming it."""
    limits = parse_joint_limits(urdf_xml)
    missing = [name for name in joint_names if name not in limits]
    if missing:
        raise UrdfError(f"robot_description has no <limit> for joint(s) {missing}")
    return [limits[name] for name in joint_names]


def _float(element: ET.Element, attribute: str, default: float) -> float:
    value = element.get(attribute)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise UrdfError(f"<limit {attribute}={value!r}> is not a number") from exc
