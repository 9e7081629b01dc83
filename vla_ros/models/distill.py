"""`vla_ros distill`: a teacher model's chunks on the student's own states (DAgger), as training data.

    vla_ros distill --teacher out/train/small --student checkpoints/tiny --episodes 200 --seed 30000 \\
        --out out/data/distill
    vla_ros train --init checkpoints/tiny --data out/data/sim out/data/dart out/data/distill ...

Behaviour cloning shows the student only the expert's states (and DART's noisy neighbours of them);
in closed loop it drifts into states nobody labelled. DAgger (Ross et al. 2011) rolls the student out
and has the teacher say what it would do there. Here each episode runs the *student* through the
runtime executor (sim/executor.py: what `vla_ros eval` runs, latency included), and every camera
frame it sees is labelled with the *teacher's* whole chunk for that frame (its instruction encoded
once per episode, as on the robot). With ``--teacher-episodes F`` a fraction of the episodes is driven
by the teacher instead (DAgger's beta), so the data also holds the teacher's own successful states.

The output is a normal episode dataset (docs/DATASET.md) whose episodes carry a ``chunk`` array
[T, H, A] (the teacher's chunk per frame, action units); `vla_ros train` learns those chunks
instead of the next H recorded actions, so demonstrations and teacher labels mix in one run.
Failed rollouts are kept: their states are the ones the student needs labels for.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla_ros.core.policy import Observation, Policy, PolicySpec
from vla_ros.data.dataset import Episode, output_problem, save_dataset
from vla_ros.sim.tasks import ALL_FAMILIES


def check_pair(teacher: PolicySpec, student: PolicySpec) -> None:
    """The teacher's chunks must be usable as the student's labels: same robot interface and action
    period, at least as many actions per chunk. Raises ValueError naming what differs."""
    for field in ("action_names", "state_names", "cameras", "action_mode", "action_offset_steps"):
        if getattr(teacher, field) != getattr(student, field):
            raise ValueError(f"teacher and student differ in {field}: {getattr(teacher, field)} against "
                             f"{getattr(student, field)}")
    if abs(teacher.action_period - student.action_period) > 1e-9:
        raise ValueError(f"teacher and student differ in action_period: {teacher.action_period} s against "
                         f"{student.action_period} s")
    if teacher.chunk_size < student.chunk_size:
        raise ValueError(f"the teacher predicts {teacher.chunk_size} actions per chunk, the student "
                         f"{student.chunk_size}: its chunks cannot label the student's")


class TeacherLabels:
    """Collects one episode's frames, each with the teacher's chunk (the executor's observer)."""

    def __init__(self, teacher: Policy, instruction: str) -> None:
        self.teacher = teacher
        self.context = teacher.encode_instruction(instruction)
        self.observations: list[Observation] = []
        self.chunks: list[np.ndarray] = []

    def __call__(self, observation: Observation) -> None:
        # a fresh Observation: the teacher must not see the student's committed actions (RTC)
        seen = Observation(observation.stamp, observation.images, observation.state)
        self.observations.append(seen)
        self.chunks.append(self.teacher.predict_chunk(seen, self.context).actions)

    def episode(self, instruction: str, task: dict, success: bool) -> Episode:
        obs = self.observations
        chunk = np.stack(self.chunks).astype(np.float32)  # [T, H, A]
        return Episode(
            images={c: np.stack([o.images[c] for o in obs]) for c in obs[0].images},
            state=np.stack([o.state for o in obs]).astype(np.float32),
            action=chunk[:, 0], timestamp=np.array([o.stamp for o in obs], dtype=np.float64),
            instruction=instruction, task=task, success=success, chunk=chunk,
        )  # fmt: skip


def labelled_episode(driver: Policy, teacher: Policy, env, config, seed: int, driven_by: str,
                     teacher_name: str) -> Episode:
    """One seeded episode driven by ``driver`` through the runtime executor, every camera frame
    labelled with the teacher's chunk."""
    from vla_ros.sim.executor import run_episode

    labels: TeacherLabels | None = None

    def observe(observation: Observation) -> None:
        nonlocal labels
        if labels is None:  # the scene was reset for this seed: its instruction is known now
            labels = TeacherLabels(teacher, env.task.instruction)
        labels(observation)

    teacher.reset()  # the runtime's worker resets the driver when the goal starts; the teacher is outside it
    outcome = run_episode(driver, env, config, seed, on_observation=observe)
    task = {**env.task.to_dict(), "seed": seed, "driven_by": driven_by, "teacher": teacher_name}
    return labels.episode(env.task.instruction, task, outcome.success)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla_ros distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="checkpoint directory of the teacher (the labels)")
    p.add_argument("--student", default=None,
                   help="checkpoint directory of the student that drives the rollouts (default: the "
                        "default checkpoint)")
    p.add_argument("--episodes", type=int, required=True, help="episodes to roll out and label")
    p.add_argument("--seed", type=int, default=30_000,
                   help="seed of the first episode (default 30000: apart from the expert data's 0.. and "
                        "10000.. and the evaluation's 100000..)")
    p.add_argument("--teacher-episodes", type=float, default=0.0,
                   help="fraction of the episodes the teacher drives instead (DAgger's beta; default 0)")
    p.add_argument("--task", default=None, choices=ALL_FAMILIES,
                   help="task family of every episode (default: random per episode)")
    p.add_argument("--max-steps", type=int, default=100,
                   help="action periods before an unsolved episode ends (default 100, as vla_ros eval)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for each model")
    p.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.episodes < 1:
        print("vla_ros distill: --episodes must be >= 1", file=sys.stderr)
        return 2
    if not 0.0 <= args.teacher_episodes <= 1.0:
        print(f"vla_ros distill: --teacher-episodes {args.teacher_episodes}: a fraction in [0, 1]",
              file=sys.stderr)
        return 2
    problem = output_problem(args.out, args.overwrite)
    if problem:
        print(f"vla_ros distill: {problem}", file=sys.stderr)
        return 2
    from vla_ros.models.checkpoint import CheckpointError
    from vla_ros.models.policy import load_policy
    from vla_ros.sim import TabletopEnv
    from vla_ros.sim.executor import sim_robot_runtime_config

    try:
        teacher = load_policy(args.teacher, threads=args.threads)
        student = load_policy(args.student, threads=args.threads)
        check_pair(teacher.spec, student.spec)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"vla_ros distill: {exc}", file=sys.stderr)
        return 2
    spec = student.spec
    env = TabletopEnv(image_size=spec.image_size, action_period=spec.action_period, seed=0,
                      max_steps=args.max_steps)
    if args.task:
        env_reset = env.reset
        env.reset = lambda seed=None, **kw: env_reset(seed=seed, task=args.task, **kw)
    config = sim_robot_runtime_config(spec)
    rng = np.random.default_rng(args.seed)
    teacher_name = str(teacher.ckpt.path)
    episodes, t0 = [], time.monotonic()
    bar = tqdm(range(args.episodes), desc="distill", unit="ep")
    for i in bar:
        by_teacher = rng.random() < args.teacher_episodes
        driver, driven_by = (teacher, "teacher") if by_teacher else (student, "student")
        episodes.append(labelled_episode(driver, teacher, env, config, args.seed + i, driven_by,
                                         teacher_name))
        rollouts = [e for e in episodes if e.task["driven_by"] == "student"]
        bar.set_postfix(student_success=f"{sum(e.success for e in rollouts)}/{len(rollouts)}")
    env.close()
    save_dataset(args.out, episodes, fps=1.0 / spec.action_period, state_names=list(spec.state_names),
                 action_names=list(spec.action_names), overwrite=args.overwrite,
                 action_offset_steps=spec.action_offset_steps)
    by_student = [e for e in episodes if e.task["driven_by"] == "student"]
    frames = sum(len(e) for e in episodes)
    print(f"wrote {len(episodes)} episodes, {frames} teacher-labelled frames to {args.out} in "
          f"{time.monotonic() - t0:.0f} s; the student drove {len(by_student)} and solved "
          f"{sum(e.success for e in by_student)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
