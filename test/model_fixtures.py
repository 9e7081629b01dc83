"""A small synthetic demonstration dataset for the model tests: the target depends on both the
instruction (which colour) and the image (where that colour's square is)."""

from __future__ import annotations

import numpy as np

from vla_ros.data.dataset import Episode, save_dataset

NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def synthetic_episodes(n: int, T: int = 12, size: int = 32, seed: int = 0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n):
        positions = {c: rng.integers(2, size - 8, 2) for c in COLOURS}
        goal = str(rng.choice(list(COLOURS)))
        img = np.full((size, size, 3), 90, np.uint8)
        for c, (y, x) in positions.items():
            img[y:y + 6, x:x + 6] = COLOURS[c]
        target = np.zeros(6, np.float32)
        target[:2] = positions[goal] / size - 0.5
        state = np.zeros((T, 6), np.float32)
        action = np.zeros((T, 6), np.float32)
        for t in range(T):
            action[t] = state[t] + 0.3 * (target - state[t])
            if t + 1 < T:
                state[t + 1] = action[t]
        images = {"scene": np.repeat(img[None], T, 0), "wrist": np.repeat(img[None], T, 0)}
        episodes.append(Episode(images=images, state=state, action=action, timestamp=np.arange(T) * 0.1,
                                instruction=f"touch the {goal} square",
                                task={"goal": goal, "family": "pick", "colour": goal, "shape": "cube"}))
    return episodes


def write_synthetic_dataset(directory, n: int = 24, seed: int = 0):
    return save_dataset(directory, synthetic_episodes(n, seed=seed), fps=10.0, state_names=NAMES,
                        action_names=NAMES)
