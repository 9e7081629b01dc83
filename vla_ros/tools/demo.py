"""`vla_ros demo` (what `make demo` runs): the closed loop end to end, through ROS only.

    vla_ros demo [--seed N] [--task pick|place|any] [--instruction TEXT] [--checkpoint DIR]
                 [--out out/demo] [--episodes 1] [--execution async|sync] [--launch-only]

Starts launch/sim_demo.launch.py (simulated arm + vla_node with the default checkpoint), waits
until the model is loaded, sends the scene's instruction through vla_node's ROS interface (the
ExecuteInstruction action when built, else ~/instruction), waits for the result, and prints
success, episode time, achieved control rate and inference latency. Writes to --out:
  joints.png   commanded vs measured joints over time, chunk arrivals marked
  scene.mp4    the scene camera during the episode
  bag/         an MCAP rosbag2 of the episode (cameras, joint states, commands, success), recorded
               by a process of its own; `vla_ros bag-replay out/demo/bag --clock --loop` into a
               vla_node with the demo's parameters (use_sim_time) replays it
  chunk_switches.png  one joint's command across three chunk switches at 50% of a chunk's
               latency, crossfade vs real-time chunking, train-time (the flow checkpoint,
               checkpoints/tiny_flow, on the simulated clock of `vla_ros eval`; `python -m
               vla_ros.bench chunking` measures it)
  summary.json the printed figures; launch.log the nodes' output.
Everything started is stopped on exit (also on Ctrl-C): nothing is left running.
`--launch-only` just runs the launch file in the foreground (like `ros2 launch`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from vla_ros.tools.sim_session import (
    EpisodeClient,
    SimStack,
    Trace,
    launch_file,
    refuse_second_stack,
    summarize,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla_ros demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="scene seed of the (first) episode")
    p.add_argument("--task", default="any", choices=["any", "pick", "place"], help="task family")
    p.add_argument("--instruction", default="", help="send this instead of the scene's own instruction")
    p.add_argument("--interface", choices=("auto", "action", "topic"), default="auto",
                   help="how the goal is sent: the ExecuteInstruction action (auto: where built) or "
                        "~/instruction")
    p.add_argument("--episodes", type=int, default=1, help="episodes to run (seeds seed, seed+1, ...)")
    p.add_argument("--checkpoint", default="", help="checkpoint directory (default: the default checkpoint)")
    p.add_argument("--execution", default="async", choices=["async", "sync"])
    p.add_argument("--timeout", type=float, default=10.0, help="goal time limit, seconds (the sim's is 10)")
    p.add_argument("--out", default="out/demo", help="output directory")
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--no-bag", action="store_true")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for the nodes")
    p.add_argument("--launch-only", action="store_true", help="only run the launch file in the foreground")
    return p


def check_checkpoint(path: str) -> str:
    """The checkpoint directory to use; a clear error (and how to build it) when missing."""
    from vla_ros.models import default_checkpoint

    if path:
        if not (Path(path) / "model.safetensors").is_file():
            raise FileNotFoundError(f"--checkpoint {path}: no model.safetensors there")
        return str(Path(path).resolve())
    return str(default_checkpoint())


def write_plot(trace: Trace, names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.6 * len(names)), sharex=True)
    cmd_t = np.array([t for t, _ in trace.commands])
    cmd = np.array([c for _, c in trace.commands]) if trace.commands else np.zeros((0, len(names)))
    js_t = np.array([t for t, _ in trace.joints])
    js = np.array([q for _, q in trace.joints]) if trace.joints else np.zeros((0, len(names)))
    for i, (ax, name) in enumerate(zip(axes, names, strict=True)):
        if len(js):
            ax.plot(js_t, js[:, i], color="tab:blue", lw=1.2, label="measured")
        if len(cmd) and cmd.shape[1] > i:
            ax.plot(cmd_t, cmd[:, i], color="tab:orange", lw=1.0, ls="--", label="commanded")
        for k, t in enumerate(trace.chunk_times):
            ax.axvline(t, color="tab:gray", lw=0.6, alpha=0.6, label="chunk arrival" if k == 0 else None)
        if trace.success_time is not None:
            ax.axvline(trace.success_time, color="tab:green", lw=1.5, label="task success")
        ax.set_ylabel(name, rotation=0, ha="right", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel("seconds since the goal was accepted")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_video(trace: Trace, path: Path, fps: float = 15.0, scale: int = 4) -> int:
    import imageio.v2 as imageio
    import numpy as np

    frames = [np.repeat(np.repeat(f, scale, axis=0), scale, axis=1) for t, f in trace.frames if t >= -0.5]
    if not frames:
        return 0
    imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
    return len(frames)


def run_launch_only(args) -> int:
    stack = SimStack(_launch_args(args, args.checkpoint))
    stack.start()
    print(f"demo: running {launch_file()} (Ctrl-C stops it)")
    try:
        while stack.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


def _launch_args(args, checkpoint: str) -> dict:
    return {"checkpoint": checkpoint, "seed": args.seed, "task": args.task, "execution": args.execution,
            "goal_timeout_s": args.timeout, "status_rate_hz": 20.0}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        checkpoint = check_checkpoint(args.checkpoint)
    except FileNotFoundError as exc:
        print(f"demo: {exc}\n  build the default checkpoint with `make checkpoint`", file=sys.stderr)
        return 2
    if args.launch_only:
        return run_launch_only(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # SIGTERM (e.g. from a CI timeout) takes the same clean path as Ctrl-C.
    # Ctrl-C and SIGTERM (e.g. a CI timeout) both raise KeyboardInterrupt here, and rclpy's own
    # handlers stay off: they would shut the client's context down and leave us waiting blind.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    t_begin = time.monotonic()
    stack = SimStack(_launch_args(args, checkpoint), log_path=out / "launch.log")
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    client = recorder = None
    code = 0
    try:
        client = EpisodeClient("vla_ros_demo", record_frames=not args.no_video, interface=args.interface)
        refuse_second_stack(client)
        stack.start()
        print(f"demo: starting the simulated robot and vla_node ({checkpoint}); log: {out / 'launch.log'}")
        client.wait_ready(args.startup_timeout, alive=stack.alive)
        t_ready = time.monotonic()
        print(f"demo: ready after {t_ready - t_begin:.1f} s")
        results = []
        for i in range(args.episodes):
            seed = args.seed + i
            episode = client.reset_episode(seed, "" if args.task == "any" else args.task)
            instruction = args.instruction or episode["instruction"]
            if not args.no_bag and i == 0:
                from vla_ros.tools.bag_record import RecorderProcess

                bag = out / "bag"
                if bag.exists():
                    import shutil

                    shutil.rmtree(bag)
                recorder = RecorderProcess(bag)  # its own process keeps up with the stamps
            print(f"demo: episode {i} seed {seed}: {instruction!r} (over the {client.goals.interface})")
            result, trace = client.run_goal(instruction, args.timeout, seed=seed, record=(i == 0))
            if recorder is not None:
                counts = recorder.close()
                recorder = None
                print(f"demo: bag {out / 'bag'}: {sum(counts.values())} messages")
            results.append(result)
            print(f"demo:   {'SUCCESS' if result.success else 'FAILURE'} ({result.reason}) "
                  f"in {result.episode_time_s:.2f} s; control {result.control_rate_hz:.1f} Hz; "
                  f"inference latency p50 {result.latency_p50_s * 1e3:.1f} ms, "
                  f"p95 {result.latency_p95_s * 1e3:.1f} ms; {result.chunks} chunks")
            if trace is not None:
                names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
                title = (f"{instruction!r} (seed {seed}): {'success' if result.success else result.reason} "
                         f"in {result.episode_time_s:.1f} s")
                write_plot(trace, names, out / "joints.png", title)
                if not args.no_video:
                    n = write_video(trace, out / "scene.mp4")
                    print(f"demo: wrote {out / 'joints.png'} and {out / 'scene.mp4'} ({n} frames)")
        if not args.no_video:  # the plots and videos come together; --no-video skips both
            from vla_ros.bench.chunking import write_switch_plot

            write_switch_plot(out / "chunk_switches.png")
            print(f"demo: wrote {out / 'chunk_switches.png'}")
        summary = {**summarize(results), "ready_after_s": round(t_ready - t_begin, 2),
                   "episode_results": [r.to_dict() for r in results]}
        code = 0 if all(r.success for r in results) else 1
    except (TimeoutError, RuntimeError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        tail = stack.log_tail()
        if tail:
            print(f"--- last lines of {out / 'launch.log'} ---\n{tail}", file=sys.stderr)
        summary, code = None, 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        summary, code = None, 130
    finally:
        if recorder is not None:
            recorder.close()
        if client is not None:
            client.close()
        rc = stack.stop()
        if rclpy.ok():
            rclpy.shutdown()
    wall = time.monotonic() - t_begin
    if summary is not None:
        summary["wall_time_s"] = round(wall, 2)
        summary["launch_exit_code"] = rc
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"demo: {summary['successes']}/{summary['episodes']} succeeded; wall time {wall:.1f} s "
              f"(start-up {summary['ready_after_s']:.1f} s); all processes stopped (launch rc {rc})")
        print(json.dumps({k: v for k, v in summary.items() if k != "episode_results"}))
    return code


if __name__ == "__main__":
    sys.exit(main())
