"""`python -m vla_ros.bench chunking [--quick]`: pipelined inference and real-time chunking.

Side by side in one run, over inference latencies from 10% to 90% of a chunk:

1. Pipelining (the real threaded Runtime, a ScriptedPolicy whose latency is a sleep, as
   `bench async`): one inference in flight, two, and as many as the refill rule asks for (up to
   ``--max-inflight``). Starved ticks after the first action and time over the ideal. One in
   flight starves above about half a chunk; k staggered ones land latency / k apart, each useful
   for (chunk - latency), so k in flight cover latencies up to k / (k + 1) of a chunk: two cover
   2/3, not 90%; 90% needs about ten.
2. Chunk boundaries (the offline executor, sim/executor.py, on a simulated clock with a fixed
   latency; the flow checkpoint in the simulator, the same seeds for every variant): crossfade
   (the regression default's rule), replace (no blending: the raw discontinuity), RTC-cheap and
   RTC-exact (replace, the chunk inpainted against the buffered actions), and for a checkpoint
   trained with --rtc-train-delay RTC-prefix (replace, the actions due before landing given to
   the expert). At every switch: the
   velocity jump, max over arm joints of |v_after - v_before| over the next ticks, v the planned
   velocity from the tick before (rad/s, the buffer's plan before the safety filter, whose
   velocity bound would hide it), and the jerk of the command sent (rad/s^3); the jerk at the
   other ticks for scale. One inference in flight (real-time chunking guides each
   chunk against the buffer, so it does not combine with pipelining), so above half a chunk of
   latency these runs also starve.
3. RTC's added model time: the flow policy's predict_chunk on the same observation with and
   without committed actions, interleaved.

``--plot PATH`` draws one joint's command across three chunk switches at 50% latency, crossfade
vs RTC-prefix where the checkpoint has it (the smoothest here), else RTC-cheap. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vla_ros.bench.async_bench import run_once

BOUNDARY_VARIANTS = {  # name -> (RuntimeConfig.blend, the policy's rtc mode or None for off)
    "crossfade": ("crossfade", None),
    "replace": ("replace", None),
    "rtc_cheap": ("replace", "cheap"),
    "rtc_exact": ("replace", "exact"),
    "rtc_prefix": ("replace", "prefix"),  # train-time RTC: only for a checkpoint trained with it
}
FLOW_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "tiny_flow"


# 1. pipelining --------------------------------------------------------------------------------
def pipelining(fractions: list[float], actions: int, max_inflight: int) -> list[dict]:
    chunk_size, dt, rate, margin = 10, 0.05, 100.0, 0.02
    rows = []
    for fraction in fractions:
        row = {"fraction": fraction, "latency_s": fraction * chunk_size * dt}
        for name, k in (("single", 1), ("two", 2), ("pipelined", max_inflight)):
            r = run_once("async", row["latency_s"], chunk_size, dt, actions, rate, margin, max_inflight=k)
            row.update(
                {
                    f"{name}_starved_ticks": r["starved_ticks"],
                    f"{name}_over_ideal": r["over_ideal"],
                    f"{name}_inferences": r["inferences"],
                    f"{name}_completed": r["completed"],
                }
            )
        rows.append(row)
        print(
            f"latency {fraction:>4.0%}: starved ticks, x ideal: 1 in flight {row['single_starved_ticks']:4d} "
            f"{row['single_over_ideal']:.3f} | two {row['two_starved_ticks']:4d} {row['two_over_ideal']:.3f}"
            f" | up to {max_inflight} {row['pipelined_starved_ticks']:4d} {row['pipelined_over_ideal']:.3f}",
            flush=True,
        )
    return rows


# 2. chunk boundaries --------------------------------------------------------------------------
def switch_figures(stamps: np.ndarray, positions: np.ndarray, trace, joints: int) -> dict:
    """At every chunk switch onto a non-empty buffer: the velocity jump, max over arm joints and
    the next ``trace.plan_ticks`` ticks of |v_after - v_before| with v the planned velocity from
    the buffer (rad/s; before the safety filter, whose velocity bound would hide it), and the
    jerk of the command sent, its third difference over dt^3 (rad/s^3), at the switch tick and,
    for scale, at the other ticks."""
    dt = float(np.median(np.diff(stamps)))
    jumps = [
        float(np.abs(np.diff(after[:, :joints], axis=0) - np.diff(before[:, :joints], axis=0)).max() / dt)
        for before, after in trace.plans
    ]
    q = positions[:, :joints]
    jerk = np.zeros(len(q))
    jerk[3:] = np.abs(q[3:] - 3 * q[2:-1] + 3 * q[1:-2] - q[:-3]).max(axis=1) / dt**3
    # the first command taken from a chunk is the one sent at or after its landing
    ticks = np.unique(np.searchsorted(stamps, np.asarray(trace.landings[1:]) - 1e-9))
    ticks = ticks[(ticks >= 3) & (ticks < len(q) - 2)]
    at = np.unique(np.concatenate([ticks, ticks + 1]))  # a switch shows over its tick and the next
    other = np.setdiff1d(np.arange(3, len(q)), at)
    return {
        "switches": len(jumps),
        "jumps": np.asarray(jumps),
        "jerks": np.maximum(jerk[ticks], jerk[ticks + 1]) if len(ticks) else np.zeros(0),
        "other_jerk": jerk[other],
    }


def boundary_run(
    policy, fraction: float, variant: str, seeds: list[int], max_inflight: int, keep_trace: bool = False
) -> dict:
    from vla_ros.sim import TabletopEnv
    from vla_ros.sim.executor import EpisodeTrace, run_episode, sim_robot_runtime_config

    blend, rtc = BOUNDARY_VARIANTS[variant]
    spec = policy.spec
    policy.rtc = rtc or "exact"
    config = replace(
        sim_robot_runtime_config(spec),
        blend=blend,
        real_time_chunking=rtc is not None,
        max_inflight=max_inflight,
    )
    env = TabletopEnv(image_size=spec.image_size, action_period=spec.action_period, seed=0, max_steps=100)
    latency = fraction * spec.chunk_duration
    jumps, jerks, other_jerks, traces = [], [], [], []
    starved = successes = switches = 0
    for seed in seeds:
        trace = EpisodeTrace()
        outcome = run_episode(policy, env, config, seed, latency=latency, trace=trace)
        stamps, positions = trace.arrays()
        fig = switch_figures(stamps, positions, trace, joints=spec.action_dim - 1)
        jumps.append(fig["jumps"])
        jerks.append(fig["jerks"])
        other_jerks.append(np.percentile(fig["other_jerk"], 99) if len(fig["other_jerk"]) else 0.0)
        switches += fig["switches"]
        starved += outcome.starved_ticks
        successes += outcome.success
        if keep_trace:
            traces.append(trace)
    return {
        "variant": variant,
        "fraction": fraction,
        "episodes": len(seeds),
        "successes": successes,
        "switches": switches,
        "starved_ticks": starved,
        # over every switch of every episode
        "jump_mean_rad_s": _stat(jumps, np.mean),
        "jump_p95_rad_s": _stat(jumps, lambda x: np.percentile(x, 95)),
        "jerk_p95_rad_s3": _stat(jerks, lambda x: np.percentile(x, 95)),
        "other_jerk_p99_rad_s3": float(np.mean(other_jerks)),
        "traces": traces,
    }


def _stat(parts: list[np.ndarray], fn) -> float:
    values = np.concatenate(parts) if parts else np.zeros(0)
    return float(fn(values)) if len(values) else float("nan")


def variants_for(policy) -> list[str]:
    """The boundary variants this checkpoint can run (rtc_prefix needs rtc_train_delay)."""
    trained = bool(policy.model.config.rtc_train_delay)
    return [v for v in BOUNDARY_VARIANTS if v != "rtc_prefix" or trained]


def rtc_model_time(policy, repeats: int) -> dict:
    """Milliseconds per predict_chunk without and with committed actions (3 due before landing)."""
    from vla_ros.core.policy import CommittedActions
    from vla_ros.core.scripted_policy import make_observation

    spec = policy.spec
    obs = make_observation(spec, 0.0)
    context = policy.encode_instruction("pick up the red cube")
    committed = CommittedActions(actions=np.zeros((spec.chunk_size - 2, spec.action_dim)), delay_steps=3)
    guided = replace(obs, committed=committed)
    modes = ["plain", "cheap", "exact"] + (["prefix"] if policy.model.config.rtc_train_delay else [])
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in times:
            policy.rtc = "exact" if mode == "plain" else mode
            t0 = time.perf_counter()
            policy.predict_chunk(obs if mode == "plain" else guided, context)
            times[mode].append(time.perf_counter() - t0)
    return {f"model_ms_{mode}": round(1e3 * float(np.median(t)), 3) for mode, t in times.items()}


RTC_LABELS = {"rtc_cheap": "RTC (cheap guidance)", "rtc_exact": "RTC (exact guidance)",
              "rtc_prefix": "RTC (train-time, actions given)"}


def plot_variant(policy) -> str:
    """The RTC variant the plot shows: train-time where the checkpoint has it, else cheap guidance."""
    return "rtc_prefix" if "rtc_prefix" in variants_for(policy) else "rtc_cheap"


def plot_switches(crossfade, rtc, path: Path, joint: int = 1, switches: int = 3,
                  rtc_label: str = RTC_LABELS["rtc_cheap"]) -> None:
    """One joint's command around three chunk switches of the same episode, with and without RTC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2))
    runs = ((crossfade, "crossfade", "tab:orange"), (rtc, rtc_label, "tab:blue"))
    for trace, label, color in runs:
        stamps, positions = trace.arrays()
        landings = [t for t in trace.landings if t > 1.0][:switches]  # past the first chunk
        if not landings:
            continue
        window = (stamps >= landings[0] - 0.5) & (stamps <= landings[-1] + 0.5)
        ax.plot(stamps[window], positions[window, joint], color=color, lw=1.3, label=label)
        for t in landings:
            ax.axvline(t, color=color, ls=":", lw=0.9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"joint {joint} command (rad)")
    ax.set_title("Chunk switches (dotted) at 50% latency: crossfade vs real-time chunking")
    ax.legend(loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_switch_plot(path: Path, checkpoint: Path = FLOW_CHECKPOINT, seed: int = 100_000) -> None:
    """The plot from one seeded episode per variant at 50% latency (the demo calls this)."""
    from vla_ros.models.policy import load_policy

    policy = load_policy(checkpoint, threads=1)
    runs = {
        v: boundary_run(policy, 0.5, v, [seed], max_inflight=1, keep_trace=True)
        for v in ("crossfade", plot_variant(policy))
    }
    shown = plot_variant(policy)
    plot_switches(runs["crossfade"]["traces"][0], runs[shown]["traces"][0], path, rtc_label=RTC_LABELS[shown])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vla_ros.bench chunking", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer latencies and episodes (about 2 min)")
    parser.add_argument("--checkpoint", type=Path, default=FLOW_CHECKPOINT, help="a flow-head checkpoint")
    parser.add_argument(
        "--episodes", type=int, default=0, help="boundary episodes per cell (default 6; quick 2)"
    )
    parser.add_argument("--max-inflight", type=int, default=32, help="the pipelined worker's bound")
    parser.add_argument("--rtc-max-guidance", type=float, default=5.0,
                        help="cap on RTC's guidance weight (vla_node's rtc_max_guidance)")
    parser.add_argument("--plot", type=Path, default=None, help="write the chunk-switch plot here")
    args = parser.parse_args(argv)
    if not args.rtc_max_guidance > 0:
        parser.error(f"--rtc-max-guidance {args.rtc_max_guidance}: must be > 0")
    if args.quick:
        fractions, actions, episodes = [0.1, 0.5, 0.7, 0.9], 40, args.episodes or 2
    else:
        fractions, actions = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], 100
        episodes = args.episodes or 6

    t0 = time.monotonic()
    pipe = pipelining(fractions, actions, args.max_inflight)

    import torch

    from vla_ros.models.policy import load_policy

    torch.manual_seed(0)
    policy = load_policy(args.checkpoint, threads=1, rtc_max_guidance=args.rtc_max_guidance)
    if policy.model.config.head != "flow":
        raise SystemExit(
            f"--checkpoint {args.checkpoint}: real-time chunking needs a flow head, "
            f"this one is {policy.model.config.head!r}"
        )
    seeds = [100_000 + i for i in range(episodes)]
    variants = variants_for(policy)
    boundary: list[dict] = []
    for fraction in fractions:
        for variant in variants:
            keep = args.plot is not None and abs(fraction - 0.5) < 1e-9
            boundary.append(boundary_run(policy, fraction, variant, seeds, 1, keep_trace=keep))
        cells = [b for b in boundary if b["fraction"] == fraction]
        print(
            f"latency {fraction:>4.0%}: switch jump mean rad/s (jerk p95 rad/s^3): "
            + " | ".join(
                f"{b['variant']} {b['jump_mean_rad_s']:.2f} ({b['jerk_p95_rad_s3']:.0f})" for b in cells
            ),
            flush=True,
        )
    timing = rtc_model_time(policy, repeats=10 if args.quick else 30)
    print(f"model time per chunk: {timing}", flush=True)

    if args.plot is not None:
        at50 = {b["variant"]: b for b in boundary if abs(b["fraction"] - 0.5) < 1e-9}
        shown = plot_variant(policy)
        plot_switches(at50["crossfade"]["traces"][0], at50[shown]["traces"][0], args.plot,
                      rtc_label=RTC_LABELS[shown])
        print(f"wrote {args.plot}", flush=True)

    def cell(variant: str, fraction: float, key: str) -> float:
        return next(
            b[key] for b in boundary if b["variant"] == variant and abs(b["fraction"] - fraction) < 1e-9
        )

    def ratio(variant: str) -> float:
        return round(
            cell("crossfade", 0.5, "jump_mean_rad_s") / max(cell(variant, 0.5, "jump_mean_rad_s"), 1e-9), 3
        )

    by_fraction = {f"{f:.1f}": f for f in fractions}
    result = {
        "benchmark": "chunking",
        "fractions": fractions,
        "max_inflight": args.max_inflight,
        "pipelined_starved_ticks_max": max(r["pipelined_starved_ticks"] for r in pipe),
        "pipelined_over_ideal_max": round(max(r["pipelined_over_ideal"] for r in pipe), 4),
        "pipelined_all_completed": all(r["pipelined_completed"] for r in pipe),
        "single_starved_ticks": {
            k: next(r["single_starved_ticks"] for r in pipe if r["fraction"] == f)
            for k, f in by_fraction.items()
        },
        "two_inflight_starved_ticks": {
            k: next(r["two_starved_ticks"] for r in pipe if r["fraction"] == f)
            for k, f in by_fraction.items()
        },
        "pipelined_inferences": {
            k: next(r["pipelined_inferences"] for r in pipe if r["fraction"] == f)
            for k, f in by_fraction.items()
        },
        "rtc_boundary_jump_ratio_at_50": ratio("rtc_exact"),
        "rtc_cheap_boundary_jump_ratio_at_50": ratio("rtc_cheap"),
        **({"rtc_prefix_boundary_jump_ratio_at_50": ratio("rtc_prefix"),
            "rtc_added_model_ms_prefix": round(timing["model_ms_prefix"] - timing["model_ms_plain"], 3)}
           if "rtc_prefix" in variants else {}),
        **{
            f"boundary_{key}": {
                v: {k: round(cell(v, f, key), 3) for k, f in by_fraction.items()} for v in variants
            }
            for key in ("jump_mean_rad_s", "jump_p95_rad_s", "jerk_p95_rad_s3")
        },
        "other_ticks_jerk_p99_rad_s3": {
            v: round(float(np.mean([b["other_jerk_p99_rad_s3"] for b in boundary if b["variant"] == v])), 1)
            for v in variants
        },
        "boundary_starved_ticks": {
            v: sum(b["starved_ticks"] for b in boundary if b["variant"] == v) for v in variants
        },
        "boundary_successes": {
            v: f"{sum(b['successes'] for b in boundary if b['variant'] == v)}/"
            f"{sum(b['episodes'] for b in boundary if b['variant'] == v)}"
            for v in variants
        },
        **timing,
        "rtc_added_model_ms_cheap": round(timing["model_ms_cheap"] - timing["model_ms_plain"], 3),
        "rtc_added_model_ms_exact": round(timing["model_ms_exact"] - timing["model_ms_plain"], 3),
        "episodes_per_cell": episodes,
        "checkpoint": str(args.checkpoint),
        "rtc_max_guidance": args.rtc_max_guidance,
        "targets": "pipelined: 0 starved ticks and <= 1.05x ideal up to 90%; RTC jump >= 2x smaller "
        "than crossfade at 50%",
        "wall_s": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
