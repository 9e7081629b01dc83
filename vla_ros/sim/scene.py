"""The tabletop scene as MJCF, generated here so geometry constants and the XML cannot drift apart.

World frame: the table top is the plane z = 0, the arm's base sits at the origin, +x points
away from the robot across the table, +y to the robot's left. Every object of every
colour-and-shape combination exists in the model once; a scene places the ones it uses in the
workspace and parks the rest out of view, so resets never recompile the model or recreate
the renderer's GL context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Arm geometry (metres). The kinematics module solves IK with exactly these numbers.
SHOULDER_HEIGHT = 0.10  # shoulder_lift axis above the table
UPPER_ARM = 0.18  # shoulder_lift -> elbow_flex
FOREARM = 0.18  # elbow_flex -> wrist_flex
WRIST_TO_HAND = 0.04  # wrist_flex -> wrist_roll body
HAND_TO_TOOL = 0.07  # wrist_roll body -> tool point (centre between the finger pads)
TOOL_LENGTH = WRIST_TO_HAND + HAND_TO_TOOL  # wrist_flex axis -> tool point
FINGER_OPEN = 0.045  # finger travel: half the gap between the pads when fully open
PAD_HALF = (0.012, 0.006, 0.018)  # finger pad half sizes: across, thickness, along the tool axis

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
JOINT_NAMES = (*ARM_JOINTS, "gripper")
JOINT_RANGES = {
    "shoulder_pan": (-2.0, 2.0),
    "shoulder_lift": (-1.8, 1.8),
    "elbow_flex": (-0.3, 2.9),
    "wrist_flex": (-1.0, 3.1),
    "wrist_roll": (-3.1, 3.1),
    "gripper": (0.0, 1.0),
}

COLOURS = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.10, 0.25, 0.90),
}
SHAPES = ("cube", "cylinder", "ball")
OBJECT_HALF_HEIGHT = {"cube": 0.02, "cylinder": 0.02, "ball": 0.022}
OBJECT_RADIUS = 0.032  # footprint radius used for non-overlapping placement (cube corner + margin)

BOWL_INNER = 0.052  # inner radius of the bowl's wall
BOWL_WALL = 0.035  # wall height
BOWL_RADIUS = 0.062  # outer footprint radius
BOWL_COLOUR = (0.92, 0.85, 0.55)

# The mark family's destination: a flat disc on the table (visual only: nothing collides with it).
MARK_RADIUS = 0.03  # drawn radius
MARK_FOOTPRINT = 0.045  # placement radius: other objects keep clear of the carried object's pads
MARK_SUCCESS = 0.025  # the object's centre within this of the mark's counts as on it
MARK_COLOUR = (0.95, 0.95, 0.95)

# Objects are placed in this rectangle (tool reach and the scene camera's view both cover it).
WORKSPACE_X = (0.15, 0.31)
WORKSPACE_Y = (-0.15, 0.15)
PARKING = (0.0, 3.0)  # unused objects rest on the floor here, far outside every camera

PHYSICS_TIMESTEP = 0.005  # 200 Hz


def object_name(colour: str, shape: str) -> str:
    return f"{colour}_{shape}"


def _look_at(pos: np.ndarray, target: np.ndarray) -> str:
    """MJCF xyaxes for a camera at ``pos`` looking at ``target`` with world z up in the image."""
    forward = target - pos
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.5f}" for v in (*right, *up))


def _object_xml(colour: str, shape: str, index: int) -> str:
    rgb = " ".join(f"{c:.3f}" for c in COLOURS[colour])
    name = object_name(colour, shape)
    px, py = PARKING[0] + 0.12 * index, PARKING[1]
    h = OBJECT_HALF_HEIGHT[shape]
    geom = {
        "cube": f'type="box" size="{h} {h} {h}" mass="0.05"',
        "cylinder": f'type="cylinder" size="0.02 {h}" mass="0.05"',
        "ball": f'type="sphere" size="{h}" condim="6" mass="0.05"',
    }[shape]
    collision = ""
    if shape == "cylinder":
        # Box pads squeezing a curved side off-centre wedge it out of the grip (it happens at
        # 1.5 cm off-centre): the cylinder collides as its square prism, which grips as a cube.
        geom = f'type="cylinder" size="0.02 {h}" contype="0" conaffinity="0" mass="0"'
        collision = (f'\n      <geom name="{name}_collision" type="box" size="0.018 0.018 {h}" '
                     f'mass="0.05" group="3" class="object"/>')
    return f"""
    <body name="{name}" pos="{px:.3f} {py:.3f} {h - 0.7 + 1e-4:.4f}">
      <freejoint name="{name}"/>
      <geom name="{name}" {geom} rgba="{rgb} 1" class="object"/>{collision}
    </body>"""


def _mark_xml() -> str:
    """The mark, parked beside the parked bowl when unused. It is the last body of the model, so the
    ids of every older body and geom (and so the physics of the older families) are unchanged."""
    rgb = " ".join(f"{c:.3f}" for c in MARK_COLOUR)
    return f"""
    <body name="mark" mocap="true" pos="{PARKING[0] + 0.3} {-PARKING[1]} 0">
      <geom name="mark" type="cylinder" size="{MARK_RADIUS} 0.001" pos="0 0 0.001" rgba="{rgb} 1"
            contype="0" conaffinity="0"/>
    </body>"""


def _bowl_xml() -> str:
    rgb = " ".join(f"{c:.3f}" for c in BOWL_COLOUR)
    segments = 16
    half_len = np.pi * (BOWL_INNER + 0.004) / segments + 0.002
    walls = []
    for i in range(segments):
        a = 2 * np.pi * i / segments
        r = BOWL_INNER + 0.004
        walls.append(
            f'<geom type="box" size="0.004 {half_len:.4f} {BOWL_WALL / 2}" '
            f'pos="{r * np.cos(a):.4f} {r * np.sin(a):.4f} {BOWL_WALL / 2}" euler="0 0 {a:.4f}" '
            f'rgba="{rgb} 1" class="static"/>')
    return f"""
    <body name="bowl" mocap="true" pos="{PARKING[0]} {-PARKING[1]} 0">
      <geom name="bowl_floor" type="cylinder" size="{BOWL_INNER + 0.008} 0.0025" pos="0 0 0.0025"
            rgba="{rgb} 1" class="static"/>
      {"".join(walls)}
    </body>"""


@dataclass(frozen=True)
class SceneCameras:
    scene_pos: tuple[float, float, float] = (0.45, 0.0, 0.40)
    scene_target: tuple[float, float, float] = (0.225, 0.0, 0.0)
    scene_fovy: float = 45.0


def build_mjcf(cameras: SceneCameras = SceneCameras()) -> str:
    scene_axes = _look_at(np.array(cameras.scene_pos), np.array(cameras.scene_target))
    objects = "".join(
        _object_xml(c, s, i) for i, (c, s) in enumerate((c, s) for c in COLOURS for s in SHAPES))
    r = JOINT_RANGES
    pad_x, pad_y, pad_z = PAD_HALF
    return f"""
