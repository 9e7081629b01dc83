"""A LeRobot policy checkpoint (a directory lerobot's ``save_pretrained`` wrote: config.json,
model.safetensors, policy_preprocessor/postprocessor) as a ``vla_ros.core.policy.Policy``.

lerobot pins versions that clash with this project's environment, so it runs where lerobot is
installed: vla_node starts the policy's worker process with ``lerobot_python`` (by default
.venv-lerobot/bin/python, ``make lerobot-venv``), which imports this module. Only the functions
that read config.json (``policy_spec``, ``hub_assets``) work without lerobot.

Offline: a checkpoint's own weights are loaded strictly; what a policy type would fetch from the
Hugging Face hub or torchvision on construction is checked before anything loads, and a missing
one is named (``MissingAssetError``) so vla_node's configure fails saying which. ACT, Diffusion
and VQ-BeT build their ResNet with ImageNet weights before the checkpoint's replace them; the
backbone is built without them instead (the checkpoint holds the whole backbone: the strict load
fails otherwise), so they need nothing.

Mapping: cameras are the config's ``observation.images.<camera>`` input features (image size from
their shape), the state ``observation.state``, the chunk the ``predict_action_chunk`` output
(``chunk_size`` actions, absolute, after the postprocessor's unnormalisation); the instruction is
passed as the batch's ``task``. LeRobot checkpoints record neither the frame rate (``fps``, from
vla_node's ``lerobot_fps``) nor joint names (``state_<i>`` / ``action_<i>`` unless given; vla_node
maps joints by its own parameters and checks their count).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from vla_ros.core.policy import ActionChunk, InstructionContext, Observation, Policy, PolicySpec

IMAGES_PREFIX = "observation.images."
FACTORY = "vla_ros.models.lerobot_policy:load_lerobot_policy"
# Constructed without the asset when the checkpoint's weights replace it (see the docstring).
BACKBONE_WEIGHTS_FIELD = "pretrained_backbone_weights"
# Policy types whose model or preprocessor loads a model or tokenizer from the hub when built, by
# config field and default (lerobot 0.6.1 configuration_*.py and processor_*.py; pi0 and pi0.5
# name their tokenizer in the processor, not the config).
HUB_ASSET_FIELDS = {
    "smolvla": [("vlm_model_name", "HuggingFaceTB/SmolVLM2-500M-Video-Instruct")],
    "pi0": [("", "google/paligemma-3b-pt-224")],
    "pi05": [("", "google/paligemma-3b-pt-224")],
    "pi0_fast": [("text_tokenizer_name", "google/paligemma-3b-pt-224"),
                 ("action_tokenizer_name", "lerobot/fast-action-tokenizer")],
    "groot": [("base_model_path", "nvidia/GR00T-N1.7-3B")],
}


def lerobot_python(configured: str = "") -> str:
    """The interpreter lerobot policies run in: ``configured``, else $VLA_ROS_LEROBOT_PYTHON, else
    the source tree's .venv-lerobot; the error names all three when none exists."""
    candidates = [configured, os.environ.get("VLA_ROS_LEROBOT_PYTHON", ""),
                  str(Path(__file__).resolve().parents[2] / ".venv-lerobot" / "bin" / "python")]
    for path in filter(None, candidates):
        if Path(path).is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        f"no Python with lerobot: lerobot_python {configured!r}, VLA_ROS_LEROBOT_PYTHON "
        f"{os.environ.get('VLA_ROS_LEROBOT_PYTHON', '')!r} and {candidates[2]} are not executables; "
        "build one with `make lerobot-venv` or point lerobot_python at one")


def worker_options(checkpoint_dir: str, fps: float, *, python: str = "", device: str = "cpu",
                   threads: int = 1, state_names: list[str] | None = None,
                   action_names: list[str] | None = None) -> tuple[str, dict, str]:
    """How a LeRobot policy is started, in vla_node and `vla_ros eval` alike: the factory (run in the
    worker process, or called here for a local one), its keyword arguments and the interpreter."""
    options = {"checkpoint_dir": checkpoint_dir, "device": device, "threads": threads, "fps": fps}
    if state_names is not None or action_names is not None:
        options.update(state_names=state_names, action_names=action_names)
    return FACTORY, options, lerobot_python(python)


def dataset_joint_names(checkpoint_dir: str | Path) -> tuple[list[str], list[str]] | None:
    """The state and action names of the dataset a checkpoint was trained on, where lerobot-train's
    train_config.json (saved beside the checkpoint) names a local dataset root whose meta/info.json
    still exists; None otherwise (checkpoints themselves do not record them)."""
    train_config = Path(checkpoint_dir) / "train_config.json"
    if not train_config.is_file():
        return None
    root = (json.loads(train_config.read_text()).get("dataset") or {}).get("root")
    info = Path(root) / "meta" / "info.json" if root else None
    if info is None or not info.is_file():
        return None
    features = json.loads(info.read_text()).get("features", {})
    try:
        return list(features["observation.state"]["names"]), list(features["action"]["names"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{info}: feature names missing ({exc}); expected observation.state and action "
                         "features with 'names'") from exc


class MissingAssetError(FileNotFoundError):
    """A policy type needs a file from a hub that is not on this machine; the message names it."""


def read_config(checkpoint_dir: str | Path) -> dict:
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; not a LeRobot policy checkpoint "
                                "(lerobot's save_pretrained writes it)")
    config = json.loads(path.read_text())
    missing = [k for k in ("type", "input_features", "output_features") if k not in config]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    return config


