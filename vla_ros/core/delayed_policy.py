"""A policy wrapper that adds a fixed delay to every inference: the latency-robustness knob.

vla_node wraps its model in it when the `extra_latency_s` parameter is > 0, so `vla_ros eval-ros
--extra-latency-ms 300` measures how asynchronous chunking copes with a slower model (the stress
point of real-time chunking) on the real stack. The chunk keeps the observation's stamp, so the
runtime sees the delay as inference latency, exactly as it would a slow model.
"""

from __future__ import annotations

import threading
import time

from vla_ros.core.policy import ActionChunk, InstructionContext, Observation, Policy


class DelayedPolicy(Policy):
    """The wrapped policy is called one call at a time (under a lock); the delay is waiting, so
    up to ``concurrency`` calls overlap in it (pipelined inference, as with a remote model)."""

    concurrency = 32

    def __init__(self, policy: Policy, delay_s: float):
        if not delay_s >= 0:
            raise ValueError(f"extra latency must be >= 0 s, got {delay_s}")
        self.policy = policy
        self.delay_s = float(delay_s)
        self.spec = policy.spec
        self._lock = threading.Lock()

    def encode_instruction(self, text: str) -> InstructionContext:
        with self._lock:
            return self.policy.encode_instruction(text)

    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        with self._lock:
            chunk = self.policy.predict_chunk(observation, context)
        time.sleep(self.delay_s)
        return chunk

    def reset(self) -> None:
        with self._lock:
            self.policy.reset()

    def process_info(self):
        return self.policy.process_info()

    def real_time_chunking(self) -> tuple[str, float]:
        return self.policy.real_time_chunking()

    def close(self) -> None:
        self.policy.close()
