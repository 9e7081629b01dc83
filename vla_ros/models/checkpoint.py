"""Checkpoint directories: config.json + model.safetensors + tokenizer.json + stats.json
(+ grounding.json, the lexicon of core/grounding.py, when training wrote one).

``stats.json`` holds the normalisation statistics and the robot interface the model was trained
for (state/action names, cameras, action period). Loading checks every file and raises
``CheckpointError`` naming the file and the problem (missing, corrupt, or not matching config.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vla_ros.core.grounding import Lexicon
from vla_ros.models.normalization import STATS_FILE, Normalizer
from vla_ros.models.tokenizer import TOKENIZER_FILE, ByteTokenizer, Tokenizer, load_tokenizer
from vla_ros.models.vla import VLAConfig, VLAModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "training.json"
GROUNDING_FILE = "grounding.json"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or inconsistent; the message names the file."""


@dataclass
class RobotMeta:
    """The robot interface a checkpoint was trained for (from the dataset's meta.json)."""

    state_names: list[str]
    action_names: list[str]
    cameras: list[str]
    action_period: float
    # the dataset's action at frame t is due at t + action_offset_steps * action_period (PolicySpec)
    action_offset_steps: int = 0

    def to_dict(self) -> dict:
        return {"state_names": list(self.state_names), "action_names": list(self.action_names),
                "cameras": list(self.cameras), "action_period": float(self.action_period),
                "action_offset_steps": int(self.action_offset_steps)}


@dataclass
class Checkpoint:
    model: VLAModel
    tokenizer: Tokenizer
    normalizer: Normalizer
    robot: RobotMeta
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    lexicon: dict[str, Any] | None = None  # grounding.json; None: the goals' instructions go unchecked


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def save_checkpoint(directory: str | Path, ckpt: Checkpoint) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ckpt.model.save_pretrained(directory, safe_serialization=True)
    ckpt.tokenizer.save(directory)
    stats = {"normalization": ckpt.normalizer.to_dict(), "robot": ckpt.robot.to_dict()}
    (directory / STATS_FILE).write_text(json.dumps(stats, indent=2))
    if ckpt.training:
        (directory / TRAINING_FILE).write_text(json.dumps(ckpt.training, indent=2, default=str))
    if ckpt.lexicon is not None:
        (directory / GROUNDING_FILE).write_text(json.dumps(ckpt.lexicon, indent=1))
    return directory


def read_json(path: Path) -> dict:
    """A checkpoint's JSON object file; missing, corrupt or not an object raises CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt, not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def load_config(directory: Path) -> VLAConfig:
    path = directory / CONFIG_FILE
    data = read_json(path)
    if data.get("model_type") != VLAConfig.model_type:
        raise CheckpointError(f"{path}: model_type is {data.get('model_type')!r}, "
                              f"expected {VLAConfig.model_type!r}")
    try:
        return VLAConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config ({exc})") from exc


@dataclass
class Assets:
    """Everything of a checkpoint directory but the weights (shared with exported checkpoints)."""

    config: VLAConfig
    tokenizer: Tokenizer
    normalizer: Normalizer
    robot: RobotMeta
    training: dict[str, Any]
    lexicon: dict[str, Any] | None


def load_assets(directory: str | Path) -> Assets:
    """config.json, stats.json, tokenizer.json, and training.json / grounding.json when present,
    checked against each other; raises ``CheckpointError`` naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory does not exist")
    config = load_config(directory)

    stats_path = directory / STATS_FILE
    stats = read_json(stats_path)
    try:
        normalizer = Normalizer.from_dict(stats.get("normalization", {}), where=str(stats_path))
        robot = RobotMeta(**stats["robot"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{stats_path}: missing or malformed 'robot' section ({exc})") from exc
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    _check(len(normalizer.state_mean) == config.state_dim == len(robot.state_names), stats_path,
           f"state has {len(normalizer.state_mean)} statistics and {len(robot.state_names)} names, "
           f"{CONFIG_FILE} says state_dim={config.state_dim}")
    _check(len(normalizer.action_mean) == config.action_dim == len(robot.action_names), stats_path,
           f"action has {len(normalizer.action_mean)} statistics and {len(robot.action_names)} names, "
           f"{CONFIG_FILE} says action_dim={config.action_dim}")
    _check(list(robot.cameras) == list(config.cameras), stats_path,
           f"cameras {robot.cameras} differ from {CONFIG_FILE} cameras {config.cameras}")

    tok_path = directory / TOKENIZER_FILE
    try:
        tokenizer = load_tokenizer(directory)
    except (FileNotFoundError, ValueError) as exc:
        raise CheckpointError(str(exc)) from exc
    model_vocab = config.llama_config().vocab_size
    _check(tokenizer.vocab_size <= model_vocab, tok_path,
           f"vocabulary of {tokenizer.vocab_size} does not fit the model's {model_vocab}")

    training = {}
    if (directory / TRAINING_FILE).is_file():
        training = read_json(directory / TRAINING_FILE)
    lexicon = None
    if (directory / GROUNDING_FILE).is_file():
        lexicon = read_json(directory / GROUNDING_FILE)
        try:
            Lexicon(lexicon)
        except ValueError as exc:
            raise CheckpointError(f"{directory / GROUNDING_FILE}: {exc}") from exc
    return Assets(config, tokenizer, normalizer, robot, training, lexicon)


def read_weights(directory: Path, config: VLAConfig) -> dict[str, torch.Tensor]:
    """model.safetensors, checked against the tensors ``config`` builds (names and shapes)."""
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: missing")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: corrupt, cannot read safetensors ({exc})") from exc
    with torch.device("meta"):
        expected = VLAModel(config).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:5]}")
        raise CheckpointError(f"{weights_path}: does not match {CONFIG_FILE}: " + "; ".join(parts))
    return state


def load_checkpoint(directory: str | Path, device: str = "cpu",
                    dtype: str | torch.dtype = "float32") -> Checkpoint:
    directory = Path(directory)
    assets = load_assets(directory)
    state = read_weights(directory, assets.config)
    model = VLAModel(assets.config)
    model.load_state_dict(state, strict=True)
    model.to(device=device, dtype=resolve_dtype(dtype)).eval()
    return Checkpoint(model, assets.tokenizer, assets.normalizer, assets.robot, assets.training, directory,
                      assets.lexicon)


def _check(ok: bool, path: Path, message: str) -> None:
    if not ok:
        raise CheckpointError(f"{path}: {message}")


def new_checkpoint(config: VLAConfig, normalizer: Normalizer, robot: RobotMeta) -> Checkpoint:
    return Checkpoint(VLAModel(config), ByteTokenizer(), normalizer, robot)
