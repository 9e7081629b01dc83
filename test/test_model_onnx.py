"""ONNX export (models/onnx_export.py) and the onnxruntime backend (models/onnx_policy.py) on tiny
random-init models: parity with torch, the instruction cache kept across steps, strict loading."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime  # noqa: F401 - the extra `deploy` (in `all`): a missing one fails, not skips
import onnxscript  # noqa: F401
import pytest
import torch

from vla_ros.core.policy import Observation
from vla_ros.models.checkpoint import (
    CheckpointError,
    RobotMeta,
    load_checkpoint,
    new_checkpoint,
    save_checkpoint,
)
from vla_ros.models.normalization import Normalizer
from vla_ros.models.onnx_export import export_checkpoint
from vla_ros.models.onnx_policy import OnnxModel, OnnxPrefix
from vla_ros.models.parity import pcc
from vla_ros.models.policy import load_policy
from vla_ros.models.vla import Guide, make_config, rtc_weights

torch.set_num_threads(1)
NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


@pytest.fixture(scope="module", params=["regression", "flow"])
def exported(tmp_path_factory, request):
    """(source checkpoint, its ONNX export) for each head."""
    torch.manual_seed(0)
    cfg = make_config("tiny", head=request.param, image_size=32, pooled_grid=2, lm_layers=2, flow_steps=3)
    ckpt = new_checkpoint(cfg, Normalizer.identity(6, 6), RobotMeta(NAMES, NAMES, ["scene", "wrist"], 0.1))
    source = save_checkpoint(tmp_path_factory.mktemp("ckpt"), ckpt)
    return source, export_checkpoint(load_checkpoint(source), tmp_path_factory.mktemp("onnx"))


def observation(seed: int, size: int = 32) -> Observation:
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for cam in ("scene", "wrist")}
    return Observation(0.0, images, rng.normal(size=6).astype(np.float32))


def test_export_matches_torch(exported):
    source, onnx_dir = exported
    ref, ort = load_policy(source, rtc="off"), load_policy(onnx_dir, rtc="off")
    assert isinstance(ort.model, OnnxModel) and ort.spec == ref.spec
    for text in ("pick up the red cube", "put the blue ball in the green bowl and then wave twice"):
        ctx_ref, ctx_ort = ref.encode_instruction(text), ort.encode_instruction(text)
        assert isinstance(ctx_ort.cache, OnnxPrefix) and ctx_ort.num_tokens == ctx_ref.num_tokens
        for seed in range(3):
            images, state = ref.preprocess(observation(seed))
            noise = torch.randn(1, 10, 6, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                a = ref.model.predict(ctx_ref.cache, images, state, noise)[0].numpy()
            b = ort.model.predict(ctx_ort.cache, images, state, noise)[0].numpy()
            assert pcc(a, b) >= 0.9999
            assert np.abs(a - b).max() < 1e-4


def test_instruction_cache_is_kept_across_steps(exported):
    """Steps over one encoded instruction give what a freshly encoded one gives, and leave it as is."""
    _, onnx_dir = exported
    ort = load_policy(onnx_dir, rtc="off")
    model = ort.model
    ids_text = "stack the yellow block"
    shared = ort.encode_instruction(ids_text).cache
    keys, values = shared.keys.copy(), shared.values.copy()
    for seed in (1, 2):
        images, state = ort.preprocess(observation(seed))
        noise = torch.randn(1, 10, 6, generator=torch.Generator().manual_seed(seed))
        fresh = OnnxPrefix(shared.keys.copy(), shared.values.copy(), shared.mask.copy())
        ort._contexts.clear()
        recomputed = ort.encode_instruction(ids_text).cache
        a = model.predict(shared, images, state, noise)[0].numpy()
        b = model.predict(recomputed, images, state, noise)[0].numpy()
        c = model.predict(fresh, images, state, noise)[0].numpy()
        np.testing.assert_array_equal(a, c)
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_array_equal(shared.keys, keys)
    np.testing.assert_array_equal(shared.values, values)


def test_predict_chunk_through_the_policy(exported):
    """The onnxruntime policy is a Policy: unnormalised finite chunks of the spec's shape."""
    source, onnx_dir = exported
    ref, ort = load_policy(source, rtc="off", seed=3), load_policy(onnx_dir, rtc="off", seed=3)
    obs = observation(5)
    a = ref.predict_chunk(obs, ref.encode_instruction("open the drawer")).actions
    b = ort.predict_chunk(obs, ort.encode_instruction("open the drawer")).actions
    assert b.shape == (ort.spec.chunk_size, ort.spec.action_dim) and np.all(np.isfinite(b))
    assert np.abs(a - b).max() < 1e-4  # same seed: same flow noise


