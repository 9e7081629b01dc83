"""`vla_ros parity`: PCC between two runs of the same checkpoint, per step and over a trajectory
(in the spirit of the SmolVLA-on-Tenstorrent PCC checks).

Pairs compared on identical inputs (same observations, same flow noise):
- ``cached-vs-uncached``: the step over the KV-cached instruction vs recomputing the instruction;
- ``fp32-vs-<dtype>``: float32 vs bfloat16 (or float16) weights and activations, both cached.

Observations come from closed-loop rollouts of the float32 model in the simulation.

    vla_ros parity --checkpoint checkpoints/tiny --episodes 3
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from vla_ros.core.policy import Observation


def pcc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float(np.array_equal(a, b))
    return float(np.corrcoef(a, b)[0, 1])


def summarise(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    per_step = [pcc(a, b) for a, b in pairs]
    first = [pcc(a[0], b[0]) for a, b in pairs]
    left, right = [a for a, _ in pairs], [b for _, b in pairs]
    return {"pcc_step_min": min(per_step), "pcc_step_mean": float(np.mean(per_step)),
            "pcc_first_action_trajectory": pcc(np.stack([a[0] for a in left]),
                                               np.stack([b[0] for b in right])),
            "pcc_trajectory": pcc(np.concatenate(left), np.concatenate(right)),
            "max_abs_diff": float(max(np.abs(a - b).max() for a, b in pairs)),
            "steps": len(pairs), "pcc_first_action_min": min(first)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vla_ros parity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the default one)")
    p.add_argument("--dtype", default="bfloat16", help="the low-precision side (bfloat16 or float16)")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--seed", type=int, default=200_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from vla_ros.models.policy import load_policy
    from vla_ros.models.tokenizer import batch_encode
    from vla_ros.sim import TabletopEnv

    ref = load_policy(args.checkpoint, dtype="float32", threads=args.threads)
    low = load_policy(args.checkpoint, dtype=args.dtype, threads=args.threads)
    cfg = ref.model.config
    env = TabletopEnv(image_size=ref.spec.image_size, action_period=ref.spec.action_period, seed=0,
                      max_steps=args.max_steps)
    execute = max(1, cfg.chunk_size // 2)
    gen = torch.Generator().manual_seed(args.seed)
    pairs: dict[str, list] = {"cached-vs-uncached": [], f"fp32-vs-{args.dtype}": []}
    with torch.inference_mode():
        for episode in range(args.episodes):
            obs, info = env.reset(seed=args.seed + episode)
            text = info["instruction"]
            ctx_ref, ctx_low = ref.encode_instruction(text), low.encode_instruction(text)
            ids, mask, _ = batch_encode(ref.ckpt.tokenizer, [text], cfg.max_instruction_tokens)
            done, n = False, 0
            while not done:
                observation = Observation(n * env.action_period, obs["images"], obs["state"])
                images, state = ref.preprocess(observation)
                noise = torch.randn(1, cfg.chunk_size, cfg.action_dim, generator=gen)
                cached = ref.model.predict(ctx_ref.cache, images, state, noise)[0].numpy()
                uncached = ref.model.predict_uncached(ids, mask, images, state, noise)[0].numpy()
                lowp = low.model.predict(ctx_low.cache, images, state, noise)[0].float().numpy()
                pairs["cached-vs-uncached"].append((cached, uncached))
                pairs[f"fp32-vs-{args.dtype}"].append((cached, lowp))
                for action in ref.ckpt.normalizer.unnormalize_action(cached)[:execute]:
                    obs, _, terminated, truncated, info = env.step(action.astype(np.float32))
                    n += 1
                    done = terminated or truncated
                    if done:
                        break
    results = {name: summarise(v) for name, v in pairs.items()}
    print("| pair | PCC per step (min / mean) | PCC trajectory | max abs diff (normalised) | steps |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['pcc_step_min']:.6f} / {r['pcc_step_mean']:.6f} | {r['pcc_trajectory']:.6f} "
              f"| {r['max_abs_diff']:.2e} | {r['steps']} |")
    summary = {"checkpoint": str(ref.ckpt.path), "head": cfg.head, "episodes": args.episodes,
               "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
