"""`vla_ros export-onnx CKPT OUT`: a checkpoint as ONNX graphs with explicit key/value tensors.

The output is a checkpoint-like directory: the source's config.json, stats.json, tokenizer.json
(and grounding.json, training.json when present) copied, so normalisation, tokenizer and lexicon
come along, plus the graphs and ``onnx.json`` (which graphs, their inputs/outputs, the exporter's
versions). ``load_policy`` recognises the directory by ``onnx.json`` and serves it with
onnxruntime (models/onnx_policy.py).

Graphs (batch 1; the instruction length L is dynamic; keys/values are stacked over layers,
``[layers, 1, kv_heads, L, head_dim]``):

- ``prefix.onnx``: instruction ids and mask [1, L] -> the prefix's keys, values (once per goal);
- regression head, ``step.onnx``: images [1, C, 3, S, S] in [0, 1], normalised state, prefix
  keys/values and mask -> normalised actions [1, H, A] (vision tower, observation and action tokens
  over the prefix: the cached step);
- flow head, ``observe.onnx``: the same inputs -> the observation tokens' keys/values, and
  ``velocity.onnx``: noisy actions x_t, flow time t, keys/values/mask of [instruction, observation]
  -> the expert's velocity. The Euler loop runs in Python (onnx_policy.py) over those tensors.

Each graph is traced from the torch model's own methods (``encode_instruction``,
``_regression_step``, ``_observe``, ``velocity``) with a ``DynamicCache`` filled from the input
tensors, so the export cannot drift from the model. The dynamo exporter (torch.export) is used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache

from vla_ros.models.checkpoint import (
    CONFIG_FILE,
    GROUNDING_FILE,
    TRAINING_FILE,
    Checkpoint,
    load_checkpoint,
)
from vla_ros.models.normalization import STATS_FILE
from vla_ros.models.tokenizer import TOKENIZER_FILE
from vla_ros.models.vla import Prefix, VLAModel

MANIFEST_FILE = "onnx.json"
GRAPHS = {"regression": ("prefix", "step"), "flow": ("prefix", "observe", "velocity")}
OPSET = 18
COPIED_FILES = (CONFIG_FILE, STATS_FILE, TOKENIZER_FILE)
OPTIONAL_FILES = (GROUNDING_FILE, TRAINING_FILE)


def cache_of(model: VLAModel, keys: torch.Tensor, values: torch.Tensor) -> DynamicCache:
    """A DynamicCache holding stacked keys/values [layers, B, kv_heads, L, head_dim]."""
    cache = DynamicCache(config=model.language.config)
    for layer in range(keys.shape[0]):
        cache.update(keys[layer], values[layer], layer)
    return cache


def stacked(cache: DynamicCache, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The cache's keys/values from position ``start`` on, stacked over layers."""
    return (torch.stack([layer.keys[:, :, start:] for layer in cache.layers]),
            torch.stack([layer.values[:, :, start:] for layer in cache.layers]))


