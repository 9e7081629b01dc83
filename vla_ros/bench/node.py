"""Benchmark the vla_node: synthetic cameras at 30 Hz + joint states over DDS, a running goal.

    python -m vla_ros.bench node [--quick] [--checkpoint DIR] [--seconds S] [--policy-process child|local]
                                 [--executor node|multi-threaded] [--realtime-priority N]

Model: the default checkpoint when it exists, else the "tiny" config with random weights (the
JSON says which). The synthetic robot (cameras, joint states, and the subscriber counting the
commands) runs in a process of its own, as a camera driver and a controller would.

Figures (milliseconds unless named otherwise), per chunk for the observation it was computed from:
  control_p99_ms          p99 of the control loop's tick-to-tick period (target 1000 / control rate)
  command_rate_hz         command messages received by a subscriber per second during the goal
  overhead_p99_ms         what the node itself adds: synchronised set complete -> Observation
                          submitted (conversion, resize) plus tick -> command message published
  ingest_p99_ms, tick_to_publish_p99_ms
                          the same two parts over every synchronised set and every tick (thousands
                          of samples, where the per-chunk figures have one per chunk)
  e2e_minus_model_p99_ms  header stamp -> first command computed from it, minus the model's latency:
                          overhead + transport (camera process serialising, DDS, executor) + mailbox
                          wait (the observation waits for the worker to want a chunk) + tick wait
                          (the chunk waits for the next control tick); the waits are by design
  e2e_p99_ms              header stamp -> first command computed from that observation published
The last line printed is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _tiny_random_policy(directory: Path):
    import torch

    from vla_ros.core.scripted_policy import SO100_NAMES
    from vla_ros.models import load_policy
    from vla_ros.models.checkpoint import RobotMeta, new_checkpoint, save_checkpoint
    from vla_ros.models.normalization import Normalizer
    from vla_ros.models.vla import make_config

    torch.manual_seed(0)
    names = list(SO100_NAMES)
    ckpt = new_checkpoint(
        make_config("tiny", cameras=["scene", "wrist"]),
        Normalizer.identity(len(names), len(names)),
        RobotMeta(state_names=names, action_names=names, cameras=["scene", "wrist"], action_period=0.1),
    )
    save_checkpoint(directory, ckpt)
    return load_policy(directory, threads=1)


def _load_policy(checkpoint: str | None, tmp: Path, where: str):
    if where == "child":  # the worker process finds the default checkpoint itself; no torch here
        from vla_ros.core.policy_process import ChildProcessPolicy

        policy = ChildProcessPolicy("vla_ros.models.policy:load_policy",
                                    {"checkpoint_dir": checkpoint or None, "threads": 1})
        name = f"checkpoint {checkpoint}" if checkpoint else "default checkpoint"
        return policy, f"{name}, in a worker process"
    from vla_ros.models import default_checkpoint, load_policy

    if checkpoint:
        return load_policy(checkpoint, threads=1), f"checkpoint {checkpoint}"
    try:
        path = default_checkpoint()
        return load_policy(path, threads=1), f"default checkpoint {path}"
    except FileNotFoundError:
        return _tiny_random_policy(tmp / "tiny"), "tiny config, random weights (no default checkpoint yet)"


class TimedPolicy:
    """Wraps a Policy; records per chunk (observation stamp, start, end) on the runtime clock."""

    def __init__(self, policy, clock) -> None:
        self.policy, self.spec, self.clock = policy, policy.spec, clock
        self.chunks: list[tuple[float, float, float]] = []

    def encode_instruction(self, text):
        return self.policy.encode_instruction(text)

    def predict_chunk(self, observation, context):
        start = self.clock()
        chunk = self.policy.predict_chunk(observation, context)
        self.chunks.append((observation.stamp, start, self.clock()))
        return chunk

    def reset(self):
        self.policy.reset()

    def process_info(self):
        return self.policy.process_info()

    def close(self):
        self.policy.close()


def camera_main(argv: list[str]) -> None:
    """Child process: two synthetic rgb8 cameras + joint states at a fixed rate until terminated;
    then writes the monotonic times the node's commands arrived to ``argv[4]`` (one per line)."""
    import signal

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    height, width, rate, names = int(argv[0]), int(argv[1]), float(argv[2]), argv[3].split(",")
    received: list[float] = []
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = threading.Event()  # SIGTERM ends the spin; rclpy is shut down outside the handler
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = rclpy.create_node("bench_cameras")
    ramp = np.tile(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None], (height, 1, 3))
    frames = [np.roll(ramp, 16 * k, axis=1).tobytes() for k in range(8)]  # a moving scene
    pubs = [
        node.create_publisher(Image, f"/bench/{n}/image_raw", qos_profile_sensor_data)
        for n in ("scene", "wrist")
    ]
    joints = node.create_publisher(JointState, "/bench/joint_states", 10)
    node.create_subscription(Float64MultiArray, "/bench/arm/commands",
                             lambda _msg: received.append(time.monotonic()), 100)
    count = [0]

    def publish():
        stamp = node.get_clock().now().to_msg()
        for pub in pubs:
            msg = Image(
                height=height, width=width, encoding="rgb8", step=width * 3, data=frames[count[0] % 8]
            )
            msg.header.stamp = stamp
            pub.publish(msg)
        js = JointState(name=names, position=[0.0] * len(names))
        js.header.stamp = stamp
        joints.publish(js)
        count[0] += 1

    node.create_timer(1.0 / rate, publish)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
    Path(argv[4]).write_text("".join(f"{t!r}\n" for t in received))
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown()


