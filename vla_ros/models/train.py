"""`vla_ros train`: behaviour cloning of a VLA model from demonstration episodes.

AdamW with linear warmup + cosine decay, random-shift image augmentation (DrQ-style), a held-out
validation split by episode, a tqdm bar, fixed seeds and resumable training state.

    vla_ros train --data out/data/sim --out out/train/tiny --config tiny --steps 3000
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vla_ros.data.dataset import Episode, action_offset_steps, load_dataset
from vla_ros.models.checkpoint import Checkpoint, RobotMeta, load_checkpoint, save_checkpoint
from vla_ros.models.normalization import Normalizer
from vla_ros.models.tokenizer import (
    ByteTokenizer,
    FileTokenizer,
    batch_encode,
    embedding_table,
    pretrained_vocabulary,
)
from vla_ros.models.vla import PRESETS, VLAConfig, VLAModel, head_parameters, make_config

STATE_FILE = "train_state.pt"


@dataclass
class Frames:
    """Every frame of a set of episodes, flattened, with the index of its episode's chunk ends."""

    images: np.ndarray  # uint8 [N, C, 3, S, S]
    state: np.ndarray  # float32 [N, S] normalised
    chunks: np.ndarray  # float32 [N, H, A] normalised action targets (last action repeated past the end)
    instruction: np.ndarray  # int [N] index into texts
    texts: list[str]
    tasks: list[dict]  # per text: the task parameters of its first episode (family, colour, shape, ...)


def build_frames(episodes: list[Episode], cameras: list[str], image_size: int, chunk: int,
                 norm: Normalizer) -> Frames:
    # the images go straight into one preallocated array: no per-episode copies to concatenate, so
    # with episodes loaded images_on_disk the dataset's images are in memory once
    images = np.empty((sum(len(ep) for ep in episodes), len(cameras), 3, image_size, image_size), np.uint8)
    states, chunks, instr, texts, tasks = [], [], [], [], []
    text_index: dict[str, int] = {}
    start = 0
    for ep in episodes:
        T = len(ep)
        cams = np.stack([ep.images[c] for c in cameras], axis=1)  # [T, C, H, W, 3]
        t = torch.from_numpy(cams).permute(0, 1, 4, 2, 3)  # [T, C, 3, H, W]
        if t.shape[-1] != image_size or t.shape[-2] != image_size:
            flat = F.interpolate(t.flatten(0, 1).float(), size=(image_size, image_size), mode="bilinear",
                                 antialias=True, align_corners=False)
            t = flat.round().clamp(0, 255).to(torch.uint8).view(T, len(cameras), 3, image_size, image_size)
        images[start:start + T] = t.numpy()
        start += T
        states.append(norm.normalize_state(ep.state))
        if ep.chunk is not None:  # a teacher's chunk per frame (vla_ros distill)
            if ep.chunk.shape[1] < chunk:
                raise SystemExit(f"episode with instruction {ep.instruction!r} (task {ep.task}): its teacher "
                                 f"chunks hold {ep.chunk.shape[1]} actions, this model predicts {chunk}")
            chunks.append(norm.normalize_action(ep.chunk[:, :chunk]))
        else:
            idx = np.minimum(np.arange(T)[:, None] + np.arange(chunk)[None], T - 1)  # [T, H]
            chunks.append(norm.normalize_action(ep.action)[idx])
        text_index.setdefault(ep.instruction, len(texts))
        if text_index[ep.instruction] == len(texts):
            texts.append(ep.instruction)
            tasks.append(ep.task)
        instr.append(np.full(T, text_index[ep.instruction]))
    return Frames(images, np.concatenate(states), np.concatenate(chunks),
                  np.concatenate(instr), texts, tasks)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ±pad pixels (edge-replicated), as in DrQ; images [B, C, 3, S, S].
    The generator must live on the images' device."""
    if pad <= 0:
        return images
    B, C, _, S, _ = images.shape
    device = images.device
    flat = F.pad(images.flatten(0, 1), (pad, pad, pad, pad), mode="replicate")  # [N, 3, S+2p, S+2p]
    offsets = torch.randint(0, 2 * pad + 1, (B * C, 2), generator=generator, device=device)  # [N, (y, x)]
    ramp = torch.arange(S, device=device)
    rows = (offsets[:, 0, None] + ramp)[:, None, :, None]  # [N, 1, S, 1]
    cols = (offsets[:, 1, None] + ramp)[:, None, None, :]  # [N, 1, 1, S]
    n = torch.arange(B * C, device=device)[:, None, None, None]
    ch = torch.arange(3, device=device)[None, :, None, None]
    return flat[n, ch, rows, cols].view(B, C, 3, S, S)