<mujoco model="vla_ros_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{PHYSICS_TIMESTEP}" cone="elliptic" impratio="10" integrator="implicitfast">
    <flag multiccd="enable"/>
  </option>
  <visual>
    <global offwidth="640" offheight="640"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <asset>
    <material name="table" rgba="0.55 0.45 0.35 1" reflectance="0"/>
    <material name="arm" rgba="0.93 0.93 0.93 1" reflectance="0"/>
    <material name="dark" rgba="0.2 0.2 0.22 1" reflectance="0"/>
  </asset>
  <default>
    <default class="visual">
      <geom contype="0" conaffinity="0" group="2" material="arm"/>
    </default>
    <default class="static">
      <geom contype="1" conaffinity="1" condim="3" friction="0.8 0.005 0.0001"/>
    </default>
    <default class="object">
      <geom contype="1" conaffinity="1" condim="4" friction="1.2 0.01 0.0005" solref="0.01 1"/>
    </default>
    <default class="pad">
      <geom contype="1" conaffinity="1" condim="4" friction="1.5 0.02 0.001" solref="0.01 1"
            material="dark"/>
    </default>
    <joint damping="1.0" armature="0.01"/>
    <position kp="60" kv="4" forcerange="-20 20"/>
  </default>
  <worldbody>
    <light name="sun" directional="true" pos="0 0 2" dir="-0.3 0.3 -1" diffuse="0.5 0.5 0.5"
           specular="0 0 0" castshadow="false"/>
    <!-- The floor only catches parked objects; group 4 is not rendered (an infinite plane is
         the most expensive thing to rasterise on a software GL). -->
    <geom name="floor" type="plane" size="0 0 1" pos="0 0 -0.7" rgba="0.3 0.3 0.3 1" class="static"
          group="4"/>
    <geom name="table" type="box" size="1.2 1.2 0.02" pos="0.2 0 -0.02" material="table"
          class="static"/>
    <camera name="scene" pos="{' '.join(map(str, cameras.scene_pos))}" xyaxes="{scene_axes}"
            fovy="{cameras.scene_fovy}"/>
    <body name="base" pos="0 0 0">
      <geom type="cylinder" size="0.05 0.02" pos="0 0 0.02" class="visual" material="dark"/>
      <body name="pan_link" pos="0 0 0.04" gravcomp="1">
        <joint name="shoulder_pan" axis="0 0 1" range="{r['shoulder_pan'][0]} {r['shoulder_pan'][1]}"/>
        <inertial pos="0 0 0.03" mass="0.3" diaginertia="0.001 0.001 0.001"/>
        <geom type="cylinder" size="0.035 0.03" pos="0 0 0.03" class="visual"/>
        <body name="upper_arm" pos="0 0 {SHOULDER_HEIGHT - 0.04}" gravcomp="1">
          <joint name="shoulder_lift" axis="0 1 0"
                 range="{r['shoulder_lift'][0]} {r['shoulder_lift'][1]}"/>
          <inertial pos="0 0 {UPPER_ARM / 2}" mass="0.2" diaginertia="0.0005 0.0005 0.0001"/>
          <geom type="capsule" fromto="0 0 0 0 0 {UPPER_ARM}" size="0.022" class="visual"/>
          <body name="forearm" pos="0 0 {UPPER_ARM}" gravcomp="1">
            <joint name="elbow_flex" axis="0 1 0" range="{r['elbow_flex'][0]} {r['elbow_flex'][1]}"/>
            <inertial pos="0 0 {FOREARM / 2}" mass="0.15" diaginertia="0.0004 0.0004 0.0001"/>
            <geom type="capsule" fromto="0 0 0 0 0 {FOREARM}" size="0.018" class="visual"/>
            <body name="wrist" pos="0 0 {FOREARM}" gravcomp="1">
              <joint name="wrist_flex" axis="0 1 0" range="{r['wrist_flex'][0]} {r['wrist_flex'][1]}"/>
              <inertial pos="0 0 0.02" mass="0.05" diaginertia="0.0001 0.0001 0.0001"/>
              <geom type="capsule" fromto="0 0 0 0 0 {WRIST_TO_HAND}" size="0.016" class="visual"
                    material="dark"/>
              <body name="hand" pos="0 0 {WRIST_TO_HAND}" gravcomp="1">
                <joint name="wrist_roll" axis="0 0 1" range="{r['wrist_roll'][0]} {r['wrist_roll'][1]}"/>
                <inertial pos="0 0 0.02" mass="0.08" diaginertia="0.0001 0.0001 0.0001"/>
                <geom name="palm" type="box" size="0.02 0.06 0.012" pos="0 0 0.02" class="pad"
                      material="arm"/>
                <site name="tool" pos="0 0 {HAND_TO_TOOL}" size="0.005" rgba="1 0 1 0" group="5"/>
                <camera name="wrist" pos="0.05 0 0.0" xyaxes="0 -1 0 -0.81 0 -0.58" fovy="75"/>
                <body name="finger_left" pos="0 0 0" gravcomp="1">
                  <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_OPEN}"
                         damping="2"/>
                  <inertial pos="0 0 0.05" mass="0.02" diaginertia="1e-5 1e-5 1e-5"/>
                  <geom type="box" size="{pad_x} {pad_y * 0.8} {(HAND_TO_TOOL - 0.03) / 2}"
                        pos="0 {pad_y} {0.03 + (HAND_TO_TOOL - 0.03) / 2}" class="visual" material="dark"/>
                  <geom name="pad_left" type="box" size="{pad_x} {pad_y} {pad_z}"
                        pos="0 {pad_y} {HAND_TO_TOOL}" class="pad"/>
                </body>
                <body name="finger_right" pos="0 0 0" gravcomp="1">
                  <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_OPEN}"
                         damping="2"/>
                  <inertial pos="0 0 0.05" mass="0.02" diaginertia="1e-5 1e-5 1e-5"/>
                  <geom type="box" size="{pad_x} {pad_y * 0.8} {(HAND_TO_TOOL - 0.03) / 2}"
                        pos="0 {-pad_y} {0.03 + (HAND_TO_TOOL - 0.03) / 2}" class="visual" material="dark"/>
                  <geom name="pad_right" type="box" size="{pad_x} {pad_y} {pad_z}"
                        pos="0 {-pad_y} {HAND_TO_TOOL}" class="pad"/>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
    {_bowl_xml()}
    {objects}
    {_mark_xml()}
  </worldbody>
  <contact>
    <exclude body1="finger_left" body2="finger_right"/>
    <exclude body1="hand" body2="finger_left"/>
    <exclude body1="hand" body2="finger_right"/>
  </contact>
  <actuator>
    <position name="shoulder_pan" joint="shoulder_pan"
              ctrlrange="{r['shoulder_pan'][0]} {r['shoulder_pan'][1]}"/>
    <position name="shoulder_lift" joint="shoulder_lift" kp="90" kv="6"
              ctrlrange="{r['shoulder_lift'][0]} {r['shoulder_lift'][1]}"/>
    <position name="elbow_flex" joint="elbow_flex" kp="80" kv="5"
              ctrlrange="{r['elbow_flex'][0]} {r['elbow_flex'][1]}"/>
    <position name="wrist_flex" joint="wrist_flex" kp="40" kv="2"
              ctrlrange="{r['wrist_flex'][0]} {r['wrist_flex'][1]}"/>
    <position name="wrist_roll" joint="wrist_roll" kp="20" kv="1"
              ctrlrange="{r['wrist_roll'][0]} {r['wrist_roll'][1]}"/>
    <position name="finger_left" joint="finger_left" kp="150" kv="3" forcerange="-6 6"
              ctrlrange="0 {FINGER_OPEN}"/>
    <position name="finger_right" joint="finger_right" kp="150" kv="3" forcerange="-6 6"
              ctrlrange="0 {FINGER_OPEN}"/>
  </actuator>
</mujoco>
"""
