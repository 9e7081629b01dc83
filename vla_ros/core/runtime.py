"""The runtime facade: one object that turns a ``Policy`` into a fixed-rate stream of safe commands.

Threads: an inference worker (calls the policy) and a control loop (reads the action buffer,
applies the safety filter, calls ``on_command``). The control loop never waits on inference.
Everything is driven by ``clock`` (seconds); pass a fake clock and call ``tick()`` /
``infer_once()`` yourself to test the logic without threads.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from vla_ros.core.buffer import ActionBuffer
from vla_ros.core.clock import ExecutionClock
from vla_ros.core.control_loop import ControlLoop
from vla_ros.core.grounding import Grounding, Lexicon, parse_lexicon
from vla_ros.core.policy import Observation, Policy, PolicySpec
from vla_ros.core.results import ResultDispatcher
from vla_ros.core.runtime_types import (
    Command,
    Feedback,
    GoalDecision,
    GoalResult,
    RejectReason,
    RuntimeConfig,
    TerminationReason,
)
from vla_ros.core.safety import SafetyFilter, SafetyLimits
from vla_ros.core.task_runner import TaskRunner
from vla_ros.core.worker import InferenceWorker

__all__ = [
    "Command",
    "Feedback",
    "GoalDecision",
    "GoalResult",
    "RejectReason",
    "Runtime",
    "RuntimeConfig",
    "TerminationReason",
]

log = logging.getLogger(__name__)


class Runtime:
    """Inference worker + action buffer + control loop + safety filter + goal lifecycle.

    ``policy`` may be None (goals are then rejected with "no model", no commands are sent)
    and set later with ``set_policy``. ``on_command`` is called from the control-loop thread at
    the control rate; ``on_result`` once per goal with its terminal ``GoalResult``, in order, from
    the runtime's result thread once started (never the control thread; inline when stepped by
    hand). Callbacks must be quick and must not call ``stop()``.
    ``first_goal_id`` lets a replacement runtime continue its predecessor's goal ids, so a goal
    id names one goal for the life of the process. ``fault_context()`` says what else explains a
    fault (the ROS shell: its silent or skipped inputs); a fault result's message carries it.
    """

    def __init__(
        self,
        policy: Policy | None,
        config: RuntimeConfig,
        on_command: Callable[[Command], None],
        clock: Callable[[], float] = time.monotonic,
        on_result: Callable[[GoalResult], None] | None = None,
        first_goal_id: int = 1,
        fault_context: Callable[[], str] | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.clock = clock
        self._on_command = on_command
        self._user_on_result = on_result
        self._results = ResultDispatcher(on_result or (lambda _r: None), self._count_callback_error)
        self._lock = threading.Lock()
        self._policy: Policy | None = None
        self._lexicon: Lexicon | None = None
        self._grounding: tuple[int, Grounding | None] = (-1, None)  # (goal id, what the check read)
        self._spec: PolicySpec | None = None
        self._buffer: ActionBuffer | None = None
        self._safety: SafetyFilter | None = None
        self._state_index: np.ndarray | None = None  # state entries in action order, if mappable
        self.execution_clock = ExecutionClock()
        self.runner = TaskRunner(
            config, 0.1, on_result=self._on_goal_result, on_activate=self._on_goal_activate,
            first_goal_id=first_goal_id,
        )
        self.runner.fault_context = fault_context
        self.worker: InferenceWorker | None = None
        self.loop: ControlLoop | None = None
        self._running = False
        self._shut_down = False
        self._estop = False
        self._last_sent: np.ndarray | None = None
        self._last_proposed: np.ndarray | None = None  # dry run: the chain the filter limits
        self._measured: np.ndarray | None = None  # in action order
        self._latest_obs_stamp: float | None = None
        self._last_tick: float | None = None
        self.counters = dict.fromkeys(
            (
                "ticks", "action_ticks", "starved_ticks", "waiting_ticks", "idle_ticks", "estop_ticks",
                "silent_ticks", "clamped_ticks", "invalid_actions", "stale_faults", "callback_errors",
                "rejected_observations",
            ),
            0,
        )  # fmt: skip
        self.stop_report: dict[str, bool] = {}
        if policy is not None:
            self.set_policy(policy)

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the inference worker and the control loop threads."""
        if self._shut_down:
            raise RuntimeError("Runtime was stopped; create a new one")
        if self._running:
            return
        if self.config.gil_switch_interval_s is not None:
            sys.setswitchinterval(self.config.gil_switch_interval_s)
        self._results.start()
        self._ensure_worker().start()
        self.loop = ControlLoop(
            self.config.control_period,
            self.tick,
            spin_s=self.config.spin_s,
            realtime_priority=self.config.realtime_priority,
            realtime_priority_level=self.config.realtime_priority_level,
        )
        self._running = True
        self.loop.start()

    def stop(self) -> None:
        """End the active goal with "shutdown", stop both threads (bounded wait), idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        self.runner.finish(self.clock(), TerminationReason.SHUTDOWN, "runtime stopped")
        timeout = self.config.stop_timeout_s
        self.stop_report = {
            "worker_stopped": self.worker.stop(timeout) if self.worker else True,
            "loop_stopped": self.loop.stop(timeout) if self.loop else True,
            "results_stopped": self._results.stop(timeout),
        }
        if not all(self.stop_report.values()):
            log.warning("runtime stop: threads still running after %.1f s: %s", timeout, self.stop_report)
        self._running = False

    def set_policy(self, policy: Policy | None) -> None:
        """Swap the model; only allowed while no goal is active (raises RuntimeError otherwise)."""
        if self.runner.active() is not None:
            raise RuntimeError("set_policy: a goal is active; cancel it first")
        if policy is None:
            self._policy, self._lexicon = None, None
            return
        spec = policy.spec
        lexicon = parse_lexicon(spec.lexicon)
        cfg = self.config
        gripper = cfg.gripper_index if cfg.gripper_index is not None else spec.gripper_index
        limits = SafetyLimits.from_config(cfg, spec.action_dim, gripper)
        buffer = ActionBuffer(
            spec.action_dim,
            cfg.interpolation,
            cfg.blend,
            average_new_weight=cfg.average_new_weight,
            crossfade_steps=cfg.crossfade_steps,
            ensemble_decay=cfg.ensemble_decay,
        )
        state_index = _state_index(spec)
        with self._lock:
            self._spec, self._policy, self._lexicon = spec, policy, lexicon
            self._buffer, self._safety, self._state_index = buffer, SafetyFilter(limits), state_index
            self._measured = None
            self.runner.action_period = spec.action_period
        worker = self._ensure_worker()
        worker.buffer = buffer
        worker.action_mode = cfg.action_mode or spec.action_mode
        worker.action_offset_steps = spec.action_offset_steps

    def _ensure_worker(self) -> InferenceWorker:
        if self.worker is None:
            self.worker = InferenceWorker(
                get_policy=lambda: self._policy,
                buffer=self._buffer or ActionBuffer(1),
                runner=self.runner,
                config=self.config,
                clock=self.clock,
                action_mode=self.config.action_mode or "absolute",
                reference_state=self._reference_state,
                execution_time=self.execution_clock.at,
                held_position=self._held_position,
            )
            if self._spec is not None:
                self.worker.action_mode = self.config.action_mode or self._spec.action_mode
                self.worker.action_offset_steps = self._spec.action_offset_steps
        return self.worker

    # inputs ------------------------------------------------------------------------------
    def submit_observation(self, obs: Observation) -> None:
        """Single-slot mailbox: the newest observation replaces any older one. Also updates
        the measured state used by the "hold_measured" starvation policy.

        Raises ValueError (and keeps the previous observation) for a non-finite stamp or a
        state of the wrong size or with non-finite values."""
        self._check_state(obs.state, "Observation.state")
        if not np.isfinite(obs.stamp):
            self.counters["rejected_observations"] += 1
            raise ValueError(f"Observation.stamp must be finite, got {obs.stamp}")
        self.set_measured_state(obs.state, obs.stamp)
        with self._lock:
            if self._latest_obs_stamp is None or obs.stamp >= self._latest_obs_stamp:
                self._latest_obs_stamp = obs.stamp
        worker = self._ensure_worker()
        worker.mailbox.put(obs)
        worker.wake()

    def set_measured_state(self, state: np.ndarray, stamp: float | None = None) -> None:
        """Measured joint positions without images (e.g. from /joint_states between frames)."""
        state = self._check_state(state, "measured state")
        with self._lock:
            if self._state_index is not None:
                self._measured = state[self._state_index].astype(np.float64)

    def _check_state(self, state: np.ndarray, what: str) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        spec = self._spec
        if spec is not None and state.shape != (spec.state_dim,):
            self.counters["rejected_observations"] += 1
            raise ValueError(f"{what} has shape {state.shape}; the policy expects ({spec.state_dim},)")
        if not np.all(np.isfinite(state)):
            self.counters["rejected_observations"] += 1
            raise ValueError(f"{what} has non-finite values: {state.tolist()}")
        return state

    def _held_position(self) -> np.ndarray | None:
        """What a hold commands now: the last command sent, else the measured position."""
        with self._lock:
            return self._last_sent if self._last_sent is not None else self._measured

    def _reference_state(self, obs: Observation) -> np.ndarray:
        state = np.asarray(obs.state, dtype=np.float64)
        if self._state_index is None:
            raise ValueError("delta actions need the state to name every action dimension")
        return state[self._state_index]

    # goals -------------------------------------------------------------------------------
    def start_goal(self, instruction: str, timeout_s: float = 0, max_steps: int = 0) -> GoalDecision:
        """Accept or reject a goal. 0 means the config's default (which may itself be 0 = none).
        An instruction the policy's lexicon cannot ground is rejected as NOT_UNDERSTOOD
        (``instruction_grounding`` "reject"; "warn" accepts it with a warning). A grounded one is
        given to the model in the policy's own phrasing (``instruction_rewrite`` "canonical")."""
        now = self.clock()
        refusal = self._not_ready(now)
        grounding = self.ground(instruction) if not refusal and isinstance(instruction, str) else None
        if grounding is not None and not grounding.grounded:
            if self.config.instruction_grounding == "reject":
                refusal = f"{RejectReason.NOT_UNDERSTOOD}: {grounding.problem}"
            else:
                log.warning("instruction %r not understood (%s); accepted (instruction_grounding=warn)",
                            instruction[:80], grounding.problem)
        lexicon, rewrite = self._lexicon, None
        if grounding is not None and lexicon is not None and self.config.instruction_rewrite == "canonical":
            rewrite = lexicon.phrase(grounding)
        decision = self.runner.start_goal(instruction, now, timeout_s, max_steps, refusal, rewrite or "")
        if decision.accepted:
            if rewrite and rewrite != instruction:
                log.info("goal %d: instruction %r read as %r", decision.goal_id, instruction[:80], rewrite)
            with self._lock:
                self._grounding = (decision.goal_id, grounding)
            if self.worker is not None:
                self.worker.wake()
        return decision

    def ground(self, instruction: str) -> Grounding | None:
        """What the policy's lexicon reads in ``instruction``; None without a lexicon or with
        ``instruction_grounding`` "off"."""
        lexicon = self._lexicon
        if lexicon is None or self.config.instruction_grounding == "off":
            return None
        return lexicon.ground(instruction)

    def goal_grounding(self) -> Grounding | None:
        """The grounding of the active goal's instruction (None: no goal, or not checked)."""
        goal = self.runner.active()
        with self._lock:
            goal_id, grounding = self._grounding
        return grounding if goal is not None and goal.goal_id == goal_id else None

    def _not_ready(self, now: float) -> str:
        if self._shut_down:
            return f"{RejectReason.NOT_RUNNING}: the runtime was stopped"
        if self._policy is None:
            return f"{RejectReason.NO_MODEL}: no policy is loaded"
        if self._estop:
            return f"{RejectReason.ESTOP_LATCHED}: release the e-stop first"
        process = self._policy.process_info()
        if process is not None and process["state"] != "ready":
            why = f" after: {process['last_failure']}" if process["last_failure"] else ""
            return f"{RejectReason.MODEL_NOT_READY}: its worker process is {process['state']}{why}"
        stamp = self._latest_obs_stamp
        if stamp is None:
            return f"{RejectReason.NO_FRESH_OBSERVATION}: none received yet"
        age = now - stamp
        if age > self.config.observation_max_age_s:
            return (
                f"{RejectReason.NO_FRESH_OBSERVATION}: the newest is {age:.3f} s old "
                f"(observation_max_age_s={self.config.observation_max_age_s:g})"
            )
        return ""

    def cancel_goal(self, goal_id: int | None = None) -> bool:
        """Cancel the active goal (or only if it has ``goal_id``); False if there was none."""
        return self.runner.finish(self.clock(), TerminationReason.CANCELED, "canceled on request", goal_id)

    def fault_goal(self, message: str, goal_id: int | None = None) -> bool:
        """End the active goal (or only ``goal_id``) with "fault"; the next tick holds."""
        return self.runner.fault(self.clock(), message, goal_id)

    def complete_goal(self, goal_id: int | None = None) -> bool:
        """External success signal: end the active goal with "completed"."""
        return self.runner.finish(self.clock(), TerminationReason.COMPLETED, "success reported", goal_id)

    def set_estop(self, engaged: bool) -> None:
        """Latch (or release) the e-stop; the next tick holds and the active goal ends "estop"."""
        with self._lock:
            self._estop = bool(engaged)
        if engaged:
            self.runner.finish(self.clock(), TerminationReason.ESTOP, "e-stop engaged")

    @property
    def estop_engaged(self) -> bool:
        return self._estop

    def _on_goal_activate(self, goal_id: int) -> None:
        if self._buffer is not None:
            self._buffer.reset(goal_id)

    def _on_goal_result(self, result: GoalResult) -> None:
        if self._buffer is not None:
            self._buffer.reset(-1, only_if=result.goal_id)
        if self._user_on_result is not None:
            self._results.submit(result)

    def _count_callback_error(self, _result: GoalResult) -> None:
        self.counters["callback_errors"] += 1

    # outputs -----------------------------------------------------------------------------
    def feedback(self) -> Feedback:
        now = self.clock()
        goal = self.runner.active()
        latency = self.worker.latencies.last() if self.worker else 0.0
        buffer = self._buffer
        exec_now = self.execution_clock.at(now)
        buffered = buffer.future_count(exec_now) if buffer is not None and goal is not None else 0
        buffered_s = buffer.remaining(exec_now) if buffer is not None and goal is not None else 0.0
        if goal is None:
            state = "estop" if self._estop else "idle"
            return Feedback(-1, 0, 0.0, latency, 0, state, 0.0, tuple(self.runner.faults))
        state = "waiting" if goal.first_chunk_at is None else "running"
        return Feedback(
            goal.goal_id, goal.steps, now - goal.started_at, latency, buffered, state, buffered_s,
            tuple(self.runner.faults),
        )  # fmt: skip

    def stats(self) -> dict:
        """Period p50/p99/max and errors, missed/starved ticks, latency p50/p95, faults, buffer."""
        now = self.clock()
        out: dict = dict(self.counters)
        if self.loop is not None:
            out.update(self.loop.stats())
        out.pop("ticks", None)
        out["ticks"] = self.counters["ticks"]
        worker = self.worker
        if worker is not None:
            out.update(
                latency_p50_s=worker.latencies.percentile(50),
                latency_p95_s=worker.latencies.percentile(95),
                latency_last_s=worker.latencies.last(),
                inferences=worker.inferences,
                inference_errors=worker.inference_errors,
                worker_internal_errors=worker.internal_errors,
                worker_alive=worker.alive,
                observations_received=worker.mailbox.received,
                observations_replaced_unused=worker.mailbox.replaced_unused,
            )
        buffer = self._buffer
        if buffer is not None:
            exec_now = self.execution_clock.at(now)
            out.update(
                execution_time_lag_s=now - exec_now,
                buffer_depth=buffer.future_count(exec_now),
                buffer_s=buffer.remaining(exec_now),
                chunks_inserted=buffer.chunks_inserted,
                chunks_rejected=buffer.chunks_rejected,
                actions_dropped_past=buffer.actions_dropped_past,
            )
        out.update(
            faults=self.runner.fault_count,
            last_fault=self.runner.faults[-1] if self.runner.faults else "",
            goals_finished=len(self.runner.results),
            estop=self._estop,
            **self.stop_report,
        )
        return out

    def future_actions(self, at: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The active goal's buffered actions due after ``at`` (runtime clock; default now), as
        (seconds ahead of ``at`` [n], positions [n, A]) before the safety filter. Empty when idle.

        Seconds ahead assume the robot keeps executing (the buffer's axis is execution time)."""
        buffer, spec = self._buffer, self._spec
        dim = spec.action_dim if spec is not None else 0
        goal = self.runner.active()
        if buffer is None or goal is None or buffer.tag != goal.goal_id:
            return np.zeros(0), np.zeros((0, dim))
        exec_at = self.execution_clock.at(self.clock() if at is None else at)
        times, values = buffer.snapshot()
        ahead = times > exec_at
        return times[ahead] - exec_at, values[ahead]

    # single steps (the threads call these; tests may call them with a fake clock) ----------
    def infer_once(self) -> bool:
        """One inference-worker step: infer if the refill rule says so; True if a chunk landed."""
        return self._ensure_worker().step()

    def tick(self) -> Command | None:
        """One control step at ``clock()``: buffer -> safety -> ``on_command``.

        Returns the command sent, or None when there is nothing safe to send (no policy yet,
        or no command and no measured state to hold)."""
        now = self.clock()
        exec_now = self.execution_clock.tick(now)
        spec, buffer, safety = self._spec, self._buffer, self._safety
        self.counters["ticks"] += 1
        previous_tick, self._last_tick = self._last_tick, now
        if spec is None or buffer is None or safety is None:
            self.counters["silent_ticks"] += 1
            return None
        period = self.config.control_period
        elapsed = period if previous_tick is None else min(max(now - previous_tick, 0.0), 5 * period)
        goal = self.runner.active()
        with self._lock:
            estop, last_sent, measured = self._estop, self._last_sent, self._measured
            last_proposed = self._last_proposed
        target = None
        if estop:
            reason = "estop"
            if goal is not None:  # e-stop raced with a goal start: end it now
                self.runner.finish(now, TerminationReason.ESTOP, "e-stop engaged", goal.goal_id)
                goal = None
        elif goal is None:
            reason = "idle"
        else:
            target = buffer.action_at(exec_now, tag=goal.goal_id)
            reason = "action" if target is not None else ("starved" if goal.first_chunk_at else "waiting")
        starved = goal is not None and target is None
        command = None
        if target is not None:
            previous = last_proposed if self.config.dry_run else last_sent
            out = safety.apply(target, previous if previous is not None else measured)
            if not out.valid:
                self.counters["invalid_actions"] += 1
                bad = np.asarray(target).tolist()
                self.runner.fault(now, f"non-finite action from the policy: {bad}", goal.goal_id)
                command = self._hold(now, "invalid_action", last_sent, measured, safety)
                starved = False
            elif self.config.dry_run:
                with self._lock:
                    self._last_proposed = out.positions
                hold = self._hold(now, "dry_run", last_sent, measured, safety, prefer_measured=True)
                if hold is not None:
                    command = Command(now, hold.positions, True, "dry_run", out.clamped, out.positions)
            else:
                future = self._filtered_future(buffer, exec_now, out.positions, safety, goal.goal_id)
                command = Command(now, out.positions, False, "action", out.clamped, future=future)
            self.counters["action_ticks"] += 1
            self.counters["clamped_ticks"] += int(out.clamped and out.valid)
        else:
            counter = {"estop": "estop_ticks", "idle": "idle_ticks", "starved": "starved_ticks"}
            self.counters[counter.get(reason, "waiting_ticks")] += 1
            measured_first = reason == "starved" and self.config.starvation_policy == "hold_measured"
            command = self._hold(now, reason, last_sent, measured, safety, prefer_measured=measured_first)
        if goal is not None:
            self._check_observations(now, goal.goal_id)
            self._check_worker(now, goal.goal_id)
            executing = target is not None and command is not None and command.reason in ("action", "dry_run")
            self.runner.on_tick(now, elapsed, executing=executing, starved=starved)
        else:
            executing = False
        self.execution_clock.set_executing(executing)
        if command is None:
            self.counters["silent_ticks"] += 1
            return None
        with self._lock:
            self._last_sent = command.positions
            if goal is None:
                self._last_proposed = None  # a dry-run goal's proposals start again from the measured state
        try:
            self._on_command(command)
        except Exception:
            self.counters["callback_errors"] += 1
            log.exception("on_command callback failed")
        return command

    def _filtered_future(self, buffer, exec_now: float, start: np.ndarray, safety, goal_id: int):
        """The next ``future_points`` buffered actions after ``exec_now``, through the safety chain."""
        count = self.config.future_points
        if count <= 0 or buffer.tag != goal_id:
            return ()
        times, values = buffer.snapshot()
        ahead = times > exec_now
        return safety.future(start, (times[ahead] - exec_now)[:count], values[ahead][:count],
                             self.config.control_period)

    def _hold(
        self,
        now: float,
        reason: str,
        last_sent: np.ndarray | None,
        measured: np.ndarray | None,
        safety: SafetyFilter,
        prefer_measured: bool = False,
    ) -> Command | None:
        """A hold command: the last command sent (or the measured position when preferred or
        nothing was sent yet), through the safety filter; None when neither is known."""
        first, second = (measured, last_sent) if prefer_measured else (last_sent, measured)
        position = first if first is not None else second
        if position is None:
            return None
        out = safety.apply(position, last_sent)
        return Command(now, out.positions, True, reason, out.clamped)

    def _check_observations(self, now: float, goal_id: int) -> None:
        stamp = self._latest_obs_stamp
        limit = self.config.observation_max_age_s + self.config.stale_grace_s
        if stamp is not None and now - stamp > limit:
            self.counters["stale_faults"] += 1
            self.runner.fault(
                now,
                f"observations stale: the newest is {now - stamp:.3f} s old (max age + grace = {limit:g} s)",
                goal_id,
            )

    def _check_worker(self, now: float, goal_id: int) -> None:
        worker = self.worker
        if self._running and worker is not None and not worker.alive:
            self.runner.fault(now, f"inference worker thread is dead ({worker.last_error})", goal_id)


def _state_index(spec: PolicySpec) -> np.ndarray | None:
    """Where each action dimension's measured value sits in the state vector (None if unknown)."""
    names = list(spec.state_names)
    if all(name in names for name in spec.action_names):
        return np.array([names.index(name) for name in spec.action_names], dtype=np.int64)
    if spec.state_dim == spec.action_dim:
        return np.arange(spec.action_dim)
    return None
