"""Per-dimension standardisation of state and actions with statistics saved in the checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STATS_FILE = "stats.json"
MIN_STD = 1e-2  # a joint that never moves in the data must not blow up its normalised value


@dataclass
class Normalizer:
    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    @classmethod
    def fit(cls, states: np.ndarray, actions: np.ndarray) -> Normalizer:
        """states [N, S], actions [N, A] over every training frame."""
        return cls(states.mean(0), np.maximum(states.std(0), MIN_STD),
                   actions.mean(0), np.maximum(actions.std(0), MIN_STD))

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> Normalizer:
        return cls(np.zeros(state_dim), np.ones(state_dim), np.zeros(action_dim), np.ones(action_dim))

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        return ((state - self.state_mean) / self.state_std).astype(np.float32)

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        return ((action - self.action_mean) / self.action_std).astype(np.float32)

    def unnormalize_action(self, action: np.ndarray) -> np.ndarray:
        return action.astype(np.float64) * self.action_std + self.action_mean

    def to_dict(self) -> dict:
        return {k: np.asarray(getattr(self, k), dtype=np.float64).tolist()
                for k in ("state_mean", "state_std", "action_mean", "action_std")}

    @classmethod
    def from_dict(cls, data: dict, where: str = STATS_FILE) -> Normalizer:
        try:
            arrays = {k: np.asarray(data[k], dtype=np.float64)
                      for k in ("state_mean", "state_std", "action_mean", "action_std")}
        except KeyError as exc:
            raise ValueError(f"{where}: missing statistic {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: statistics are not numeric lists ({exc})") from exc
        for name, arr in arrays.items():
            if arr.ndim != 1 or not np.all(np.isfinite(arr)):
                raise ValueError(f"{where}: {name} must be a finite 1-D list")
        if np.any(arrays["state_std"] <= 0) or np.any(arrays["action_std"] <= 0):
            raise ValueError(f"{where}: standard deviations must be positive")
        return cls(**arrays)


def save_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))
