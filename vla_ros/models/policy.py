"""The built-in model behind ``vla_ros.core.policy.Policy``: ``load_policy`` and ``default_checkpoint``."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vla_ros.core.policy import ActionChunk, InstructionContext, Observation, Policy, PolicySpec
from vla_ros.core.runtime_types import RTC_MODES
from vla_ros.models.checkpoint import Checkpoint, load_checkpoint, resolve_dtype
from vla_ros.models.onnx_policy import OnnxPrefix, is_exported, load_exported
from vla_ros.models.quantize import QUANT_FILE, is_quantized, load_quantized
from vla_ros.models.tokenizer import batch_encode
from vla_ros.models.vla import Guide, Prefix, rtc_weights

# The default model: the flow head (checkpoints/tiny_flow, `make checkpoint`), picked
# by closed-loop success over 200 seeds (docs/MODEL.md). checkpoints/tiny (regression) stays an option.
DEFAULT_CHECKPOINT_NAME = "tiny_flow"
REPO_ROOT = Path(__file__).resolve().parents[2]


def checkpoint_search_path(name: str = DEFAULT_CHECKPOINT_NAME) -> list[Path]:
    """Where the default checkpoint is looked for, in order.

    $VLA_ROS_CHECKPOINT alone when set; else the source tree (a checkout, or a colcon
    --symlink-install whose modules resolve into it), then ``share/vla_ros/checkpoints/<name>`` under
    each AMENT_PREFIX_PATH entry (a copying ``colcon build`` installs it there: CMakeLists.txt).
    AMENT_PREFIX_PATH is read directly, as ament_index_python would, so this module needs no ROS.
    """
    env = os.environ.get("VLA_ROS_CHECKPOINT")
    if env:
        return [Path(env)]
    places = []
    if (REPO_ROOT / "package.xml").is_file():
        places.append(REPO_ROOT / "checkpoints" / name)
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        places.append(Path(prefix) / "share" / "vla_ros" / "checkpoints" / name)
    return places


def default_checkpoint() -> Path:
    """The trained default checkpoint shipped with the package (rebuilt by ``make checkpoint``)."""
    places = checkpoint_search_path()
    for path in places:
        if (path / "model.safetensors").is_file():
            return path
    looked = ", ".join(str(p) for p in places) or "nowhere (no source tree, AMENT_PREFIX_PATH empty)"
    raise FileNotFoundError(
        f"default checkpoint {DEFAULT_CHECKPOINT_NAME!r} not found; looked in {looked}. A pip install "
        "carries no checkpoint: pass one (checkpoint_dir / --checkpoint), set VLA_ROS_CHECKPOINT to a "
        f"checkout's checkpoints/{DEFAULT_CHECKPOINT_NAME}, install with colcon (share/vla_ros/checkpoints), "
        "or train one with `make checkpoint`")


class VLAPolicy(Policy):
    """A checkpoint wrapped for the runtime: preprocessing, normalisation, an LRU of prefix caches.

    ``rtc``: real-time chunking for the flow head (``vla.Guide``) when an observation carries the
    committed actions (the runtime's ``real_time_chunking``): ``exact`` (a backward pass through
    the expert per Euler step), ``cheap`` (none), ``prefix`` (train-time RTC: the actions due before
    the chunk lands are given to the expert, for a model trained with ``rtc_train_delay``) or
    ``off``. The regression head ignores it.
    (Grad mode is off rather than inference mode: exact guidance differentiates through the cache.)
    """

    def __init__(self, ckpt: Checkpoint, device: str = "cpu", context_cache_size: int = 16, seed: int = 0,
                 rtc: str = "exact", rtc_max_guidance: float = 5.0):
        if rtc not in RTC_MODES:
            raise ValueError(f"rtc must be one of {RTC_MODES}, got {rtc!r}")
        if rtc == "prefix" and ckpt.model.config.head == "flow" and not ckpt.model.config.rtc_train_delay:
            raise ValueError("rtc 'prefix' gives the committed actions to a flow model trained for them "
                             "(vla_ros train --rtc-train-delay); this checkpoint was trained without; use "
                             "'cheap' or 'exact'")
        if not rtc_max_guidance > 0:
            raise ValueError(f"rtc_max_guidance must be > 0, got {rtc_max_guidance}")
        self.rtc, self.rtc_max_guidance = rtc, float(rtc_max_guidance)
        self.ckpt = ckpt
        self.model = ckpt.model
        self.device = torch.device(device)
        cfg = self.model.config
        names = list(ckpt.robot.action_names)
        self.spec = PolicySpec(
            action_names=tuple(names), state_names=tuple(ckpt.robot.state_names), chunk_size=cfg.chunk_size,
            action_period=float(ckpt.robot.action_period), cameras=tuple(cfg.cameras),
            image_size=(cfg.image_size, cfg.image_size), action_mode="absolute",
            gripper_index=names.index("gripper") if "gripper" in names else None, lexicon=ckpt.lexicon,
            action_offset_steps=int(ckpt.robot.action_offset_steps))
        self._contexts: OrderedDict[str, InstructionContext] = OrderedDict()
        self.context_cache_size = context_cache_size
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self.context_hits = 0

    # --- Policy interface ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode_instruction(self, text: str) -> InstructionContext:
        """Encode once per distinct instruction; a repeated goal is served from the LRU for free."""
        if not isinstance(text, str):
            raise TypeError(f"instruction must be a str, got {type(text).__name__}")
        if text in self._contexts:
            self._contexts.move_to_end(text)
            self.context_hits += 1
            return self._contexts[text]
        ids, mask, (encoded,) = batch_encode(self.ckpt.tokenizer, [text],
                                             self.model.config.max_instruction_tokens, self.device)
        prefix = self.model.encode_instruction(ids, mask)
        ctx = InstructionContext(text=text, num_tokens=len(encoded.ids), truncated=encoded.truncated,
                                 dropped_tokens=encoded.dropped_tokens, cache=prefix)
        self._contexts[text] = ctx
        while len(self._contexts) > self.context_cache_size:
            self._contexts.popitem(last=False)
        return ctx

    @torch.no_grad()
    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        if not isinstance(context.cache, (Prefix, OnnxPrefix)):
            raise ValueError("context was not made by this policy's encode_instruction (no prefix cache)")
        images, state = self.preprocess(observation)
        noise, guide = None, None
        if self.model.config.head == "flow":
            noise = self.model._noise(1, self.device, self._generator)
            guide = self.guide(observation)
        actions = self.model.predict(context.cache, images, state, noise, guide)[0].cpu().numpy()
        info = {"prefix_tokens": context.num_tokens, "head": self.model.config.head,
                "rtc": "off" if guide is None else self.rtc}
        return ActionChunk(t_obs=observation.stamp, actions=self.ckpt.normalizer.unnormalize_action(actions),
                           dt=self.spec.action_period, info=info)

    def guide(self, observation: Observation) -> Guide | None:
        """Real-time chunking's target from the observation's committed actions (None: no RTC)."""
        committed = observation.committed
        if self.rtc == "off" or committed is None or len(committed.actions) == 0:
            return None
        H, A = self.spec.chunk_size, self.spec.action_dim
        actions = np.asarray(committed.actions, dtype=np.float64)[:H]
        if actions.ndim != 2 or actions.shape[1] != A or not np.all(np.isfinite(actions)):
            raise ValueError(f"committed actions must be finite [n <= {H}, {A}], got shape {actions.shape}")
        target = np.zeros((H, A), dtype=np.float32)
        target[: len(actions)] = self.ckpt.normalizer.normalize_action(actions)
        if self.rtc == "prefix":  # beyond the trained delay the chunk's own actions are dropped anyway
            given = min(committed.delay_steps, len(actions), self.model.config.rtc_train_delay)
            return Guide(target=torch.from_numpy(target)[None].to(self.device),
                         weights=rtc_weights(H, given, given), exact=False, given=given)
        return Guide(target=torch.from_numpy(target)[None].to(self.device),
                     weights=rtc_weights(H, committed.delay_steps, len(actions)),
                     exact=self.rtc == "exact", max_guidance=self.rtc_max_guidance)

    def reset(self) -> None:
        """Per-episode state: none (the instruction LRU is kept on purpose)."""

    def real_time_chunking(self) -> tuple[str, float]:
        """The regression head ignores committed actions; the flow head guides with ``rtc``."""
        if self.model.config.head != "flow" or self.rtc == "off":
            return "off", 0.0
        return self.rtc, self.rtc_max_guidance

    # --- helpers --------------------------------------------------------------------------------------
    def preprocess(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """-> images float [1, C, 3, S, S] in [0, 1] and normalised state [1, state_dim]."""
        size = self.model.config.image_size
        frames = []
        for cam in self.spec.cameras:
            if cam not in obs.images:
                raise ValueError(f"observation has no image for camera {cam!r} (has {sorted(obs.images)})")
            img = np.asarray(obs.images[cam])
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"camera {cam!r}: expected uint8 [H, W, 3] RGB, got {img.dtype} {img.shape}")
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
            if t.shape[1:] != (size, size):
                t = F.interpolate(t[None], size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)[0]
            frames.append(t)
        state = np.asarray(obs.state, dtype=np.float64).reshape(-1)
        if state.shape[0] != self.spec.state_dim or not np.all(np.isfinite(state)):
            raise ValueError(f"state must be {self.spec.state_dim} finite values "
                             f"{self.spec.state_names}, got {state.tolist()}")
        images = torch.stack(frames)[None].to(self.device)
        state_t = torch.from_numpy(self.ckpt.normalizer.normalize_state(state))[None].to(self.device)
        return images, state_t


def load_policy(checkpoint_dir: str | Path | None = None, device: str = "cpu", dtype: str = "float32",
                threads: int = 1, context_cache_size: int = 16, seed: int = 0, rtc: str | None = None,
                rtc_max_guidance: float = 5.0) -> VLAPolicy:
    """A ready Policy from a checkpoint directory (None = the default checkpoint).

    The directory's files choose the backend: ``onnx.json`` (``vla_ros export-onnx``) runs it with
    onnxruntime (CPU, float32 only, ``threads`` intra-op threads), ``quantization.json`` (``vla_ros
    quantize``) with torch quantized in the recorded mode, ``finetune.json`` (a ``vla_ros finetune``
    adapter directory) with torch on its base, the LoRA merged into the weights at load (peft),
    ``model.safetensors`` alone with torch.
    threads > 0 sets torch's intra-op threads (keep it below the core count: the control loop needs one).
    ``rtc`` None: ``exact`` with torch, ``cheap`` with onnxruntime (which cannot run ``exact``)."""
    if threads > 0:
        torch.set_num_threads(threads)
    path = default_checkpoint() if checkpoint_dir is None else Path(checkpoint_dir)
    if is_exported(path):
        if device != "cpu" or resolve_dtype(dtype) != torch.float32:
            raise ValueError(f"{path} is an ONNX export: it runs on device 'cpu' in float32 "
                             f"(got device {device!r}, dtype {dtype!r})")
        if rtc in ("exact", "prefix"):
            raise ValueError(f"{path} is an ONNX export: real-time chunking {rtc!r} needs torch (a backward "
                             "pass, or per-action flow times); use 'cheap' or 'off'")
        return VLAPolicy(load_exported(path, threads=threads), context_cache_size=context_cache_size,
                         seed=seed, rtc=rtc or "cheap", rtc_max_guidance=rtc_max_guidance)
    if is_quantized(path):
        if device != "cpu" or resolve_dtype(dtype) != torch.float32:
            raise ValueError(f"{path} is quantized ({QUANT_FILE}): it runs on device 'cpu' as its mode "
                             f"says; leave dtype float32 (got device {device!r}, dtype {dtype!r})")
        ckpt, mode = load_quantized(path)
        if rtc == "exact" and mode != "bf16":
            raise ValueError(f"{path} is quantized ({mode}): real-time chunking 'exact' needs a backward "
                             "pass through float weights; use 'cheap' or 'off'")
        rtc = rtc or ("exact" if mode == "bf16" else "cheap")
        return VLAPolicy(ckpt, context_cache_size=context_cache_size, seed=seed, rtc=rtc,
                         rtc_max_guidance=rtc_max_guidance)
    if (path / "finetune.json").is_file():
        from vla_ros.models.finetune import load_adapter  # peft only for adapter directories

        ckpt = load_adapter(path)
        ckpt.model.to(device=device, dtype=resolve_dtype(dtype))
    else:
        ckpt = load_checkpoint(path, device=device, dtype=resolve_dtype(dtype))
    rtc = rtc or "exact"
    return VLAPolicy(ckpt, device=device, context_cache_size=context_cache_size, seed=seed, rtc=rtc,
                     rtc_max_guidance=rtc_max_guidance)
