"""`vla_ros eval`: offline action error and closed-loop success in the simulation (no ROS).

Closed loop, two executors on the same seeded scenes:
- ``--executor runtime`` (default): vla_node's own executor without ROS (vla_ros/sim/executor.py):
  the core Runtime with its worker, buffer, blending, safety filter and goal lifecycle on a
  simulated clock, with config/sim_robot.yaml's settings and the inference latency measured here
  (plus ``--extra-latency-ms``), so this figure and `vla_ros eval-ros`'s differ only by ROS;
- ``--executor chunks``: behaviour cloning's classic receding-horizon loop (predict H actions,
  execute the first ``--execute`` with ``env.step``, observe, predict again; no blending, no
  clamp, no latency): the model alone.
Seeds start at ``--seed`` (training data used seeds below 100000 by default, so these episodes
are unseen).

``--ablation`` runs four variants on the same episodes: random actions, vision-only (instruction
blanked), language-only (images blanked) and the full model, and prints a table.

``--policy-backend lerobot`` evaluates a LeRobot policy checkpoint (models/lerobot_policy.py) in
its worker process, started as vla_node starts it (``lerobot_python``): closed loop only (action
error and the ablations need the built-in model's normalisation), and no instruction grounding (a
LeRobot policy has no lexicon). Its joints are the names in the training dataset's info.json
(found through the checkpoint's train_config.json) or else the simulator's, which they must equal.

    vla_ros eval --checkpoint checkpoints/tiny --episodes 100 --ablation
    vla_ros eval --episodes 100 --executor chunks
    vla_ros eval --policy-backend lerobot --checkpoint out/act/checkpoints/last/pretrained_model \
        --lerobot-fps 10 --episodes 100 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from vla_ros.core.policy import ActionChunk, InstructionContext, Observation, Policy
from vla_ros.core.runtime_types import BLEND_RULES, INSTRUCTION_REWRITES, RTC_MODES
from vla_ros.sim.paraphrase import INSTRUCTION_STYLES

EVAL_SEED = 100_000


class BlankInstruction(Policy):
    """Vision-only ablation: the model sees an empty instruction."""

    def __init__(self, inner: Policy):
        self.inner, self.spec = inner, inner.spec

    def encode_instruction(self, text: str) -> InstructionContext:
        return self.inner.encode_instruction("")

    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        return self.inner.predict_chunk(observation, context)


class BlankImages(Policy):
    """Language-only ablation: every camera image is black."""

    def __init__(self, inner: Policy):
        self.inner, self.spec = inner, inner.spec

    def encode_instruction(self, text: str) -> InstructionContext:
        return self.inner.encode_instruction(text)

    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        blank = {k: np.zeros_like(v) for k, v in observation.images.items()}
        return self.inner.predict_chunk(Observation(observation.stamp, blank, observation.state), context)


class RandomActions(Policy):
    """Uniform random targets within mean ± 2 std of the training actions."""

    def __init__(self, inner, seed: int = 0):
        self.spec = inner.spec
        norm = inner.ckpt.normalizer
        self.low, self.high = norm.action_mean - 2 * norm.action_std, norm.action_mean + 2 * norm.action_std
        self.rng = np.random.default_rng(seed)

    def encode_instruction(self, text: str) -> InstructionContext:
        return InstructionContext(text=text, num_tokens=0)

    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        actions = self.rng.uniform(self.low, self.high, (self.spec.chunk_size, len(self.low)))
        return ActionChunk(observation.stamp, actions, self.spec.action_period)


@dataclass
class Demo:
    instruction: str
    observations: list[dict]
    actions: np.ndarray  # [T, A]


def expert_demos(env, seeds: list[int]) -> list[Demo]:
    """Held-out demonstrations from the scripted expert on unseen seeds (for action error)."""
    demos = []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        observations, actions = [], []
        while True:
            action = env.expert_action()
            observations.append(obs)
            actions.append(action)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        demos.append(Demo(info["instruction"], observations, np.asarray(actions, dtype=np.float64)))
    return demos


def action_error(policy: Policy, demos: list[Demo], action_std: np.ndarray, stride: int = 3) -> float:
    """Mean L2 distance between predicted and demonstrated chunks, in normalised action units."""
    errors = []
    H = policy.spec.chunk_size
    for demo in demos:
        ctx = policy.encode_instruction(demo.instruction)
        T = len(demo.actions)
        for t in range(0, T, stride):
            ob = demo.observations[t]
            chunk = policy.predict_chunk(
                Observation(t * policy.spec.action_period, ob["images"], ob["state"]), ctx
            )
            truth = demo.actions[np.minimum(np.arange(t, t + H), T - 1)]
            errors.append(np.linalg.norm((chunk.actions - truth) / action_std, axis=-1).mean())
    return float(np.mean(errors))


def closed_loop(policy: Policy, env, seeds: list[int], execute: int) -> dict:
    successes, steps = [], []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        policy.reset()
        ctx = policy.encode_instruction(info["instruction"])
        done, n = False, 0
        while not done:
            chunk = policy.predict_chunk(Observation(n * env.action_period, obs["images"], obs["state"]), ctx)
            for action in chunk.actions[:execute]:
                obs, _, terminated, truncated, info = env.step(action.astype(np.float32))
                n += 1
                done = terminated or truncated
                if done:
                    break
        successes.append(bool(info["success"]))
        steps.append(n)
    return {
        "success_rate": float(np.mean(successes)),
        "successes": int(np.sum(successes)),
        "episodes": len(seeds),
        "mean_steps": float(np.mean(steps)),
    }


def latency_summary(latencies_s: list[float]) -> dict:
    """Percentiles of every inference's wall time, in ms (through the worker process where there is one)."""
    if not latencies_s:
        return {"count": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.asarray(latencies_s) * 1e3
    return {"count": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def closed_loop_runtime(policy: Policy, env, seeds: list[int], extra_latency_s: float = 0.0,
                        **overrides) -> dict:
    """Closed-loop success through the core Runtime on a simulated clock (sim/executor.py);
    ``overrides`` replace fields of config/sim_robot.yaml's RuntimeConfig (e.g. blend)."""
    from vla_ros.sim.executor import run_episode, sim_robot_runtime_config

    config = replace(sim_robot_runtime_config(policy.spec), **overrides)
    config.validate()
    outcomes = [run_episode(policy, env, config, seed, extra_latency_s=extra_latency_s)
                for seed in seeds]
    solved = [o for o in outcomes if o.success]
    return {
        "success_rate": len(solved) / len(outcomes),
        "successes": len(solved),
        "episodes": len(outcomes),
        "mean_steps": float(np.mean([o.steps for o in outcomes])),
        "mean_success_s": float(np.mean([o.sim_s for o in solved])) if solved else float("nan"),
        # of which the wait for the first chunk (the first inference's latency, extra latency included)
        "mean_first_action_s": float(np.mean([o.first_action_s for o in solved
                                              if o.first_action_s is not None])) if solved else float("nan"),
        "reasons": dict(sorted(Counter(str(o.result.reason) for o in outcomes).items())),
        "starved_ticks": int(sum(o.starved_ticks for o in outcomes)),
        "latency_p50_s": float(np.median([o.latency_p50_s for o in outcomes])),
        "inference": latency_summary([t for o in outcomes for t in o.latencies_s]),
        "failed": [{"seed": o.seed, "instruction": o.instruction, "reason": str(o.result.reason)}
                   for o in outcomes if not o.success],
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vla_ros eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint", default=None, help="checkpoint directory (default: the default checkpoint)"
    )
    p.add_argument("--policy-backend", choices=("vla_ros", "lerobot"), default="vla_ros",
                   help="what --checkpoint holds (vla_node's policy_backend): this package's model or a "
                        "LeRobot policy checkpoint, run in a worker process with --lerobot-python")
    p.add_argument("--lerobot-fps", type=float, default=0.0,
                   help="lerobot backend: frames per second of the policy's training data (required)")
    p.add_argument("--lerobot-python", default="",
                   help="lerobot backend: interpreter with lerobot (default: vla_node's lerobot_python rule)")
    p.add_argument("--policy-timeout-s", type=float, default=2.0,
                   help="lerobot backend: a worker call unanswered this long is a fault (vla_node's "
                        "policy_timeout_s)")
    p.add_argument("--episodes", type=int, default=100, help="closed-loop episodes per variant")
    p.add_argument("--offline-episodes", type=int, default=None,
                   help="held-out expert demos for action error (default 20; lerobot backend: 0)")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help="first episode seed")
    p.add_argument("--executor", choices=("runtime", "chunks"), default="runtime",
                   help="runtime: vla_node's executor on a simulated clock; chunks: the model alone")
    p.add_argument("--extra-latency-ms", type=float, default=0.0,
                   help="runtime executor: simulated milliseconds added to every inference")
    p.add_argument("--rtc", choices=RTC_MODES, default="off",
                   help="runtime executor: real-time chunking for a flow head (its chunks then "
                        "replace the buffer's instead of crossfading, as in the paper)")
    p.add_argument("--rtc-max-guidance", type=float, default=5.0,
                   help="real-time chunking: cap on the guidance weight (vla_node's rtc_max_guidance)")
    p.add_argument("--blend", choices=BLEND_RULES, default=None,
                   help="runtime executor: blend rule (default: config/sim_robot.yaml's; replace with --rtc)")
    p.add_argument("--refill-margin-s", type=float, default=None,
                   help="runtime executor: request the next chunk when the buffered future is below the p95 "
                        "latency plus this (vla_node's refill_margin_s; default: config/sim_robot.yaml's)")
    p.add_argument("--execute", type=int, default=0,
                   help="chunks executor: actions executed per chunk (0 = half the chunk)")
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--task", default=None, help="task family (default: random per episode)")
    p.add_argument("--instructions", choices=INSTRUCTION_STYLES, default="templated",
                   help="wording of each episode's instruction (sim/paraphrase.py): the training template, "
                        "generated paraphrases, the held-out paraphrases, or the template in other casing")
    p.add_argument("--instruction-rewrite", choices=INSTRUCTION_REWRITES, default="canonical",
                   help="runtime executor: give the model its own phrasing of what grounding read "
                        "(the node's default) or the words as generated (off: the model's own language)")
    p.add_argument("--ablation", action="store_true", help="random / vision-only / language-only / full")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--json", default=None, help="also write the results to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.refill_margin_s is not None and not args.refill_margin_s >= 0:
        parser.error(f"--refill-margin-s {args.refill_margin_s}: must be >= 0 seconds")
    if not args.rtc_max_guidance > 0:
        parser.error(f"--rtc-max-guidance {args.rtc_max_guidance}: must be > 0")
    if args.policy_backend == "lerobot":
        problems = lerobot_argument_problems(args)
        if problems:
            parser.error("--policy-backend lerobot: " + "; ".join(problems))
        args.offline_episodes = 0
        policy = load_lerobot_worker(args)
        checkpoint, action_std = args.checkpoint, None
    else:
        from vla_ros.models.policy import load_policy

        args.offline_episodes = 20 if args.offline_episodes is None else args.offline_episodes
        policy = load_policy(args.checkpoint, dtype=args.dtype, threads=args.threads,
                             rtc=None if args.rtc == "off" else args.rtc,
                             rtc_max_guidance=args.rtc_max_guidance)
        checkpoint, action_std = str(policy.ckpt.path), policy.ckpt.normalizer.action_std
    try:
        return evaluate(args, policy, checkpoint, action_std)
    finally:
        close = getattr(policy, "close", None)
        if close is not None:
            close()


def lerobot_argument_problems(args: argparse.Namespace) -> list[str]:
    problems = []
    if not args.checkpoint:
        problems.append("--checkpoint (a LeRobot policy checkpoint directory) is required")
    if not args.lerobot_fps > 0:
        problems.append("--lerobot-fps (the training data's frames per second) is required")
    if args.offline_episodes:
        problems.append("--offline-episodes needs the built-in model's action normalisation; use 0")
    if args.ablation:
        problems.append("--ablation needs the built-in model")
    if args.rtc != "off":
        problems.append("--rtc needs the built-in model's flow head")
    return problems


def load_lerobot_worker(args: argparse.Namespace) -> Policy:
    """The LeRobot checkpoint in its worker process, as vla_node's load_model starts it, with the
    simulator's joint names (those of its training dataset where known, which must match)."""
    from vla_ros.core.policy_process import ChildProcessPolicy
    from vla_ros.models.lerobot_policy import dataset_joint_names, worker_options
    from vla_ros.sim.scene import JOINT_NAMES

    names = dataset_joint_names(args.checkpoint)
    if names is not None:
        for kind, given in zip(("observation.state", "action"), names, strict=True):
            if list(given) != list(JOINT_NAMES):
                raise SystemExit(f"vla_ros eval: {args.checkpoint}: the training dataset's {kind} names "
                                 f"{list(given)} are not the simulator's joints {list(JOINT_NAMES)} in order")
    factory, options, python = worker_options(
        args.checkpoint, args.lerobot_fps, python=args.lerobot_python, threads=args.threads,
        state_names=list(JOINT_NAMES), action_names=list(JOINT_NAMES))
    return ChildProcessPolicy(factory, options, python=python, call_timeout_s=args.policy_timeout_s)


def evaluate(args: argparse.Namespace, policy: Policy, checkpoint: str, action_std: np.ndarray | None) -> int:
    from vla_ros.sim import TabletopEnv

    overrides = {"real_time_chunking": args.rtc != "off", "instruction_rewrite": args.instruction_rewrite}
    if args.blend or args.rtc != "off":
        overrides["blend"] = args.blend or "replace"
    if args.refill_margin_s is not None:
        overrides["refill_margin_s"] = args.refill_margin_s
    spec = policy.spec
    execute = args.execute or max(1, spec.chunk_size // 2)
    env = TabletopEnv(
        image_size=spec.image_size, action_period=spec.action_period, seed=0, max_steps=args.max_steps,
        instructions=args.instructions,
    )
    if args.task:
        env_reset = env.reset
        env.reset = lambda seed=None, **kw: env_reset(seed=seed, task=args.task, **kw)  # one family only
    seeds = [args.seed + i for i in range(args.episodes)]
    demo_seeds = [args.seed + 50_000 + i for i in range(args.offline_episodes)]
    demos = expert_demos(env, demo_seeds) if args.offline_episodes else []
    variants = {"full": policy}
    if args.ablation:
        variants = {
            "random": RandomActions(policy),
            "vision-only": BlankInstruction(policy),
            "language-only": BlankImages(policy),
            "full": policy,
        }
    rows = {}
    for name, variant in variants.items():
        t0 = time.monotonic()
        err = action_error(variant, demos, action_std) if demos else float("nan")
        if args.executor == "runtime":
            result = closed_loop_runtime(variant, env, seeds, args.extra_latency_ms / 1000, **overrides)
        else:
            result = closed_loop(variant, env, seeds, execute)
        rows[name] = {"action_error": err, **result, "wall_s": round(time.monotonic() - t0, 1)}
        inference = result.get("inference")
        print(
            f"{name:>14}: action error {err:.3f}  success {result['successes']}/{result['episodes']}"
            + (f"  inference p50 {inference['p50_ms']:.1f} ms p99 {inference['p99_ms']:.1f} ms"
               if inference else "")
            + f"  ({time.monotonic() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    print("\n| variant | action error (L2, normalised) | closed-loop success |\n|---|---|---|")
    for name, r in rows.items():
        success = f"{r['success_rate'] * 100:.0f}% ({r['successes']}/{r['episodes']})"
        print(f"| {name} | {r['action_error']:.3f} | {success} |")
    summary = {
        "checkpoint": checkpoint,
        "policy_backend": args.policy_backend,
        "episodes": args.episodes,
        "first_seed": args.seed,
        "instructions": args.instructions,
        "executor": args.executor,
        "execute": execute if args.executor == "chunks" else None,
        "extra_latency_ms": args.extra_latency_ms if args.executor == "runtime" else None,
        "runtime_overrides": overrides if args.executor == "runtime" else None,
        "real_time_chunking": list(policy.real_time_chunking()),  # (mode, guidance cap) as the policy runs it
        "offline_episodes": args.offline_episodes,
        "results": rows,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
