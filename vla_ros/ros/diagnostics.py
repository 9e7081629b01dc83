"""~/status and /diagnostics from the runtime's stats and the node's input meters.

`~/status` is vla_ros/msg/VlaStatus where the generated interfaces exist; otherwise it is a
std_msgs/String holding one JSON object with the same field names (header -> "stamp", seconds),
so scripts can read it either way. /diagnostics goes through diagnostic_updater when importable
(Jazzy), else the node publishes the same DiagnosticArray itself (Humble's wheel lacks it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import String

from vla_ros.ros import interface_fields

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def _num(stats: dict, key: str, scale: float = 1.0) -> float:
    value = stats.get(key)
    if value is None or value != value:  # missing or NaN (no samples yet)
        return 0.0
    return float(value) * scale


def status_fields(
    feedback, stats: dict, *, goal_active: bool, instruction: str, estop: bool, last_reason: str,
    grounding=None,
) -> dict[str, Any]:
    """The VlaStatus fields (minus header) from Runtime.feedback() and Runtime.stats();
    ``grounding``: Runtime.goal_grounding() (core/grounding.py's Grounding, or None)."""
    checked = goal_active and grounding is not None
    return {
        "state": feedback.state,
        "goal_active": goal_active,
        "instruction": instruction if goal_active else "",
        "step": feedback.step if goal_active else 0,
        "elapsed_s": feedback.elapsed_s if goal_active else 0.0,
        "inference_latency_s": _num({"v": feedback.latency_s}, "v"),
        "inference_latency_p50_s": _num(stats, "latency_p50_s"),
        "inference_latency_p95_s": _num(stats, "latency_p95_s"),
        "control_period_p50_s": _num(stats, "period_p50_ms", 1e-3),
        "control_period_p99_s": _num(stats, "period_p99_ms", 1e-3),
        "control_period_max_s": _num(stats, "period_max_ms", 1e-3),
        "missed_ticks": int(_num(stats, "missed_ticks")),
        "starved_ticks": int(_num(stats, "starved_ticks")),
        "faults": int(_num(stats, "faults")),
        "actions_buffered": max(int(feedback.buffered), 0),
        "estop": estop,
        "last_termination_reason": last_reason,
        "instruction_confidence": float(grounding.confidence) if checked else -1.0,
        "instruction_grounding": grounding.summary() if checked else "",
    }


class StatusPublisher:
    """Publishes ~/status as VlaStatus, or as JSON in a std_msgs/String (see module doc)."""

    def __init__(self, node) -> None:
        self._node = node
        _, status_type, self.why_fallback = interface_fields.load_interfaces()
        self._status_type = status_type
        self.uses_json = status_type is None
        self._pub = node.create_publisher(String if self.uses_json else status_type, "~/status", 10)

    def publish(self, fields: dict[str, Any]) -> None:
        now = self._node.get_clock().now()
        if self.uses_json:
            unknown = sorted(set(fields) - set(interface_fields.STATUS))
            if unknown:
                raise KeyError(f"status fields {unknown} are not in interface_fields.STATUS")
            payload = {"stamp": now.nanoseconds * 1e-9, **fields}
            self._pub.publish(String(data=json.dumps(payload)))
        else:
            msg = interface_fields.fill(self._status_type(), interface_fields.STATUS, **fields)
            msg.header.stamp = now.to_msg()
            self._pub.publish(msg)

    def destroy(self) -> None:
        self._node.destroy_publisher(self._pub)


def status_message_type():
    """The type ~/status has on this installation: VlaStatus, or std_msgs/String (JSON fallback)."""
    _, status_type, _ = interface_fields.load_interfaces()
    return status_type or String


def status_to_fields(msg) -> dict[str, Any]:
    """A received ~/status message (either type, see module doc) as a dict of VlaStatus fields.

    "stamp" is the header stamp in seconds in both cases.
    """
    if isinstance(msg, String):
        return json.loads(msg.data)
    fields = interface_fields.read(msg, interface_fields.STATUS)
    header = fields.pop("header")
    fields["stamp"] = header.stamp.sec + header.stamp.nanosec * 1e-9
    return fields


def subscribe_status(node, topic: str, callback: Callable[[dict[str, Any]], None], qos=10, **kwargs):
    """Subscribe ``callback(fields)`` to a vla_node's ~/status with the type the node publishes."""
    return node.create_subscription(
        status_message_type(), topic, lambda msg: callback(status_to_fields(msg)), qos, **kwargs
    )


def _kv(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in values.items()]


def build_statuses(
    node_name: str,
    fields: dict[str, Any],
    rates: dict[str, float],
    silent: list[str],
    observation_age_s: float,
    skipped: dict[str, int],
    recent_problems: list[str],
    control_rate_hz: float,
    policy_info: dict[str, Any] | None = None,
    control_priority: str = "",
) -> list[DiagnosticStatus]:
    """One DiagnosticStatus each for the inputs, the runtime and the policy (its process);
    ``control_priority``: how the control thread is scheduled (ControlLoop.priority_status)."""
    inputs = DiagnosticStatus(name=f"{node_name}: inputs", hardware_id=node_name)
    inputs.values = _kv(
        {f"{name} rate (Hz)": rate for name, rate in rates.items()}
        | {"observation age (s)": observation_age_s}
        | {f"{name} skipped": count for name, count in skipped.items()}
    )
    if silent:
        inputs.level, inputs.message = ERROR, f"no messages from {', '.join(silent)}"
    elif recent_problems:
        inputs.level, inputs.message = WARN, recent_problems[-1]
    else:
        inputs.level, inputs.message = OK, "all inputs flowing"
    runtime = DiagnosticStatus(name=f"{node_name}: runtime", hardware_id=node_name)
    runtime.values = _kv(
        {
            "state": fields["state"],
            "inference latency p50 (s)": fields["inference_latency_p50_s"],
            "inference latency p95 (s)": fields["inference_latency_p95_s"],
            "control period p99 (s)": fields["control_period_p99_s"],
            "control period max (s)": fields["control_period_max_s"],
            "control thread": control_priority or "not running",
            "buffer depth": fields["actions_buffered"],
            "starved ticks": fields["starved_ticks"],
            "missed ticks": fields["missed_ticks"],
            "faults": fields["faults"],
            "estop": fields["estop"],
            "last termination": fields["last_termination_reason"],
        }
    )
    if fields["estop"]:
        runtime.level, runtime.message = WARN, "e-stop latched: holding"
    elif fields["state"] == "fault" or fields["last_termination_reason"] == "fault":
        runtime.level, runtime.message = WARN, "last goal ended in a fault"
    elif fields["control_period_p99_s"] > 2.0 / control_rate_hz:
        runtime.level, runtime.message = WARN, "control period p99 above twice the target"
    else:
        runtime.level, runtime.message = OK, fields["state"]
    return [inputs, runtime, policy_status(node_name, policy_info)]


def policy_status(node_name: str, info: dict[str, Any] | None) -> DiagnosticStatus:
    """The policy's process (ChildProcessPolicy / RemotePolicy .process_info()); None: this process."""
    status = DiagnosticStatus(name=f"{node_name}: policy", hardware_id=node_name)
    if info is None:
        status.level, status.message = OK, "in this process (policy_process: local)"
        return status
    status.values = _kv({"process": info["state"], "pid": info["pid"], "starts": info["starts"],
                         "failures": info["failures"], "failures in a row": info["failures_in_a_row"],
                         "last failure": info["last_failure"]})
    if "server" in info and info["state"] != "ready":
        why = info["last_failure"] or "not matched"
        status.level, status.message = ERROR, f"policy_server {info['server']} {info['state']}: {why}"
    elif info["state"] == "given up":
        status.level, status.message = ERROR, f"policy process down for good: {info['last_failure']}"
    elif info["failures_in_a_row"] > 0:
        status.level, status.message = WARN, f"policy process restarted after: {info['last_failure']}"
    elif "server" in info:  # policy_process: remote
        status.level, status.message = OK, f"policy_server {info['server']} {info['state']}"
    else:
        status.level, status.message = OK, f"policy process {info['state']} (pid {info['pid']})"
    return status


class Diagnostics:
    """/diagnostics through diagnostic_updater when available, else a plain DiagnosticArray publisher."""

    def __init__(self, node, period_s: float, collect: Callable[[], list[DiagnosticStatus]]) -> None:
        self._node = node
        self._collect = collect
        self._updater = None
        self._pub = None
        self._timer = None
        try:
            import diagnostic_updater
        except ImportError:
            diagnostic_updater = None
        if diagnostic_updater is not None:
            self._updater = diagnostic_updater.Updater(node, period=period_s)
            self._updater.setHardwareID(node.get_name())
            for index, name in enumerate(("inputs", "runtime", "policy")):
                self._updater.add(diagnostic_updater.FunctionDiagnosticTask(name, self._task(index)))
        else:
            self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self._timer = node.create_timer(period_s, self._publish)

    def _task(self, index: int) -> Callable:
        def run(stat):
            status = self._collect()[index]
            stat.summary(status.level, status.message)
            for kv in status.values:
                stat.add(kv.key, kv.value)
            return stat

        return run

    def _publish(self) -> None:
        msg = DiagnosticArray(status=self._collect())
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(msg)

    def destroy(self) -> None:
        # The Updater declares parameters and owns a timer; the node makes one Diagnostics for its life.
        if self._updater is not None:
            self._node.destroy_timer(self._updater.timer)
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
