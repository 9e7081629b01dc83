"""TabletopEnv: a Gymnasium-style MuJoCo tabletop with a 5-joint arm, two cameras and
language-conditioned tasks. No ROS imports; the ROS sim node drives the low-level methods.

One ``step`` executes one action period (default 0.1 s): the position targets are ramped
linearly from the previous action to the new one over the period's physics steps, as the
runtime's control loop does between actions on a real robot.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np

from vla_ros.sim import scene as sc
from vla_ros.sim.expert import ExpertPlan, plan_for
from vla_ros.sim.kinematics import top_down_ik
from vla_ros.sim.paraphrase import INSTRUCTION_STYLES, restyle
from vla_ros.sim.tasks import PICK_LIFT, TaskSpec, sample_task

HOME_TOOL = np.array([0.12, 0.0, 0.20])  # start pose: high and back, clear of the scene camera's view
CAMERAS = ("scene", "wrist")
# The expert's action at a frame is its target for the end of that action period: `step` ramps the
# servo target to it over the period. Datasets record it, checkpoints inherit it, and the runtime
# executes a chunk's action k at t_obs + (k + 1) * dt, as the demonstrations did.
EXPERT_ACTION_OFFSET_STEPS = 1


class TabletopEnv(gym.Env):
    """Observation: {"images": {camera: uint8[H, W, 3]}, "state": float32[6]}.
    Action: float32[6] absolute targets (5 joints in radians, gripper 0 open .. 1 closed),
    clipped to the joint ranges."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, image_size: tuple[int, int] = (64, 64), action_period: float = 0.1,
                 seed: int | None = 0, num_objects: int = 3, max_steps: int = 100,
                 init_noise: float = 0.05, templates: str = "first", render_images: bool = True,
                 instructions: str = "templated"):
        """``instructions`` rewords each episode's instruction (sim/paraphrase.py: templated,
        paraphrase, held-out, casing) from its own seeded stream, so the scenes stay those of the
        templated run with the same seeds."""
        if action_period <= 0 or action_period < sc.PHYSICS_TIMESTEP:
            raise ValueError(f"action_period={action_period} must be >= the physics timestep "
                             f"{sc.PHYSICS_TIMESTEP} s")
        h, w = (int(v) for v in image_size)
        if h < 8 or w < 8 or h > 2048 or w > 2048:
            raise ValueError(f"image_size={image_size} must be (height, width) within 8..2048")
        self.image_size = (h, w)
        self.action_period = float(action_period)
        self.num_objects = num_objects
        self.max_steps = max_steps
        self.init_noise = init_noise
        self.templates = templates
        if instructions not in INSTRUCTION_STYLES:
            raise ValueError(f"instructions={instructions!r}; valid: {', '.join(INSTRUCTION_STYLES)}")
        self.instructions = instructions
        self._wording_rng = np.random.default_rng(0)
        self.render_images = render_images
        self.state_names = list(sc.JOINT_NAMES)
        self.action_names = list(sc.JOINT_NAMES)
        self.cameras = list(CAMERAS)

        self.model = mujoco.MjModel.from_xml_string(sc.build_mjcf())
        self.model.vis.global_.offwidth = max(w, self.model.vis.global_.offwidth)
        self.model.vis.global_.offheight = max(h, self.model.vis.global_.offheight)
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = None
        m = self.model
        self._arm_qpos = np.array([m.jnt_qposadr[m.joint(n).id] for n in sc.ARM_JOINTS])
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(n).id] for n in ("finger_left", "finger_right")])
        self._tool_site = m.site("tool").id
        self._pad_geoms = {m.geom("pad_left").id, m.geom("pad_right").id}
        self._bowl_mocap = m.body_mocapid[m.body("bowl").id]
        self._mark_mocap = m.body_mocapid[m.body("mark").id]
        lo = np.array([sc.JOINT_RANGES[n][0] for n in sc.JOINT_NAMES], dtype=np.float32)
        hi = np.array([sc.JOINT_RANGES[n][1] for n in sc.JOINT_NAMES], dtype=np.float32)
        self._action_low, self._action_high = lo, hi
        self.action_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        self.observation_space = gym.spaces.Dict({
            "images": gym.spaces.Dict({c: gym.spaces.Box(0, 255, (h, w, 3), np.uint8) for c in CAMERAS}),
            "state": gym.spaces.Box(-np.inf, np.inf, (len(self.state_names),), np.float32),
        })
        self._initial_seed = seed
        self.task: TaskSpec | None = None
        self._plan: ExpertPlan | None = None
        self._target = np.zeros(len(self.action_names), dtype=np.float32)
        self._t0 = 0.0
        self._steps = 0

    # ----- Gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None, task: str | None = None,
              colour: str | None = None, shape: str | None = None):
        if seed is None and self._initial_seed is not None:
            seed, self._initial_seed = self._initial_seed, None
        super().reset(seed=seed)
        if seed is not None:
            self._wording_rng = np.random.default_rng([seed, 1])
        options = dict(options or {})
        task = task or options.get("task")
        self.task = sample_task(self.np_random, family=task, colour=colour or options.get("colour"),
                                shape=shape or options.get("shape"), num_objects=self.num_objects,
                                templates=self.templates)
        self.task.instruction = restyle(self.instructions, self.task.family, self.task.colour,
                                        self.task.shape, self.task.instruction, self._wording_rng)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        home = top_down_ik(HOME_TOOL) + self.np_random.uniform(-self.init_noise, self.init_noise, 5)
        d.qpos[self._arm_qpos] = home
        d.qpos[self._finger_qpos] = sc.FINGER_OPEN
        for obj in self.task.objects:
            name = sc.object_name(obj["colour"], obj["shape"])
            adr = m.jnt_qposadr[m.joint(name).id]
            d.qpos[adr:adr + 7] = [*obj["xy"], sc.OBJECT_HALF_HEIGHT[obj["shape"]] + 1e-4, 1, 0, 0, 0]
        bowl = self.task.bowl_xy if self.task.bowl_xy is not None else (sc.PARKING[0], -sc.PARKING[1])
        d.mocap_pos[self._bowl_mocap] = [*bowl, 0.0]
        mark = self.task.mark_xy if self.task.mark_xy is not None else (sc.PARKING[0] + 0.3, -sc.PARKING[1])
        d.mocap_pos[self._mark_mocap] = [*mark, 0.0]
        self._target = np.append(home, 0.0).astype(np.float32)
        self._apply_target(self._target)
        mujoco.mj_forward(m, d)
        self.advance(0.05)  # let contacts settle before the episode clock starts
        self._t0 = float(d.time)
        self._steps = 0
        self._plan = plan_for(self.task, d.site_xpos[self._tool_site].copy())
        return self.observe(), self._info()

    def step(self, action):
        target = self._validate(action)
        start = self._target.copy()
        n = max(1, round(self.action_period / self.model.opt.timestep))
        for i in range(1, n + 1):
            self._apply_target(start + (target - start) * (i / n))
            mujoco.mj_step(self.model, self.data)
        self._target = target
        self._steps += 1
        success = self.success()
        truncated = not success and self._steps >= self.max_steps
        return self.observe(), float(success), success, truncated, self._info(success)

    def render(self) -> np.ndarray:
        return self._render_camera("scene")

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ----- expert ---------------------------------------------------------------------------
    def expert_action(self) -> np.ndarray:
        """The scripted expert's target for the end of the next action period (so its datasets
        record ``action_offset_steps`` = EXPERT_ACTION_OFFSET_STEPS)."""
        self._require_reset()
        return self._plan.action(self.elapsed + self.action_period)

    @property
    def expert_duration(self) -> float:
        """Seconds the expert's plan takes from reset to its last keyframe."""
        self._require_reset()
        return self._plan.duration

    # ----- low level, for a real-time sim node ----------------------------------------------
    def set_target(self, action) -> None:
        self._target = self._validate(action)
        self._apply_target(self._target)

    def advance(self, seconds: float) -> None:
        for _ in range(max(0, round(seconds / self.model.opt.timestep))):
            mujoco.mj_step(self.model, self.data)

    def observe(self) -> dict:
        images = {c: self._render_camera(c) for c in CAMERAS} if self.render_images else {}
        return {"images": images, "state": self.joint_state()}

    @property
    def elapsed(self) -> float:
        """Seconds of simulated time since the episode started."""
        return float(self.data.time - self._t0)

    def joint_state(self) -> np.ndarray:
        fingers = float(np.mean(self.data.qpos[self._finger_qpos]))
        grip = float(np.clip(1.0 - fingers / sc.FINGER_OPEN, 0.0, 1.0))
        return np.append(self.data.qpos[self._arm_qpos], grip).astype(np.float32)

    def target_position(self) -> np.ndarray:
        """World position of the task's target object."""
        self._require_reset()
        return self._object_pos(self.task.objects[0]).copy()

    def success(self) -> bool:
        self._require_reset()
        target = self.task.objects[0]
        pos = self._object_pos(target)
        rest_z = sc.OBJECT_HALF_HEIGHT[target["shape"]]
        held = self._touches_pads(target)
        if self.task.family == "pick":
            return bool(held and pos[2] >= rest_z + PICK_LIFT)
        if self.task.family == "mark":  # released, resting upright on the table, on the mark
            mx, my = self.task.mark_xy
            on_mark = np.hypot(pos[0] - mx, pos[1] - my) <= sc.MARK_SUCCESS
            return bool(on_mark and abs(pos[2] - rest_z) <= 0.005 and not held)
        bx, by = self.task.bowl_xy
        in_bowl = np.hypot(pos[0] - bx, pos[1] - by) <= sc.BOWL_INNER - 0.012
        return bool(in_bowl and pos[2] <= rest_z + 0.02 and not held)

    # ----- internals ------------------------------------------------------------------------
    def _require_reset(self) -> None:
        if self.task is None:
            raise RuntimeError("call reset() before using the episode")

    def _validate(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != (len(self.action_names),):
            raise ValueError(f"action must have {len(self.action_names)} values "
                             f"({', '.join(self.action_names)}), got shape {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values: {a.tolist()}")
        return np.clip(a, self._action_low, self._action_high)

    def _apply_target(self, target: np.ndarray) -> None:
        self.data.ctrl[:5] = target[:5]
        self.data.ctrl[5:7] = sc.FINGER_OPEN * (1.0 - float(target[5]))

    def _object_pos(self, obj: dict) -> np.ndarray:
        return self.data.body(sc.object_name(obj["colour"], obj["shape"])).xpos

    def _touches_pads(self, obj: dict) -> bool:
        body = self.model.body(sc.object_name(obj["colour"], obj["shape"])).id
        geom_body = self.model.geom_bodyid
        for c in self.data.contact[: self.data.ncon]:
            pair = (int(c.geom1), int(c.geom2))
            if body in (geom_body[pair[0]], geom_body[pair[1]]) and self._pad_geoms.intersection(pair):
                return True
        return False

    def _render_camera(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            h, w = self.image_size
            try:
                self._renderer = mujoco.Renderer(self.model, h, w)
            except mujoco.FatalError as exc:
                raise RuntimeError(
                    f"cannot create a MuJoCo renderer ({exc}); set MUJOCO_GL=egl (or osmesa) before "
                    "mujoco is first imported, e.g. import vla_ros.sim before mujoco") from exc
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG):
                self._renderer.scene.flags[flag] = 0
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def _info(self, success: bool | None = None) -> dict:
        return {"instruction": self.task.instruction, "task": self.task.to_dict(),
                "success": self.success() if success is None else success, "step": self._steps}