def frames_to(frames: Frames, device: torch.device) -> Frames:
    """The same frames as tensors on `device` (the whole dataset moves once; batches are gathered there)."""
    return Frames(torch.from_numpy(frames.images).to(device), torch.from_numpy(frames.state).to(device),
                  torch.from_numpy(frames.chunks).to(device), frames.instruction, frames.texts, frames.tasks)


class InstructionPool:
    """The token rows a frame's instruction may be drawn from at batch time: its recorded text
    (column 0) and ``k`` generated paraphrases of its task (sim/paraphrase.py), tokenised once.
    With ``k`` = 0 every frame keeps its recorded text."""

    def __init__(self, frames: Frames, tokenizer, max_tokens: int, k: int = 0, keep: float = 0.25,
                 seed: int = 0):
        from vla_ros.sim.paraphrase import paraphrase

        if k and not all({"family", "colour", "shape"} <= set(t) for t in frames.tasks):
            bad = next(i for i, t in enumerate(frames.tasks) if not {"family", "colour", "shape"} <= set(t))
            raise SystemExit(f"--paraphrase needs each episode's task family, colour and shape; the episode "
                             f"with instruction {frames.texts[bad]!r} has task {frames.tasks[bad]}")
        rng = np.random.default_rng(seed)
        texts = list(frames.texts)
        columns = [[i] for i in range(len(texts))]
        for i, task in enumerate(frames.tasks if k else []):
            for _ in range(k):
                columns[i].append(len(texts))
                texts.append(paraphrase(task["family"], task["colour"], task["shape"], rng))
        self.texts, self.k, self.keep = texts, k, keep
        self.columns = np.array(columns)  # [n_recorded, 1 + k] rows of ids/mask
        self.ids, self.mask, _ = batch_encode(tokenizer, texts, max_tokens)

    def rows(self, text_index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The token row for each sample whose recorded instruction is ``text_index``."""
        if not self.k:
            return text_index
        column = rng.integers(1, self.k + 1, len(text_index))
        column[rng.random(len(text_index)) < self.keep] = 0
        return self.columns[text_index, column]


def make_batch(frames: Frames, idx, token_ids: torch.Tensor, token_mask: torch.Tensor,
               shift: int = 0, generator: torch.Generator | None = None, state_noise: float = 0.0,
               token_rows: np.ndarray | None = None):
    """A training batch from `frames` (numpy, or tensors from frames_to) at rows `idx` (numpy);
    ``token_rows`` (default: the recorded instruction's) picks each sample's row of token_ids.
    Tokens are looked up on the CPU, so trimming their padding never waits on the GPU."""
    rows = torch.from_numpy(frames.instruction[idx] if token_rows is None else token_rows)
    ids, mask = token_ids[rows], token_mask[rows]
    keep = int(mask.sum(1).max())  # trim padding columns no row of this batch needs
    on_device = isinstance(frames.images, torch.Tensor)
    as_tensor = (lambda a: a) if on_device else torch.from_numpy
    device = frames.images.device if on_device else torch.device("cpu")
    if on_device:
        idx = torch.from_numpy(idx).to(device)
    images = as_tensor(frames.images[idx]).float().div_(255.0)
    if shift:
        images = random_shift(images, shift, generator)
    state = as_tensor(frames.state[idx])
    if state_noise > 0:
        state = state + state_noise * torch.randn(state.shape, generator=generator, device=state.device)
    return (ids[:, :keep].to(device), mask[:, :keep].to(device), images, state,
            as_tensor(frames.chunks[idx]))


def interface_value(meta: dict, key: str):
    """A dataset's robot-interface entry (``action_offset_steps`` with its default)."""
    return action_offset_steps(meta) if key == "action_offset_steps" else meta[key]


def load_datasets(directories: list[str]) -> tuple[dict, list[Episode]]:
    """One or more datasets recorded for the same robot interface, concatenated; a vla_ros
    directory's images stay on disk until build_frames reads them."""
    meta, episodes = load_dataset(directories[0], images_on_disk=True)
    for directory in directories[1:]:
        other, more = load_dataset(directory, images_on_disk=True)
        for key in ("cameras", "state_names", "action_names", "fps", "action_offset_steps"):
            if interface_value(other, key) != interface_value(meta, key):
                raise SystemExit(f"{directory}: {key} {interface_value(other, key)} differs from "
                                 f"{directories[0]}: {interface_value(meta, key)}")
        episodes += more
    return meta, episodes


def grounding_lexicon(tasks: list[dict], texts: list[str], recorded: list[str]) -> dict | None:
    """The lexicon the node grounds goals in (grounding.json), for data from the simulator's task
    families, with each task's phrasing from the ``recorded`` instructions (one per task); None
    (no check) for data whose tasks lack a family, colour and shape."""
    from vla_ros.sim.paraphrase import lexicon

    if not tasks or not all({"family", "colour", "shape"} <= set(t) for t in tasks):
        return None
    return lexicon(tasks, texts, recorded)


def make_tokenizer(name: str, casefold: bool):
    """The tokenizer of `--tokenizer` and the VLAConfig fields it sets ({} for bytes)."""
    if name == "bytes":
        return ByteTokenizer(casefold=casefold), {}
    try:
        tokenizer_path, _ = pretrained_vocabulary(name)
        _, digest = embedding_table(name)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"--tokenizer {name}: {exc}") from exc
    tokenizer = FileTokenizer(tokenizer_path, casefold=casefold)
    return tokenizer, {"token_embeddings": name, "token_embeddings_sha256": digest,
                       "vocab_size": tokenizer.vocab_size}


def load_initial_weights(model: VLAModel, state: dict, allow_fresh: bool,
                         old_head: str | None = None) -> None:
    """`--init`'s weights into ``model``, strictly unless ``allow_fresh`` (a new tokenizer: its
    embedding starts fresh, and each tensor that does is named). ``old_head``: the checkpoint's head
    when it differs from the model's; the new head's tensors start fresh and the old one's are left,
    and nothing else may differ."""
    target = model.state_dict()
    fresh = sorted(k for k in target if k not in state or state[k].shape != target[k].shape)
    unused = sorted(k for k in state if k not in target)
    stray = fresh + unused
    if old_head is not None:
        new_head, old = head_parameters(model.config.head), head_parameters(old_head)
        fresh = sorted(set(fresh) | {k for k in target if k.startswith(new_head)})
        unused = sorted(set(unused) | {k for k in state if k.startswith(old)})
        stray = [k for k in fresh if not k.startswith(new_head)] + \
            [k for k in unused if not k.startswith(old)]
    if stray and not allow_fresh:
        missing, unexpected = [k for k in fresh if k in stray], [k for k in unused if k in stray]
        raise SystemExit(f"--init: the checkpoint does not match the model: missing {missing}, "
                         f"unexpected {unexpected}")
    model.load_state_dict({k: v for k, v in state.items() if k in target and k not in fresh}, strict=False)
    if fresh or unused:
        print(f"--init: fresh {fresh}; not used from the checkpoint {unused}", file=sys.stderr)


VISION_CONFIG_KEYS = ("image_size", "patch_size", "vision_width", "vision_layers", "vision_heads",
                      "vision_mlp")


def load_vision_tower(model: VLAModel, directory: str, meta: dict) -> int:
    """`--init-vision`: the vision tower (``vision.*``) from a trained checkpoint with the same cameras,
    every tensor of it strictly; the rest of ``model`` keeps its fresh weights. Returns the tensors
    copied. Pooling and the connector are not part of the tower, so ``pooled_grid`` may differ."""
    ckpt = load_checkpoint(directory)
    if list(ckpt.robot.cameras) != list(meta["cameras"]):
        raise SystemExit(f"--init-vision {directory}: its cameras {list(ckpt.robot.cameras)} differ from the "
                         f"dataset's {list(meta['cameras'])}")
    theirs, ours = ckpt.model.config, model.config
    differ = [f"{k} {getattr(theirs, k)} (ours {getattr(ours, k)})" for k in VISION_CONFIG_KEYS
              if getattr(theirs, k) != getattr(ours, k)]
    if differ:
        raise SystemExit(f"--init-vision {directory}: its vision tower differs from this model's: "
                         + ", ".join(differ))
    source = {k: v for k, v in ckpt.model.state_dict().items() if k.startswith("vision.")}
    target = [k for k in model.state_dict() if k.startswith("vision.")]
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    if missing or unexpected:
        raise SystemExit(f"--init-vision {directory}: missing {missing}, unexpected {unexpected}")
    model.load_state_dict(source, strict=False)
    return len(source)


def initial_checkpoint(directory: str, meta: dict, overrides: dict) -> Checkpoint:
    """The checkpoint `--init` fine-tunes: its robot interface must be the dataset's, and its
    architecture is kept (so --chunk-size and --set are refused); --head may swap the action head,
    which then starts fresh on the checkpoint's trunk."""
    if set(overrides) - {"head"}:
        raise SystemExit(f"--init {directory}: the checkpoint fixes the architecture; drop the overrides "
                         f"{sorted(set(overrides) - {'head'})}")
    ckpt = load_checkpoint(directory)
    check_interface(ckpt, meta, f"--init {directory}")
    return ckpt


def check_interface(ckpt: Checkpoint, meta: dict, where: str) -> None:
    """A dataset (``meta``) must be recorded for the checkpoint's robot interface."""
    for key, ours in (("cameras", ckpt.robot.cameras), ("state_names", ckpt.robot.state_names),
                      ("action_names", ckpt.robot.action_names)):
        if list(meta[key]) != list(ours):
            raise SystemExit(f"{where}: the dataset's {key} {list(meta[key])} differ from the checkpoint's "
                             f"{list(ours)}")
    offset = interface_value(meta, "action_offset_steps")
    if offset != ckpt.robot.action_offset_steps:
        raise SystemExit(f"{where}: the dataset's action_offset_steps {offset} differs from the "
                         f"checkpoint's {ckpt.robot.action_offset_steps}")
    if abs(1.0 / float(meta["fps"]) - ckpt.robot.action_period) > 1e-9:
        raise SystemExit(f"{where}: the dataset's 1/{meta['fps']} s per action differs from the "
                         f"checkpoint's {ckpt.robot.action_period} s")


def lr_at(step: int, total: int, warmup: int, base: float, final_fraction: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 and val_fraction > 0 else 0
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla_ros train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, nargs="+", help="dataset directories (vla_ros-episodes)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--config", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--head", choices=["regression", "flow"], default=None)
    p.add_argument("--rtc-train-delay", type=int, default=None, metavar="D",
                   help="flow head: train-time real-time chunking, the first d actions of each chunk given "
                        "clean and not learned (d = 0 for half the rows, else U{1..D}), for vla_node's "
                        "real_time_chunking 'prefix'; allowed with --init (no weight changes shape)")
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other VLAConfig overrides")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--shift", type=int, default=4, help="random-shift augmentation in pixels (0 = off)")
    p.add_argument("--state-noise", type=float, default=0.0, help="Gaussian noise on the normalised state")
    p.add_argument("--paraphrase", type=int, default=0, metavar="K",
                   help="language augmentation: K generated paraphrases per task (sim/paraphrase.py), one "
                        "drawn per sample in place of the recorded instruction (0 = off)")
    p.add_argument("--paraphrase-keep", type=float, default=0.25,
                   help="with --paraphrase: probability that a sample keeps its recorded instruction")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="fine-tune: start from this checkpoint's weights, architecture and normalisation")
    p.add_argument("--init-vision", default=None, metavar="CHECKPOINT",
                   help="a pretrained component: the vision tower from this trained checkpoint (same "
                        "cameras, same tower sizes; e.g. checkpoints/tiny for --config small), the rest "
                        "fresh")
    p.add_argument("--tokenizer", default="bytes",
                   help="bytes (the byte tokenizer, embeddings learned), or a pretrained vocabulary with its "
                        "frozen embedding table: wordllama (PyPI package, extra `language`) or a local "
                        "directory with tokenizer.json and embeddings.safetensors")
    p.add_argument("--casefold", action="store_true",
                   help="the tokenizer casefolds instructions (the byte tokenizer also collapses whitespace)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--max-episodes", type=int, default=0, help="use only the first N episodes (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda, cuda:1, ...)")
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="fit the run into this wall time: after warm-up, --steps is lowered to what the "
                        "measured speed allows (the cosine schedule follows); training.json records it")
    p.add_argument("--resume", action="store_true", help=f"continue from STATE_DIR/{STATE_FILE}")
    p.add_argument("--state-dir", default=None, help="where the resumable training state goes (default: OUT)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@torch.no_grad()
def validation_loss(model: VLAModel, frames: Frames, ids: torch.Tensor, mask: torch.Tensor,
                    batch: int, max_samples: int = 1024, seed: int = 0) -> float:
    if len(frames.state) == 0:
        return float("nan")
    model.eval()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(frames.state))[:max_samples]
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    losses, weights = [], []
    for start in range(0, len(idx), batch):
        part = idx[start:start + batch]
        i, m, img, st, act = make_batch(frames, part, ids, mask)
        if model.config.head == "regression":
            loss = F.l1_loss(model.predict_uncached(i, m, img, st), act)
        else:
            loss = model(i, m, img, st, act, generator=gen)["loss"]
        losses.append(float(loss))
        weights.append(len(part))
    model.train()
    return float(np.average(losses, weights=weights))


