"""Demonstration episodes on disk: the format the simulation writes and training reads.

Layout of a dataset directory (documented in docs/DATASET.md)::

    meta.json                 {"format": "vla_ros-episodes", "version": 1, "fps": ...,
                               "cameras": [...], "image_size": [H, W], "state_names": [...],
                               "action_names": [...], "episodes": N, "frames": total,
                               "action_offset_steps": o}  (o absent: 0)
    episode_000000.npz        one file per episode, arrays below, uncompressed images
    ...

Each ``episode_*.npz`` holds, for T frames sampled every ``1 / fps`` seconds:
    image_<camera>  uint8   [T, H, W, 3]  RGB
    state           float32 [T, S]        measured joint positions
    action          float32 [T, A]        commanded target issued at that frame, due
                                          ``action_offset_steps`` frames later (the simulated
                                          expert's: 1, its target for the end of the period)
    timestamp       float64 [T]           seconds since episode start
    instruction     str                   the natural-language instruction
    task            str                   JSON with the task's parameters (family, colour, ...)
    success         bool                  whether the episode ended in success
    chunk           float32 [T, H, A]     optional: a teacher model's chunk at each frame, the label
                                          training uses instead of the next H actions (distillation)

npz instead of the LeRobot format: LeRobot's writer pulls in `datasets`, `huggingface_hub`
and video codecs for a few hundred tiny episodes; npz opens with numpy alone.
`vla_ros dataset export/import` (vla_ros/data/lerobot.py) converts to and from LeRobotDataset
v3, and :func:`load_dataset` reads a LeRobot directory as well.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_NAME = "vla_ros-episodes"
FORMAT_VERSION = 1


@dataclass
class Episode:
    images: Mapping[str, np.ndarray]  # camera -> uint8 [T, H, W, 3] (a dict, or ImagesOnDisk)
    state: np.ndarray  # float32 [T, S]
    action: np.ndarray  # float32 [T, A]
    timestamp: np.ndarray  # float64 [T]
    instruction: str
    task: dict = field(default_factory=dict)
    success: bool = True
    # [T, H, A] in action units: a teacher's chunk predicted at each frame (vla_ros distill); when
    # present, training learns it instead of the next H recorded actions
    chunk: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.state)


class DatasetError(ValueError):
    """A dataset directory or episode file that cannot be read; the message names it."""


def action_offset_steps(meta: dict) -> int:
    """When a dataset's actions are due, in frames after their own (meta.json); 0 where it does not
    say: LeRobot's convention, and this package's datasets recorded before the field existed."""
    return int(meta.get("action_offset_steps", 0))


def save_dataset(directory: str | Path, episodes: list[Episode], fps: float,
                 state_names: list[str], action_names: list[str], overwrite: bool = False,
                 action_offset_steps: int = 0) -> Path:
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"dataset directory {directory} exists and is not empty; pass overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("episode_*.npz"):
        old.unlink()
    if not episodes:
        raise DatasetError("no episodes to save")
    cameras = sorted(episodes[0].images)
    for i, ep in enumerate(episodes):
        arrays = {f"image_{c}": ep.images[c] for c in cameras}
        if ep.chunk is not None:
            if ep.chunk.ndim != 3 or ep.chunk.shape[0] != len(ep) or ep.chunk.shape[2] != len(action_names):
                raise DatasetError(f"episode {i}: chunk labels of shape {ep.chunk.shape}, expected "
                                   f"[{len(ep)} frames, H, {len(action_names)} actions]")
            arrays["chunk"] = ep.chunk.astype(np.float32)
        np.savez(directory / f"episode_{i:06d}.npz", state=ep.state.astype(np.float32),
                 action=ep.action.astype(np.float32), timestamp=ep.timestamp.astype(np.float64),
                 instruction=np.array(ep.instruction), task=np.array(json.dumps(ep.task)),
                 success=np.array(bool(ep.success)), **arrays)
    h, w = episodes[0].images[cameras[0]].shape[1:3]
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "fps": fps, "cameras": cameras,
            "image_size": [int(h), int(w)], "state_names": list(state_names),
            "action_names": list(action_names), "episodes": len(episodes),
            "frames": int(sum(len(e) for e in episodes)), "action_offset_steps": int(action_offset_steps)}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))
    return directory


def output_problem(directory: Path, overwrite: bool) -> str | None:
    """Why a dataset cannot be written to ``directory`` (None: it can); for commands to check before
    the work that fills it."""
    if directory.exists() and not directory.is_dir():
        return f"{directory} exists and is not a directory"
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        return f"{directory} exists and is not empty; pass --overwrite to replace it"
    return None


def load_meta(directory: str | Path) -> dict:
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise DatasetError(f"{path}: missing; not a vla_ros dataset directory")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT_NAME:
        raise DatasetError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    return meta


class ImagesOnDisk(Mapping):
    """An episode's camera frames, read from its file each time one camera is asked for: training
    turns each episode's frames into its own tensor layout once, so holding every loaded episode's
    images as well would double the dataset's memory."""

    def __init__(self, path: Path, cameras: list[str]) -> None:
        self.path, self.cameras = path, list(cameras)

    def __getitem__(self, camera: str) -> np.ndarray:
        if camera not in self.cameras:
            raise KeyError(camera)
        try:
            with np.load(self.path, allow_pickle=False) as z:
                return z[f"image_{camera}"]
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(f"{self.path}: cannot read image_{camera} ({exc})") from exc

    def __iter__(self) -> Iterator[str]:
        return iter(self.cameras)

    def __len__(self) -> int:
        return len(self.cameras)


def load_episode(path: str | Path, cameras: list[str], images_on_disk: bool = False) -> Episode:
    """One episode file; ``images_on_disk``: its images stay in the file until asked for
    (:class:`ImagesOnDisk`), the rest is read now."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("state", "action", "timestamp", "instruction") if k not in z]
            missing += [f"image_{c}" for c in cameras if f"image_{c}" not in z]
            if missing:
                raise DatasetError(f"{path}: missing arrays {missing}")
            images = ImagesOnDisk(path, cameras) if images_on_disk else {c: z[f"image_{c}"] for c in cameras}
            return Episode(images=images, state=z["state"],
                           action=z["action"], timestamp=z["timestamp"],
                           instruction=str(z["instruction"]), task=json.loads(str(z["task"])),
                           success=bool(z["success"]), chunk=z.get("chunk"))
    except (OSError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot read episode ({exc})") from exc


def load_dataset(directory: str | Path, images_on_disk: bool = False) -> tuple[dict, list[Episode]]:
    """A vla_ros episode directory, or a LeRobotDataset v3 directory (one with meta/info.json;
    read by vla_ros.data.lerobot into the same Episodes and a meta with the same keys).
    ``images_on_disk``: a vla_ros directory's images are read when asked for (:class:`ImagesOnDisk`)."""
    if (Path(directory) / "meta" / "info.json").is_file() and not (Path(directory) / "meta.json").is_file():
        from vla_ros.data.lerobot import load_lerobot_dataset  # pyarrow and av only when needed

        return load_lerobot_dataset(directory)
    meta = load_meta(directory)
    files = sorted(Path(directory).glob("episode_*.npz"))
    if len(files) != meta["episodes"]:
        raise DatasetError(
            f"{directory}: meta.json says {meta['episodes']} episodes, found {len(files)} files")
    return meta, [load_episode(f, meta["cameras"], images_on_disk) for f in files]
