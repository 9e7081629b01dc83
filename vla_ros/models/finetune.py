"""`vla_ros finetune`: LoRA adaptation of a trained checkpoint to a new task family (peft).

Everything of the base checkpoint is frozen; peft LoRA adapters go on the language model's
attention and MLP projections (``--targets``, ``--rank``, ``--alpha``) and the action head
(``head_parameters``: the regression head's queries and output MLP, or the flow expert) is trained
whole. The batches are the new family's demonstrations with a share (``--replay``) of frames from
the base's old tasks, built and augmented by models/train.py's functions.

    vla_ros finetune --data out/data/mark out/data/mark_dart --out out/finetune/mark --merge

OUT holds the adaptation apart from the base (a few hundred KB):

- ``adapter/``: the LoRA weights in peft's layout (adapter_config.json, adapter_model.safetensors:
  what ``PeftModel.save_pretrained`` writes, less its model card);
- ``head.safetensors``: the trained head's tensors;
- ``finetune.json``: the base checkpoint's path and the SHA-256 of its model.safetensors (checked at
  load), the LoRA settings, parameter counts, wall time and loss history;
- ``grounding.json``: the base's grounding lexicon with the new family's words and phrasing.

``load_policy`` (and so vla_node and `vla_ros eval`) serves such a directory as it is: the base is
loaded, the adapter applied and merged into its weights (peft ``merge_and_unload``), the head
replaced: inference runs a plain model with no LoRA branches. ``--merge`` (or ``--merge-adapter DIR
--out MERGED`` later) writes that merged model as a normal full checkpoint directory (OUT/merged).
Loading is strict: a tensor missing from, or unexpected in, the adapter or the head file is named.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from vla_ros.data.dataset import DatasetError, Episode, load_episode, load_meta
from vla_ros.models.checkpoint import (
    WEIGHTS_FILE,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_json,
    save_checkpoint,
)
from vla_ros.models.train import (
    InstructionPool,
    build_frames,
    check_interface,
    grounding_lexicon,
    load_datasets,
    lr_at,
    make_batch,
    seed_everything,
    split_episodes,
    validation_loss,
)
from vla_ros.models.vla import VLAModel, head_parameters

ADAPTER_DIR = "adapter"
HEAD_FILE = "head.safetensors"
FINETUNE_FILE = "finetune.json"
LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_BASE = "checkpoints/tiny"
DEFAULT_REPLAY = ("out/data/sim", "out/data/dart")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def target_pattern(targets: list[str] | tuple[str, ...]) -> str:
    """peft's target_modules as a regular expression: the named projections of every layer of the
    language model (and nothing of the vision tower, whose attention uses the same names)."""
    names = "|".join(re.escape(t) for t in targets)
    return rf"^language\.layers\.\d+\.(?:self_attn|mlp)\.(?:{names})$"


def check_targets(model: VLAModel, targets: list[str] | tuple[str, ...]) -> list[str]:
    """The modules ``targets`` select; a name that selects nothing is refused, with the valid ones."""
    if not targets:
        raise ValueError("--targets: name at least one projection of the language model")
    linear = [n for n, m in model.named_modules()
              if isinstance(m, nn.Linear) and n.startswith("language.layers.")]
    valid = sorted({n.rsplit(".", 1)[1] for n in linear})
    unknown = [t for t in targets if t not in valid]
    if unknown:
        raise ValueError(f"--targets {unknown}: not a projection of the language model's layers; "
                         f"valid: {', '.join(valid)}")
    pattern = re.compile(target_pattern(targets))
    return [n for n in linear if pattern.fullmatch(n)]


def trained_names(model: VLAModel, prefixes: tuple[str, ...]) -> list[str]:
    """The state_dict keys trained whole: those of the head (and any extra prefixes)."""
    return [k for k in model.state_dict() if k.startswith(prefixes)]


def add_lora(model: VLAModel, targets: list[str] | tuple[str, ...], rank: int, alpha: float,
             dropout: float = 0.0):
    """``model`` wrapped in a peft LoRA model (adapters injected in place; every base weight frozen)."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"--rank {rank}: must be >= 1")
    check_targets(model, targets)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules=target_pattern(targets))
    return get_peft_model(model, config)


def merge_lexicons(base: dict | None, new: dict | None) -> dict | None:
    """The base's grounding lexicon with the new one's task families, words and phrasings added (the
    base's phrasing of a family it already had is kept)."""
    if base is None or new is None:
        return new if base is None else base
    slots = {s: {v: list(ws) for v, ws in vals.items()} for s, vals in base["slots"].items()}
    for slot, values in new["slots"].items():
        for value, words in values.items():
            known = slots.setdefault(slot, {}).setdefault(value, [])
            known += [w for w in words if w not in known]
    destinations = {f: list(ws) for f, ws in base.get("destinations", {}).items()}
    for family, words in new.get("destinations", {}).items():
        known = destinations.setdefault(family, [])
        known += [w for w in words if w not in known]
    data = {"slots": slots, "destinations": destinations,
            "known_words": sorted(set(base.get("known_words", ())) | set(new.get("known_words", ())))}
    phrasings = {**new.get("phrasings", {}), **base.get("phrasings", {})}
    if phrasings:
        data["phrasings"] = dict(sorted(phrasings.items()))
    return data


