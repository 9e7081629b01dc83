"""vla_node: the ROS 2 shell around `vla_ros.core.runtime.Runtime`.

Lifecycle: configure reads and validates parameters and loads the model; activate starts the
runtime (inference worker + control loop) and the inputs; deactivate stops them and holds the
arm at its last command; cleanup frees the model. `autostart` (or `--autostart`) configures and
activates at start-up for plain, non-lifecycle use.

The node holds no control logic: it converts messages into Observations, calls the Runtime,
and publishes the Commands the runtime's control-loop thread hands it (directly from that
thread: rclpy publishers are thread-safe, and the executor would add jitter).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import math
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

import numpy as np
import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from vla_ros.core.instructions import instruction_problem, preview
from vla_ros.core.policy import Observation, Policy
from vla_ros.core.results import GoalResults
from vla_ros.core.runtime import (
    Command,
    GoalDecision,
    GoalResult,
    RejectReason,
    Runtime,
)
from vla_ros.ros import interface_fields, params
from vla_ros.ros.diagnostics import Diagnostics, StatusPublisher, build_statuses, status_fields
from vla_ros.ros.executors import low_latency_executor
from vla_ros.ros.observation_sync import ObservationInput, no_event_handlers
from vla_ros.ros.outputs import CommandOutput, GripperMap

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc only
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


def release_memory() -> int:
    """Free what a stopped runtime and its inputs leave behind, and hand the freed heap to the OS.

    The runtime's threads and the input subscriptions' callbacks (message_filters chains, guards,
    the synchronizer's queued messages) form reference cycles: only the cyclic collector frees them,
    and its full collections are rare in a process holding a model. Image-sized buffers freed that
    way stay in glibc's arenas; malloc_trim returns those pages. Without both, every deactivate/
    activate left about 0.5 MB resident (bench soak). Called on deactivate and cleanup, off the
    control path (the runtime is stopped). Returns the number of objects the collector freed.
    """
    freed = gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    return freed


def load_model(config: params.NodeConfig, context=None, client_name: str = "vla_node_policy") -> Policy:
    """The node's model: in a worker process (policy_process = child; torch is imported there only),
    in a policy_server reached over DDS (remote: through a node ``client_name`` in ``context``, the
    node's) or in this process (local)."""
    options = {"checkpoint_dir": config.checkpoint_dir or None, "device": config.device,
               "dtype": config.dtype, "threads": config.torch_threads,
               "rtc": config.real_time_chunking, "rtc_max_guidance": config.rtc_max_guidance}
    factory, python = "vla_ros.models.policy:load_policy", None
    if config.policy_backend == "lerobot":
        from vla_ros.models.lerobot_policy import worker_options

        factory, options, python = worker_options(config.checkpoint_dir, config.lerobot_fps,
                                                  python=config.lerobot_python, device=config.device,
                                                  threads=config.torch_threads)
    if config.policy_process == "child":
        from vla_ros.core.policy_process import ChildProcessPolicy

        policy = ChildProcessPolicy(
            factory, options, call_timeout_s=config.policy_timeout_s,
            start_timeout_s=config.policy_start_timeout_s, max_restarts=config.policy_max_restarts,
            python=python)
    elif config.policy_process == "remote":
        from vla_ros.ros.remote_policy import RemotePolicy

        policy = RemotePolicy(context, config.policy_server, node_name=client_name,
                              call_timeout_s=config.policy_timeout_s,
                              start_timeout_s=config.policy_start_timeout_s, rtc=config.real_time_chunking,
                              rtc_max_guidance=config.rtc_max_guidance)
    elif config.policy_backend == "lerobot":  # local: lerobot must import in this process
        from vla_ros.models.lerobot_policy import load_lerobot_policy

        policy = load_lerobot_policy(**options)
    else:
        from vla_ros import models

        policy = models.load_policy(**options)
    if config.extra_latency_s > 0:  # latency-robustness evaluation (vla_ros eval-ros --extra-latency-ms)
        from vla_ros.core.delayed_policy import DelayedPolicy

        policy = DelayedPolicy(policy, config.extra_latency_s)
    return policy


class VlaNode(LifecycleNode):
    """The VLA controller node. ``policy`` injects a model (tests, embedding) instead of loading one."""

    def __init__(
        self,
        node_name: str = "vla_node",
        *,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs,
    ) -> None:
        super().__init__(node_name, **kwargs)
        params.declare(self)
        self._injected_policy = policy
        self._runtime_clock = clock
        self.policy: Policy | None = None
        self.config: params.NodeConfig | None = None
        self.runtime: Runtime | None = None
        self.inputs: ObservationInput | None = None
        self.output: CommandOutput | None = None
        self.last_error = ""  # why the last transition failed (also logged)
        self.results = GoalResults()  # every goal's result, for the front-ends that wait on it
        self._next_goal_id = 1  # goal ids go on across runtimes (deactivate/activate): results are by id
        self.commands_published = 0
        self.publish_latency: collections.deque[float] = collections.deque(maxlen=2000)  # tick -> published
        self.command_log: collections.deque[Command] = collections.deque(maxlen=5000)  # for tests, benches
        self._last_positions: np.ndarray | None = None
        self._estop = False
        self._goal_instructions: dict[int, str] = {}
        self._state_lock = threading.Lock()
        self._problems: collections.deque[str] = collections.deque(maxlen=20)
        self._problem_log_times: dict[str, float] = {}
        self._last_problem: dict[str, tuple[float, str]] = {}
        self._success_sub = None
        rate = float(self.get_parameter("status_rate_hz").value or 2.0)
        self._status = StatusPublisher(self)
        self._diagnostics = Diagnostics(self, 1.0 / rate, self._diagnostic_statuses)
        self._status_timer = self.create_timer(1.0 / rate, self.publish_status)
        self.create_subscription(String, "~/instruction", self._on_instruction, 10)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(SetBool, "~/estop", self._on_estop)
        self._action_server = None
        self._start_action_server()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _on_set_parameters(self, changes):
        """Parameters take effect at configure; a change after it would be silently ignored, so refuse it."""
        from rcl_interfaces.msg import SetParametersResult

        ours = [p.name for p in changes if p.name in params.PARAMS_BY_NAME or p.name.startswith("cameras.")]
        if self.config is not None and ours:
            return SetParametersResult(
                successful=False,
                reason=f"{ours} apply at configure: deactivate and clean up, set them, configure again",
            )
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            config = params.read_config(self)
            policy = self._injected_policy or load_model(config, self.context, f"{self.get_name()}_policy")
            params.check_against_model(config, policy.spec)
            if config.trajectory_mode == "buffer" and policy.spec.action_mode != "absolute":
                raise params.ConfigError(
                    "parameter 'trajectory_mode' = 'buffer' is invalid: the model's actions are "
                    f"{policy.spec.action_mode!r}, buffer mode needs absolute ones (valid: single_point)"
                )
            params.runtime_config(config, policy.spec)
        except params.ConfigError as exc:
            return self._fail(f"configure failed: {exc}")
        except Exception as exc:  # model loading: a missing checkpoint, a bad dtype for the device, ...
            return self._fail(f"configure failed: {type(exc).__name__}: {exc}")
        self.config, self.policy = config, policy
        self.output = CommandOutput(self, config)
        self.get_logger().info(
            f"configured: cameras {[c.name for c in config.cameras]}, "
            f"joints {list(config.command_joint_names)}, "
            f"{config.output_mode} on {config.output_topic}{' (dry run)' if config.dry_run else ''}, "
            f"control {config.control_rate_hz:g} Hz"
        )
        return SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        config, spec = self.config, self.policy.spec
        try:
            self.runtime = Runtime(
                self.policy,
                params.runtime_config(config, spec),
                self._on_command,
                clock=self._runtime_clock,
                on_result=self._on_result,
                first_goal_id=self._next_goal_id,
                fault_context=self._input_trouble,
            )
            self.runtime.start()
            if self._estop:
                self.runtime.set_estop(True)
        except Exception as exc:
            self.runtime = None
            return self._fail(f"activate failed: {type(exc).__name__}: {exc}")
        gripper = GripperMap(config.gripper_open_position, config.gripper_closed_position)
        try:
            self.inputs = ObservationInput(
                self,
                config,
                spec.image_size,
                gripper,
                self._on_observation,
                self._on_joint_state,
                self._on_problem,
                clock=self._runtime_clock,
                on_internal_error=self.on_internal_error,
            )
            if config.success_topic:
                self._success_sub = self.create_subscription(
                    Bool, config.success_topic, self._on_success, 10, **no_event_handlers()
                )
        except Exception as exc:  # e.g. an invalid topic name
            self._stop_runtime()
            return self._fail(f"activate failed: {type(exc).__name__}: {exc}")
        priority = self._control_priority()
        line = f"active: inputs subscribed, runtime running, control thread: {priority}"
        loop = self.runtime.loop
        if config.realtime_priority > 0 and not (loop is not None and loop.realtime_granted):
            self.get_logger().warning(line)  # priority_status says why
        else:
            self.get_logger().info(line)
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_runtime()
        self._release_memory()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self._release_memory()
        return SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_runtime()
        self._release()
        return SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._stop_runtime()
        self._release()
        return SUCCESS

    def _fail(self, message: str) -> TransitionCallbackReturn:
        self.last_error = message
        self.get_logger().error(message)
        return FAILURE

    def _stop_runtime(self) -> None:
        """Stop inputs and runtime, then repeat the last command so the arm holds where it is."""
        if self.inputs is not None:
            self.inputs.destroy()
            self.inputs = None
        if self._success_sub is not None:
            self.destroy_subscription(self._success_sub)
            self._success_sub = None
        if self.runtime is not None:
            self.runtime.stop()
            self._next_goal_id = self.runtime.runner.next_goal_id
            self.runtime = None
            if self.output is not None and self._last_positions is not None:
                self.output.publish(self._last_positions)
                if not self.output.flush():
                    self.get_logger().warning(
                        "the final hold command was not acknowledged by every subscriber"
                    )

    def _release_memory(self) -> None:
        started = time.monotonic()
        freed = release_memory()
        elapsed_ms = 1e3 * (time.monotonic() - started)
        self.get_logger().debug(f"released memory: {freed} objects collected in {elapsed_ms:.0f} ms")

    def _release(self) -> None:
        if self.output is not None:
            self.output.destroy()
            self.output = None
        if self.policy is not None and self.policy is not self._injected_policy:
            self.policy.close()  # ends a policy worker process
        self.policy = None  # frees the model (unless the embedder holds it)
        self.config = None

    def autostart(self) -> bool:
        """configure + activate; False (with last_error) if either fails."""
        if self.trigger_configure() != SUCCESS:
            return False
        return self.trigger_activate() == SUCCESS

    def hold_and_shutdown(self) -> None:
        """SIGINT/SIGTERM path: end the goal ("shutdown"), hold, and leave the lifecycle cleanly."""
        self._stop_runtime()
        self._release()

    # ------------------------------------------------------------------------ runtime callbacks
    def _on_command(self, command: Command) -> None:
        # Control-loop thread: publish and return; nothing here may block.
        output = self.output
        if output is None:
            return
        positions = command.positions
        if output.dry_run and command.proposed is not None:
            positions = command.proposed
        buffered = self.config.output_mode == "joint_trajectory" and self.config.trajectory_mode == "buffer"
        output.publish(positions, list(command.future) if buffered and not command.held else None)
        self._last_positions = command.positions
        self.command_log.append(command)
        self.commands_published += 1
        self.publish_latency.append(self._runtime_clock() - command.stamp)

    def _input_trouble(self) -> str:
        """Which inputs explain a fault: silent ones, and ones whose messages were just skipped."""
        if self.inputs is None or self.config is None:
            return ""
        horizon = self.config.max_observation_age_s + self.config.stale_grace_s + 1.0
        parts = []
        silent = self.inputs.silent_inputs(self.config.max_observation_age_s)
        if silent:
            parts.append(f"no messages from {', '.join(silent)}")
        now = time.monotonic()
        parts += [
            message
            for source, (t, message) in sorted(self._last_problem.items())
            if now - t < horizon and source not in silent
        ]
        return "; ".join(parts)

    def _on_result(self, result: GoalResult) -> None:
        with self._state_lock:
            self._goal_instructions.pop(result.goal_id, None)
        self.results.put(result)
        line = (f"goal {result.goal_id} ended: {result.reason} after {result.steps} steps "
                f"({result.duration_s:.2f} s){': ' + result.message if result.message else ''}")
        # Two call sites: rclpy refuses one call site logging at two severities.
        if result.success:
            self.get_logger().info(line)
        else:
            self.get_logger().warning(line)
        self.publish_status()

    def _on_observation(self, obs: Observation) -> None:
        if self.runtime is not None:
            self.runtime.submit_observation(obs)

    def _on_joint_state(self, state: np.ndarray, stamp: float) -> None:
        if self.runtime is not None:
            self.runtime.set_measured_state(state, stamp)

    def _on_problem(self, source: str, message: str) -> None:
        self._problems.append(message)
        now = time.monotonic()
        self._last_problem[source] = (now, message)
        if now - self._problem_log_times.get(source, -1e9) >= 2.0:  # throttled per source
            self._problem_log_times[source] = now
            self.get_logger().warning(message)

    def on_internal_error(self, source: str, exc: BaseException) -> None:
        """Last resort for a callback that raised (a bug, not bad input): fault, hold, live on."""
        message = f"internal error in the {source} callback: {type(exc).__name__}: {exc}"
        self._on_problem(source, message)
        now = time.monotonic()
        if now - self._problem_log_times.get("internal_trace", -1e9) >= 2.0:
            self._problem_log_times["internal_trace"] = now
            self.get_logger().error("".join(traceback.format_exception(exc)))
        if self.runtime is not None:
            self.runtime.fault_goal(message)

    # ------------------------------------------------------------------------ front-ends
    @property
    def last_result(self) -> GoalResult | None:
        """The newest goal result, a front-end's rejection included (~/status reports its reason)."""
        return self.results.last

    def start_goal(self, instruction: str, timeout_s: float = 0.0, max_steps: int = 0) -> GoalDecision:
        """Start a goal on the runtime (both front-ends go through here); returns the GoalDecision.

        A refusal names why: a bad request (empty, oversized or NUL-carrying instruction, negative
        limits), no model (node unconfigured), the node inactive, or the runtime's own reason.
        """
        limit = self.config.max_instruction_bytes if self.config is not None else int(
            self.get_parameter("max_instruction_bytes").value)
        problem = instruction_problem(instruction, limit)
        if not problem and not (0 <= timeout_s < math.inf and max_steps >= 0):
            problem = f"timeout_s={timeout_s} must be finite and >= 0, max_steps={max_steps} >= 0"
        runtime = self.runtime
        if problem:
            decision = GoalDecision(False, f"{RejectReason.BAD_REQUEST}: {problem}", -1)
        elif self.config is None:
            decision = GoalDecision(False, f"{RejectReason.NO_MODEL}: the node is not configured", -1)
        elif runtime is None:
            decision = GoalDecision(False, f"{RejectReason.NOT_RUNNING}: the node is not active", -1)
        else:
            decision = runtime.start_goal(instruction, timeout_s=timeout_s, max_steps=max_steps)
            if not decision.accepted and (trouble := self._input_trouble()):
                decision = GoalDecision(False, f"{decision.reason}; {trouble}", -1)
        if decision.accepted:
            with self._state_lock:
                self._goal_instructions[decision.goal_id] = instruction
            self.get_logger().info(f"goal {decision.goal_id} accepted: {preview(instruction)}")
        else:
            self.results.put(GoalResult(-1, False, "rejected", decision.reason, 0, 0.0))
            self.get_logger().warning(f"goal rejected: {decision.reason} ({preview(instruction)})")
            self.publish_status()
        return decision

    def _on_instruction(self, msg: String) -> None:
        self.start_goal(msg.data)

    def _on_stop(self, request, response):
        canceled = self.runtime is not None and self.runtime.cancel_goal()
        response.success = bool(canceled)
        response.message = "goal canceled, holding" if canceled else "no active goal"
        return response

    def _on_estop(self, request, response):
        self._estop = bool(request.data)
        if self.runtime is not None:
            self.runtime.set_estop(self._estop)
        response.success = True
        response.message = "e-stop engaged: holding" if self._estop else "e-stop released"
        self.get_logger().warning(response.message)
        self.publish_status()
        return response

    def _on_success(self, msg: Bool) -> None:
        if msg.data and self.runtime is not None:
            self.runtime.complete_goal()

    # ------------------------------------------------------------------------ action server
    def _start_action_server(self) -> None:
        action_type, _, why = interface_fields.load_interfaces()
        if action_type is None:
            self.get_logger().info(
                f"ExecuteInstruction action server is off: {why}; use ~/instruction and ~/stop instead"
            )
            return
        from vla_ros.ros.action_server import ExecuteInstructionServer

        self._action_server = ExecuteInstructionServer(self, action_type, ReentrantCallbackGroup())

    def wait_result(self, goal_id: int, timeout_s: float | None = None) -> GoalResult | None:
        """Block until goal ``goal_id`` ends (for the action server's execute callback)."""
        return self.results.wait(goal_id, timeout_s)

    # ------------------------------------------------------------------------ status
    def status(self) -> dict:
        """The ~/status fields now (also what the action feedback reads)."""
        runtime = self.runtime
        last = self.last_result
        last_reason = str(last.reason) if last is not None else ""
        if runtime is None:
            from vla_ros.core.runtime import Feedback

            state = "inactive" if self.config is not None else "unconfigured"
            return status_fields(
                Feedback(-1, 0, 0.0, 0.0, 0, state),
                {},
                goal_active=False,
                instruction="",
                estop=self._estop,
                last_reason=last_reason,
            )
        feedback = runtime.feedback()
        with self._state_lock:
            instruction = self._goal_instructions.get(feedback.goal_id, "")
        return status_fields(
            feedback,
            runtime.stats(),
            goal_active=feedback.goal_id >= 0,
            instruction=instruction,
            estop=self._estop,
            last_reason=last_reason,
            grounding=runtime.goal_grounding(),
        )

    def publish_status(self) -> None:
        try:
            self._status.publish(self.status())
        except Exception as exc:  # status must never take the node down
            self.get_logger().error(
                f"status publish failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0
            )

    def _diagnostic_statuses(self):
        fields = self.status()
        inputs, config = self.inputs, self.config
        if inputs is None or config is None:
            return build_statuses(self.get_name(), fields, {}, [], 0.0, {}, list(self._problems), 50.0)
        return build_statuses(
            self.get_name(),
            fields,
            inputs.rates(),
            inputs.silent_inputs(config.max_observation_age_s),
            inputs.observation_age(),
            dict(inputs.skipped),
            list(self._problems),
            config.control_rate_hz,
            self._policy_info(),
            self._control_priority(),
        )

    def _control_priority(self) -> str:
        """How the control thread is scheduled (ControlLoop.priority_status); "" when none runs."""
        loop = self.runtime.loop if self.runtime is not None else None
        return loop.priority_status if loop is not None else ""

    def _policy_info(self) -> dict | None:
        policy = self.policy
        return policy.process_info() if policy is not None else None


# ---------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None, policy: Policy | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; ``policy`` replaces checkpoint loading (tests, embedding)."""
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(prog="vla_node", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--autostart",
        action="store_true",
        help="configure and activate at start-up (plain, non-lifecycle use)",
    )
    args, _ = parser.parse_known_args(rclpy.utilities.remove_ros_args(argv)[1:])
    # Our own handlers: the default ones shut the context down before the arm could be held.
    rclpy.init(args=argv, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = VlaNode(policy=policy)
    code = 0
    if (args.autostart or node.get_parameter("autostart").value) and not node.autostart():
        node.get_logger().fatal(f"autostart failed: {node.last_error}")
        code = 1
    # One thread, dispatching from C++ where rclpy can (executors.low_latency_executor): rclpy's
    # Python executors walk every entity on each wake-up, holding the GIL the control thread needs
    # to publish. Goals wait as coroutines (action_server), so none holds the thread.
    executor, executor_name = low_latency_executor()
    node.get_logger().info(f"executor: {executor_name}")
    executor.add_node(node)
    try:
        while code == 0 and not stop.is_set() and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
            except ExternalShutdownException:
                break
            except Exception as exc:  # a callback outside the input guards raised: fault, hold, spin on
                node.on_internal_error("executor", exc)
    finally:
        node.get_logger().info("shutting down: holding the arm")
        try:
            node.trigger_shutdown()  # on_shutdown: end the goal ("shutdown"), stop, hold, free the model
        except Exception as exc:  # e.g. a transition already running; still hold
            node.get_logger().warning(f"lifecycle shutdown failed ({exc}); holding directly")
            node.hold_and_shutdown()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
