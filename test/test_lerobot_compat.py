"""What `vla_ros dataset export --format lerobot` writes reads back in lerobot's own
LeRobotDataset (lerobot 0.6.1, offline) with identical frames, states, actions, tasks and
timestamps. lerobot lives in .venv-lerobot (test/lerobot_venv.py: skipped without it, failed with
CI=true), where test/lerobot_dump.py runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from lerobot_venv import lerobot_python

from vla_ros.data.convert import main as dataset_main
from vla_ros.data.dataset import load_dataset
from vla_ros.data.lerobot import save_lerobot_dataset
from vla_ros.sim.collect import main as collect_main

DUMP = Path(__file__).with_name("lerobot_dump.py")


@pytest.fixture(scope="module")
def python() -> Path:
    return lerobot_python()


@pytest.fixture(scope="module")
def demos(python, tmp_path_factory):  # after the check above: no collecting for a skipped test
    out = tmp_path_factory.mktemp("lerobot") / "demos"
    assert collect_main(["--episodes", "3", "--out", str(out), "--image-size", "32x40", "--seed", "7"]) == 0
    return out


def read_with_lerobot(python: Path, root: Path, backend: str, tmp_path: Path) -> tuple[dict, dict]:
    out = tmp_path / f"dump_{backend}.npz"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": ""}
    run = subprocess.run([str(python), str(DUMP), str(root), str(out), backend], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"lerobot could not read {root}:\n{run.stderr[-4000:]}"
    with np.load(out) as z:
        return json.loads(str(z["info"])), {k: z[k] for k in z.files}


def assert_lerobot_reads(python: Path, root: Path, demos: Path, backend: str, tmp_path: Path) -> None:
    meta, episodes = load_dataset(demos)
    info, read = read_with_lerobot(python, root, backend, tmp_path)
    assert info["lerobot"] == "0.6.1" and info["backend"] == backend
    assert info["fps"] == 10 and info["total_episodes"] == 3
    assert info["total_frames"] == sum(len(e) for e in episodes)
    assert info["episode_lengths"] == [len(e) for e in episodes]
    assert info["names"]["observation.state"] == meta["state_names"]
    assert info["names"]["action"] == meta["action_names"]
    for camera in meta["cameras"]:
        frames = read[f"col:observation.images.{camera}"]
        assert frames.dtype == np.uint8
        assert np.array_equal(frames, np.concatenate([e.images[camera] for e in episodes])), camera
    assert np.array_equal(read["col:observation.state"], np.concatenate([e.state for e in episodes]))
    assert np.array_equal(read["col:action"], np.concatenate([e.action for e in episodes]))
    assert read["tasks"].tolist() == [e.instruction for e in episodes for _ in range(len(e))]
    # lerobot stores float32 timestamps; they are the recorded ones (0.1 s apart) at that precision
    timestamps = np.concatenate([e.timestamp for e in episodes]).astype(np.float32)
    assert np.array_equal(read["col:timestamp"], timestamps)
    assert read["col:episode_index"].tolist() == [i for i, e in enumerate(episodes) for _ in range(len(e))]
    assert read["col:frame_index"].tolist() == [k for e in episodes for k in range(len(e))]
    assert set(info["stats_keys"]) >= {"observation.state", "action", "observation.images.scene"}


def test_lerobot_reads_the_cli_export(python, demos, tmp_path):
    """With PyAV, lerobot's decoder wherever torchcodec finds no system FFmpeg (as here and in CI;
    the torchcodec path is not exercised on this machine)."""
    root = tmp_path / "lerobot"
    assert dataset_main(["export", "--format", "lerobot", str(demos), "--out", str(root)]) == 0
    assert_lerobot_reads(python, root, demos, "pyav", tmp_path)


def test_lerobot_reads_an_export_split_over_several_files(python, demos, tmp_path):
    """A file per episode: lerobot must follow each episode's data and video file indices."""
    meta, episodes = load_dataset(demos)
    root = save_lerobot_dataset(tmp_path / "lerobot", episodes, meta["fps"], meta["state_names"],
                                meta["action_names"], data_file_mb=1e-6, video_file_mb=1e-6)
    assert len(list((root / "videos/observation.images.scene/chunk-000").iterdir())) == 3
    assert_lerobot_reads(python, root, demos, "pyav", tmp_path)