def load_replay(directories: list[str], per_directory: int, ckpt: Checkpoint) -> list[Episode]:
    """The first ``per_directory`` episodes of each replay dataset (the old tasks' demonstrations)."""
    episodes: list[Episode] = []
    for directory in directories:
        try:
            meta = load_meta(directory)
            check_interface(ckpt, meta, directory)
            files = sorted(Path(directory).glob("episode_*.npz"))[:per_directory]
            episodes += [load_episode(f, meta["cameras"], images_on_disk=True) for f in files]
        except DatasetError as exc:
            raise SystemExit(f"--replay-data {directory}: {exc}") from exc
    return episodes


# ----- the adapter directory ----------------------------------------------------------------------
def is_adapter(directory: str | Path) -> bool:
    return (Path(directory) / FINETUNE_FILE).is_file()


def read_finetune(directory: Path) -> dict:
    path = directory / FINETUNE_FILE
    info = read_json(path)
    missing = [k for k in ("base", "base_sha256", "head", "trained") if k not in info]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    return info


def resolve_base(directory: Path, info: dict, base: str | Path | None) -> Path:
    """The base checkpoint an adapter applies to: ``base`` if given, else the path recorded (as
    given at fine-tuning, then absolute), whose model.safetensors must have the recorded SHA-256."""
    recorded = [Path(info["base"]), Path(info.get("base_absolute", ""))]
    candidates = [Path(base)] if base is not None else recorded
    found = next((c for c in candidates if str(c) and (c / WEIGHTS_FILE).is_file()), None)
    if found is None:
        raise CheckpointError(f"{directory / FINETUNE_FILE}: base checkpoint "
                              f"{' or '.join(str(c) for c in candidates if str(c))} not found")
    digest = file_sha256(found / WEIGHTS_FILE)
    if digest != info["base_sha256"]:
        raise CheckpointError(f"{directory / FINETUNE_FILE}: base {found / WEIGHTS_FILE} has SHA-256 "
                              f"{digest}, the adapter was trained on {info['base_sha256']}")
    return found


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt, cannot read safetensors ({exc})") from exc


def read_head(path: Path, model: VLAModel, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The head file, strictly: exactly the model's tensors under ``prefixes``, with their shapes."""
    state = read_safetensors(path)
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: does not match the base's {model.config.head} head: missing "
                              f"{missing}, unexpected {unexpected}, shape mismatch {wrong}")
    return state


def save_adapter(peft_model, directory: Path) -> None:
    """The LoRA weights and config as peft's ``save_pretrained`` lays them out (PeftModel.from_pretrained
    reads them), without the model card it also renders (that needs jinja2, and a training run must
    not be lost to it)."""
    from peft.utils import get_peft_model_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(peft_model)
    save_file({k: v.detach().contiguous() for k, v in state.items()},
              str(directory / "adapter_model.safetensors"))
    peft_model.peft_config["default"].save_pretrained(str(directory))