class PrefixGraph(nn.Module):
    def __init__(self, model: VLAModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return stacked(self.model.encode_instruction(input_ids, attention_mask).cache)


class StepGraph(nn.Module):
    """Regression head: the cached control step."""

    def __init__(self, model: VLAModel):
        super().__init__()
        self.model = model

    def forward(self, images, state, keys, values, attention_mask):
        prefix = Prefix(cache_of(self.model, keys, values), attention_mask)
        return self.model._regression_step(prefix, images, state).float()


class ObserveGraph(nn.Module):
    """Flow head: the observation's keys/values over the prefix."""

    def __init__(self, model: VLAModel):
        super().__init__()
        self.model = model

    def forward(self, images, state, keys, values, attention_mask):
        prefix = Prefix(cache_of(self.model, keys, values), attention_mask)
        self.model._observe(prefix, images, state)
        return stacked(prefix.cache, start=attention_mask.shape[1])


class VelocityGraph(nn.Module):
    """Flow head: one Euler step's velocity over the keys/values of [instruction, observation]."""

    def __init__(self, model: VLAModel):
        super().__init__()
        self.model = model

    def forward(self, x_t, t, keys, values, attention_mask):
        cache = cache_of(self.model, keys, values)
        return self.model.velocity(x_t, t, cache, attention_mask,
                                   offset=self.model.config.observation_tokens).float()


def example_inputs(model: VLAModel, length: int = 12) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs that trace each graph (L = ``length``; one padded position so masking is traced)."""
    cfg = model.config
    lm = cfg.llama_config()
    ids = torch.randint(3, 200, (1, length))
    mask = torch.ones(1, length, dtype=torch.long)
    images = torch.rand(1, len(cfg.cameras), 3, cfg.image_size, cfg.image_size)
    state = torch.randn(1, cfg.state_dim)
    with torch.no_grad():
        keys, values = stacked(model.encode_instruction(ids, mask).cache)
    inputs = {"prefix": (ids, mask), "step": (images, state, keys, values, mask),
              "observe": (images, state, keys, values, mask)}
    if cfg.head == "flow":
        full = length + cfg.observation_tokens
        full_mask = torch.ones(1, full, dtype=torch.long)
        shape = (lm.num_hidden_layers, 1, lm.num_key_value_heads, full, lm.head_dim)
        inputs["velocity"] = (torch.randn(1, cfg.chunk_size, cfg.action_dim), torch.full((1,), 0.5),
                              torch.randn(shape), torch.randn(shape), full_mask)
    return inputs


INPUT_NAMES = {
    "prefix": ["input_ids", "attention_mask"],
    "step": ["images", "state", "keys", "values", "attention_mask"],
    "observe": ["images", "state", "keys", "values", "attention_mask"],
    "velocity": ["x_t", "t", "keys", "values", "attention_mask"],
}
OUTPUT_NAMES = {"prefix": ["keys", "values"], "step": ["actions"],
                "observe": ["observation_keys", "observation_values"], "velocity": ["velocity"]}
MODULES = {"prefix": PrefixGraph, "step": StepGraph, "observe": ObserveGraph, "velocity": VelocityGraph}


def dynamic_shapes(name: str) -> tuple:
    """The instruction length (and, for the velocity, the length of [instruction, observation])."""
    length = torch.export.Dim("length", min=1, max=4096)
    if name == "prefix":
        return ({1: length}, {1: length})
    return (None, None, {3: length}, {3: length}, {1: length})


def export_graph(model: VLAModel, name: str, path: Path, inputs: tuple[torch.Tensor, ...]) -> None:
    module = MODULES[name](model).eval()
    with torch.no_grad():
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=OPSET,
                                    input_names=INPUT_NAMES[name], output_names=OUTPUT_NAMES[name],
                                    dynamic_shapes=dynamic_shapes(name), external_data=False,
                                    verbose=False)
    program.save(str(path))


def export_checkpoint(ckpt: Checkpoint, out: str | Path) -> Path:
    """Write ``out`` (created; an existing onnx.json there is replaced) and return it."""
    if ckpt.path is None:
        raise ValueError("export_checkpoint needs a checkpoint loaded from a directory (it copies its files)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = ckpt.model.float().eval()
    head = model.config.head
    inputs = example_inputs(model)
    files = {}
    for name in GRAPHS[head]:
        files[name] = f"{name}.onnx"
        export_graph(model, name, out / files[name], inputs[name])
    for name in COPIED_FILES:
        shutil.copyfile(ckpt.path / name, out / name)
    for name in OPTIONAL_FILES:
        if (ckpt.path / name).is_file():
            shutil.copyfile(ckpt.path / name, out / name)
    lm = model.config.llama_config()
    import onnx
    import onnxscript

    manifest = {"format": "vla_ros-onnx", "head": head, "graphs": files,
                "inputs": {n: INPUT_NAMES[n] for n in files}, "outputs": {n: OUTPUT_NAMES[n] for n in files},
                "layers": lm.num_hidden_layers, "kv_heads": lm.num_key_value_heads, "head_dim": lm.head_dim,
                "opset": OPSET, "source": str(ckpt.path),
                "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                             "onnxscript": onnxscript.__version__}}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vla_ros export-onnx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint directory")
    p.add_argument("out", help="output directory (a checkpoint-like directory with the ONNX graphs)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against torch")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    out = export_checkpoint(ckpt, args.out)
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.glob('*.onnx')))}")
    if not args.no_check:
        from vla_ros.models.onnx_policy import parity_check

        result = parity_check(args.checkpoint, out, threads=args.threads)
        print(json.dumps(result))
        if result["pcc_min"] < 0.9999:
            print(f"export-onnx: parity check failed: PCC {result['pcc_min']:.6f} < 0.9999", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
