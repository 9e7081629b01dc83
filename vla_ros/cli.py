"""The `vla_ros` command: one entry point, one subcommand per task.

Each subcommand lives in the module that owns the concern; this table only dispatches,
and imports lazily so `vla_ros sim-collect` never pays for importing rclpy or torch it
does not need.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "train": ("vla_ros.models.train", "behaviour-clone a model from demonstration episodes"),
    "eval": ("vla_ros.models.evaluate", "offline action error and closed-loop success (with --ablation)"),
    "parity": ("vla_ros.models.parity", "PCC between two runs of a model (dtype, cache, export)"),
    "export-onnx": ("vla_ros.models.onnx_export", "a checkpoint as ONNX graphs (onnxruntime backend)"),
    "quantize": ("vla_ros.models.quantize", "a checkpoint that runs int8 / int4 / bf16"),
    "finetune": ("vla_ros.models.finetune", "LoRA-adapt a checkpoint to a new task family (peft)"),
    "distill": ("vla_ros.models.distill", "a teacher's chunks on the student's own rollouts (DAgger data)"),
    "sim-collect": ("vla_ros.sim.collect", "record scripted-expert demonstrations (and rosbags)"),
    "dataset": ("vla_ros.data.convert", "export/import demonstrations as LeRobotDataset v3"),
    "bag-to-lerobot": ("vla_ros.tools.bag_to_lerobot", "rosbag2 recordings -> LeRobotDataset v3"),
    "sim-render": ("vla_ros.sim.render", "write a video and PNGs of a simulated episode"),
    "bag-replay": ("vla_ros.tools.bag_replay", "replay a rosbag2 into ROS topics with its timing"),
    "eval-ros": ("vla_ros.tools.eval_ros", "closed-loop success through the full ROS stack"),
    "demo": ("vla_ros.tools.demo", "the end-to-end closed-loop demo behind `make demo`"),
    "instruct": ("vla_ros.tools.instruct", "send one instruction to a running vla_node; feedback and result"),
}


def _usage() -> str:
    lines = ["usage: vla_ros COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print(f"vla_ros: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
