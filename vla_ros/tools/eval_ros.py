"""`vla_ros eval-ros`: closed-loop success through the full ROS stack (sim node + vla_node over DDS).

    vla_ros eval-ros --episodes N [--seed S] [--task any|pick|place] [--json]
                     [--extra-latency-ms X] [--sync] [--checkpoint DIR] [--timeout 10]
                     [--policy-process child|local|remote]

Starts launch/sim_demo.launch.py once, then per episode: re-arms vla_node around a seeded reset of
the simulated robot (seeds S, S+1, ...), sends the scene's instruction through the ROS interface,
and waits for the goal's end. Success is the simulation's own detector firing before the time
limit (the goal then ends "completed" through vla_node's success_topic). Prints one line per
episode; with --json the last line is one JSON object: success_rate, episodes (count),
mean_episode_time_s, per_episode [...], and the settings.

--extra-latency-ms adds that delay to every inference inside vla_node (its extra_latency_s
parameter: the stress test of asynchronous chunking); --sync makes vla_node infer only when its
action buffer is used up (execution:=sync) for comparison. --policy-process local runs the model
inside vla_node instead of in its worker process (vla_node's default, policy_process: child);
remote runs it in a policy_server node, a third process reached over DDS.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from vla_ros.tools.sim_session import EpisodeClient, SimStack, refuse_second_stack, summarize


def parse_vla_params(items: list[str]) -> dict:
    """["name=value", ...] -> {name: YAML-parsed value}; a malformed item is an error naming it."""
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--vla-param {item!r}: expected NAME=VALUE, e.g. refill_margin_s=0.4")
        out[name.strip()] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla_ros eval-ros", description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=1000, help="seed of the first episode (then +1 each)")
    p.add_argument("--task", default="any", choices=["any", "pick", "place"])
    p.add_argument("--json", action="store_true", help="last line: one JSON object with the results")
    p.add_argument("--extra-latency-ms", type=float, default=0.0, help="added to every inference in vla_node")
    p.add_argument("--sync", action="store_true", help="synchronous inference (execution:=sync)")
    p.add_argument("--policy-process", choices=("child", "local", "remote"), default="child",
                   help="vla_node's policy_process: the model in its worker process (default), in the "
                        "node (local), or in a policy_server over DDS (remote: a third process)")
    p.add_argument("--checkpoint", default="", help="checkpoint directory (default: the default checkpoint)")
    p.add_argument("--timeout", type=float, default=10.0, help="episode time limit, s (the sim's: 10)")
    p.add_argument("--vla-param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra vla_node parameter (YAML value), e.g. refill_margin_s=0.4; repeatable")
    p.add_argument("--interface", choices=("auto", "action", "topic"), default="auto",
                   help="how goals are sent: the ExecuteInstruction action (auto, where built) or the "
                        "~/instruction topic; reported as \"interface\"")
    p.add_argument("--log", default="out/eval_ros/launch.log", help="where the nodes' output goes")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.episodes < 1:
        print("eval-ros: --episodes must be >= 1", file=sys.stderr)
        return 2
    if args.extra_latency_ms < 0:
        print("eval-ros: --extra-latency-ms must be >= 0", file=sys.stderr)
        return 2
    from vla_ros.tools.demo import check_checkpoint

    try:
        checkpoint = check_checkpoint(args.checkpoint)
    except FileNotFoundError as exc:
        print(f"eval-ros: {exc}\n  build the default checkpoint with `make checkpoint`", file=sys.stderr)
        return 2
    # Ctrl-C and SIGTERM (e.g. a CI timeout) both raise KeyboardInterrupt here, and rclpy's own
    # handlers stay off: they would shut the client's context down and leave us waiting blind.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    try:
        overrides = parse_vla_params(args.vla_param)
    except ValueError as exc:
        print(f"eval-ros: {exc}", file=sys.stderr)
        return 2
    if args.extra_latency_ms > 0:
        overrides["extra_latency_s"] = args.extra_latency_ms / 1000.0
    overrides.setdefault("policy_process", args.policy_process)
    launch_args = {"checkpoint": checkpoint, "seed": args.seed, "task": args.task,
                   "execution": "sync" if args.sync else "async", "goal_timeout_s": args.timeout,
                   "status_rate_hz": 20.0, "vla_overrides": json.dumps(overrides)}
    stack = SimStack(launch_args, log_path=Path(args.log))
    settings = {"checkpoint": checkpoint, "execution": launch_args["execution"], "vla_params": overrides,
                "extra_latency_ms": args.extra_latency_ms, "seed": args.seed, "task": args.task,
                "timeout_s": args.timeout}
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    client = None
    results = []
    t_begin = time.monotonic()
    code = 0
    try:
        client = EpisodeClient("vla_ros_eval_ros", interface=args.interface)
        refuse_second_stack(client)
        stack.start()
        client.wait_ready(args.startup_timeout, alive=stack.alive)
        print(f"eval-ros: stack ready after {time.monotonic() - t_begin:.1f} s; goals over the "
              f"{client.goals.interface}; {settings}", flush=True)
        for i in range(args.episodes):
            seed = args.seed + i
            episode = client.reset_episode(seed, "" if args.task == "any" else args.task)
            result, _ = client.run_goal(episode["instruction"], args.timeout, seed=seed)
            results.append(result)
            rate = sum(r.success for r in results) / len(results)
            print(f"episode {i:3d} seed {seed}: {'SUCCESS' if result.success else 'failure'} "
                  f"({result.reason}) {result.episode_time_s:5.2f} s  {result.control_rate_hz:4.1f} Hz  "
                  f"latency p50 {result.latency_p50_s * 1e3:6.1f} ms  {episode['instruction']!r}  "
                  f"[running {rate:.1%}]", flush=True)
    except (TimeoutError, RuntimeError) as exc:
        print(f"eval-ros: {exc}", file=sys.stderr)
        tail = stack.log_tail()
        if tail:
            print(f"--- last lines of {args.log} ---\n{tail}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("eval-ros: interrupted; results so far below", file=sys.stderr)
        code = 130
    finally:
        if client is not None:
            client.close()
        stack.stop()
        if rclpy.ok():
            rclpy.shutdown()
    if not results:
        return code or 1
    summary = {**summarize(results), **settings, "wall_time_s": round(time.monotonic() - t_begin, 1),
               "per_episode": [r.to_dict() for r in results]}
    print(f"eval-ros: success {summary['successes']}/{summary['episodes']} = {summary['success_rate']:.1%}, "
          f"mean episode time {summary['mean_episode_time_s']} s "
          f"(successful only: {summary['mean_success_time_s']} s)")
    if args.json:
        print(json.dumps(summary))
    return code


if __name__ == "__main__":
    sys.exit(main())
