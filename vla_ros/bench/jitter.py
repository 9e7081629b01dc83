"""`python -m vla_ros.bench jitter [--quick] [--policy-process child|local]`: control-loop period
error while the model infers.

The runtime's control loop (absolute deadlines, ``time.monotonic``, a short spin before each
deadline) runs at ``--rate`` Hz while the runtime's inference worker runs the default checkpoint's
model on every frame of a 30 Hz camera thread (refill margin = one chunk: the worker infers again as
soon as a newer observation exists), side by side with a baseline timer at the same rate in the same
process: an rclpy timer when rclpy imports, else a plain thread that sleeps one period after each
callback. ``--policy-process local``: the model runs in the worker thread, in this interpreter
(its GIL); ``child``: in a worker process (core/policy_process.py), this process only sends
observations and receives chunks. ``--no-load``: a scripted policy, no model. torch gets
cores - 1 threads. Period error = |interval between consecutive ticks - period|. The floor: the
same deadline loop alone in a single-threaded process at the same time (what the machine allows,
without any GIL to share; on a VM its preemptions show there too).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from vla_ros.core.policy import Policy
from vla_ros.core.policy_process import ChildProcessPolicy
from vla_ros.core.runtime import Runtime, RuntimeConfig
from vla_ros.core.scripted_policy import ScriptedPolicy, default_spec, make_observation
from vla_ros.core.stats import period_errors


def _ms(values: np.ndarray, q: float | None = None) -> float:
    if len(values) == 0:
        return float("nan")
    return float((np.max(values) if q is None else np.percentile(values, q)) * 1e3)


class PlainTimerBaseline:
    """What a quick hand-written timer does: callback, then sleep one period (drifts, jitters)."""

    name = "plain_timer_thread"

    def __init__(self, rate: float) -> None:
        self.period = 1.0 / rate
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="baseline-timer", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.times.append(time.monotonic())
            time.sleep(self.period)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


class RclpyTimerBaseline:
    """An rclpy timer at the same rate, spun by a SingleThreadedExecutor in its own thread."""

    def __init__(self, rate: float) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.name = f"rclpy_timer ({os.environ.get('ROS_DISTRO', '?')}, SingleThreadedExecutor)"
        self.period = 1.0 / rate
        self.times: list[float] = []
        self._rclpy = rclpy
        self._context = Context()
        rclpy.init(context=self._context)
        self._node = rclpy.create_node("vla_ros_jitter_baseline", context=self._context)
        self._node.create_timer(self.period, lambda: self.times.append(time.monotonic()))
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, name="baseline-rclpy", daemon=True)

    def _spin(self) -> None:
        with contextlib.suppress(Exception):  # the context shuts down under the spin when we stop
            self._executor.spin()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._executor.shutdown(timeout_sec=1.0)
        self._node.destroy_node()
        if self._context.ok():
            self._rclpy.shutdown(context=self._context)
        self._thread.join(2.0)


def make_baseline(rate: float, kind: str):
    if kind in ("auto", "rclpy"):
        try:
            return RclpyTimerBaseline(rate), ""
        except ImportError as exc:
            if kind == "rclpy":
                raise
            return PlainTimerBaseline(rate), f"rclpy not importable ({exc})"
    return PlainTimerBaseline(rate), ""


def floor_probe(seconds: float, rate: float, spin_s: float, realtime: bool) -> None:
    """The machine's own floor: the same deadline loop alone in a fresh single-threaded process
    (no GIL to share), run alongside the measurement; prints its period errors as JSON."""
    from vla_ros.core.clock import sleep_until, try_realtime_priority

    if realtime:
        try_realtime_priority()
    period, times = 1.0 / rate, []
    deadline = time.monotonic() + period
    end = deadline + seconds
    while deadline < end:
        sleep_until(deadline, spin_s)
        times.append(time.monotonic())
        deadline += period
    print(json.dumps(period_errors(np.asarray(times), period).tolist()))


def start_floor_probe(seconds: float, rate: float, spin_s: float, realtime: bool):
    code = (f"from vla_ros.bench.jitter import floor_probe; "
            f"floor_probe({seconds!r}, {rate!r}, {spin_s!r}, {realtime!r})")
    return subprocess.Popen([sys.executable, "-W", "ignore", "-c", code], stdout=subprocess.PIPE, text=True)


def make_policy(where: str, no_load: bool, checkpoint: str | None, threads: int) -> Policy:
    if no_load:
        return ScriptedPolicy(spec=default_spec(chunk_size=10, action_period=0.1))
    options = {"checkpoint_dir": checkpoint, "threads": threads}
    if where == "child":
        return ChildProcessPolicy("vla_ros.models.policy:load_policy", options)
    from vla_ros.models.policy import load_policy

    return load_policy(**options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vla_ros.bench jitter", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="8 s instead of --seconds")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=100.0, help="control rate, Hz")
    parser.add_argument("--spin-us", type=float, default=200.0, help="busy-wait before each deadline, us")
    parser.add_argument("--policy-process", choices=["child", "local"], default="child",
                        help="where the model runs: a worker process, or this one (its GIL)")
    parser.add_argument("--no-load", action="store_true", help="a scripted policy instead of the model")
    parser.add_argument("--checkpoint", default=None, help="model checkpoint (default: the shipped one)")
    parser.add_argument("--baseline", choices=["auto", "rclpy", "plain"], default="auto")
    parser.add_argument(
        "--no-realtime", action="store_true", help="do not ask for SCHED_FIFO (asked by default)"
    )
    parser.add_argument(
        "--switch-interval-us", type=float, default=RuntimeConfig.gil_switch_interval_s * 1e6,
        help="GIL switch interval (default: the runtime's); 0 keeps Python's 5 ms"
    )
    args = parser.parse_args(argv)
    seconds = 8.0 if args.quick else args.seconds
    cores = os.cpu_count() or 1
    torch_threads = max(1, cores - 1)

    policy = make_policy(args.policy_process, args.no_load, args.checkpoint, torch_threads)
    config = RuntimeConfig(
        control_rate_hz=args.rate,
        spin_s=args.spin_us * 1e-6,
        realtime_priority=not args.no_realtime,
        gil_switch_interval_s=args.switch_interval_us * 1e-6 if args.switch_interval_us > 0 else None,
        max_starved_s=seconds + 10,
        observation_max_age_s=1.0,
        refill_margin_s=policy.spec.chunk_duration,  # infer on every new frame: the heaviest load
    )
    commands = [0]

    def on_command(cmd) -> None:
        commands[0] += 1

    runtime = Runtime(policy, config, on_command)
    baseline, baseline_note = make_baseline(args.rate, args.baseline)

    stop_feed = threading.Event()

    def feed() -> None:  # a 30 Hz camera
        while not stop_feed.is_set():
            runtime.submit_observation(make_observation(policy.spec, time.monotonic()))
            stop_feed.wait(1 / 30)

    feeder = threading.Thread(target=feed, name="camera", daemon=True)
    feeder.start()
    time.sleep(0.1)
    runtime.start()
    baseline.start()
    goal = runtime.start_goal("pick up the red cube")  # an instruction the default model grounds
    floor = start_floor_probe(seconds - 1.0, args.rate, args.spin_us * 1e-6, not args.no_realtime)
    time.sleep(seconds)
    runtime_stats = runtime.stats()
    loop_times = runtime.loop.tick_times()
    baseline.stop()
    runtime.stop()
    stop_feed.set()
    policy.close()

    floor_err = np.asarray(json.loads(floor.communicate(timeout=30)[0] or "[]"))
    period = 1.0 / args.rate
    loop_err = period_errors(loop_times[1:], period)  # the first interval includes thread start-up
    base_times = np.asarray(baseline.times[1:])
    base_err = period_errors(base_times, period)
    base_missed = int(np.sum(np.diff(base_times) > 1.5 * period)) if len(base_times) > 1 else 0
    loop_p99, base_p99 = _ms(loop_err, 99), _ms(base_err, 99)
    result = {
        "benchmark": "jitter",
        "seconds": seconds,
        "rate_hz": args.rate,
        "cores": cores,
        "policy_process": "none" if args.no_load else args.policy_process,
        "load": "scripted policy" if args.no_load else f"model on every frame, torch {torch_threads} threads",
        "inferences": int(runtime_stats.get("inferences", 0)),
        "torch_in_this_process": "torch" in sys.modules,
        "spin_us": args.spin_us,
        "gil_switch_interval_ms": sys.getswitchinterval() * 1e3,
        "priority": runtime_stats.get("priority", ""),
        "goal_accepted": goal.accepted,
        "loop_ticks": int(len(loop_times)),
        "loop_p50_ms": _ms(loop_err, 50),
        "loop_p99_ms": loop_p99,
        "loop_max_ms": _ms(loop_err),
        "loop_lateness_p99_ms": runtime_stats.get("lateness_p99_ms", float("nan")),
        "missed_ticks": int(runtime_stats.get("missed_ticks", 0)),
        "loop_action_ticks": int(runtime_stats.get("action_ticks", 0)),
        "loop_starved_ticks": int(runtime_stats.get("starved_ticks", 0)),
        "baseline": baseline.name,
        "baseline_note": baseline_note,
        "baseline_ticks": int(len(base_times)),
        "baseline_p50_ms": _ms(base_err, 50),
        "baseline_p99_ms": base_p99,
        "baseline_max_ms": _ms(base_err),
        "baseline_missed_ticks": base_missed,
        "p99_ratio": loop_p99 / base_p99 if base_p99 > 0 else float("nan"),
        "floor_p99_ms": _ms(floor_err, 99),
        "floor_max_ms": _ms(floor_err),
        "target_loop_p99_ms": 0.25,
        "target_ratio": 1 / 8,
    }
    print(
        f"control loop {args.rate:g} Hz: period error p50 {result['loop_p50_ms']:.3f} ms, "
        f"p99 {loop_p99:.3f} ms, max {result['loop_max_ms']:.3f} ms, missed {result['missed_ticks']}"
    )
    print(
        f"baseline {baseline.name}: p50 {result['baseline_p50_ms']:.3f} ms, p99 {base_p99:.3f} ms, "
        f"max {result['baseline_max_ms']:.3f} ms; p99 ratio {result['p99_ratio']:.3f}"
    )
    print(f"floor (the same loop alone in a single-threaded process, same run): "
          f"p99 {result['floor_p99_ms']:.3f} ms, max {result['floor_max_ms']:.3f} ms")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
