"""`vla_ros sim-collect`: record scripted-expert demonstrations as a vla_ros episode dataset
(docs/DATASET.md) and, with ``--bag``, the same episodes as rosbag2 (mcap) recordings.

Episode ``i`` is reset with seed ``--seed + i`` (retries after an expert failure use the next
unused seed), and the task family cycles through the requested families so they stay balanced.
Only successful demonstrations are kept; the number of discarded failures is printed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla_ros.data.dataset import Episode, output_problem, save_dataset
from vla_ros.sim.env import EXPERT_ACTION_OFFSET_STEPS, TabletopEnv
from vla_ros.sim.scene import COLOURS, SHAPES
from vla_ros.sim.tasks import ALL_FAMILIES, TASK_FAMILIES

EXTRA_HOLD_FRAMES = 1  # frames recorded after the plan's last keyframe, showing the final hold


def record_expert_episode(env: TabletopEnv, seed: int, task: str | None = None,
                          colour: str | None = None, shape: str | None = None,
                          perturb: Callable[[], np.ndarray] | None = None,
                          extra_task: dict | None = None) -> Episode:
    """Reset with ``seed`` and run the scripted expert to the end of its plan, recording each
    frame's observation and the action issued at that frame. ``perturb``, when given, returns an
    offset added to the action actually executed (the recorded action stays the expert's: DART
    noise injection); ``extra_task`` is merged into the episode's task record."""
    obs, info = env.reset(seed=seed, task=task, colour=colour, shape=shape)
    frames = int(round(env.expert_duration / env.action_period)) + EXTRA_HOLD_FRAMES
    images = {c: [] for c in env.cameras}
    states, actions, stamps = [], [], []
    for _ in range(frames):
        action = env.expert_action()
        for c in env.cameras:
            images[c].append(obs["images"][c])
        states.append(obs["state"])
        actions.append(action)
        stamps.append(env.elapsed)
        obs, _, _, _, info = env.step(action if perturb is None else action + perturb())
    return Episode(images={c: np.stack(v) for c, v in images.items()}, state=np.stack(states),
                   action=np.stack(actions), timestamp=np.array(stamps, dtype=np.float64),
                   instruction=info["instruction"], task={**info["task"], "seed": seed, **(extra_task or {})},
                   success=env.success())


def expert_episodes(env: TabletopEnv, count: int, seed: int, families: tuple[str, ...],
                    colour: str | None = None, shape: str | None = None,
                    max_failures: int | None = None) -> Iterator[tuple[Episode, int]]:
    """Yield ``count`` successful expert episodes with the failures discarded before each."""
    max_failures = count if max_failures is None else max_failures
    next_seed, failures = seed, 0
    for i in range(count):
        while True:
            ep = record_expert_episode(env, next_seed, families[i % len(families)], colour, shape)
            next_seed += 1
            if ep.success:
                yield ep, failures
                break
            failures += 1
            if failures > max_failures:
                raise RuntimeError(f"the expert failed {failures} times; stopping "
                                   f"(last seed {next_seed - 1})")


def parse_image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 8:
        raise argparse.ArgumentTypeError(f"image size {text!r}: expected N or HxW with values >= 8")
    return size  # type: ignore[return-value]


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--task", default="all", choices=[*ALL_FAMILIES, "all"],
                   help=f"task family, or all to alternate between {', '.join(TASK_FAMILIES)} (default)")
    p.add_argument("--colour", choices=list(COLOURS), help="fix the target colour (default random)")
    p.add_argument("--shape", choices=list(SHAPES), help="fix the target shape (default random)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (default 0)")
    p.add_argument("--image-size", type=parse_image_size, default=(64, 64), metavar="HxW",
                   help="camera image size (default 64x64)")
    p.add_argument("--num-objects", type=int, default=3, help="objects on the table (default 3)")
    p.add_argument("--templates", choices=["first", "random"], default="first",
                   help="instruction wording: the first template per family, or random ones")
    return p


def make_env(args: argparse.Namespace) -> TabletopEnv:
    return TabletopEnv(image_size=args.image_size, seed=args.seed, num_objects=args.num_objects,
                       templates=args.templates)


def families_of(task: str) -> tuple[str, ...]:
    return TASK_FAMILIES if task == "all" else (task,)


def main(argv: list[str] | None = None) -> int:
    p = build_parser("vla_ros sim-collect", __doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, required=True, help="successful episodes to record")
    p.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    p.add_argument("--bag", action="store_true",
                   help="also write one rosbag2 (mcap) per episode under OUT/bags/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset directory")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error("--episodes must be >= 1")
    problem = output_problem(args.out, args.overwrite)
    if problem:
        print(f"sim-collect: {problem}", file=sys.stderr)
        return 2
    try:
        env = make_env(args)
    except ValueError as exc:
        print(f"sim-collect: {exc}", file=sys.stderr)
        return 2
    episodes: list[Episode] = []
    failures = 0
    try:
        stream = expert_episodes(env, args.episodes, args.seed, families_of(args.task),
                                 args.colour, args.shape)
        for ep, failed in tqdm(stream, total=args.episodes, desc="episodes", unit="ep"):
            episodes.append(ep)
            failures = failed
    except ValueError as exc:
        print(f"sim-collect: {exc}", file=sys.stderr)
        return 2
    finally:
        env.close()
    save_dataset(args.out, episodes, fps=1.0 / env.action_period, state_names=env.state_names,
                 action_names=env.action_names, overwrite=args.overwrite,
                 action_offset_steps=EXPERT_ACTION_OFFSET_STEPS)
    bag_dir = args.out / "bags"
    if bag_dir.exists():  # bags of a replaced dataset must not outlive it
        shutil.rmtree(bag_dir)
    frames = sum(len(e) for e in episodes)
    print(f"wrote {len(episodes)} episodes, {frames} frames to {args.out} "
          f"({failures} expert failures discarded)")
    if args.bag:
        from vla_ros.sim.bag import write_episode_bag

        bag_dir.mkdir()
        for i, ep in enumerate(tqdm(episodes, desc="bags", unit="bag")):
            write_episode_bag(bag_dir / f"episode_{i:06d}", ep, env.state_names, env.action_names)
        print(f"wrote {len(episodes)} rosbag2 (mcap) recordings to {bag_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
