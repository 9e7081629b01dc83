"""`vla_ros distill` (models/distill.py): the student's rollouts in the simulator, every camera frame
labelled with the teacher's chunk; training learns those chunks; pairs whose chunks cannot label each
other and exports that would drop the labels are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_ros.core.policy import Observation
from vla_ros.data import convert
from vla_ros.data.dataset import load_dataset
from vla_ros.models import distill
from vla_ros.models.checkpoint import RobotMeta, new_checkpoint, save_checkpoint
from vla_ros.models.normalization import Normalizer
from vla_ros.models.policy import load_policy
from vla_ros.models.train import build_frames
from vla_ros.models.vla import make_config

torch.set_num_threads(1)
NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
SMALL = dict(image_size=32, pooled_grid=2, lm_layers=2, vision_width=64, vision_mlp=128, vision_heads=2)


def checkpoint(directory, seed: int, chunk_size: int, lm_width: int):
    torch.manual_seed(seed)
    cfg = make_config("tiny", chunk_size=chunk_size, lm_width=lm_width, lm_mlp=2 * lm_width, **SMALL)
    return save_checkpoint(directory, new_checkpoint(cfg, Normalizer.identity(6, 6),
                                                     RobotMeta(NAMES, NAMES, ["scene", "wrist"], 0.1)))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    return checkpoint(root / "teacher", 1, 6, 96), checkpoint(root / "student", 2, 4, 64)


@pytest.fixture(scope="module")
def distilled(pair, tmp_path_factory):
    teacher, student = pair
    out = tmp_path_factory.mktemp("distilled") / "data"
    rc = distill.main(["--teacher", str(teacher), "--student", str(student), "--episodes", "2",
                       "--seed", "7", "--max-steps", "12", "--out", str(out)])
    assert rc == 0
    return out


def test_every_frame_of_the_students_rollout_carries_the_teachers_chunk(pair, distilled):
    meta, episodes = load_dataset(distilled)
    teacher = load_policy(pair[0])
    assert len(episodes) == 2 and meta["fps"] == 10.0
    for ep in episodes:
        assert ep.task["driven_by"] == "student" and ep.task["seed"] in (7, 8)
        T = len(ep)
        assert T >= 10  # 12 action periods at the 15 Hz camera rate
        assert ep.chunk.shape == (T, 6, 6)
        np.testing.assert_array_equal(ep.action, ep.chunk[:, 0])
        assert np.all(np.diff(ep.timestamp) > 0)
        context = teacher.encode_instruction(ep.instruction)
        for k in (0, T // 2, T - 1):  # the label is what the teacher predicts from the stored frame
            seen = Observation(ep.timestamp[k], {c: ep.images[c][k] for c in ep.images}, ep.state[k])
            np.testing.assert_allclose(teacher.predict_chunk(seen, context).actions, ep.chunk[k], atol=1e-5)
    # the rollouts moved the arm: later frames' states differ from the first one's
    assert max(np.abs(ep.state[-1] - ep.state[0]).max() for ep in episodes) > 1e-3


def test_training_frames_take_the_teachers_chunk_cut_to_the_students_length(distilled):
    _, episodes = load_dataset(distilled)
    norm = Normalizer.identity(6, 6)
    frames = build_frames(episodes, ["scene", "wrist"], 32, 4, norm)
    np.testing.assert_allclose(frames.chunks, np.concatenate([e.chunk[:, :4] for e in episodes]), atol=1e-6)
    with pytest.raises(SystemExit, match="teacher chunks hold 6 actions, this model predicts 8"):
        build_frames(episodes, ["scene", "wrist"], 32, 8, norm)


def test_a_teacher_with_shorter_chunks_or_another_robot_is_refused(pair, tmp_path, capsys):
    teacher, student = pair
    rc = distill.main(["--teacher", str(student), "--student", str(teacher), "--episodes", "1",
                       "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "the teacher predicts 4 actions per chunk, the student 6" in capsys.readouterr().err
    spec = load_policy(teacher).spec
    other = type(spec)(**{**spec.__dict__, "action_names": (*spec.action_names[:-1], "jaw")})
    with pytest.raises(ValueError, match="differ in action_names"):
        distill.check_pair(spec, other)
    assert not (tmp_path / "x").exists()


def test_lerobot_export_refuses_teacher_labels_it_cannot_hold(distilled, tmp_path, capsys):
    rc = convert.main(["export", "--format", "lerobot", str(distilled), "--out", str(tmp_path / "lr")])
    assert rc == 2
    assert "has teacher chunk labels" in capsys.readouterr().err
