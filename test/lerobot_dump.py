"""Run inside .venv-lerobot (lerobot's own pins), not by pytest: read a dataset with lerobot's
LeRobotDataset, offline, and dump every frame to an npz that test_lerobot_compat.py compares
with what vla_ros wrote.

    .venv-lerobot/bin/python test/lerobot_dump.py DATASET_DIR OUT.npz [pyav|torchcodec]
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402


def main(root: str, out: str, backend: str) -> None:
    dataset = LeRobotDataset(repo_id="local/vla_ros_export", root=root, video_backend=backend,
                             return_uint8=True)
    meta = dataset.meta
    camera_keys = list(meta.camera_keys)
    columns: dict[str, list] = {k: [] for k in [*camera_keys, "observation.state", "action", "timestamp",
                                                "frame_index", "episode_index", "index", "task_index"]}
    tasks = []
    for i in range(len(dataset)):
        item = dataset[i]
        for key in columns:
            value = item[key].numpy()
            if key in camera_keys:  # lerobot returns (C, H, W)
                value = value.transpose(1, 2, 0)
            columns[key].append(value)
        tasks.append(item["task"])
    arrays = {f"col:{k}": np.stack(v) for k, v in columns.items()}
    info = {"fps": meta.fps, "total_episodes": meta.total_episodes, "total_frames": meta.total_frames,
            "names": {k: meta.features[k]["names"] for k in ("observation.state", "action")},
            "camera_keys": camera_keys, "stats_keys": sorted(meta.stats),
            "episode_lengths": [int(x) for x in meta.episodes["length"]],
            "backend": dataset._video_backend, "lerobot": __import__("lerobot").__version__}
    np.savez(out, tasks=np.array(tasks), info=np.array(json.dumps(info)), **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "pyav")
