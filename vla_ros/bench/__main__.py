"""`python -m vla_ros.bench NAME [--quick] ...` dispatches to one benchmark module."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "jitter": "vla_ros.bench.jitter",
    "async": "vla_ros.bench.async_bench",
    "kv-cache": "vla_ros.bench.kv_cache",
    "sim": "vla_ros.bench.sim",
    "node": "vla_ros.bench.node",
    "fuzz": "vla_ros.bench.fuzz",
    "soak": "vla_ros.bench.soak",
    "remote": "vla_ros.bench.remote",
    "chunking": "vla_ros.bench.chunking",
    "grounding": "vla_ros.bench.grounding",
    "onnx": "vla_ros.bench.onnx_bench",
    "quantize": "vla_ros.bench.quantize_bench",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        names = ", ".join(sorted(BENCHMARKS))
        print(f"usage: python -m vla_ros.bench NAME [options]; NAME is one of: {names}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
