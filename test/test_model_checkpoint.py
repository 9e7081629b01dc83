"""Checkpoint directories: save/load round trip and clear errors naming the bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_ros.core.policy import Observation
from vla_ros.models.checkpoint import (
    CheckpointError,
    RobotMeta,
    load_checkpoint,
    new_checkpoint,
    save_checkpoint,
)
from vla_ros.models.normalization import Normalizer
from vla_ros.models.policy import load_policy
from vla_ros.models.vla import make_config

torch.set_num_threads(1)
NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


@pytest.fixture(params=["regression", "flow"])
def saved(tmp_path, request):
    torch.manual_seed(0)
    cfg = make_config("tiny", head=request.param, image_size=32, pooled_grid=2, lm_layers=2, flow_steps=2)
    rng = np.random.default_rng(0)
    norm = Normalizer.fit(rng.normal(size=(50, 6)), rng.normal(size=(50, 6)) * 2 + 1)
    ckpt = new_checkpoint(cfg, norm, RobotMeta(NAMES, NAMES, ["scene", "wrist"], 0.1))
    path = save_checkpoint(tmp_path / "ckpt", ckpt)
    return path, ckpt


def observation(size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in ("scene", "wrist")}
    return Observation(stamp=12.5, images=images, state=rng.normal(size=6).astype(np.float32))


def test_round_trip_gives_identical_actions(saved):
    path, ckpt = saved
    assert {p.name for p in path.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "stats.json",
    }
    loaded = load_checkpoint(path)
    pairs = zip(ckpt.model.state_dict().items(), loaded.model.state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name
    np.testing.assert_allclose(loaded.normalizer.action_std, ckpt.normalizer.action_std)
    p1, p2 = load_policy(path, seed=3), load_policy(path, seed=3)
    obs = observation()
    a1 = p1.predict_chunk(obs, p1.encode_instruction("put the red cube in the bowl"))
    a2 = p2.predict_chunk(obs, p2.encode_instruction("put the red cube in the bowl"))
    np.testing.assert_array_equal(a1.actions, a2.actions)
    assert a1.t_obs == 12.5 and a1.actions.shape == (ckpt.model.config.chunk_size, 6)


def test_bf16_load(saved):
    path, _ = saved
    policy = load_policy(path, dtype="bf16")
    assert next(policy.model.parameters()).dtype == torch.bfloat16
    chunk = policy.predict_chunk(observation(), policy.encode_instruction("pick"))
    assert np.all(np.isfinite(chunk.actions))
    with pytest.raises(ValueError, match="dtype"):
        load_policy(path, dtype="int3")


def _expect(path, match):
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_missing_files_are_named(saved):
    path, _ = saved
    _expect(path.parent / "nowhere", "does not exist")
    for name in ("model.safetensors", "tokenizer.json", "stats.json", "config.json"):
        data = (path / name).read_bytes()
        (path / name).unlink()
        _expect(path, f"{name}: missing")
        (path / name).write_bytes(data)
    load_checkpoint(path)  # intact again


def test_corrupt_files_are_named(saved):
    path, _ = saved
    (path / "model.safetensors").write_bytes(b"\x00\x01garbage")
    _expect(path, r"model.safetensors: corrupt")
    (path / "config.json").write_text("{not json")
    _expect(path, r"config.json: corrupt")


def test_mismatched_files_are_named(saved):
    path, ckpt = saved
    weights = load_file(str(path / "model.safetensors"))
    # a config that does not match the weights (wider language model)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "lm_mlp": cfg["lm_mlp"] * 2}))
    _expect(path, r"model.safetensors: does not match config.json: shape mismatch")
    (path / "config.json").write_text(json.dumps(cfg))
    # a missing tensor
    first = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != first}, str(path / "model.safetensors"))
    _expect(path, rf"missing tensors \['{first}'\]")
    save_file(weights, str(path / "model.safetensors"))
    # statistics for another robot
    stats = json.loads((path / "stats.json").read_text())
    bad = {**stats, "normalization": {**stats["normalization"], "state_mean": [0.0] * 5}}
    (path / "stats.json").write_text(json.dumps(bad))
    _expect(path, r"stats.json: .*state_dim=6")
    (path / "stats.json").write_text(json.dumps({**stats, "robot": {**stats["robot"], "cameras": ["front"]}}))
    _expect(path, r"stats.json: cameras")
    (path / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    _expect(path, r"config.json: model_type is 'bert'")
