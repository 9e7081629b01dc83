"""The scripted expert: a fixed sequence of Cartesian keyframes per task family, eased between
keyframes and turned into joint targets with closed-form IK.

Every episode of a family has the same plan structure and timing; only the object and bowl
positions change. That consistency is what makes the demonstrations easy to behaviour-clone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_ros.core.policy import ActionChunk, InstructionContext, Observation, Policy
from vla_ros.sim.kinematics import top_down_ik
from vla_ros.sim.scene import OBJECT_HALF_HEIGHT
from vla_ros.sim.tasks import TaskSpec

APPROACH_Z = 0.10  # tool height above the target before descending
GRASP_Z = 0.022  # tool point (pad centre) height when grasping
CARRY_Z = 0.13  # tool height while carrying
RELEASE_Z = 0.075  # tool height over the bowl when opening
MARK_DROP = 0.004  # the mark family: the object is opened this far above its resting height


@dataclass(frozen=True)
class Keyframe:
    duration: float  # seconds to move from the previous keyframe to this one
    position: tuple[float, float, float]  # tool point, world metres
    gripper: float  # 0 open .. 1 closed


class ExpertPlan:
    """Joint targets as a function of time since the episode started."""

    def __init__(self, start: np.ndarray, keyframes: list[Keyframe]):
        self.keyframes = [Keyframe(0.0, tuple(float(v) for v in start), 0.0), *keyframes]
        self.times = np.cumsum([k.duration for k in self.keyframes])
        self.duration = float(self.times[-1])

    def tool_target(self, t: float) -> tuple[np.ndarray, float]:
        t = float(np.clip(t, 0.0, self.duration))
        i = int(np.searchsorted(self.times, t, side="right"))
        if i >= len(self.keyframes):
            last = self.keyframes[-1]
            return np.array(last.position), last.gripper
        prev, nxt = self.keyframes[i - 1], self.keyframes[i]
        u = (t - self.times[i - 1]) / nxt.duration
        s = 0.5 - 0.5 * np.cos(np.pi * u)  # cosine easing: zero velocity at every keyframe
        pos = (1 - s) * np.array(prev.position) + s * np.array(nxt.position)
        return pos, float((1 - s) * prev.gripper + s * nxt.gripper)

    def action(self, t: float) -> np.ndarray:
        pos, grip = self.tool_target(t)
        return np.append(top_down_ik(pos), grip).astype(np.float32)


def plan_for(task: TaskSpec, start_tool: np.ndarray) -> ExpertPlan:
    ox, oy = task.objects[0]["xy"]
    grasp_z = max(GRASP_Z, OBJECT_HALF_HEIGHT[task.shape])
    keys = [
        Keyframe(1.2, (ox, oy, APPROACH_Z), 0.0),
        Keyframe(0.8, (ox, oy, grasp_z), 0.0),
        Keyframe(0.5, (ox, oy, grasp_z), 1.0),
        Keyframe(1.0, (ox, oy, CARRY_Z), 1.0),
    ]
    if task.family == "pick":
        keys.append(Keyframe(0.5, (ox, oy, CARRY_Z), 1.0))
    elif task.family == "place":
        bx, by = task.bowl_xy
        keys += [
            Keyframe(1.2, (bx, by, CARRY_Z), 1.0),
            Keyframe(0.5, (bx, by, RELEASE_Z), 1.0),
            Keyframe(0.4, (bx, by, RELEASE_Z), 0.0),
            Keyframe(0.6, (bx, by, CARRY_Z), 0.0),
        ]
    elif task.family == "mark":
        mx, my = task.mark_xy
        keys += [
            Keyframe(1.2, (mx, my, CARRY_Z), 1.0),
            Keyframe(0.8, (mx, my, grasp_z + MARK_DROP), 1.0),
            Keyframe(0.4, (mx, my, grasp_z + MARK_DROP), 0.0),
            Keyframe(0.6, (mx, my, CARRY_Z), 0.0),
        ]
    else:
        raise ValueError(f"no expert plan for task family {task.family!r}")
    return ExpertPlan(start_tool, keys)


class ExpertPolicy(Policy):
    """The scripted expert's plan for the current task, as chunks on the goal's time axis: a
    policy that needs no checkpoint, for testing the loops around a model (ROS and offline).
    ``set_task`` before each goal; the goal's first observation is the plan's time zero."""

    def __init__(self) -> None:
        from vla_ros.core.scripted_policy import default_spec

        self.spec = default_spec()
        self.plan: ExpertPlan | None = None
        self._t0: float | None = None

    def set_task(self, task: TaskSpec | dict) -> None:
        from vla_ros.sim.env import HOME_TOOL

        self.plan = plan_for(task if isinstance(task, TaskSpec) else TaskSpec(**task), HOME_TOOL)

    def encode_instruction(self, text: str) -> InstructionContext:
        if self.plan is None:
            raise RuntimeError("ExpertPolicy: set_task() first")
        self._t0 = None
        return InstructionContext(text=text, num_tokens=len(text))

    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        if self._t0 is None:
            self._t0 = observation.stamp
        t = observation.stamp - self._t0
        dt = self.spec.action_period
        actions = np.array([self.plan.action(t + k * dt) for k in range(self.spec.chunk_size)], np.float64)
        return ActionChunk(observation.stamp, actions, dt)
