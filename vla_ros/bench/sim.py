"""`python -m vla_ros.bench sim [--quick]`: simulation speed and scripted-expert success.

A "step" is one ``env.step``: one action period (0.1 s of simulated time = 20 physics steps at
200 Hz, targets ramped across them) followed by rendering both cameras at the given size.
Also reported: raw physics steps per second (mj_step alone) and render milliseconds per camera
frame. Expert success is measured over seeded episodes per task family (seeds 100000 + i,
disjoint from sim-collect's default seeds). The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from vla_ros.sim.collect import parse_image_size
from vla_ros.sim.env import TabletopEnv
from vla_ros.sim.tasks import TASK_FAMILIES

SUCCESS_SEED = 100_000


def expert_success(episodes: int) -> dict[str, float]:
    env = TabletopEnv(render_images=False)
    rates = {}
    for family in TASK_FAMILIES:
        wins = 0
        for i in range(episodes):
            env.reset(seed=SUCCESS_SEED + i, task=family)
            success = False
            for _ in range(int(round(env.expert_duration / env.action_period)) + 1):
                _, _, terminated, _, _ = env.step(env.expert_action())
                success = success or terminated
            wins += success
        rates[family] = wins / episodes
    env.close()
    return rates


def step_speed(image_size: tuple[int, int], steps: int) -> dict[str, float]:
    env = TabletopEnv(image_size=image_size)
    env.reset(seed=1)
    env.step(env.expert_action())  # create the GL context outside the timing
    done, elapsed, seed = 0, 0.0, 1
    while done < steps:
        action = env.expert_action()
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        elapsed += time.perf_counter() - t0
        done += 1
        if terminated or truncated or env.elapsed >= env.expert_duration:
            seed += 1
            env.reset(seed=seed)
    import mujoco  # after vla_ros.sim, which selects the EGL backend before mujoco loads

    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        mujoco.mj_step(env.model, env.data)
    physics = n / (time.perf_counter() - t0)
    frames = 200
    t0 = time.perf_counter()
    for i in range(frames):
        env._render_camera(env.cameras[i % len(env.cameras)])
    render_ms = 1000 * (time.perf_counter() - t0) / frames
    env.close()
    return {"steps_per_s": steps / elapsed, "physics_steps_per_s": physics, "render_ms_per_frame": render_ms}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla_ros.bench sim", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 episodes per family and 300 steps")
    p.add_argument("--episodes", type=int, help="expert episodes per family (default 50, quick 10)")
    p.add_argument("--steps", type=int, help="env steps to time (default 1000, quick 300)")
    p.add_argument("--image-size", type=parse_image_size, default=(64, 64), metavar="HxW")
    args = p.parse_args(argv)
    episodes = args.episodes or (10 if args.quick else 50)
    steps = args.steps or (300 if args.quick else 1000)
    speed = step_speed(args.image_size, steps)
    h, w = args.image_size
    print(f"env step (0.1 s action period + scene and wrist renders at {h}x{w}): "
          f"{speed['steps_per_s']:.0f} steps/s")
    print(f"physics: {speed['physics_steps_per_s']:.0f} mj_step/s (200 Hz timestep); "
          f"render: {speed['render_ms_per_frame']:.2f} ms per camera frame")
    rates = expert_success(episodes)
    for family, rate in rates.items():
        print(f"expert success, {family}: {rate:.1%} over {episodes} seeded episodes")
    overall = float(np.mean(list(rates.values())))
    print(json.dumps({
        "steps_per_s": round(speed["steps_per_s"], 1),
        "physics_steps_per_s": round(speed["physics_steps_per_s"], 0),
        "render_ms_per_frame": round(speed["render_ms_per_frame"], 3),
        "image_size": [h, w],
        "expert_success": overall,
        "expert_success_by_family": rates,
        "episodes_per_family": episodes,
        "step": "one env.step = 0.1 s action period (20 physics steps at 200 Hz) + 2 camera renders",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
