"""The executor for the vla_node, the policy_server and RemotePolicy's client node.

rclpy's Python executors rebuild a wait set and walk every entity on each wake-up; on this path,
with a few short callbacks per observation, that was most of what the transport cost:
`python -m vla_ros.bench remote` (two 224x224 cameras, localhost) added 3.3 ms p50 / 7.3 ms p99
with SingleThreadedExecutor and 1.4 / 1.8 ms with rclpy's EventsExecutor, which dispatches
from C++ (rclpy.experimental; Jazzy and later). Where rclpy lacks it (Humble) the
SingleThreadedExecutor is used. Both run one callback at a time, so the callbacks must stay short.
In the vla_node the same executor about halved the control thread's tick -> publish p99 (1.7-2.3 ms
against 2.6-4.6 ms with a 4-thread MultiThreadedExecutor, `python -m vla_ros.bench node --executor
node|multi-threaded`, README): the Python executors' bookkeeping holds the GIL that thread waits for.
"""

from __future__ import annotations

from rclpy.executors import Executor, SingleThreadedExecutor


def low_latency_executor(context=None) -> tuple[Executor, str]:
    """An executor for ``context`` (default: the global one) and its name, for logs and diagnostics."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return SingleThreadedExecutor(context=context), "SingleThreadedExecutor"
    return EventsExecutor(context=context), "EventsExecutor"
