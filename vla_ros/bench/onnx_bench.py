"""`python -m vla_ros.bench onnx [--quick]`: a checkpoint exported to ONNX vs torch: parity and latency.

Exports the checkpoint (default: the default checkpoint; ``--config NAME``: that preset at random
init) into a temporary directory with ``vla_ros export-onnx``'s code, then
- parity: chunks of both on the same observations and flow noise (closed-loop rollouts of the
  torch model in the simulation), PCC per chunk (``pcc_min``) and max abs diff (normalised units);
- latency: ``predict_chunk`` (the cached step, preprocessing and normalisation included) of the
  torch policy and the onnxruntime policy on the same observation, interleaved, medians, for each
  thread count (torch intra-op threads / onnxruntime intra-op threads); and the instruction encode.
The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vla_ros.models.vla import PRESETS

INSTRUCTION = "pick up the red cube"


def random_checkpoint(config: str, directory: Path, seed: int = 0) -> Path:
    """A random-init checkpoint of a preset, for the sim robot's interface (latency-only rows)."""
    from vla_ros.models.checkpoint import RobotMeta, new_checkpoint, save_checkpoint
    from vla_ros.models.normalization import Normalizer
    from vla_ros.models.vla import make_config
    from vla_ros.sim import TabletopEnv

    torch.manual_seed(seed)
    cfg = make_config(config)
    env = TabletopEnv(image_size=(cfg.image_size, cfg.image_size), seed=0)
    robot = RobotMeta(list(env.state_names), list(env.action_names), list(cfg.cameras),
                      float(env.action_period))
    ckpt = new_checkpoint(cfg, Normalizer.identity(cfg.state_dim, cfg.action_dim), robot)
    return save_checkpoint(directory, ckpt)


def time_policies(policies: dict, observation, rounds: int, rng: random.Random) -> dict[str, float]:
    """Median predict_chunk milliseconds of each policy, interleaved in a shuffled order each round."""
    contexts = {name: p.encode_instruction(INSTRUCTION) for name, p in policies.items()}
    for name, p in policies.items():  # warm-up
        p.predict_chunk(observation, contexts[name])
    times = {name: [] for name in policies}
    for _ in range(rounds):
        order = list(policies)
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            policies[name].predict_chunk(observation, contexts[name])
            times[name].append(time.perf_counter() - t0)
    return {name: round(statistics.median(v) * 1e3, 3) for name, v in times.items()}


def time_encode(policy, rounds: int) -> float:
    times = []
    for i in range(rounds):
        t0 = time.perf_counter()
        policy.encode_instruction(f"{INSTRUCTION} {i}")  # distinct text: no LRU hit
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla_ros.bench onnx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one parity episode, fewer timing rounds")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the default one)")
    p.add_argument("--config", default=None, choices=sorted(PRESETS),
                   help="instead of a checkpoint: this preset at random init (latency only)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts to time")
    p.add_argument("--rounds", type=int, default=0, help="timing rounds (100; quick 20)")
    p.add_argument("--episodes", type=int, default=0, help="parity episodes (3; quick 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rounds = args.rounds or (20 if args.quick else 100)
    episodes = args.episodes or (1 if args.quick else 3)
    threads = [int(t) for t in args.threads.split(",")]
    rng = random.Random(args.seed)

    from vla_ros.core.policy import Observation
    from vla_ros.models.checkpoint import load_checkpoint
    from vla_ros.models.onnx_export import export_checkpoint
    from vla_ros.models.onnx_policy import parity_check
    from vla_ros.models.policy import default_checkpoint, load_policy

    with tempfile.TemporaryDirectory(prefix="vla_ros_onnx_") as tmp:
        source = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
        if args.config:
            source = random_checkpoint(args.config, Path(tmp) / "source", args.seed)
        torch.set_num_threads(threads[0])
        t0 = time.monotonic()
        exported = export_checkpoint(load_checkpoint(source), Path(tmp) / "onnx")
        export_s = time.monotonic() - t0
        onnx_bytes = sum(f.stat().st_size for f in exported.glob("*.onnx"))
        parity = parity_check(source, exported, episodes=episodes, max_steps=20 if args.quick else 40,
                              threads=threads[0], seed=200_000 + args.seed)
        latency = {}
        for n in threads:
            policies = {"torch": load_policy(source, threads=n, rtc="off"),
                        "onnxruntime": load_policy(exported, threads=n, rtc="off")}
            spec = policies["torch"].spec
            h, w = spec.image_size
            images = {cam: np.random.default_rng(args.seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
                      for cam in spec.cameras}
            observation = Observation(0.0, images, np.zeros(spec.state_dim, np.float32))
            step = time_policies(policies, observation, rounds, rng)
            encode = {name: time_encode(policy, max(5, rounds // 4)) for name, policy in policies.items()}
            latency[str(n)] = {"step_ms": step, "encode_ms": encode,
                               "speedup": round(step["torch"] / step["onnxruntime"], 3)}
    head = parity["head"]
    print(f"{source if not args.config else args.config + ' (random init)'}: {head} head, exported in "
          f"{export_s:.1f} s, {onnx_bytes / 1e6:.1f} MB of ONNX; parity over {parity['steps']} chunks: "
          f"PCC min {parity['pcc_min']:.7f}, max abs diff {parity['max_abs_diff']:.2e}")
    print("| threads | torch step (ms) | onnxruntime step (ms) | speed-up | torch encode (ms) "
          "| ort encode (ms) |")
    print("|---|---|---|---|---|---|")
    for n, row in latency.items():
        print(f"| {n} | {row['step_ms']['torch']:.2f} | {row['step_ms']['onnxruntime']:.2f} "
              f"| {row['speedup']:.2f}x | {row['encode_ms']['torch']:.2f} "
              f"| {row['encode_ms']['onnxruntime']:.2f} |")
    result = {"benchmark": "onnx", "checkpoint": str(source) if not args.config else None,
              "config": args.config, "head": head, "rounds": rounds, "steps": parity["steps"],
              "pcc_min": parity["pcc_min"], "pcc_mean": parity["pcc_mean"],
              "max_abs_diff": parity["max_abs_diff"], "export_s": round(export_s, 1),
              "onnx_bytes": onnx_bytes,
              "latency": latency}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