def hub_assets(config: dict) -> list[str]:
    """The hub repositories a policy of this config loads when it is constructed."""
    return [(config.get(name) if name else None) or default
            for name, default in HUB_ASSET_FIELDS.get(config["type"], [])]


def missing_hub_assets(config: dict) -> list[str]:
    from huggingface_hub import scan_cache_dir

    try:
        cached = {repo.repo_id for repo in scan_cache_dir().repos}
    except Exception:  # no cache directory at all
        cached = set()
    return [a for a in hub_assets(config) if a not in cached and not Path(a).is_dir()]


def policy_spec(config: dict, fps: float, state_names: list[str] | None = None,
                action_names: list[str] | None = None) -> PolicySpec:
    """The spec of a LeRobot policy config; ``fps``: its training data's (checkpoints lack it)."""
    inputs, outputs = config["input_features"], config["output_features"]
    cameras = [k[len(IMAGES_PREFIX):] for k in inputs if k.startswith(IMAGES_PREFIX)]
    if not cameras or "observation.state" not in inputs or "action" not in outputs:
        raise ValueError(f"LeRobot policy {config['type']!r}: vla_ros needs observation.images.* cameras, "
                         f"observation.state and action; it has inputs {sorted(inputs)}, "
                         f"outputs {sorted(outputs)}")
    shapes = {tuple(inputs[IMAGES_PREFIX + c]["shape"]) for c in cameras}
    if len(shapes) != 1:
        raise ValueError(f"LeRobot policy cameras have different image shapes {sorted(shapes)}")
    _, h, w = next(iter(shapes))
    state_dim = int(inputs["observation.state"]["shape"][0])
    action_dim = int(outputs["action"]["shape"][0])
    for kind, names, dim in (("state", state_names, state_dim), ("action", action_names, action_dim)):
        if names is not None and len(names) != dim:
            raise ValueError(f"LeRobot policy {config['type']!r}: {len(names)} {kind} names {list(names)} "
                             f"for its {dim} {kind} dimensions")
    chunk = int(config.get("chunk_size") or config.get("n_action_steps") or 1)
    action_names = tuple(action_names or [f"action_{i}" for i in range(action_dim)])
    return PolicySpec(action_names=action_names,
                      state_names=tuple(state_names or [f"state_{i}" for i in range(state_dim)]),
                      chunk_size=chunk, action_period=1.0 / float(fps),
                      cameras=tuple(cameras), image_size=(int(h), int(w)),
                      gripper_index=action_names.index("gripper") if "gripper" in action_names else None)


class LeRobotPolicy(Policy):
    def __init__(self, policy, preprocessor, postprocessor, spec: PolicySpec, device: str):
        self.policy, self.preprocessor, self.postprocessor = policy, preprocessor, postprocessor
        self.spec, self.device = spec, device

    def encode_instruction(self, text: str) -> InstructionContext:
        return InstructionContext(text=text, num_tokens=len(text.split()))

    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        import torch

        batch = {"observation.state": torch.as_tensor(np.asarray(observation.state, np.float32)),
                 "task": context.text}
        for camera in self.spec.cameras:
            image = torch.from_numpy(np.ascontiguousarray(observation.images[camera]))
            batch[IMAGES_PREFIX + camera] = image.permute(2, 0, 1).float().div_(255.0)
        with torch.inference_mode():
            actions = self.policy.predict_action_chunk(self.preprocessor(batch))
            actions = self.postprocessor(actions)
        actions = actions.reshape(-1, self.spec.action_dim).double().cpu().numpy()
        return ActionChunk(t_obs=observation.stamp, actions=actions, dt=self.spec.action_period)

    def reset(self) -> None:
        self.policy.reset()


def load_lerobot_policy(checkpoint_dir: str, fps: float, device: str = "cpu", threads: int = 1,
                        state_names: list[str] | None = None,
                        action_names: list[str] | None = None) -> LeRobotPolicy:
    """vla_node's factory for ``policy_backend: lerobot`` (run in the worker process)."""
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    if threads > 0:
        torch.set_num_threads(threads)
    config = read_config(checkpoint_dir)
    missing = missing_hub_assets(config)
    if missing:
        raise MissingAssetError(
            f"LeRobot policy type {config['type']!r} ({checkpoint_dir}) loads {missing} from the Hugging "
            "Face hub when it is built, and they are not in this machine's hub cache; download them where "
            "there is network (hf download NAME) or point the config at a local copy")
    cfg = PreTrainedConfig.from_pretrained(checkpoint_dir, local_files_only=True)
    cfg.device = device
    if getattr(cfg, BACKBONE_WEIGHTS_FIELD, None):
        setattr(cfg, BACKBONE_WEIGHTS_FIELD, None)  # the checkpoint's own backbone replaces them
    policy = get_policy_class(cfg.type).from_pretrained(checkpoint_dir, config=cfg, local_files_only=True,
                                                        strict=True)
    overrides = {"device_processor": {"device": device}}
    preprocessor, postprocessor = make_pre_post_processors(cfg, pretrained_path=checkpoint_dir,
                                                           preprocessor_overrides=overrides,
                                                           postprocessor_overrides=overrides)
    spec = policy_spec(config, fps, state_names, action_names)
    return LeRobotPolicy(policy, preprocessor, postprocessor, spec, device)