class TimeBudget:
    """--max-seconds: measure the speed during warm-up and, once, give the total step count that
    ends the run (data loading included) within the budget, less a 10% reserve for validation and
    saving. Decided before the cosine decay starts, so `--steps <that count>` reproduces the run
    exactly (when warm-up is at least 120 steps)."""

    def __init__(self, seconds: float, t_start: float, first_step: int, warmup: int) -> None:
        self.seconds, self.t_start = seconds, t_start
        self.begin, self.end = first_step + 20, first_step + max(warmup, 120)
        self.t_begin: float | None = None
        self.rate = 0.0

    def steps_after(self, done: int) -> int | None:
        if done == self.begin:
            self.t_begin = time.monotonic()
        if done != self.end or self.t_begin is None:
            return None
        now = time.monotonic()
        self.rate = (self.end - self.begin) / (now - self.t_begin)
        remaining = 0.9 * self.seconds - (now - self.t_start)
        return done + max(0, int(self.rate * remaining))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.init_vision and args.init:
        raise SystemExit("--init-vision: --init already gives every tensor, the vision tower included")
    t_start = time.monotonic()
    torch.set_num_threads(max(1, args.threads))
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    meta, episodes = load_datasets(args.data)
    if args.max_episodes:
        episodes = episodes[: args.max_episodes]
    train_ids, val_ids = split_episodes(len(episodes), args.val_fraction, args.seed)
    overrides = parse_overrides(args.set)
    if args.head:
        overrides["head"] = args.head
    if args.chunk_size:
        overrides["chunk_size"] = args.chunk_size
    cameras = list(meta["cameras"])
    train_eps = [episodes[i] for i in train_ids]
    init = initial_checkpoint(args.init, meta, overrides) if args.init else None
    tokenizer, vocabulary = make_tokenizer(args.tokenizer, args.casefold)
    old_head = None
    if init is not None:  # fine-tuning: the checkpoint's architecture and normalisation
        config, norm = init.model.config, init.normalizer
        if overrides.get("head", config.head) != config.head:
            old_head = config.head
        if vocabulary or old_head:
            config = VLAConfig.from_dict({**config.to_dict(), **vocabulary, **overrides})
    else:
        config = make_config(args.config, cameras=cameras, state_dim=len(meta["state_names"]),
                             action_dim=len(meta["action_names"]), **overrides, **vocabulary)
        norm = Normalizer.fit(np.concatenate([e.state for e in train_eps]),
                              np.concatenate([e.action for e in train_eps]))
    if args.rtc_train_delay is not None:
        if config.head != "flow":
            raise SystemExit(f"--rtc-train-delay: only the flow head conditions on given actions; this "
                             f"model's head is {config.head!r}")
        config = VLAConfig.from_dict({**config.to_dict(), "rtc_train_delay": args.rtc_train_delay})
    train = build_frames(train_eps, cameras, config.image_size, config.chunk_size, norm)
    val = build_frames([episodes[i] for i in val_ids], cameras, config.image_size, config.chunk_size, norm) \
        if val_ids else None

    pool = InstructionPool(train, tokenizer, config.max_instruction_tokens, args.paraphrase,
                           args.paraphrase_keep, args.seed)
    lexicon = grounding_lexicon(train.tasks, pool.texts, train.texts)
    if device.type != "cpu":
        train = frames_to(train, device)
        val = frames_to(val, device) if val is not None else None

    train_tok = pool.ids, pool.mask
    val_tok = None if val is None else batch_encode(tokenizer, val.texts, config.max_instruction_tokens)[:2]
    robot = RobotMeta(state_names=list(meta["state_names"]), action_names=list(meta["action_names"]),
                      cameras=cameras, action_period=1.0 / float(meta["fps"]),
                      action_offset_steps=interface_value(meta, "action_offset_steps"))

    model = VLAModel(config)
    if init is not None:
        load_initial_weights(model, init.model.state_dict(), allow_fresh=bool(vocabulary), old_head=old_head)
    if args.init_vision:
        copied = load_vision_tower(model, args.init_vision, meta)
        print(f"--init-vision: {copied} vision tower tensors from {args.init_vision}", file=sys.stderr)
    model = model.to(device)
    model.train()
    def decays(name: str, p: torch.Tensor) -> bool:
        return p.ndim >= 2 and "embed" not in name and "queries" not in name

    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    no_decay = [p for n, p in model.named_parameters() if not decays(n, p)]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95),
                              fused=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    sampler = np.random.default_rng(args.seed)
    start_step, history = 0, []
    state_path = Path(args.state_dir or out) / STATE_FILE
    state_path.parent.mkdir(parents=True, exist_ok=True)
    if args.resume:
        if not state_path.is_file():
            raise SystemExit(f"--resume: {state_path} not found")
        saved = torch.load(state_path, weights_only=False, map_location=device)
        model.load_state_dict(saved["model"])
        optim.load_state_dict(saved["optim"])
        start_step, history = saved["step"], saved["history"]
        gen.set_state(saved["torch_gen"].cpu())
        sampler.bit_generator.state = saved["sampler"]
        torch.set_rng_state(saved["torch_rng"].cpu())
        print(f"resumed from {state_path} at step {start_step}", file=sys.stderr)

    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.config} head={config.head}: {n_params / 1e6:.2f}M parameters; "
          f"{len(train_ids)} train / {len(val_ids)} val episodes, {len(train.state)} train frames, "
          f"{len(train.texts)} distinct instructions"
          + (f", {args.paraphrase} paraphrases of each" if args.paraphrase else ""), file=sys.stderr)

    def save(step: int, final: bool) -> None:
        val_loss = history[-1]["val_loss"] if history else float("nan")
        info = {"command": "vla_ros train " + shlex.join(argv if argv is not None else sys.argv[1:]),
                "config_preset": args.config, "args": vars(args), "step": step, "history": history,
                "dataset": {"path": str(args.data), "episodes": len(episodes),
                            "train_episodes": len(train_ids), "val_episodes": len(val_ids),
                            "fps": meta["fps"]},
                "val_loss": val_loss, "parameters": n_params, "finished": final}
        save_checkpoint(out, Checkpoint(model, tokenizer, norm, robot, info, lexicon=lexicon))
        torch.save({"model": model.state_dict(), "optim": optim.state_dict(), "step": step,
                    "history": history, "torch_gen": gen.get_state(), "sampler": sampler.bit_generator.state,
                    "torch_rng": torch.get_rng_state()}, state_path)

    t0 = time.monotonic()
    running, interval, pending = None, [], []
    bar = tqdm(initial=start_step, total=args.steps, disable=args.quiet, desc="train", dynamic_ncols=True)
    fit = TimeBudget(args.max_seconds, t_start, start_step, args.warmup) if args.max_seconds > 0 else None
    step = start_step
    while step < args.steps:
        for group in optim.param_groups:
            group["lr"] = lr_at(step, args.steps, args.warmup, args.lr)
        idx = sampler.integers(0, len(train.state), args.batch_size)
        ids, mask, images, state, actions = make_batch(train, idx, *train_tok, shift=args.shift,
                                                       generator=gen, state_noise=args.state_noise,
                                                       token_rows=pool.rows(train.instruction[idx], sampler))
        loss = model(ids, mask, images, state, actions, generator=gen)["loss"]
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        pending.append(loss.detach())
        step = done = step + 1
        bar.update(1)
        if fit is not None and (steps := fit.steps_after(done)) is not None and steps < args.steps:
            tqdm.write(f"--max-seconds {args.max_seconds:g}: {fit.rate:.1f} steps/s, so {steps} steps "
                       f"instead of {args.steps}", file=sys.stderr)
            args.steps = bar.total = steps
        if len(pending) >= 50 or done % args.val_every == 0 or done == args.steps:
            values = torch.stack(pending).tolist()  # one device sync per 50 steps, not per step
            pending.clear()
            interval += values
            for value in values:
                running = value if running is None else 0.98 * running + 0.02 * value
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{optim.param_groups[0]['lr']:.2e}")
        if done % args.val_every == 0 or done == args.steps:
            vl = validation_loss(model, val, *val_tok, args.batch_size) if val is not None else float("nan")
            train_loss = float(np.mean(interval))  # mean over the steps since the last validation
            interval.clear()
            history.append({"step": done, "train_loss": train_loss, "val_loss": vl,
                            "elapsed_s": round(time.monotonic() - t0, 1)})
            tqdm.write(f"step {done}: train {train_loss:.4f} val {vl:.4f} "
                       f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
            save(done, final=done == args.steps)
    bar.close()
    if start_step >= args.steps:
        print(f"nothing to do: already at step {start_step}", file=sys.stderr)
    print(json.dumps({"out": str(out), "steps": args.steps, "final": history[-1] if history else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
