"""`vla_ros quantize` (models/quantize.py) on a tiny random-init checkpoint: each mode's directory loads
through load_policy, predicts finite chunks close to float32's, and is loaded strictly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchao  # noqa: F401 - the extra `deploy` (in `all`): a missing one fails, not skips

from vla_ros.core.policy import Observation
from vla_ros.models import quantize
from vla_ros.models.checkpoint import CheckpointError, RobotMeta, new_checkpoint, save_checkpoint
from vla_ros.models.normalization import Normalizer
from vla_ros.models.parity import pcc
from vla_ros.models.policy import load_policy
from vla_ros.models.vla import make_config

torch.set_num_threads(1)
NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
# PCC of normalised chunks vs float32 on a random-init tiny model with its weights doubled (so that
# chunks differ between inputs); a broken mode gives ~0. (The flow head's chunks follow its noise,
# which both sides share, so there the bound is easier; it checks that every mode runs the expert.)
PCC_BOUND = {"int8-dynamic": 0.998, "int8-weight": 0.9995, "int4-weight": 0.9, "bf16": 0.9995}


@pytest.fixture(scope="module", params=["regression", "flow"])
def source(tmp_path_factory, request):
    torch.manual_seed(0)
    cfg = make_config("tiny", head=request.param, image_size=32, pooled_grid=2, lm_layers=2, lm_width=64,
                      lm_mlp=128, expert_width=64, expert_mlp=128, vision_width=64, vision_mlp=128,
                      vision_heads=2, flow_steps=3)
    ckpt = new_checkpoint(cfg, Normalizer.identity(6, 6), RobotMeta(NAMES, NAMES, ["scene", "wrist"], 0.1))
    with torch.no_grad():
        for p in ckpt.model.parameters():
            p.mul_(2.0 if p.dim() > 1 else 1.0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), ckpt)


def chunks(policy, n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    ctx = policy.encode_instruction("pick up the red cube")
    out = []
    for k in range(n):
        images = {cam: rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for cam in ("scene", "wrist")}
        obs = Observation(0.0, images, rng.normal(size=6).astype(np.float32))
        images_t, state = policy.preprocess(obs)
        noise = torch.randn(1, 10, 6, generator=torch.Generator().manual_seed(k))
        with torch.no_grad():
            out.append(policy.model.predict(ctx.cache, images_t, state, noise)[0].float().numpy())
    return out


@pytest.mark.parametrize("mode", quantize.MODES)
def test_round_trip(source, tmp_path, mode):
    out = quantize.write_quantized(source, mode, tmp_path / mode)
    assert json.loads((out / quantize.QUANT_FILE).read_text())["mode"] == mode
    fp32, quant = load_policy(source, rtc="off"), load_policy(out, rtc="off")
    assert quant.spec == fp32.spec
    assert quantize.parameter_bytes(quant.model) < 0.6 * quantize.parameter_bytes(fp32.model)
    ref, got = chunks(fp32), chunks(quant)
    assert all(np.all(np.isfinite(c)) for c in got)
    assert min(pcc(a, b) for a, b in zip(ref, got, strict=True)) >= PCC_BOUND[mode]
    assert max(np.abs(a - b).max() for a, b in zip(ref, got, strict=True)) > 0  # it really ran quantized
    blank = {c: np.zeros((32, 32, 3), np.uint8) for c in ("scene", "wrist")}
    context = quant.encode_instruction("go")
    chunk = quant.predict_chunk(Observation(0.0, blank, np.zeros(6, np.float32)), context)
    assert chunk.actions.shape == (10, 6) and np.all(np.isfinite(chunk.actions))


def test_an_unknown_mode_is_named(source, tmp_path):
    out = quantize.write_quantized(source, "bf16", tmp_path / "q")
    (out / quantize.QUANT_FILE).write_text(json.dumps({"mode": "int3"}))
    with pytest.raises(CheckpointError, match=r"quantization\.json: 'mode' is 'int3'"):
        load_policy(out)
    with pytest.raises(ValueError, match="int3"):
        quantize.write_quantized(source, "int3", tmp_path / "r")


def test_a_missing_weights_file_is_named(source, tmp_path):
    out = quantize.write_quantized(source, "int8-dynamic", tmp_path / "q")
    (out / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_policy(out)


def test_quantizing_twice_and_exact_rtc_are_refused(source, tmp_path):
    out = quantize.write_quantized(source, "int8-weight", tmp_path / "q")
    with pytest.raises(ValueError, match="already quantized"):
        quantize.write_quantized(out, "int4-weight", tmp_path / "r")
    with pytest.raises(ValueError, match="'exact' needs a backward"):
        load_policy(out, rtc="exact")
    with pytest.raises(ValueError, match="leave dtype float32"):
        load_policy(out, dtype="bfloat16")
