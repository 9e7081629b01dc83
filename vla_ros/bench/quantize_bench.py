"""`python -m vla_ros.bench quantize [--quick]`: every quantization mode of a checkpoint vs float32.

For float32 and each mode of ``vla_ros quantize`` (models/quantize.py), written to a temporary
directory and loaded by ``load_policy`` as the node would:
- ``parameter_bytes``: the weights as they sit in memory;
- ``step_ms``: ``predict_chunk`` over a cached instruction (preprocessing included), medians of
  interleaved rounds, for each ``--threads`` count;
- ``action_error``: mean L2 between predicted and demonstrated chunks on held-out scripted-expert
  demonstrations (normalised units, as ``vla_ros eval``), and ``pcc_min`` / ``pcc_mean`` /
  ``max_abs_diff``: the chunks vs float32's on the same observations and flow noise;
- with ``--episodes N``: closed-loop success through the runtime executor (as ``vla_ros eval``).
``--config NAME`` times a preset at random init instead (latency and bytes; its errors mean little).
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

MODES = ("fp32", "int8-dynamic", "int8-weight", "int4-weight", "bf16")


def chunks_vs_reference(policies: dict, demos, seed: int) -> dict[str, dict]:
    """PCC / max abs diff of each policy's normalised chunks vs ``policies['fp32']`` on the demos'
    observations (every third step), with the same flow noise."""
    from vla_ros.core.policy import Observation
    from vla_ros.models.parity import pcc

    gen = torch.Generator().manual_seed(seed)
    pairs: dict[str, list] = {name: [] for name in policies if name != "fp32"}
    ref = policies["fp32"]
    cfg = ref.model.config
    contexts = {}
    with torch.inference_mode():
        for demo in demos:
            for name, policy in policies.items():
                contexts[name] = policy.encode_instruction(demo.instruction)
            for t in range(0, len(demo.actions), 3):
                ob = demo.observations[t]
                images, state = ref.preprocess(Observation(0.0, ob["images"], ob["state"]))
                noise = torch.randn(1, cfg.chunk_size, cfg.action_dim, generator=gen)
                a = ref.model.predict(contexts["fp32"].cache, images, state, noise)[0].float().numpy()
                for name in pairs:
                    b = policies[name].model.predict(contexts[name].cache, images, state, noise)[0]
                    pairs[name].append((a, b.float().numpy()))
    out = {}
    for name, p in pairs.items():
        per = [pcc(a, b) for a, b in p]
        out[name] = {"pcc_min": min(per), "pcc_mean": float(np.mean(per)),
                     "max_abs_diff": float(max(np.abs(a - b).max() for a, b in p)), "chunks": len(p)}
    return out


def step_latency(policies: dict, observation, rounds: int, rng: random.Random) -> dict[str, float]:
    contexts = {name: p.encode_instruction("pick up the red cube") for name, p in policies.items()}
    for name, p in policies.items():
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla_ros.bench quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer demonstrations and timing rounds")
    p.add_argument("--checkpoint", default=None, help="float32 checkpoint (default: the default one)")
    p.add_argument("--config", default=None, choices=sorted(PRESETS), help="a preset at random init instead")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, from " + ", ".join(MODES))
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts to time")
    p.add_argument("--rounds", type=int, default=0, help="timing rounds (60; quick 10)")
    p.add_argument("--demos", type=int, default=0, help="held-out demonstrations (10; quick 2)")
    p.add_argument("--episodes", type=int, default=0, help="closed-loop episodes per mode (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if "fp32" not in modes:
        modes.insert(0, "fp32")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        p.error(f"unknown modes {unknown}; choose from {list(MODES)}")
    rounds = args.rounds or (10 if args.quick else 60)
    n_demos = args.demos or (2 if args.quick else 10)
    threads = [int(t) for t in args.threads.split(",")]
    rng = random.Random(args.seed)

    from vla_ros.bench.onnx_bench import random_checkpoint
    from vla_ros.core.policy import Observation
    from vla_ros.models.evaluate import EVAL_SEED, action_error, closed_loop_runtime, expert_demos
    from vla_ros.models.policy import default_checkpoint, load_policy
    from vla_ros.models.quantize import parameter_bytes, write_quantized
    from vla_ros.sim import TabletopEnv

    with tempfile.TemporaryDirectory(prefix="vla_ros_quant_") as tmp:
        source = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
        if args.config:
            source = random_checkpoint(args.config, Path(tmp) / "source", args.seed)
        dirs = {m: source if m == "fp32" else write_quantized(source, m, Path(tmp) / m) for m in modes}
        torch.set_num_threads(threads[0])
        policies = {m: load_policy(d, threads=threads[0], rtc="off") for m, d in dirs.items()}
        spec = policies["fp32"].spec
        env = TabletopEnv(image_size=spec.image_size, action_period=spec.action_period, seed=0, max_steps=100)
        demos = expert_demos(env, [EVAL_SEED + 50_000 + i for i in range(n_demos)])
        std = policies["fp32"].ckpt.normalizer.action_std
        rows = {m: {"parameter_bytes": parameter_bytes(pol.model),
                    "action_error": action_error(pol, demos, std)} for m, pol in policies.items()}
        for m, r in chunks_vs_reference(policies, demos, args.seed).items():
            rows[m].update(r)
        ob = demos[0].observations[0]
        observation = Observation(0.0, ob["images"], ob["state"])
        for n in threads:
            torch.set_num_threads(n)
            for m, ms in step_latency(policies, observation, rounds, rng).items():
                rows[m].setdefault("step_ms", {})[str(n)] = ms
        if args.episodes:
            torch.set_num_threads(threads[0])
            seeds = [EVAL_SEED + i for i in range(args.episodes)]
            for m, pol in policies.items():
                result = closed_loop_runtime(pol, env, seeds)
                rows[m].update(successes=result["successes"], episodes=result["episodes"],
                               success_rate=result["success_rate"])
                print(f"{m}: {result['successes']}/{result['episodes']}", file=sys.stderr, flush=True)
    fp32_bytes = rows["fp32"]["parameter_bytes"]
    name = f"{args.config} (random init)" if args.config else str(source)
    print(f"{name}: {n_demos} held-out demonstrations, {rounds} timing rounds")
    cols = " | ".join(f"step ms ({n} thr)" for n in threads)
    print(f"| mode | parameter MB (x fp32) | {cols} | action error | PCC vs fp32 (min) | max abs diff "
          "| success |")
    print("|---" * (6 + len(threads)) + "|")
    for m, r in rows.items():
        steps = " | ".join(f"{r['step_ms'][str(n)]:.2f}" for n in threads)
        success = f"{r['successes']}/{r['episodes']}" if "episodes" in r else "-"
        print(f"| {m} | {r['parameter_bytes'] / 1e6:.2f} ({r['parameter_bytes'] / fp32_bytes:.2f}) | {steps} "
              f"| {r['action_error']:.3f} | {r.get('pcc_min', 1.0):.5f} | {r.get('max_abs_diff', 0.0):.2e} "
              f"| {success} |")
    print(json.dumps({"benchmark": "quantize", "checkpoint": None if args.config else str(source),
                      "config": args.config, "demos": n_demos, "rounds": rounds, "threads": threads,
                      "modes": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