def _p(values, q: float) -> float:
    return float(np.percentile(values, q) * 1e3) if len(values) else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vla_ros.bench node", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 s at 240x320 instead of 30 s at 480x640")
    parser.add_argument("--checkpoint", default=None, help="model checkpoint (default: the default one)")
    parser.add_argument("--policy-process", choices=["child", "local"], default="child",
                        help="where the model runs: a worker process (the node's default), or this one")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--camera-rate", type=float, default=30.0)
    parser.add_argument("--control-rate", type=float, default=50.0)
    parser.add_argument("--executor", choices=["node", "multi-threaded"], default="node",
                        help="the vla_node executable's executor (EventsExecutor where rclpy has it), or "
                             "a 4-thread MultiThreadedExecutor (what it ran before)")
    parser.add_argument("--realtime-priority", type=int, default=50,
                        help="the node's realtime_priority: its control thread's SCHED_FIFO level (the "
                             "node's default, 50; 0 = normal scheduling)")
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="sys.setswitchinterval for this run (Python default 5 ms)",
    )
    args = parser.parse_args(argv)
    if args.switch_interval_ms:
        sys.setswitchinterval(args.switch_interval_ms / 1e3)
    seconds = args.seconds or (8.0 if args.quick else 30.0)
    height, width = (240, 320) if args.quick else (480, 640)

    import tempfile

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from vla_ros.ros.executors import low_latency_executor
    from vla_ros.ros.vla_node import VlaNode

    clock = time.monotonic
    tmp_dir = tempfile.TemporaryDirectory()
    inner, model_name = _load_policy(args.checkpoint, Path(tmp_dir.name), args.policy_process)
    policy = TimedPolicy(inner, clock)
    context = Context()
    rclpy.init(context=context)
    overrides = {
        "camera_names": ["scene", "wrist"],
        "cameras.scene.topic": "/bench/scene/image_raw",
        "cameras.wrist.topic": "/bench/wrist/image_raw",
        "joint_states_topic": "/bench/joint_states",
        "output_topic": "/bench/arm/commands",
        "control_rate_hz": args.control_rate,
        "goal_timeout_s": 0.0,
        "max_observation_age_s": 0.5,
        "position_lower": [-3.0] * 5,
        "position_upper": [3.0] * 5,
        "velocity_limit": [3.0] * 5,
        "realtime_priority": args.realtime_priority,
    }
    node = VlaNode(
        "bench_vla",
        policy=policy,
        context=context,
        parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
    )
    published: list[tuple[float, float]] = []  # (tick stamp, published at)
    original_cmd = node._on_command

    def on_command(command):
        original_cmd(command)
        published.append((command.stamp, clock()))

    node._on_command = on_command

    # The synthetic robot runs in its own process, as a camera driver and a controller would: its
    # serialisation and callbacks must not compete with the node for this interpreter's GIL.
    received_file = Path(tmp_dir.name) / "received.txt"
    camera_process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from vla_ros.bench.node import camera_main; camera_main(sys.argv[1:])",
            str(height),
            str(width),
            str(args.camera_rate),
            ",".join(inner.spec.state_names),
            str(received_file),
        ],
        env=os.environ.copy(),
    )
    if args.executor == "multi-threaded":  # what the vla_node executable ran before
        executor_name = "MultiThreadedExecutor"
        node_exec = MultiThreadedExecutor(num_threads=4, context=context)
    else:
        node_exec, executor_name = low_latency_executor(context)  # the vla_node executable's
    node_exec.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(
        target=lambda: [node_exec.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)], daemon=True
    )
    spinner.start()
    try:
        if not node.autostart():
            raise SystemExit(f"node did not start: {node.last_error}")
        # The node keeps its last 1000 sets (33 s at 30 Hz) for diagnostics; a run keeps all of them.
        node.inputs.timeline = collections.deque(maxlen=None)
        node.inputs.ingest = collections.deque(maxlen=None)
        deadline = clock() + 30.0
        while clock() < deadline and (node.inputs is None or node.inputs.observations < 3):
            time.sleep(0.05)
        decision = node.start_goal("pick up the red cube")
        deadline = clock() + 30.0
        while not decision.accepted and clock() < deadline:
            time.sleep(0.1)
            decision = node.start_goal("pick up the red cube")
        if not decision.accepted:
            raise SystemExit(f"goal refused: {decision.reason}")
        t0 = clock()
        first_chunk = len(policy.chunks)
        time.sleep(seconds)
        t1 = clock()
        stats = node.runtime.stats()
        timeline = {stamp: (arrival, submitted) for stamp, arrival, submitted in node.inputs.timeline}
        ingest = list(node.inputs.ingest)
    finally:
        camera_process.terminate()
        camera_process.wait(10)
        node.hold_and_shutdown()
        stop.set()
        spinner.join(5)
        node_exec.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        inner.close()
    lines = received_file.read_text().split() if received_file.exists() else []
    received = np.array([float(t) for t in lines])
    tmp_dir.cleanup()
    commands = int(np.count_nonzero((received >= t0) & (received <= t1)))

    ticks = np.array([s for s, _ in published])
    pub_at = np.array([p for _, p in published])
    overhead, strict, e2e, latency, mailbox, tick_wait, transport, convert, publish = ([] for _ in range(9))
    for stamp, start, end in policy.chunks[first_chunk:]:
        i = int(np.searchsorted(ticks, end))
        if i >= len(ticks) or stamp not in timeline:
            continue
        arrival, submitted = timeline[stamp]
        publish_s = pub_at[i] - ticks[i]
        transport.append(arrival - stamp)
        convert.append(submitted - arrival)
        publish.append(publish_s)
        overhead.append(submitted - arrival + publish_s)
        e2e.append(pub_at[i] - stamp)
        strict.append(pub_at[i] - stamp - (end - start))
        latency.append(end - start)
        mailbox.append(start - submitted)
        tick_wait.append(ticks[i] - end)
    result = {
        "benchmark": "node",
        "model": model_name,
        "policy_process": args.policy_process,
        "executor": executor_name,
        "control_priority": stats.get("priority"),
        "camera": f"{width}x{height} rgb8 x2 @ {args.camera_rate:g} Hz",
        "control_rate_hz": args.control_rate,
        "seconds": round(t1 - t0, 2),
        "chunks": len(latency),
        "control_p50_ms": stats.get("period_p50_ms"),
        "control_p99_ms": stats.get("period_p99_ms"),
        "control_max_ms": stats.get("period_max_ms"),
        "missed_ticks": stats.get("missed_ticks"),
        "starved_ticks": stats.get("starved_ticks"),
        "command_rate_hz": round(commands / (t1 - t0), 2),
        "overhead_p50_ms": _p(overhead, 50),
        "overhead_p99_ms": _p(overhead, 99),
        "transport_p50_ms": _p(transport, 50),
        "transport_p99_ms": _p(transport, 99),
        "convert_p50_ms": _p(convert, 50),
        "convert_p99_ms": _p(convert, 99),
        "publish_p99_ms": _p(publish, 99),
        "ingest_p99_ms": _p(ingest, 99),
        "tick_to_publish_p50_ms": _p(pub_at - ticks, 50),
        "tick_to_publish_p99_ms": _p(pub_at - ticks, 99),
        "model_latency_p50_ms": _p(latency, 50),
        "model_latency_p99_ms": _p(latency, 99),
        "mailbox_wait_p99_ms": _p(mailbox, 99),
        "tick_wait_p99_ms": _p(tick_wait, 99),
        "e2e_minus_model_p50_ms": _p(strict, 50),
        "e2e_minus_model_p99_ms": _p(strict, 99),
        "e2e_p50_ms": _p(e2e, 50),
        "e2e_p99_ms": _p(e2e, 99),
    }
    for key, value in result.items():
        if key != "benchmark":
            print(f"{key:>22}: {value:.3f}" if isinstance(value, float) else f"{key:>22}: {value}")
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}))
    return 0
