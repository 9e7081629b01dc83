"""Demonstrations with injected noise (DART, Laskey et al. 2017) for behaviour cloning.

The scripted expert is a plan of absolute joint targets indexed by time. Executing the plan with
temporally correlated noise added to the arm targets, while recording the noise-free plan target
as the label, shows the policy states off the expert's path together with the action that leads
back to it. Without such data a policy that reads the joint state learns to copy it (the next
target is always close to the current position) and drifts in closed loop.

    python -m vla_ros.models.demos --episodes 400 --noise 0.08 --seed 10000 --out out/data/dart
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from vla_ros.data.dataset import Episode, save_dataset
from vla_ros.sim.tasks import ALL_FAMILIES


def noisy_episode(env, seed: int, noise: float, rng: np.random.Generator, task: str | None = None) -> Episode:
    """The scripted expert's episode, executed with an AR(1) offset on the arm joints; ``task``: its
    family (default: random)."""
    from vla_ros.sim.collect import record_expert_episode

    scale = noise * rng.uniform(0.0, 1.0)  # a range of perturbation sizes, including none
    offset = np.zeros(len(env.action_names), dtype=np.float32)

    def perturb() -> np.ndarray:
        # AR(1) offset on the arm joints (stationary std = scale); the gripper is left alone
        offset[:-1] = 0.8 * offset[:-1] + rng.normal(0.0, 0.6 * scale, len(offset) - 1)
        return offset

    return record_expert_episode(env, seed, task, perturb=perturb, extra_task={"noise": scale})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla_ros.models.demos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, required=True, help="successful episodes to keep")
    p.add_argument("--noise", type=float, default=0.08, help="largest offset std, radians")
    p.add_argument("--seed", type=int, default=10_000, help="first episode seed")
    p.add_argument("--task", default=None, choices=ALL_FAMILIES,
                   help="task family of every episode (default: random per episode)")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    from vla_ros.sim import TabletopEnv
    from vla_ros.sim.env import EXPERT_ACTION_OFFSET_STEPS

    env = TabletopEnv(image_size=(64, 64), seed=0)
    rng = np.random.default_rng(args.seed)
    episodes, seed, dropped = [], args.seed, 0
    while len(episodes) < args.episodes:
        ep = noisy_episode(env, seed, args.noise, rng, args.task)
        seed += 1
        if ep.success:
            episodes.append(ep)
        else:
            dropped += 1
    save_dataset(args.out, episodes, fps=1.0 / env.action_period, state_names=env.state_names,
                 action_names=env.action_names, overwrite=args.overwrite,
                 action_offset_steps=EXPERT_ACTION_OFFSET_STEPS)
    print(f"wrote {len(episodes)} episodes to {args.out} ({dropped} unsuccessful dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
