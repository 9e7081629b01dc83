"""`vla_ros dataset`: convert demonstrations between the vla_ros episode format and LeRobotDataset v3.

    vla_ros dataset export --format lerobot DEMOS_DIR --out DIR [--video lossless|av1]
                           [--robot-type NAME] [--episodes N] [--overwrite]
    vla_ros dataset import LEROBOT_DIR --out DIR [--overwrite]

DEMOS_DIR is what `vla_ros sim-collect --out` writes; `vla_ros train --data` reads either
format directly, so import is only needed to get npz files. docs/DATASET.md has the mapping.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from vla_ros.data.dataset import DatasetError, action_offset_steps, load_episode, load_meta, save_dataset


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export(args: argparse.Namespace) -> int:
    from vla_ros.data.lerobot import VIDEO_CODECS, LeRobotWriter

    if args.video not in VIDEO_CODECS:
        raise DatasetError(f"--video {args.video!r}: expected one of {sorted(VIDEO_CODECS)}")
    meta = load_meta(args.source)
    files = sorted(Path(args.source).glob("episode_*.npz"))
    if len(files) != meta["episodes"]:
        raise DatasetError(f"{args.source}: meta.json says {meta['episodes']} episodes, "
                           f"found {len(files)} files")
    if args.episodes is not None:
        if not 0 < args.episodes <= len(files):
            raise DatasetError(f"--episodes {args.episodes}: {args.source} has {len(files)} episodes")
        files = files[:args.episodes]
    with LeRobotWriter(args.out, meta["fps"], meta["cameras"], tuple(meta["image_size"]), meta["state_names"],
                       meta["action_names"], video=args.video, robot_type=args.robot_type,
                       overwrite=args.overwrite) as writer:
        for path in tqdm(files, desc="export", unit="ep"):
            writer.add(load_episode(path, meta["cameras"]))
    print(f"wrote {len(files)} episodes, {writer.frames} frames as LeRobotDataset v3.0 to {args.out} "
          f"({directory_size(Path(args.out)) / 1e6:.1f} MB, video {args.video})")
    offset = action_offset_steps(meta)
    if offset:  # LeRobot reads an action as the command sent at its frame
        print(f"export: these actions are due {offset} frame(s) after their frame (action_offset_steps "
              f"{offset}); LeRobotDataset has no field for that: a policy trained on the export will "
              f"time them at their frame", file=sys.stderr)
    return 0


def import_(args: argparse.Namespace) -> int:
    from vla_ros.data.lerobot import read_lerobot_episodes

    meta, stream = read_lerobot_episodes(args.source)
    if meta["ignored_features"]:
        print("import: features with no place in a vla_ros episode, not imported: "
              f"{meta['ignored_features']}", file=sys.stderr)
    episodes = list(tqdm(stream, total=meta["episodes"], desc="import", unit="ep"))
    # LeRobotDataset has no field for it: its convention is the command sent at the frame (0)
    save_dataset(args.out, episodes, fps=float(meta["fps"]), state_names=meta["state_names"],
                 action_names=meta["action_names"], overwrite=args.overwrite, action_offset_steps=0)
    print(f"wrote {len(episodes)} episodes, {sum(len(e) for e in episodes)} frames to {args.out} "
          f"({directory_size(Path(args.out)) / 1e6:.1f} MB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla_ros dataset", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="vla_ros episodes -> LeRobotDataset v3")
    e.add_argument("--format", choices=["lerobot"], required=True, help="target format")
    e.add_argument("source", type=Path, help="vla_ros dataset directory (sim-collect --out)")
    e.add_argument("--video", default="lossless",
                   help="lossless (H.264 RGB, qp 0: identical frames; default) "
                        "or av1 (LeRobot's default, lossy)")
    e.add_argument("--robot-type", default=None, help="info.json robot_type (default null)")
    e.add_argument("--episodes", type=int, default=None,
                   help="export only the first N episodes (default all)")
    e.set_defaults(run=export)
    i = sub.add_parser("import", help="LeRobotDataset v3 -> vla_ros episodes")
    i.add_argument("source", type=Path, help="LeRobotDataset v3 directory (with meta/info.json)")
    i.set_defaults(run=import_)
    for s in (e, i):
        s.add_argument("--out", type=Path, required=True, help="directory to write")
        s.add_argument("--overwrite", action="store_true", help="replace an existing dataset there")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (DatasetError, FileExistsError) as exc:
        print(f"vla_ros dataset {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
