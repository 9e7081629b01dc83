"""The inference worker: its own thread, newest observation in, chunks into the action buffer.

Refill rule (async): infer when the buffer's remaining future is shorter than the p95 of the
recent inference latencies plus a margin, so the next chunk lands before the buffer runs dry;
at once when a goal starts. Sync mode (the openpi client's behaviour, kept for comparison):
infer only when the buffer is used up, and execute the new chunk from its first action.
Any exception from the policy becomes a fault of the active goal; the thread itself survives.

Pipelined inference (``RuntimeConfig.max_inflight`` > 1, for a policy whose ``concurrency``
allows it): that many threads run the same rule, with the chunks already in flight counted as
the future they will cover (each until its observation's stamp plus a chunk), so the next
inference starts when that promised future runs short and k of them land latency / k apart. A
chunk that lands after one from a newer observation is dropped (superseded).
"""

from __future__ import annotations

import logging
import math
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from vla_ros.core.buffer import ActionBuffer
from vla_ros.core.policy import (
    ActionChunk,
    CommittedActions,
    InstructionContext,
    Observation,
    Policy,
    PolicySpec,
)
from vla_ros.core.runtime_types import RuntimeConfig
from vla_ros.core.safety import to_absolute
from vla_ros.core.stats import RollingWindow
from vla_ros.core.task_runner import TaskRunner

log = logging.getLogger(__name__)