def test_cheap_real_time_chunking_matches_torch(exported):
    source, onnx_dir = exported
    ref, ort = load_policy(source, rtc="cheap"), load_policy(onnx_dir, rtc="cheap")
    if ref.model.config.head != "flow":
        pytest.skip("real-time chunking guides the flow head only")
    text = "pick up the red cube"
    ctx_ref, ctx_ort = ref.encode_instruction(text), ort.encode_instruction(text)
    images, state = ref.preprocess(observation(7))
    noise = torch.randn(1, 10, 6, generator=torch.Generator().manual_seed(7))
    guide = Guide(target=torch.randn(1, 10, 6, generator=torch.Generator().manual_seed(8)),
                  weights=rtc_weights(10, 2, 6), exact=False)
    with torch.no_grad():
        a = ref.model.predict(ctx_ref.cache, images, state, noise, guide)[0].numpy()
        unguided = ref.model.predict(ctx_ref.cache, images, state, noise)[0].numpy()
    b = ort.model.predict(ctx_ort.cache, images, state, noise, guide)[0].numpy()
    assert np.abs(a - unguided).max() > 1e-3  # the guidance changed the chunk
    assert np.abs(a - b).max() < 1e-4


def test_exact_real_time_chunking_and_other_dtypes_are_refused(exported):
    _, onnx_dir = exported
    with pytest.raises(ValueError, match="'exact' needs torch"):
        load_policy(onnx_dir, rtc="exact")
    with pytest.raises(ValueError, match="float32"):
        load_policy(onnx_dir, dtype="bfloat16")


@pytest.mark.parametrize("name", ["stats.json", "tokenizer.json", "config.json", "prefix.onnx"])
def test_loading_is_strict(exported, tmp_path, name):
    _, onnx_dir = exported
    broken = shutil.copytree(onnx_dir, tmp_path / "broken")
    (broken / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.") + ": missing"):
        load_policy(broken)


def test_a_corrupt_graph_is_named(exported, tmp_path):
    _, onnx_dir = exported
    broken = shutil.copytree(onnx_dir, tmp_path / "broken")
    (broken / "prefix.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match=r"prefix\.onnx: onnxruntime cannot load it"):
        load_policy(broken)


def test_the_node_worker_process_serves_an_export(exported):
    """vla_node's default (policy_process: child) builds the policy with load_policy from its
    parameters; an exported checkpoint_dir gives the onnxruntime backend there."""
    from vla_ros.core.policy_process import ChildProcessPolicy

    source, onnx_dir = exported
    options = {"checkpoint_dir": str(onnx_dir), "device": "cpu", "dtype": "float32", "threads": 1,
               "rtc": "off", "rtc_max_guidance": 5.0}
    child = ChildProcessPolicy("vla_ros.models.policy:load_policy", options, call_timeout_s=60.0)
    try:
        ref = load_policy(source, rtc="off")
        assert child.spec == ref.spec
        obs = observation(9)
        got = child.predict_chunk(obs, child.encode_instruction("pick up the red cube")).actions
        want = ref.predict_chunk(obs, ref.encode_instruction("pick up the red cube")).actions
        assert np.abs(got - want).max() < 1e-4  # seed 0 on both sides: the same flow noise
    finally:
        child.close()
