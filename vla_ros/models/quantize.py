"""`vla_ros quantize CKPT --mode MODE OUT`: a checkpoint that runs quantized, loadable by ``load_policy``.

Modes (every ``nn.Linear`` of the vision tower, language model, expert, connector and heads;
embeddings, norms and the learned queries stay float32):

- ``int8-dynamic``: int8 weights (per channel) and activations quantized per step (torch.ao's
  ``quantize_dynamic``, fbgemm kernels: the fast one on x86 CPUs; torchao's equivalent has no fast
  CPU kernel here and ran ~10x slower, so torch.ao it is, despite its deprecation notice);
- ``int8-weight``: torchao ``Int8WeightOnlyConfig`` (int8 weights, float activations);
- ``int4-weight``: torchao ``IntxWeightOnlyConfig`` (int4 weights, groups of 32 input features;
  layers with fewer inputs than a group, e.g. the state projection's 6, stay float32; torchao's
  ``Int4WeightOnlyConfig`` needs a kernel package not available for this CPU);
- ``bf16``: every weight and activation in bfloat16.

The output directory is the source checkpoint's files plus ``quantization.json`` (the mode, the
source, the library versions). The weights stay float32 on disk and are quantized when loaded
(deterministic; what runs is the quantized model), so one directory serves any torch version that
has the mode's kernels. Loading is strict: an unknown mode or a missing file is named.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from vla_ros.models.checkpoint import Checkpoint, CheckpointError, load_checkpoint

QUANT_FILE = "quantization.json"
MODES = ("int8-dynamic", "int8-weight", "int4-weight", "bf16")
INT4_GROUP = 32


def quantize_model(model: nn.Module, mode: str) -> nn.Module:
    """``model`` (float32, eval) quantized in ``mode``; returns the model to use (maybe the same)."""
    if mode == "bf16":
        return model.to(torch.bfloat16)
    if mode == "int8-dynamic":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        with warnings.catch_warnings():  # its deprecation notices; the replacement is slower here
            warnings.simplefilter("ignore")
            return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup, quantize_

    if mode == "int8-weight":
        quantize_(model, Int8WeightOnlyConfig())
    elif mode == "int4-weight":
        quantize_(model, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP)),
                  filter_fn=lambda m, _: isinstance(m, nn.Linear) and m.in_features % INT4_GROUP == 0)
    else:
        raise ValueError(f"quantization mode must be one of {MODES}, got {mode!r}")
    return model


def tensor_bytes(value) -> int:
    """Bytes held by a state_dict value: plain and quantized tensors, torchao tensor subclasses
    (their inner tensors), and the (weight, bias) tuples of torch.ao's packed parameters."""
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    if not isinstance(value, torch.Tensor):
        return 0
    if hasattr(value, "__tensor_flatten__") and type(value) is not torch.Tensor:
        names, _ = value.__tensor_flatten__()
        return sum(tensor_bytes(getattr(value, name)) for name in names)
    if value.is_quantized:
        scales = value.q_per_channel_scales().numel() * 12 if value.qscheme() in (
            torch.per_channel_affine, torch.per_channel_symmetric) else 12
        return value.numel() * value.element_size() + scales
    return value.numel() * value.element_size()


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as they sit in memory (packed params included)."""
    total = 0
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            total += tensor_bytes(packed._weight_bias())
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            total += tensor_bytes(tensor)
    return total


def read_mode(directory: Path) -> str:
    path = directory / QUANT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from exc
    mode = data.get("mode") if isinstance(data, dict) else None
    if mode not in MODES:
        raise CheckpointError(f"{path}: 'mode' is {mode!r}, expected one of {list(MODES)}")
    return mode


def is_quantized(directory: str | Path) -> bool:
    return (Path(directory) / QUANT_FILE).is_file()


def load_quantized(directory: str | Path) -> tuple[Checkpoint, str]:
    """The checkpoint with its model quantized as ``quantization.json`` says, and the mode."""
    directory = Path(directory)
    mode = read_mode(directory)
    ckpt = load_checkpoint(directory)
    ckpt.model = quantize_model(ckpt.model, mode).eval()
    return ckpt, mode


def write_quantized(source: str | Path, mode: str, out: str | Path) -> Path:
    """Copy the checkpoint at ``source`` to ``out`` with ``quantization.json``; checks that it loads."""
    if mode not in MODES:
        raise ValueError(f"quantization mode must be one of {MODES}, got {mode!r}")
    source, out = Path(source), Path(out)
    load_checkpoint(source)  # strict: a broken source fails here, naming its file
    if is_quantized(source):
        raise ValueError(f"{source} is already quantized ({read_mode(source)}); quantize the float32 one")
    out.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            shutil.copyfile(path, out / path.name)
    import torchao

    (out / QUANT_FILE).write_text(json.dumps(
        {"mode": mode, "source": str(source),
         "int4_group_size": INT4_GROUP if mode == "int4-weight" else None,
         "versions": {"torch": torch.__version__, "torchao": torchao.__version__}}, indent=2))
    load_quantized(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vla_ros quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="float32 checkpoint directory")
    p.add_argument("out", help="output directory")
    p.add_argument("--mode", required=True, choices=MODES)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = write_quantized(args.checkpoint, args.mode, args.out)
    fp32 = parameter_bytes(load_checkpoint(args.checkpoint).model)
    quant = parameter_bytes(load_quantized(out)[0].model)
    print(json.dumps({"out": str(out), "mode": args.mode, "parameter_bytes": quant, "fp32_bytes": fp32,
                      "ratio": round(quant / fp32, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
