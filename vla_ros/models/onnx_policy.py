"""An exported checkpoint (models/onnx_export.py) served by onnxruntime: the same ``VLAPolicy``
(preprocessing, normalisation, the instruction LRU) over ``OnnxModel``, a stand-in for ``VLAModel``
with its inference methods (``encode_instruction``, ``predict``) run as ONNX graphs.

The instruction's keys/values (``OnnxPrefix``) are computed once per goal by ``prefix.onnx`` and
passed to every step as explicit input tensors: the KV cache is kept across steps, as with torch.
The flow head's Euler loop runs here: ``observe.onnx`` once per step, then ``velocity.onnx`` per
Euler step over the concatenated [instruction, observation] keys/values. Real-time chunking's
``cheap`` guidance (no Jacobian) works; ``exact`` needs torch's backward pass and is refused.

    load_policy("out/onnx/tiny")   # recognised by its onnx.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_ros.models.checkpoint import Checkpoint, CheckpointError, load_assets
from vla_ros.models.onnx_export import GRAPHS, INPUT_NAMES, MANIFEST_FILE, OUTPUT_NAMES
from vla_ros.models.vla import Guide, VLAConfig, VLAModel, guidance_scale


@dataclass
class OnnxPrefix:
    """The instruction's keys/values [layers, 1, kv_heads, L, head_dim] and its mask [1, L]."""

    keys: np.ndarray
    values: np.ndarray
    mask: np.ndarray  # int64

    @property
    def length(self) -> int:
        return self.mask.shape[1]


