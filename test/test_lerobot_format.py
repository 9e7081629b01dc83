"""LeRobotDataset v3 export and import (vla_ros/data/lerobot.py, `vla_ros dataset`): the layout
and metadata lerobot expects, a lossless round trip, strict errors, training from the format.
test_lerobot_compat.py checks the same files with lerobot's own reader."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from model_fixtures import NAMES, synthetic_episodes, write_synthetic_dataset

from vla_ros.data.convert import main as dataset_main
from vla_ros.data.dataset import DatasetError, Episode, load_dataset
from vla_ros.data.lerobot import (
    INFO_PATH,
    load_lerobot_dataset,
    save_lerobot_dataset,
)

torch.set_num_threads(1)


def varied_episodes(n: int = 3, seed: int = 0) -> list[Episode]:
    """Episodes whose frames all differ (a moving square on noise), of different lengths, with
    two sharing an instruction, one failed."""
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        T = 7 + 3 * i
        images = {}
        for c in ("scene", "wrist"):
            frames = rng.integers(0, 256, (T, 24, 32, 3), dtype=np.uint8)
            for t in range(T):
                frames[t, 4:10, 2 + 2 * t:8 + 2 * t] = (250, 20, 20)
            images[c] = frames
        episodes.append(Episode(images=images, state=rng.normal(size=(T, 6)).astype(np.float32),
                                action=rng.normal(size=(T, 6)).astype(np.float32),
                                timestamp=np.arange(T) * 0.1,
                                instruction="pick up the red cube" if i != 1 else "put the cube in the bowl",
                                task={"family": "pick", "seed": i, "objects": [{"xy": [0.1, -0.2]}]},
                                success=i != 2))
    return episodes


def assert_same_episodes(ours: list[Episode], back: list[Episode]) -> None:
    assert len(ours) == len(back)
    for a, b in zip(ours, back, strict=True):
        assert sorted(a.images) == sorted(b.images)
        for c in a.images:
            assert b.images[c].dtype == np.uint8 and np.array_equal(a.images[c], b.images[c]), c
        assert np.array_equal(a.state, b.state) and np.array_equal(a.action, b.action)
        assert b.timestamp.dtype == np.float64
        np.testing.assert_allclose(b.timestamp, a.timestamp, rtol=0, atol=1e-12)
        assert (a.instruction, a.task, a.success) == (b.instruction, b.task, b.success)


def test_round_trip_keeps_every_frame_and_field(tmp_path):
    episodes = varied_episodes()
    save_lerobot_dataset(tmp_path / "lr", episodes, 10.0, NAMES, NAMES)
    meta, back = load_lerobot_dataset(tmp_path / "lr")
    assert_same_episodes(episodes, back)
    assert meta["cameras"] == ["scene", "wrist"] and meta["image_size"] == [24, 32]
    assert meta["state_names"] == meta["action_names"] == NAMES and meta["fps"] == 10
    assert meta["episodes"] == 3 and meta["frames"] == 7 + 10 + 13 and meta["ignored_features"] == []


def test_layout_and_metadata_are_lerobots(tmp_path):
    episodes = varied_episodes()
    root = save_lerobot_dataset(tmp_path / "lr", episodes, 10.0, NAMES, NAMES, robot_type="so100_sim")
    info = json.loads((root / INFO_PATH).read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["robot_type"] == "so100_sim"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 30, 2)
    features = info["features"]
    assert set(features) == {"observation.images.scene", "observation.images.wrist", "observation.state",
                             "action", "timestamp", "frame_index", "episode_index", "index", "task_index"}
    assert features["observation.state"] == {"dtype": "float32", "shape": [6], "names": NAMES}
    video = features["observation.images.wrist"]
    assert video["dtype"] == "video" and video["shape"] == [24, 32, 3]
    assert video["info"]["video.codec"] == "h264" and video["info"]["video.fps"] == 10
    for path in ("meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                 "data/chunk-000/file-000.parquet", "videos/observation.images.scene/chunk-000/file-000.mp4"):
        assert (root / path).is_file(), path

    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    state_type = data.schema.field("observation.state").type  # datasets' List(float32, length=6)
    assert pa.types.is_fixed_size_list(state_type) and state_type.list_size == 6
    assert state_type.value_type == pa.float32()
    assert data.schema.field("timestamp").type == "float"  # float32, as lerobot's DEFAULT_FEATURES
    assert data["index"].to_pylist() == list(range(30))
    assert data["episode_index"].to_pylist() == [0] * 7 + [1] * 10 + [2] * 13
    assert data["frame_index"].to_pylist()[7:10] == [0, 1, 2]
    assert data["task_index"].to_pylist() == [0] * 7 + [1] * 10 + [0] * 13  # tasks deduplicated
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks["task"].to_pylist() == ["pick up the red cube", "put the cube in the bowl"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]

    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(r["dataset_from_index"], r["dataset_to_index"], r["length"]) for r in rows] == \
        [(0, 7, 7), (7, 17, 10), (17, 30, 13)]
    assert rows[1]["videos/observation.images.scene/from_timestamp"] == pytest.approx(0.7)
    assert rows[2]["videos/observation.images.scene/to_timestamp"] == pytest.approx(3.0)
    assert rows[1]["tasks"] == ["put the cube in the bowl"]

    stats = json.loads((root / "meta/stats.json").read_text())
    all_state = np.concatenate([e.state for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], all_state.mean(0), atol=1e-9)
    np.testing.assert_allclose(stats["observation.state"]["std"], all_state.std(0), atol=1e-9)
    assert stats["observation.state"]["count"] == [30]
    pixels = np.concatenate([e.images["scene"] for e in episodes]).reshape(-1, 3) / 255.0
    assert np.asarray(stats["observation.images.scene"]["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(np.asarray(stats["observation.images.scene"]["max"]).ravel(), pixels.max(0))
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


def test_small_file_limits_split_data_and_video_files_and_read_back(tmp_path):
    episodes = varied_episodes(4)
    root = save_lerobot_dataset(tmp_path / "lr", episodes, 10.0, NAMES, NAMES,
                                data_file_mb=1e-6, video_file_mb=1e-6)  # a file per episode
    assert len(list((root / "data/chunk-000").glob("*.parquet"))) == 4
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["videos/observation.images.wrist/file_index"] for r in rows] == [0, 1, 2, 3]
    assert all(r["videos/observation.images.wrist/from_timestamp"] == 0.0 for r in rows)
    _, back = load_lerobot_dataset(root)
    assert_same_episodes(episodes, back)


def test_av1_video_is_lerobots_default_and_lossy_within_a_bound(tmp_path):
    """--video av1 (SVT-AV1, crf 30, yuv420p) loses detail: the bound, not equality, is asserted.
    Frames are smooth (a gradient and a moving square) as renders are; noise would score far lower."""
    T, h, w = 12, 64, 64
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    frames = np.repeat(base[None], T, 0)
    for t in range(T):
        frames[t, 20:32, 4 + 3 * t:16 + 3 * t] = (240, 240, 30)
    episode = Episode(images={"scene": frames}, state=np.zeros((T, 6), np.float32),
                      action=np.zeros((T, 6), np.float32), timestamp=np.arange(T) / 10, instruction="x")
    save_lerobot_dataset(tmp_path / "lr", [episode], 10, NAMES, NAMES, video="av1")
    _, (back,) = load_lerobot_dataset(tmp_path / "lr")
    mse = np.mean((back.images["scene"].astype(np.float64) - frames) ** 2)
    psnr = 10 * np.log10(255**2 / mse)
    assert 30.0 < psnr < 80.0  # lossy (not identical) but close


def test_load_dataset_and_the_trainer_read_a_lerobot_directory(tmp_path):
    from vla_ros.models.train import main as train_main

    npz = write_synthetic_dataset(tmp_path / "npz", n=6)
    assert dataset_main(["export", "--format", "lerobot", str(npz), "--out", str(tmp_path / "lr")]) == 0
    meta, episodes = load_dataset(tmp_path / "lr")
    _, originals = load_dataset(npz)
    assert_same_episodes(originals, episodes)
    assert meta["cameras"] == ["scene", "wrist"] and meta["fps"] == 10
    out = tmp_path / "ckpt"
    assert train_main(["--data", str(tmp_path / "lr"), "--out", str(out), "--steps", "2", "--batch-size", "4",
                       "--val-every", "2", "--warmup", "1", "--threads", "1", "--quiet",
                       "--set", "image_size=32", "pooled_grid=2", "lm_layers=2", "vision_layers=1",
                       "chunk_size=4"]) == 0
    training = json.loads((out / "training.json").read_text())
    assert training["step"] == 2 and training["dataset"]["episodes"] == 6
    assert np.isfinite(training["history"][-1]["train_loss"])


def test_cli_export_then_import_gives_back_the_npz_dataset(tmp_path, capsys):
    src = write_synthetic_dataset(tmp_path / "npz", n=3)
    assert dataset_main(["export", "--format", "lerobot", str(src), "--out", str(tmp_path / "lr")]) == 0
    assert "wrote 3 episodes, 36 frames as LeRobotDataset v3.0" in capsys.readouterr().out
    assert dataset_main(["import", str(tmp_path / "lr"), "--out", str(tmp_path / "back")]) == 0
    meta, back = load_dataset(tmp_path / "back")
    original_meta, original = load_dataset(src)
    assert_same_episodes(original, back)
    assert {k: meta[k] for k in original_meta} == original_meta
    # an existing dataset is kept unless --overwrite
    assert dataset_main(["export", "--format", "lerobot", str(src), "--out", str(tmp_path / "lr")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert dataset_main(["export", "--format", "lerobot", str(src), "--out", str(tmp_path / "lr"),
                         "--overwrite", "--video", "av1"]) == 0


def test_cli_export_of_the_first_episodes_only(tmp_path, capsys):
    src = write_synthetic_dataset(tmp_path / "npz", n=3)
    assert dataset_main(["export", "--format", "lerobot", str(src), "--out", str(tmp_path / "lr"),
                         "--episodes", "2"]) == 0
    _, back = load_dataset(tmp_path / "lr")
    _, original = load_dataset(src)
    assert_same_episodes(original[:2], back)
    assert dataset_main(["export", "--format", "lerobot", str(src), "--out", str(tmp_path / "lr4"),
                         "--episodes", "4"]) == 2
    assert "--episodes 4: " in capsys.readouterr().err


def test_export_refuses_what_lerobot_cannot_hold(tmp_path):
    episodes = synthetic_episodes(2)
    with pytest.raises(DatasetError, match=r"fps 12\.5 is not a positive integer"):
        save_lerobot_dataset(tmp_path / "a", episodes, 12.5, NAMES, NAMES)
    episodes[1].timestamp = episodes[1].timestamp.copy()
    episodes[1].timestamp[5:] += 0.05  # a late frame: LeRobot frames are at k / fps exactly
    with pytest.raises(DatasetError, match=r"episode 1: frame 5 is at 0\.550000 s, not 0\.500000 s"):
        save_lerobot_dataset(tmp_path / "b", episodes, 10, NAMES, NAMES)
    assert not (tmp_path / "b" / "meta").exists() and not (tmp_path / "b" / "data").exists()
    episodes = synthetic_episodes(2)
    episodes[1].images.pop("wrist")
    with pytest.raises(DatasetError, match=r"episode 1: cameras \['scene'\], expected \['scene', 'wrist'\]"):
        save_lerobot_dataset(tmp_path / "c", episodes, 10, NAMES, NAMES)


def test_import_names_what_is_wrong(tmp_path):
    root = save_lerobot_dataset(tmp_path / "lr", varied_episodes(2), 10, NAMES, NAMES)
    info_path = root / INFO_PATH
    info = json.loads(info_path.read_text())

    info_path.write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match=r"info\.json: codebase_version is 'v2\.1'; only v3\.x"):
        load_lerobot_dataset(root)
    features = {k: v for k, v in info["features"].items() if k != "observation.state"}
    info_path.write_text(json.dumps({**info, "features": features}))
    with pytest.raises(DatasetError, match=r"features has no 'observation\.state'"):
        load_lerobot_dataset(root)
    extra = {**info["features"], "next.reward": {"dtype": "float32", "shape": [1], "names": None}}
    info_path.write_text(json.dumps({**info, "features": extra}))
    meta, _ = load_lerobot_dataset(root)
    assert meta["ignored_features"] == ["next.reward"]  # reported, not silently dropped
    info_path.write_text(json.dumps(info))
    video = root / "videos/observation.images.wrist/chunk-000/file-000.mp4"
    video.unlink()
    with pytest.raises(DatasetError, match=r"file-000\.mp4: video file missing"):
        load_lerobot_dataset(root)
    with pytest.raises(DatasetError, match=r"meta/info\.json: missing; not a LeRobot v3"):
        load_lerobot_dataset(tmp_path)