def load_lora_weights(peft_model, directory: Path) -> None:
    """adapter_model.safetensors into ``peft_model``, strictly (the LoRA tensors its config builds)."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    path = directory / "adapter_model.safetensors"
    state = read_safetensors(path)
    expected = get_peft_model_state_dict(peft_model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: does not match {directory / 'adapter_config.json'}: missing "
                              f"{missing}, unexpected {unexpected}, shape mismatch {wrong}")
    result = set_peft_model_state_dict(peft_model, state)
    if getattr(result, "unexpected_keys", None):
        raise CheckpointError(f"{path}: peft did not use {result.unexpected_keys}")


def load_adapter(directory: str | Path, base: str | Path | None = None, merge: bool = True):
    """The checkpoint an adapter directory stands for: its base with the LoRA weights and the head
    loaded. ``merge``: LoRA merged into the base weights (a plain VLAModel, as served); otherwise
    the peft model (``Checkpoint.model`` is then the PeftModel, for comparing the two)."""
    from peft import LoraConfig

    directory = Path(directory)
    info = read_finetune(directory)
    base_dir = resolve_base(directory, info, base)
    ckpt = load_checkpoint(base_dir)
    if ckpt.model.config.head != info["head"]:
        raise CheckpointError(f"{directory / FINETUNE_FILE}: the adapter's head is {info['head']!r}, "
                              f"the base {base_dir} has {ckpt.model.config.head!r}")
    adapter = directory / ADAPTER_DIR
    try:
        lora_config = LoraConfig.from_pretrained(str(adapter))
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{adapter / 'adapter_config.json'}: cannot read ({exc})") from exc
    model = ckpt.model
    head = read_head(directory / HEAD_FILE, model, tuple(info["trained"]))
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config)
    load_lora_weights(peft_model, adapter)
    model.load_state_dict(head, strict=False)  # read_head checked that it holds exactly these
    lexicon = ckpt.lexicon
    if (directory / "grounding.json").is_file():
        lexicon = json.loads((directory / "grounding.json").read_text())
    training = {"finetune": {k: v for k, v in info.items() if k != "history"}, "base_training": ckpt.training}
    served = peft_model.merge_and_unload() if merge else peft_model
    served.eval()
    return Checkpoint(served, ckpt.tokenizer, ckpt.normalizer, ckpt.robot, training, directory, lexicon)


def merge_adapter(directory: str | Path, out: str | Path, base: str | Path | None = None) -> Path:
    """The adapter directory as a normal full checkpoint directory at ``out`` (checked to load)."""
    ckpt = load_adapter(directory, base)
    save_checkpoint(out, ckpt)
    load_checkpoint(out)
    return Path(out)


# ----- training ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla_ros finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", help="the new task's dataset directories")
    p.add_argument("--out", required=True, help="output directory (the adapter; with --merge-adapter the "
                                                  "merged checkpoint)")
    p.add_argument("--base", default=DEFAULT_BASE, help=f"the checkpoint to adapt (default {DEFAULT_BASE})")
    p.add_argument("--head", choices=["regression", "flow"], default=None,
                   help="the head to train; must be the base's (the default)")
    p.add_argument("--targets", nargs="+", default=list(LM_PROJECTIONS),
                   help="language-model projections that get LoRA adapters (default: all attention and MLP)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout")
    p.add_argument("--train-also", nargs="*", default=[], metavar="PREFIX",
                   help="more parameter-name prefixes trained whole and saved with the head "
                        "(e.g. connector.)")
    p.add_argument("--replay", type=float, default=0.2,
                   help="share of each batch drawn from the old tasks' demonstrations (0 = none)")
    p.add_argument("--replay-data", nargs="*", default=list(DEFAULT_REPLAY),
                   help="old tasks' dataset directories (default: the default checkpoint's)")
    p.add_argument("--replay-episodes", type=int, default=200,
                   help="episodes read from each replay directory")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--shift", type=int, default=4, help="random-shift augmentation in pixels (0 = off)")
    p.add_argument("--state-noise", type=float, default=0.3, help="Gaussian noise on the normalised state")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--merge", action="store_true", help="also write the merged full checkpoint to OUT/merged")
    p.add_argument("--merge-adapter", default=None, metavar="DIR",
                   help="no training: write adapter directory DIR merged into its base as a checkpoint "
                        "at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parameter_counts(model: VLAModel, prefixes: tuple[str, ...]) -> dict[str, int]:
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))
    total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"lora": lora, "head": head, "trainable": trainable, "base_total": total}


def finetune(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    t_start = time.monotonic()
    torch.set_num_threads(max(1, args.threads))
    device = torch.device(args.device)
    seed_everything(args.seed)
    if not args.data:
        raise SystemExit("--data: name the new task's dataset directories")
    if not 0.0 <= args.replay < 1.0:
        raise SystemExit(f"--replay {args.replay}: must be in [0, 1)")
    try:
        base = load_checkpoint(args.base)
    except CheckpointError as exc:
        raise SystemExit(f"--base {args.base}: {exc}") from exc
    config = base.model.config
    if args.head is not None and args.head != config.head:
        raise SystemExit(f"--head {args.head}: the base {args.base} has the {config.head!r} head; LoRA "
                         f"fine-tuning trains the base's head")
    prefixes = (*head_parameters(config.head), *args.train_also)
    model: VLAModel = base.model
    if not trained_names(model, tuple(args.train_also)) and args.train_also:
        raise SystemExit(f"--train-also {args.train_also}: no parameter has such a name")
    try:
        peft_model = add_lora(model, args.targets, args.rank, args.alpha, args.dropout)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    for name, param in model.named_parameters():
        if name.startswith(prefixes):
            param.requires_grad_(True)
    counts = parameter_counts(model, prefixes)

    meta, episodes = load_datasets(args.data)
    check_interface(base, meta, " ".join(args.data))
    train_ids, val_ids = split_episodes(len(episodes), args.val_fraction, args.seed)
    new_eps = [episodes[i] for i in train_ids]
    replay_eps = load_replay(args.replay_data, args.replay_episodes, base) if args.replay > 0 else []
    if args.replay > 0 and not replay_eps:
        raise SystemExit(f"--replay {args.replay}: no episodes in --replay-data {args.replay_data}")
    cameras, norm = list(config.cameras), base.normalizer
    frames = build_frames(new_eps + replay_eps, cameras, config.image_size, config.chunk_size, norm)
    n_new = sum(len(e) for e in new_eps)
    val = build_frames([episodes[i] for i in val_ids], cameras, config.image_size, config.chunk_size, norm) \
        if val_ids else None
    pool = InstructionPool(frames, base.tokenizer, config.max_instruction_tokens)
    val_pool = None if val is None else InstructionPool(val, base.tokenizer, config.max_instruction_tokens)
    new_texts = sorted(set(frames.instruction[:n_new].tolist()))
    lexicon = merge_lexicons(base.lexicon, grounding_lexicon([frames.tasks[i] for i in new_texts],
                                                             [frames.texts[i] for i in new_texts],
                                                             [frames.texts[i] for i in new_texts]))

    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    sampler = np.random.default_rng(args.seed)
    n_replay = int(round(args.replay * args.batch_size)) if replay_eps else 0
    print(f"finetune {args.base} ({config.head} head): {counts['trainable']:,} trainable of "
          f"{counts['base_total']:,} parameters (LoRA {counts['lora']:,}, head {counts['head']:,}); "
          f"{len(new_eps)} new-task episodes ({n_new} frames), {len(replay_eps)} replay episodes "
          f"({len(frames.state) - n_new} frames), {n_replay} of {args.batch_size} samples replayed",
          file=sys.stderr)
    history, interval = [], []
    t0 = time.monotonic()
    bar = tqdm(total=args.steps, disable=args.quiet, desc="finetune", dynamic_ncols=True)
    for step in range(args.steps):
        for group in optim.param_groups:
            group["lr"] = lr_at(step, args.steps, args.warmup, args.lr)
        idx = sampler.integers(0, n_new, args.batch_size - n_replay)
        if n_replay:
            idx = np.concatenate([idx, sampler.integers(n_new, len(frames.state), n_replay)])
        ids, mask, images, state, actions = make_batch(frames, idx, pool.ids, pool.mask, shift=args.shift,
                                                       generator=gen, state_noise=args.state_noise)
        loss = model(ids.to(device), mask.to(device), images.to(device), state.to(device),
                     actions.to(device), generator=gen)["loss"]
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optim.step()
        interval.append(float(loss.detach()))
        bar.update(1)
        done = step + 1
        if done % args.val_every == 0 or done == args.steps:
            vl = validation_loss(model, val, val_pool.ids, val_pool.mask, args.batch_size) \
                if val is not None else float("nan")
            history.append({"step": done, "train_loss": float(np.mean(interval)), "val_loss": vl,
                            "elapsed_s": round(time.monotonic() - t0, 1)})
            interval.clear()
            tqdm.write(f"step {done}: train {history[-1]['train_loss']:.4f} val {vl:.4f} "
                       f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    bar.close()
    train_s = time.monotonic() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu").eval()
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)},
              str(out / HEAD_FILE))
    save_adapter(peft_model, out / ADAPTER_DIR)
    if lexicon is not None:
        (out / "grounding.json").write_text(json.dumps(lexicon, indent=1))
    info = {"command": "vla_ros finetune " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "base": str(args.base), "base_absolute": str(Path(args.base).resolve()),
            "base_sha256": file_sha256(Path(args.base) / WEIGHTS_FILE), "head": config.head,
            "trained": list(prefixes),
            "lora": {"targets": list(args.targets), "pattern": target_pattern(args.targets),
                     "rank": args.rank, "alpha": args.alpha, "dropout": args.dropout},
            "parameters": counts, "args": vars(args), "train_s": round(train_s, 1),
            "wall_s": round(time.monotonic() - t_start, 1), "history": history,
            "data": {"new": list(args.data), "new_train_episodes": len(new_eps),
                     "val_episodes": len(val_ids), "replay": list(args.replay_data) if replay_eps else [],
                     "replay_episodes": len(replay_eps), "replay_share": n_replay / args.batch_size}}
    (out / FINETUNE_FILE).write_text(json.dumps(info, indent=2, default=str))
    result = {"out": str(out), "parameters": counts, "train_s": info["train_s"],
              "final": history[-1] if history else None,
              "adapter_bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}
    if args.merge:
        result["merged"] = str(merge_adapter(out, out / "merged"))
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.merge_adapter is not None:
        torch.set_num_threads(max(1, args.threads))
        try:
            out = merge_adapter(args.merge_adapter, args.out, None)
        except CheckpointError as exc:
            raise SystemExit(f"--merge-adapter {args.merge_adapter}: {exc}") from exc
        print(json.dumps({"merged": str(out)}))
        return 0
    print(json.dumps(finetune(args, argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