class OnnxModel:
    """The inference side of ``VLAModel`` over onnxruntime sessions (one per graph)."""

    def __init__(self, config: VLAConfig, sessions: dict[str, Any]):
        self.config, self.sessions = config, sessions

    _noise = VLAModel._noise  # the same noise shapes and generator use as the torch model

    def _run(self, name: str, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.sessions[name].run(OUTPUT_NAMES[name], dict(zip(INPUT_NAMES[name], inputs, strict=True)))

    def encode_instruction(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> OnnxPrefix:
        ids, mask = input_ids.cpu().numpy().astype(np.int64), attention_mask.cpu().numpy().astype(np.int64)
        keys, values = self._run("prefix", ids, mask)
        return OnnxPrefix(keys, values, mask)

    def predict(self, prefix: OnnxPrefix, images: torch.Tensor, state: torch.Tensor,
                noise: torch.Tensor | None = None, guide: Guide | None = None) -> torch.Tensor:
        """One control step over the cached instruction -> normalised actions [1, H, A]."""
        if not isinstance(prefix, OnnxPrefix):
            raise ValueError("prefix was not made by this model's encode_instruction")
        obs = (images.cpu().numpy().astype(np.float32), state.cpu().numpy().astype(np.float32))
        if self.config.head == "regression":
            (actions,) = self._run("step", *obs, prefix.keys, prefix.values, prefix.mask)
            return torch.from_numpy(actions)
        obs_keys, obs_values = self._run("observe", *obs, prefix.keys, prefix.values, prefix.mask)
        keys = np.concatenate([prefix.keys, obs_keys], axis=3)
        values = np.concatenate([prefix.values, obs_values], axis=3)
        mask = np.concatenate([prefix.mask, np.ones((1, obs_keys.shape[3]), np.int64)], axis=1)
        noise = self._noise(1, torch.device("cpu")) if noise is None else noise
        x, steps = noise.cpu().numpy().astype(np.float32), self.config.flow_steps
        target = weights = None
        if guide is not None:
            if guide.exact or guide.given is not None:
                raise ValueError("exact and prefix real-time chunking need torch (a backward pass, or "
                                 "per-action flow times); the onnxruntime backend supports rtc 'cheap' or "
                                 "'off'")
            target = guide.target.cpu().numpy()
            weights = guide.weights.cpu().numpy()[None, :, None]
        for k in range(steps):
            t = 1.0 - k / steps
            (v,) = self._run("velocity", x, np.full((1,), t, np.float32), keys, values, mask)
            if guide is not None:  # vla.py _guided_velocity, identity Jacobian
                v = v - guidance_scale(t, guide.max_guidance) * (target - (x - t * v)) * weights
            x = x - v / steps
        return torch.from_numpy(x)


def is_exported(directory: str | Path) -> bool:
    return (Path(directory) / MANIFEST_FILE).is_file()


def session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads sleep instead of spinning: the control loop and torch need those cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_exported(directory: str | Path, threads: int = 1) -> Checkpoint:
    """An exported directory as a ``Checkpoint`` whose model is an ``OnnxModel``; strict: a missing
    or unreadable file raises ``CheckpointError`` naming it."""
    import onnxruntime as ort

    directory = Path(directory)
    assets = load_assets(directory)
    manifest_path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: unreadable ({exc})") from exc
    head = assets.config.head
    if manifest.get("head") != head:
        raise CheckpointError(f"{manifest_path}: head {manifest.get('head')!r}, config.json says {head!r}")
    graphs = manifest.get("graphs", {})
    missing = [name for name in GRAPHS[head] if name not in graphs]
    if missing:
        raise CheckpointError(f"{manifest_path}: no graph named {missing} (the {head} head needs "
                              f"{list(GRAPHS[head])})")
    options = session_options(threads)
    sessions = {}
    for name in GRAPHS[head]:
        path = directory / graphs[name]
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        try:
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise CheckpointError(f"{path}: onnxruntime cannot load it ({exc})") from exc
        have = [i.name for i in sessions[name].get_inputs()]
        if have != INPUT_NAMES[name]:
            raise CheckpointError(f"{path}: inputs {have}, expected {INPUT_NAMES[name]}")
    model = OnnxModel(assets.config, sessions)
    return Checkpoint(model, assets.tokenizer, assets.normalizer, assets.robot, assets.training, directory,
                      assets.lexicon)


def parity_check(checkpoint: str | Path, exported: str | Path, episodes: int = 2, max_steps: int = 30,
                 threads: int = 1, seed: int = 200_000) -> dict:
    """Chunks of the torch checkpoint and its export on the same observations and noise (closed-loop
    rollouts of the torch model in the simulation): PCC per chunk (min), max abs diff (normalised)."""
    from vla_ros.core.policy import Observation
    from vla_ros.models.parity import pcc
    from vla_ros.models.policy import load_policy
    from vla_ros.sim import TabletopEnv

    ref = load_policy(checkpoint, threads=threads, rtc="off")
    low = load_policy(exported, threads=threads, rtc="off")
    cfg = ref.model.config
    env = TabletopEnv(image_size=ref.spec.image_size, action_period=ref.spec.action_period, seed=0,
                      max_steps=max_steps)
    gen = torch.Generator().manual_seed(seed)
    pccs, diffs = [], []
    with torch.inference_mode():
        for episode in range(episodes):
            obs, info = env.reset(seed=seed + episode)
            text = info["instruction"]
            ctx_ref, ctx_low = ref.encode_instruction(text), low.encode_instruction(text)
            done, n = False, 0
            while not done:
                observation = Observation(n * env.action_period, obs["images"], obs["state"])
                images, state = ref.preprocess(observation)
                noise = torch.randn(1, cfg.chunk_size, cfg.action_dim, generator=gen)
                a = ref.model.predict(ctx_ref.cache, images, state, noise)[0].numpy()
                b = low.model.predict(ctx_low.cache, images, state, noise)[0].numpy()
                pccs.append(pcc(a, b))
                diffs.append(float(np.abs(a - b).max()))
                for action in ref.ckpt.normalizer.unnormalize_action(a)[: max(1, cfg.chunk_size // 2)]:
                    obs, _, terminated, truncated, info = env.step(action.astype(np.float32))
                    n += 1
                    done = terminated or truncated
                    if done:
                        break
    return {"checkpoint": str(checkpoint), "exported": str(exported), "head": cfg.head, "steps": len(pccs),
            "pcc_min": min(pccs), "pcc_mean": float(np.mean(pccs)), "max_abs_diff": max(diffs)}
