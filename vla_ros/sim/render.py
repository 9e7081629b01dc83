"""`vla_ros sim-render`: look at the simulation. Runs the scripted expert for one episode and
writes OUT/episode.mp4 (or .gif) and OUT/views.png, the first frame's scene and wrist images
side by side with the instruction above them.

Images are rendered at ``--image-size`` (the model's resolution, default 64x64) and enlarged
with nearest-neighbour to ``--scale`` times, so what you see is what the model sees.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np

from vla_ros.sim.collect import build_parser, make_env


def side_by_side(images: dict[str, np.ndarray], cameras: list[str], scale: int,
                 caption: str = "") -> np.ndarray:
    """Cameras left to right, enlarged ``scale`` times, under a caption bar."""
    row = np.concatenate([images[c] for c in cameras], axis=1)
    row = np.repeat(np.repeat(row, scale, axis=0), scale, axis=1)
    bar = np.full((28, row.shape[1], 3), 255, np.uint8)
    if caption:
        cv2.putText(bar, caption, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.ascontiguousarray(np.concatenate([bar, row], axis=0))


def main(argv: list[str] | None = None) -> int:
    p = build_parser("vla_ros sim-render", __doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/sim_render"), help="output directory")
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour enlargement (default 4)")
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4", help="video format")
    args = p.parse_args(argv)
    if args.scale < 1:
        p.error("--scale must be >= 1")
    try:
        env = make_env(args)
        obs, info = env.reset(seed=args.seed, task=None if args.task == "all" else args.task,
                              colour=args.colour, shape=args.shape)
    except ValueError as exc:
        print(f"sim-render: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    caption = info["instruction"]
    imageio.imwrite(args.out / "views.png", side_by_side(obs["images"], env.cameras, args.scale, caption))
    frames = [side_by_side(obs["images"], env.cameras, args.scale, caption)]
    steps = int(round(env.expert_duration / env.action_period)) + 1
    for _ in range(steps):
        obs, _, _, _, info = env.step(env.expert_action())
        status = "success" if info["success"] else ""
        frames.append(side_by_side(obs["images"], env.cameras, args.scale, f"{caption}  {status}"))
    env.close()
    fps = round(1.0 / env.action_period)
    video = args.out / f"episode.{args.format}"
    if args.format == "mp4":
        imageio.mimwrite(video, frames, fps=fps, macro_block_size=1)
    else:
        imageio.mimwrite(video, frames, duration=1000 * env.action_period, loop=0)
    print(f"{caption!r}: success={env.success()}; wrote {video} ({len(frames)} frames) and "
          f"{args.out / 'views.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