class ObservationMailbox:
    """Single slot: ``put`` replaces whatever is there; readers see the newest observation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._obs: Observation | None = None
        self.received = 0
        self.replaced_unused = 0  # observations overwritten before inference read them
        self._read_stamp = float("-inf")

    def put(self, obs: Observation) -> None:
        with self._lock:
            if self._obs is not None and self._obs.stamp > self._read_stamp:
                self.replaced_unused += 1
            self._obs = obs
            self.received += 1

    def latest(self) -> Observation | None:
        with self._lock:
            return self._obs

    def take_newer(self, than: float) -> Observation | None:
        """The newest observation if it is stamped after ``than`` (else None)."""
        with self._lock:
            obs = self._obs
            if obs is None or obs.stamp <= than:
                return None
            self._read_stamp = max(self._read_stamp, obs.stamp)
            return obs


@dataclass
class PendingChunk:
    """A chunk the policy returned that has not reached the buffer yet."""

    goal_id: int
    obs: Observation
    started: float  # runtime-clock time the inference began
    chunk: ActionChunk
    token: int = -1  # its entry in the worker's in-flight table


@dataclass(frozen=True)
class InFlight:
    goal_id: int
    started: float  # runtime-clock time
    covers_until: float  # on the buffer's time axis: its observation's stamp plus one chunk


class InferenceWorker:
    def __init__(
        self,
        *,
        get_policy: Callable[[], Policy | None],
        buffer: ActionBuffer,
        runner: TaskRunner,
        config: RuntimeConfig,
        clock: Callable[[], float],
        action_mode: str = "absolute",
        action_offset_steps: int = 0,
        reference_state: Callable[[Observation], np.ndarray] | None = None,
        execution_time: Callable[[float], float] | None = None,
        held_position: Callable[[], np.ndarray | None] | None = None,
    ) -> None:
        self._get_policy = get_policy
        self.buffer = buffer
        self.runner = runner
        self.config = config
        self.clock = clock
        self.action_mode = action_mode
        self.action_offset_steps = action_offset_steps  # the policy's (PolicySpec)
        self._reference_state = reference_state or (lambda obs: np.asarray(obs.state, dtype=np.float64))
        # runtime-clock time -> the buffer's time axis (execution time; identity by default)
        self.execution_time = execution_time or (lambda t: t)
        # what the robot holds while nothing executes (the last command): where a chunk whose first
        # action is due after the observation starts from
        self._held_position = held_position or (lambda: None)
        self.mailbox = ObservationMailbox()
        self.latencies = RollingWindow(config.latency_window)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # per-goal state and the in-flight table, shared by the inference threads under this lock
        # (held for bookkeeping, goal switches and landing; never across a predict_chunk call)
        self._lock = threading.RLock()
        self._inflight: dict[int, InFlight] = {}
        self._tokens = 0
        self._last_landed_stamp = float("-inf")
        self._goal_id = -1
        self._context: InstructionContext | None = None
        self._has_chunk = False
        self._last_obs_stamp = float("-inf")
        self.inferences = 0
        self.inference_errors = 0
        self.internal_errors = 0
        self.last_error = ""
        self.superseded = 0  # chunks dropped because one from a newer observation landed first
        self.last_chunk: ActionChunk | None = None

    @property
    def busy_since(self) -> float | None:
        """Clock time the oldest inference in flight began (None when none is)."""
        with self._lock:
            return min((f.started for f in self._inflight.values()), default=None)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    # thread -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            raise RuntimeError("inference worker already started")
        self._stop.clear()
        n = self.config.max_inflight
        self._threads = [
            threading.Thread(target=self._run, name=f"vla_ros-inference{'' if n == 1 else f'-{i}'}",
                             daemon=True)
            for i in range(n)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop after the current inferences (a hung policy call cannot be interrupted: returns
        False after ``timeout`` and leaves the daemon threads behind)."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    def wake(self) -> None:
        """Re-evaluate the refill rule now (new observation, new goal)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                inferred = self.step()
            except Exception as exc:  # a bug here must not kill the thread silently
                self.internal_errors += 1
                self.last_error = f"worker error: {type(exc).__name__}: {exc}"
                log.error("%s\n%s", self.last_error, traceback.format_exc())
                self.runner.fault(self.clock(), self.last_error)
                inferred = False
            if not inferred and not self._stop.is_set():
                self._wake.wait(self._idle_wait())
                self._wake.clear()

    def _idle_wait(self) -> float:
        """How long to sleep when there was nothing to do: until the refill point, within bounds."""
        if self._goal_id < 0 or not self._has_chunk:
            return 0.05  # goal starts and new observations wake us
        slack = self.promised_remaining(self.execution_time(self.clock())) - self.refill_threshold()
        return float(np.clip(slack, 0.001, 0.05))

    # one step -----------------------------------------------------------------------------
    def refill_threshold(self) -> float:
        """Remaining buffered future below which the next inference starts (async mode)."""
        return self.latencies.percentile(95) + self.config.refill_margin_s

    def promised_remaining(self, now: float) -> float:
        """Seconds of future the buffer and this goal's inferences in flight will cover."""
        with self._lock:
            ends = [f.covers_until for f in self._inflight.values() if f.goal_id == self._goal_id]
            buffered = self.buffer.remaining(now) if self._has_chunk else 0.0  # else: an earlier goal's
        return max([buffered, *(end - now for end in ends)])

    def should_infer(self, now: float, limit: int = 1) -> bool:
        """``now`` on the buffer's time axis; ``limit``: inferences allowed in flight at once."""
        with self._lock:
            flying = len(self._inflight)  # an earlier goal's inference still counts: it holds the policy
            if self.config.execution == "sync":
                return flying == 0 and (not self._has_chunk or self.buffer.remaining(now) <= 0.0)
            if len(self.latencies) == 0:  # no latency estimate yet: one at a time until there is one
                limit = 1
            return flying < limit and self.promised_remaining(now) < self.refill_threshold()

    def step(self) -> bool:
        """Run one inference if the rule says so; True when a chunk reached the buffer."""
        pending = self.begin()
        return pending is not None and self.land(pending, self.clock())

    def begin(self) -> PendingChunk | None:
        """The first half of ``step``: run the policy if the rule says so, keep the chunk aside.

        A simulated clock (the offline executor) lands it later with ``land(pending, done)``, so
        the control ticks in between run on the old buffer, as they do while a real inference runs."""
        with self._lock:
            prepared = self._prepare()
        if prepared is None:
            return None
        goal_id, policy, obs, context, now, token = prepared
        chunk = self._call_policy(lambda: policy.predict_chunk(obs, context), goal_id)
        if chunk is None:
            with self._lock:
                self._inflight.pop(token, None)
            return None
        return PendingChunk(goal_id, obs, now, chunk, token)

    def _prepare(self):
        """Under the lock: follow goal changes, apply the refill rule, take the observation and
        enter the inference in the in-flight table. None when there is nothing to infer."""
        goal = self.runner.active()
        policy = self._get_policy()
        if goal is None or policy is None:
            if self._goal_id != -1 and policy is not None:
                self._call_policy(policy.reset, self._goal_id)
            self._goal_id, self._context, self._has_chunk = -1, None, False
            return None
        if goal.goal_id != self._goal_id:
            self._goal_id, self._context, self._has_chunk = goal.goal_id, None, False
            self._last_obs_stamp = self._last_landed_stamp = float("-inf")
            ok = self._call_policy(policy.reset, goal.goal_id)
            text = goal.model_instruction
            context = self._call_policy(lambda: policy.encode_instruction(text), goal.goal_id)
            if not ok or context is None:
                return None
            self._context = context
            if context.truncated:
                note = (f"instruction truncated to the model's {context.num_tokens} tokens "
                        f"({context.dropped_tokens} dropped)")
                self.runner.note(goal.goal_id, note)
                log.warning("goal %d: %s", goal.goal_id, note)
        if self._context is None:  # encoding failed; the goal is being aborted
            return None
        now = self.clock()
        limit = max(1, min(self.config.max_inflight, getattr(policy, "concurrency", 1)))
        if not self.should_infer(self.execution_time(now), limit):
            return None
        obs = self.mailbox.take_newer(self._last_obs_stamp)
        if obs is None or now - obs.stamp > self.config.observation_max_age_s:
            return None  # the runtime faults the goal if observations stay stale past the grace
        self._last_obs_stamp = obs.stamp
        if self.config.real_time_chunking and self._has_chunk:
            obs = replace(obs, committed=self.committed_actions(obs, now, policy.spec))
        token, self._tokens = self._tokens, self._tokens + 1
        offset_s = self.action_offset_steps * policy.spec.action_period
        covers = self.execution_time(obs.stamp) + offset_s + policy.spec.chunk_duration
        self._inflight[token] = InFlight(goal.goal_id, now, covers)
        return goal.goal_id, policy, obs, self._context, now, token

    def committed_actions(self, obs: Observation, now: float, spec: PolicySpec) -> CommittedActions | None:
        """The buffered actions due at the new chunk's times (``obs.stamp + (k + offset) * dt``, the
        contiguous run the buffer covers) and how many run before it lands: until ``now`` plus the
        p95 of the recent latencies (a window, so one slow start does not inflate it for good)."""
        dt = spec.action_period
        t0 = self.execution_time(obs.stamp) + self.action_offset_steps * dt
        values, covered = self.buffer.sample(t0 + dt * np.arange(spec.chunk_size))
        n = len(covered) if covered.all() else int(np.argmin(covered))
        if n == 0:
            return None
        lands = self.execution_time(now) + self.latencies.percentile(95)
        delay = min(n, max(0, math.ceil((lands - t0) / dt - 1e-9)))
        actions = values[:n]
        if self.action_mode == "delta":  # the buffer holds absolute targets
            actions = actions - self._reference_state(obs)[None, :]
        return CommittedActions(actions=actions, delay_steps=delay)

    def land(self, pending: PendingChunk, done: float) -> bool:
        """The second half of ``step``: the chunk reaches the buffer at runtime-clock time ``done``."""
        with self._lock:
            return self._land(pending, done)

    def _land(self, pending: PendingChunk, done: float) -> bool:
        self._inflight.pop(pending.token, None)
        chunk, obs = pending.chunk, pending.obs
        self.inferences += 1
        chunk.latency = done - pending.started
        self.latencies.add(chunk.latency)
        if pending.goal_id == self._goal_id and obs.stamp < self._last_landed_stamp:
            self.superseded += 1
            return False
        try:
            actions = to_absolute(chunk.actions, self._reference_state(obs), self.action_mode)
            # on the execution axis: in sync mode the robot held during the inference, so the
            # chunk runs from its first action, as openpi's client does
            placed = self._placed(pending, actions, self.execution_time(done))
            result = self.buffer.insert(placed, self.execution_time(done), tag=pending.goal_id)
        except ValueError as exc:
            self._fail(pending.goal_id, f"policy returned a bad chunk: {exc}")
            return False
        self.last_chunk = chunk
        if result.accepted:
            self._last_landed_stamp = obs.stamp
            if not self._has_chunk:
                self.runner.mark_first_chunk(pending.goal_id, done)
            self._has_chunk = True
        return result.accepted

    def _placed(self, pending: PendingChunk, actions: np.ndarray, now: float) -> ActionChunk:
        """The chunk on the execution axis, its action k due at t_obs + (k + offset) * dt. While the
        robot holds (the goal's first chunk, or after the buffer ran dry) the execution clock stands
        at the observation's time, so a chunk whose first action is due later starts from the held
        position instead: held until ``offset - 1`` periods, then the ramp to its first action, as
        the data's frames did (the simulated expert's offset is 1: a ramp over one period). With no
        held position known, its first action is due at once."""
        chunk, offset = pending.chunk, self.action_offset_steps
        t_first = self.execution_time(chunk.t_obs) + offset * chunk.dt
        if offset and self.buffer.action_at(now, tag=pending.goal_id) is None:
            held = self._held_position()
            if held is None or np.shape(held) != actions.shape[1:]:
                t_first = min(t_first, now)
            else:
                start = np.repeat(np.asarray(held, dtype=np.float64)[None, :], offset, axis=0)
                actions = np.concatenate([start, actions])
                t_first -= offset * chunk.dt
        return ActionChunk(t_first, actions, chunk.dt, chunk.latency, chunk.info)

    def _call_policy(self, fn: Callable, goal_id: int):
        """Call into the policy; an exception becomes a fault of ``goal_id`` and returns None."""
        try:
            result = fn()
        except Exception as exc:
            self._fail(goal_id, f"inference failed: {type(exc).__name__}: {exc}")
            return None
        return True if result is None else result

    def _fail(self, goal_id: int, message: str) -> None:
        self.inference_errors += 1
        self.last_error = message
        log.warning("goal %d: %s", goal_id, message)
        self.runner.fault(self.clock(), message, goal_id)
