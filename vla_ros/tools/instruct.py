"""vla_ros instruct: send one instruction to a running vla_node, print its feedback and result.

    vla_ros instruct "pick up the red cube" [--timeout S] [--max-steps N] [--node /vla_node]

For a machine without `ros2 action` (the pip ROS runtime); where it exists,
`ros2 action send_goal --feedback /vla_node/execute_instruction vla_ros/action/ExecuteInstruction
"{instruction: '...'}"` does the same. Goes through the ExecuteInstruction action, or the
~/instruction topic where the generated interfaces are missing (see vla_ros.tools.goal_client).
Exit status: 0 when the goal completed, 1 when it ended otherwise (rejected, timeout, fault, ...),
2 on a usage error or when the node cannot be reached. Ctrl-C cancels the goal and waits for
its result.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla_ros instruct", description=__doc__.split("\n")[0])
    p.add_argument("instruction", help="what to do, in plain language")
    p.add_argument("--timeout", type=float, default=0.0, help="goal time limit in seconds (0 = node default)")
    p.add_argument("--max-steps", type=int, default=0, help="most action periods (0 = node default)")
    p.add_argument("--node", default="/vla_node", help="the vla_node's fully qualified name")
    p.add_argument("--interface", choices=("auto", "action", "topic"), default="auto",
                   help="auto: the action when its types are built, else the topic")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the node to appear")
    p.add_argument("--json", action="store_true", help="last line: the result as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not (0 <= args.timeout < float("inf")) or args.max_steps < 0:
        print("vla_ros instruct: --timeout must be finite and >= 0, --max-steps >= 0", file=sys.stderr)
        return 2
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from vla_ros.tools.goal_client import InstructionClient

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("vla_ros_instruct")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    cancel = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: cancel.set())
    client = None
    try:
        client = InstructionClient(node, args.node, args.interface)
        if not client.wait_for_node(args.wait):
            print(f"vla_ros instruct: no {args.node} within {args.wait:g} s (is it running and active, "
                  "on this ROS_DOMAIN_ID?)", file=sys.stderr)
            return 2

        def on_feedback(fb: dict) -> None:
            print(f"  step {fb['step']:4d}  {fb['elapsed_s']:6.2f} s  {fb['state']:<8}  buffered "
                  f"{fb['actions_buffered']:3d}  latency {fb['inference_latency_s'] * 1e3:6.1f} ms",
                  flush=True)

        print(f"sending {args.instruction!r} to {args.node} over the {client.interface}", flush=True)
        try:
            outcome = client.run(args.instruction, args.timeout, args.max_steps, on_feedback=on_feedback,
                                 on_started=lambda: print("  accepted", flush=True), cancel=cancel)
        except (TimeoutError, ValueError) as exc:
            print(f"vla_ros instruct: {exc}", file=sys.stderr)
            return 2
        detail = f": {outcome.message}" if outcome.message else ""
        print(f"result: {outcome.termination_reason} after {outcome.steps} steps "
              f"({outcome.duration_s:.2f} s){detail}", flush=True)
        if args.json:
            print(json.dumps({k: v for k, v in outcome.__dict__.items() if k != "feedback"}))
        return 0 if outcome.success else 1
    finally:
        executor.shutdown()
        spinner.join(5.0)
        if client is not None:
            client.destroy()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
