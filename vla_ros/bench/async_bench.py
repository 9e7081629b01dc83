"""`python -m vla_ros.bench async [--quick]`: synchronous vs asynchronous chunk execution.

The same scripted policy, with a set inference latency swept from 10% to 90% of the chunk
duration, executes a fixed number of actions through the real Runtime (threads, real time):
- sync: infer only when the buffer is used up and run each chunk from its first action (what
  openpi's client does): the robot holds for the whole latency at every chunk;
- async: the worker refills when the remaining buffer drops below p95 latency + margin, and
  latency compensation starts each chunk at the action due on arrival.
Per run: starved ticks (after the first chunk), total pause time, time from the first action to
the last, and that time over the ideal (the actions alone, no pauses). Observations are taken
at every control tick (a simulator's camera). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np

from vla_ros.core.runtime import Command, GoalResult, Runtime, RuntimeConfig
from vla_ros.core.scripted_policy import ScriptedPolicy, default_spec, make_observation


def run_once(
    mode: str, latency_s: float, chunk_size: int, dt: float, actions: int, rate_hz: float, margin_s: float,
    max_inflight: int = 1,
) -> dict:
    spec = default_spec(chunk_size=chunk_size, action_period=dt)
    policy = ScriptedPolicy(spec=spec, latency_s=latency_s)
    commands: list[Command] = []
    done = threading.Event()
    results: list[GoalResult] = []
    runtime: Runtime

    def on_command(cmd: Command) -> None:
        commands.append(cmd)
        runtime.submit_observation(make_observation(spec, cmd.stamp, cmd.positions))

    def on_result(result: GoalResult) -> None:
        results.append(result)
        done.set()

    config = RuntimeConfig(
        control_rate_hz=rate_hz,
        execution=mode,
        refill_margin_s=margin_s,
        max_starved_s=10.0,
        observation_max_age_s=1.0,
        max_velocity=50.0,  # the bench measures timing; keep the filter from shaping the motion
        max_inflight=max_inflight,
    )
    runtime = Runtime(policy, config, on_command, on_result=on_result)
    runtime.submit_observation(make_observation(spec, time.monotonic()))
    runtime.start()
    goal = runtime.start_goal("follow the scripted trajectory", max_steps=actions)
    assert goal.accepted, goal.reason
    done.wait(actions * dt * 3 + 20 * latency_s + 5.0)
    stats = runtime.stats()
    runtime.stop()

    stamps = np.array([c.stamp for c in commands])
    reasons = np.array([c.reason for c in commands])
    executing = np.flatnonzero(reasons == "action")
    result = results[0] if results else None
    first_action = float(stamps[executing[0]]) if len(executing) else float("nan")
    ended = result is not None and result.reason.value == "max_steps"
    end_time = float(stamps[executing[-1]]) + 1.0 / rate_hz if len(executing) else float("nan")
    finish_s = end_time - first_action
    after_first = stamps >= first_action
    starved = int(np.sum((reasons == "starved") & after_first))
    ideal = actions * dt
    return {
        "mode": mode,
        "latency_s": latency_s,
        "completed": bool(ended),
        "starved_ticks": starved,
        "pause_s": starved / rate_hz,
        "first_chunk_s": first_action - float(stamps[0]) if len(stamps) else float("nan"),
        "finish_s": finish_s,
        "ideal_s": ideal,
        "over_ideal": finish_s / ideal,
        "inferences": int(stats.get("inferences", 0)),
        "latency_p95_s": float(stats.get("latency_p95_s", 0.0)),
        "missed_ticks": int(stats.get("missed_ticks", 0)),
        "max_inflight": max_inflight,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vla_ros.bench async", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="short chunks, fewer latencies (< 30 s)")
    parser.add_argument("--actions", type=int, default=0, help="actions per run (default 100; quick 40)")
    parser.add_argument("--margin", type=float, default=0.0, help="refill margin, s (default: 2 ticks)")
    args = parser.parse_args(argv)
    if args.quick:
        fractions = [0.1, 0.3, 0.5, 0.7, 0.8, 0.9]
        chunk_size, dt, rate, actions = 10, 0.02, 100.0, args.actions or 40
    else:
        fractions = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        chunk_size, dt, rate, actions = 10, 0.05, 100.0, args.actions or 100
    margin = args.margin or 2.0 / rate
    chunk_s = chunk_size * dt
    rows = []
    for fraction in fractions:
        latency = fraction * chunk_s
        row = {"fraction": fraction, "latency_s": latency}
        for mode in ("sync", "async"):
            r = run_once(mode, latency, chunk_size, dt, actions, rate, margin)
            row.update({f"{mode}_{k}": v for k, v in r.items() if k not in ("mode", "latency_s")})
        rows.append(row)
        print(
            f"latency {fraction:>4.0%} ({latency * 1e3:5.0f} ms): "
            f"sync {row['sync_over_ideal']:.3f}x ideal, {row['sync_starved_ticks']:3d} starved ticks, "
            f"pause {row['sync_pause_s']:.2f} s | async {row['async_over_ideal']:.3f}x ideal, "
            f"{row['async_starved_ticks']:3d} starved ticks, pause {row['async_pause_s']:.2f} s"
        )
    upto80 = [r for r in rows if r["fraction"] <= 0.8 + 1e-9]
    result = {
        "benchmark": "async",
        "chunk_size": chunk_size,
        "action_period_s": dt,
        "chunk_duration_s": chunk_s,
        "control_rate_hz": rate,
        "actions": actions,
        "refill_margin_s": margin,
        "async_starved_ticks_max": max(r["async_starved_ticks"] for r in upto80),
        "async_over_ideal_max": max(r["async_over_ideal"] for r in upto80),
        "async_all_completed": all(r["async_completed"] for r in rows),
        # one inference at a time: a chunk must land before the previous one runs out, which
        # needs latency + margin <= chunk duration - latency, i.e. latency <= ~50% of a chunk
        "async_zero_starvation_up_to": max(
            (r["fraction"] for r in rows if r["async_starved_ticks"] == 0), default=0.0
        ),
        "single_worker_bound_fraction": round((1 - margin / chunk_s) / 2, 3),
        "sync_over_ideal": {f"{r['fraction']:.1f}": round(r["sync_over_ideal"], 4) for r in rows},
        "async_over_ideal": {f"{r['fraction']:.1f}": round(r["async_over_ideal"], 4) for r in rows},
        "async_starved_ticks": {f"{r['fraction']:.1f}": r["async_starved_ticks"] for r in rows},
        "sync_pause_s": {f"{r['fraction']:.1f}": round(r["sync_pause_s"], 3) for r in rows},
        "targets": "async: 0 starved ticks and <= 1.05x ideal for every latency <= 80% of a chunk",
        "runs": rows,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
