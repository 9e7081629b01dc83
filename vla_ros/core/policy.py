"""What every model implements, and the data that crosses between the model and the runtime.

Time: every stamp here is in seconds on the runtime's clock (the clock the control loop
reads; the ROS shell converts header stamps onto it). Action ``k`` of a chunk computed from
an observation stamped ``t_obs`` is due at ``t_obs + (k + o) * dt``, where o is the policy's
``PolicySpec.action_offset_steps``: how its training data timed an action against the frame it
was recorded with (0 for LeRobot's convention, the command sent at that frame; 1 for this
package's simulated expert, whose action at a frame is its target for the end of that period).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ActionMode = Literal["absolute", "delta"]


@dataclass(frozen=True)
class PolicySpec:
    """Metadata the runtime and the ROS shell need to drive a policy."""

    action_names: tuple[str, ...]  # one per action dimension, e.g. arm joints then "gripper"
    state_names: tuple[str, ...]  # one per state dimension (measured joint positions)
    chunk_size: int  # H: actions predicted per inference
    action_period: float  # dt in seconds between consecutive actions of a chunk
    cameras: tuple[str, ...]  # camera names, in the order the model reads them
    image_size: tuple[int, int]  # (height, width) each image is resized to
    action_mode: ActionMode = "absolute"  # absolute joint targets, or deltas from the state
    gripper_index: int | None = None  # index of the gripper in the action vector, if any
    # The words the policy grounds instructions in (core/grounding.py's Lexicon, JSON form); None
    # when it has none, and then goals' instructions go unchecked.
    lexicon: dict | None = field(default=None, compare=False, repr=False)
    # Action k of a chunk is due at t_obs + (k + action_offset_steps) * dt: the data's timing of an
    # action against its frame (module docstring). Executing a chunk earlier than its data did
    # makes every chunk switch skip ahead (docs/MODEL.md, "The time axis").
    action_offset_steps: int = 0

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def chunk_duration(self) -> float:
        return self.chunk_size * self.action_period


@dataclass(frozen=True)
class CommittedActions:
    """What the robot will do from an observation's stamp on, for real-time chunking (RTC).

    ``actions[k]`` is the buffered (previous chunks') action due at ``stamp + k * dt``, in the
    policy's action space; the first ``delay_steps`` of them run before the chunk being computed
    can land (from the measured inference latency), so a policy that supports RTC makes its chunk
    agree with them there and fade towards its own prediction over the rest.
    """

    actions: np.ndarray  # float64 [n, action_dim], n <= chunk_size
    delay_steps: int  # d: actions executed while this inference runs


@dataclass
class Observation:
    """One time-synchronised observation: an image per camera and the joint state."""

    stamp: float  # seconds on the runtime clock
    images: dict[str, np.ndarray]  # camera name -> uint8 RGB [H, W, 3]
    state: np.ndarray  # float32 [state_dim], ordered as PolicySpec.state_names
    committed: CommittedActions | None = None  # set by the inference worker when RTC is on


@dataclass
class InstructionContext:
    """An instruction encoded once per goal; ``cache`` holds the model's prefix KV cache."""

    text: str  # the instruction as given
    num_tokens: int  # tokens kept after truncation
    truncated: bool = False  # True when the instruction was longer than the model accepts
    dropped_tokens: int = 0  # how many tokens truncation removed
    cache: Any = None  # model-specific (for the built-in model: the prefix past_key_values)


@dataclass
class ActionChunk:
    """A chunk of future actions predicted from the observation stamped ``t_obs``."""

    t_obs: float  # stamp of the observation it was computed from (runtime clock)
    actions: np.ndarray  # float64 [H, action_dim]; action k is due at t_obs + (k + offset) * dt
    dt: float  # seconds between actions
    latency: float = 0.0  # seconds the inference took (filled in by the worker)
    info: dict[str, Any] = field(default_factory=dict)

    def due_times(self, offset_steps: int = 0) -> np.ndarray:
        """When each action is due, for a policy whose PolicySpec.action_offset_steps is ``offset_steps``."""
        return self.t_obs + self.dt * (np.arange(len(self.actions)) + offset_steps)


class Policy(abc.ABC):
    """A VLA policy. Thread use: one inference thread calls everything but ``spec``, except that
    up to ``concurrency`` threads may be in ``predict_chunk`` at once (pipelined inference)."""

    spec: PolicySpec
    # predict_chunk calls this policy serves at the same time. 1 for a model that computes on
    # the caller's thread (two calls would share its cores and each take twice as long); more
    # for one whose latency is mostly waiting (a server, a transport, an added delay), whose
    # predict_chunk may then also run while another thread resets it or encodes a new goal.
    concurrency: int = 1

    @abc.abstractmethod
    def encode_instruction(self, text: str) -> InstructionContext:
        """Encode an instruction once per goal into a reusable context (holds the KV cache)."""

    @abc.abstractmethod
    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        """Predict ``spec.chunk_size`` future actions; must not change ``context``."""

    def reset(self) -> None:  # noqa: B027 - optional hook, stateless policies need nothing
        """Forget per-episode state (called when a goal starts or ends)."""

    def real_time_chunking(self) -> tuple[str, float]:
        """What ``predict_chunk`` does with ``Observation.committed``: ("off", 0.0) when it ignores
        them, else its guidance mode ("cheap" or "exact", models/policy.py's flow head) and the cap
        on the guidance weight. A policy_server publishes it, so a client asking for real-time
        chunking learns at configure whether and how the server's model does it."""
        return "off", 0.0

    def process_info(self) -> dict[str, Any] | None:
        """The worker process serving this policy (state, pid, starts, failures), for diagnostics;
        None when the policy runs in the caller's process."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the policy holds outside this object (a worker process); called by its owner
        after the inference thread stopped."""
