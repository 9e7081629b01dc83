"""Episodes as a LeRobotDataset v3.0 directory (the format of Hugging Face's `lerobot`), written
and read with pyarrow (parquet) and PyAV (mp4), without `lerobot` itself.

Why not `lerobot` itself: lerobot 0.6 pins torch < 2.12, numpy < 2.3, huggingface-hub < 2,
av 15 and datasets < 5, which clash with this project's environment; the format is a few
parquet files, JSON and one mp4 per camera, all of which pyarrow and PyAV write directly.
test/test_lerobot_compat.py reads what this module writes with lerobot's own LeRobotDataset
(in a venv of its own, scripts/setup_lerobot_venv.sh) and compares every frame.

Layout (paths and columns as lerobot 0.6.1 writes them; docs/DATASET.md has the mapping)::

    meta/info.json                                  codebase_version "v3.0", fps, features, totals
    meta/stats.json                                 per feature: min max mean std count q01..q99
    meta/tasks.parquet                              task (the pandas index) -> task_index
    meta/episodes/chunk-000/file-000.parquet        one row per episode: length, tasks, where its
                                                    rows and video frames are, its stats
    data/chunk-000/file-000.parquet                 one row per frame
    videos/observation.images.<camera>/chunk-000/file-000.mp4

Video: by default lossless H.264 in RGB (libx264rgb, qp 0), so frames read back identical;
``--video av1`` is LeRobot's own default (SVT-AV1, crf 30, yuv420p), about half the size and
lossy (about 30 dB PSNR on the 64x64 renders: chroma at 32x32 loses small objects' edges).
Every video frame sits at ``pts = (its row's index within the file) / fps``, which is what both
of lerobot's decoders (torchcodec by frame index, PyAV by timestamp) expect.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vla_ros.data.dataset import DatasetError, Episode

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
CHUNKS_SIZE = 1000  # files per chunk directory (lerobot's DEFAULT_CHUNK_SIZE)
DATA_FILE_MB = 100  # lerobot's DEFAULT_DATA_FILE_SIZE_IN_MB
VIDEO_FILE_MB = 200  # lerobot's DEFAULT_VIDEO_FILE_SIZE_IN_MB

STATE = "observation.state"
ACTION = "action"
IMAGES_PREFIX = "observation.images."
INDEX_FEATURES = {  # lerobot's DEFAULT_FEATURES: filled in by the writer, not given per frame
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
# Episode fields LeRobot has no place for, kept as extra columns of the episodes parquet
# (lerobot loads and ignores them).
TASK_COLUMN = "vla_ros/task"  # the task record, JSON
SUCCESS_COLUMN = "vla_ros/success"
# A frame's timestamp may differ from its video frame's by this much (lerobot's tolerance_s).
TIMESTAMP_TOLERANCE_S = 1e-4


@dataclass(frozen=True)
class VideoCodec:
    encoder: str
    pix_fmt: str
    options: dict[str, str] = field(default_factory=dict)


VIDEO_CODECS = {
    "lossless": VideoCodec("libx264rgb", "rgb24", {"qp": "0", "g": "2"}),
    "av1": VideoCodec("libsvtav1", "yuv420p", {"crf": "30", "g": "2", "preset": "12"}),
}


def camera_key(camera: str) -> str:
    return IMAGES_PREFIX + camera


def is_lerobot_dataset(directory: str | Path) -> bool:
    return (Path(directory) / INFO_PATH).is_file()


def integer_fps(fps: float, where: str) -> int:
    """LeRobot stores fps as an integer; refuse a rate that is not one rather than round it."""
    if not math.isfinite(fps) or fps <= 0 or abs(fps - round(fps)) > 1e-6:
        raise DatasetError(f"{where}: fps {fps} is not a positive integer, which LeRobot v3 requires")
    return int(round(fps))


# ---------------------------------------------------------------------------------------------
# statistics (lerobot's compute_stats: per episode, then count-weighted aggregation)

def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """min, max, mean, std, count and quantiles over axis 0 of ``values`` [N, D] (float64)."""
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
             "count": np.array([len(values)])}
    for q, v in zip(QUANTILES, np.quantile(values, QUANTILES, axis=0), strict=True):
        stats[f"q{round(q * 100):02d}"] = v
    return stats


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel stats of uint8 [T, H, W, 3] frames scaled to [0, 1], shaped (3, 1, 1) as lerobot's."""
    pixels = frames.reshape(-1, frames.shape[-1]).astype(np.float64) / 255.0
    stats = {k: v.reshape(-1, 1, 1) for k, v in feature_stats(pixels).items()}
    stats["count"] = np.array([len(frames)])  # images, not pixels, as lerobot counts
    return stats


def aggregate_stats(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """lerobot's aggregate_feature_stats: exact mean and std, count-weighted mean of quantiles."""
    counts = np.array([s["count"][0] for s in per_episode], dtype=np.float64)
    total = counts.sum()
    means = np.stack([s["mean"] for s in per_episode])
    w = counts.reshape(-1, *([1] * (means.ndim - 1)))
    mean = (means * w).sum(0) / total
    variance = ((np.stack([s["std"] for s in per_episode]) ** 2 + (means - mean) ** 2) * w).sum(0) / total
    out = {"min": np.stack([s["min"] for s in per_episode]).min(0),
           "max": np.stack([s["max"] for s in per_episode]).max(0),
           "mean": mean, "std": np.sqrt(variance), "count": np.array([int(total)])}
    for key in per_episode[0]:
        if key.startswith("q"):
            out[key] = (np.stack([s[key] for s in per_episode]) * w).sum(0) / total
    return out


def _listed(stats: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


# ---------------------------------------------------------------------------------------------
# writing

def _tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as lerobot writes it with pandas (``DataFrame.to_parquet`` of a frame
    indexed by the task string). pandas is not a dependency here, so the pandas metadata that
    makes ``pd.read_parquet`` restore ``task`` as the index is written by hand: lerobot looks a
    task up by that index (``tasks.iloc[i].name``)."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    return pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                     "task": pa.array(tasks, pa.string())}, schema=schema)


def _vector(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


class _VideoFile:
    """One camera's mp4 being written: frames get consecutive pts at 1/fps."""

    def __init__(self, path: Path, fps: int, size: tuple[int, int], codec: VideoCodec):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(codec.encoder, rate=fps, options=dict(codec.options))
        self.stream.pix_fmt = codec.pix_fmt
        self.stream.height, self.stream.width = size
        self.stream.time_base = Fraction(1, fps)
        self.stream.codec_context.thread_count = 1
        self.frames = 0
        self.bytes = 0  # encoded so far (the encoder holds back a few frames)

    def write(self, frames: np.ndarray) -> None:
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            self.frames += 1
            packets = self.stream.encode(frame)
            self.bytes += sum(p.size for p in packets)
            self.container.mux(packets)

    def close(self) -> None:
        self.container.mux(self.stream.encode())
        self.container.close()


def video_info(path: Path, codec: VideoCodec) -> dict:
    """The ``info`` lerobot's get_video_info records for a video feature, probed from the file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec_context.codec.canonical_name, "video.pix_fmt": stream.pix_fmt,
                "video.fps": round(float(stream.base_rate)), "video.channels": 3}
    return {**info, "has_audio": False, "video.g": int(codec.options.get("g", 0)) or None,
            "video.extra_options": {k: v for k, v in codec.options.items() if k != "g"},
            "video.video_backend": "pyav", "is_depth_map": False}


class LeRobotWriter:
    """Writes episodes one at a time (so a large dataset never sits in memory) into a new
    LeRobotDataset v3.0 directory; :meth:`close` writes the metadata. Use as a context manager."""

    def __init__(self, directory: str | Path, fps: float, cameras: list[str], image_size: tuple[int, int],
                 state_names: list[str], action_names: list[str], video: str = "lossless",
                 robot_type: str | None = None, overwrite: bool = False,
                 data_file_mb: float = DATA_FILE_MB, video_file_mb: float = VIDEO_FILE_MB):
        self.root = Path(directory)
        if self.root.exists() and any(self.root.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{self.root} exists and is not empty; pass overwrite")
            if not is_lerobot_dataset(self.root):
                raise FileExistsError(f"{self.root} is not empty and not a LeRobot dataset; not replacing it")
            self._remove_parts()
        if video not in VIDEO_CODECS:
            raise ValueError(f"video {video!r}: expected one of {sorted(VIDEO_CODECS)}")
        self.fps = integer_fps(fps, str(self.root))
        self.codec = VIDEO_CODECS[video]
        self.cameras = list(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.state_names, self.action_names = list(state_names), list(action_names)
        self.robot_type = robot_type
        self.limits = (data_file_mb * 2**20, video_file_mb * 2**20)
        self.tasks: dict[str, int] = {}
        self.episode_rows: list[dict] = []
        self.stats: dict[str, list[dict]] = {}
        self.frames = 0
        self.chunk = self.file = 0
        self.file_start = 0  # dataset index of the first frame of the current file
        self.data_writer: pq.ParquetWriter | None = None
        self.data_bytes = 0
        self.videos: dict[str, _VideoFile] = {}
        self.root.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Stop and remove what was written: a half-written dataset is of use to nobody."""
        self._close_files()
        self._remove_parts()

    def _remove_parts(self) -> None:
        for part in ("meta", "data", "videos"):
            shutil.rmtree(self.root / part, ignore_errors=True)

    def _features(self) -> dict:
        h, w = self.image_size
        features = {camera_key(c): {"dtype": "video", "shape": [h, w, 3],
                                    "names": ["height", "width", "channels"]} for c in self.cameras}
        features[STATE] = {"dtype": "float32", "shape": [len(self.state_names)], "names": self.state_names}
        features[ACTION] = {"dtype": "float32", "shape": [len(self.action_names)], "names": self.action_names}
        return {**features, **INDEX_FEATURES}

    def _check(self, episode: Episode, number: int) -> None:
        where = f"episode {number}"
        n = len(episode)
        if n == 0:
            raise DatasetError(f"{where}: no frames")
        if episode.chunk is not None:  # exporting would drop the labels it was recorded for
            raise DatasetError(f"{where}: has teacher chunk labels (a vla_ros distill dataset); "
                               "LeRobotDataset v3 has no field for them")
        if sorted(episode.images) != sorted(self.cameras):
            raise DatasetError(f"{where}: cameras {sorted(episode.images)}, expected {sorted(self.cameras)}")
        for c, frames in episode.images.items():
            if frames.shape != (n, *self.image_size, 3) or frames.dtype != np.uint8:
                raise DatasetError(f"{where}: camera {c!r} frames {frames.dtype} {frames.shape}, expected "
                                   f"uint8 {(n, *self.image_size, 3)}")
        for name, values, names in (("state", episode.state, self.state_names),
                                    ("action", episode.action, self.action_names)):
            if values.shape != (n, len(names)):
                raise DatasetError(f"{where}: {name} shape {values.shape}, expected {(n, len(names))}")
        # LeRobot has no timestamp of its own: frame k is at k / fps, and video frames are found by it.
        expected = np.arange(n) / self.fps
        off = np.abs(np.asarray(episode.timestamp, dtype=np.float64) - expected) > TIMESTAMP_TOLERANCE_S
        if off.any():
            k = int(np.argmax(off))  # the first frame off the grid
            raise DatasetError(f"{where}: frame {k} is at {episode.timestamp[k]:.6f} s, "
                               f"not {expected[k]:.6f} s (k / fps); LeRobot v3 needs frames evenly spaced "
                               f"at 1/{self.fps} s from 0")

    def _roll_if_full(self) -> None:
        video_bytes = max((v.bytes for v in self.videos.values()), default=0)
        if self.data_bytes < self.limits[0] and video_bytes < self.limits[1]:
            return
        self._close_files()
        self.file += 1
        if self.file == CHUNKS_SIZE:
            self.chunk, self.file = self.chunk + 1, 0
        self.file_start = self.frames

    def _close_files(self) -> None:
        if self.data_writer is not None:
            self.data_writer.close()
            self.data_writer, self.data_bytes = None, 0
        for v in self.videos.values():
            v.close()
        self.videos = {}

    def add(self, episode: Episode) -> None:
        number = len(self.episode_rows)
        self._check(episode, number)
        if self.episode_rows:
            self._roll_if_full()
        n = len(episode)
        task_index = self.tasks.setdefault(episode.instruction, len(self.tasks))
        columns = {
            STATE: _vector(episode.state), ACTION: _vector(episode.action),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / np.float32(self.fps), pa.float32()),
            "frame_index": pa.array(np.arange(n), pa.int64()),
            "episode_index": pa.array(np.full(n, number), pa.int64()),
            "index": pa.array(np.arange(self.frames, self.frames + n), pa.int64()),
            "task_index": pa.array(np.full(n, task_index), pa.int64()),
        }
        table = pa.table(columns)
        if self.data_writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.data_writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        self.data_writer.write_table(table)  # one row group per episode, as lerobot writes
        self.data_bytes += table.nbytes
        row = {"episode_index": number, "tasks": [episode.instruction], "length": n,
               "data/chunk_index": self.chunk, "data/file_index": self.file,
               "dataset_from_index": self.frames, "dataset_to_index": self.frames + n}
        stats = {STATE: feature_stats(episode.state.astype(np.float64)),
                 ACTION: feature_stats(episode.action.astype(np.float64))}
        for key in INDEX_FEATURES:
            stats[key] = feature_stats(columns[key].to_numpy().astype(np.float64).reshape(-1, 1))
        for c in self.cameras:
            key = camera_key(c)
            if key not in self.videos:
                self.videos[key] = _VideoFile(self._video_path(key, self.chunk, self.file), self.fps,
                                              self.image_size, self.codec)
            start = (self.frames - self.file_start) / self.fps
            self.videos[key].write(episode.images[c])
            row |= {f"videos/{key}/chunk_index": self.chunk, f"videos/{key}/file_index": self.file,
                    f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": start + n / self.fps}
            stats[key] = image_stats(episode.images[c])
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        row |= {f"stats/{key}/{name}": np.asarray(v).tolist()
                for key, s in stats.items() for name, v in s.items()}
        row |= {TASK_COLUMN: json.dumps(episode.task), SUCCESS_COLUMN: bool(episode.success)}
        for key, s in stats.items():
            self.stats.setdefault(key, []).append(s)
        self.episode_rows.append(row)
        self.frames += n

    def _video_path(self, key: str, chunk: int, file: int) -> Path:
        return self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)

    def close(self) -> Path:
        self._close_files()
        if not self.episode_rows:
            raise DatasetError(f"{self.root}: no episodes to write")
        features = self._features()
        for c in self.cameras:
            features[camera_key(c)]["info"] = video_info(self._video_path(camera_key(c), 0, 0), self.codec)
        path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episode_rows), path, compression="snappy")
        pq.write_table(_tasks_table(list(self.tasks)), self.root / TASKS_PATH)
        stats = {key: _listed(aggregate_stats(per_episode)) for key, per_episode in self.stats.items()}
        (self.root / STATS_PATH).write_text(json.dumps(stats, indent=4))
        n = len(self.episode_rows)
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
                "total_episodes": n, "total_frames": self.frames, "total_tasks": len(self.tasks),
                "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB,
                "video_files_size_in_mb": VIDEO_FILE_MB, "fps": self.fps, "splits": {"train": f"0:{n}"},
                "data_path": DATA_PATH, "video_path": VIDEO_PATH, "features": features}
        (self.root / INFO_PATH).write_text(json.dumps(info, indent=4))
        return self.root


def save_lerobot_dataset(directory: str | Path, episodes: Iterable[Episode], fps: float,
                         state_names: list[str], action_names: list[str], **options) -> Path:
    """Write ``episodes`` (an iterable: read lazily) as a LeRobotDataset v3.0 at ``directory``.
    The cameras and image size are taken from the first episode."""
    iterator = iter(episodes)
    first = next(iterator, None)
    if first is None:
        raise DatasetError(f"{directory}: no episodes to write")
    cameras = sorted(first.images)
    size = first.images[cameras[0]].shape[1:3]
    with LeRobotWriter(directory, fps, cameras, size, state_names, action_names, **options) as writer:
        writer.add(first)
        for episode in iterator:
            writer.add(episode)
    return Path(directory)


# ---------------------------------------------------------------------------------------------
# reading

def load_info(directory: str | Path) -> dict:
    path = Path(directory) / INFO_PATH
    if not path.is_file():
        raise DatasetError(f"{path}: missing; not a LeRobot v3 dataset directory")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    missing = [k for k in ("codebase_version", "fps", "features", "data_path") if k not in info]
    if missing:
        raise DatasetError(f"{path}: missing keys {missing}")
    if not str(info["codebase_version"]).startswith("v3."):
        raise DatasetError(f"{path}: codebase_version is {info['codebase_version']!r}; only v3.x is read "
                           "(convert older datasets with lerobot's convert_dataset_v21_to_v30)")
    return info


def _names(info: dict, key: str) -> list[str]:
    """A vector feature's dimension names: a list, or lerobot's older {"motors": [...]} form;
    ``key_0, key_1, ...`` where the dataset names none."""
    feature = info["features"][key]
    names = feature.get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    size = int(feature["shape"][0])
    if isinstance(names, list) and len(names) == size and all(isinstance(n, str) for n in names):
        return list(names)
    return [f"{key}_{i}" for i in range(size)]


def camera_name(key: str) -> str:
    """observation.images.wrist -> wrist; observation.image (single-camera datasets) -> image."""
    return key[len(IMAGES_PREFIX):] if key.startswith(IMAGES_PREFIX) else key.removeprefix("observation.")


def decode_video(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of an mp4 as uint8 RGB [N, H, W, 3] and its presentation time in seconds."""
    if not path.is_file():
        raise DatasetError(f"{path}: video file missing")
    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.pts * stream.time_base))
    except (av.FFmpegError, IndexError) as exc:
        raise DatasetError(f"{path}: cannot decode video ({exc})") from exc
    if not frames:
        raise DatasetError(f"{path}: no video frames")
    order = np.argsort(times, kind="stable")
    return np.stack(frames)[order], np.asarray(times)[order]


def decode_png(data: bytes, where: str) -> np.ndarray:
    """An ``image`` feature's embedded PNG (or JPEG) bytes as uint8 RGB [H, W, 3]."""
    import io

    try:
        with av.open(io.BytesIO(data)) as container:
            return next(container.decode(video=0)).to_ndarray(format="rgb24")
    except (av.FFmpegError, StopIteration) as exc:
        raise DatasetError(f"{where}: cannot decode image ({exc})") from exc


def _read_parquets(directory: Path, what: str, columns: list[str] | None = None) -> pa.Table:
    paths = sorted(directory.glob("*/*.parquet"))
    if not paths:
        raise DatasetError(f"{directory}: no {what} parquet files")
    tables = []
    for p in paths:
        try:
            table = pq.read_table(p, columns=columns)
        except (pa.ArrowInvalid, OSError, KeyError) as exc:
            raise DatasetError(f"{p}: cannot read {what} ({exc})") from exc
        tables.append(table)
    return pa.concat_tables(tables, promote_options="default")


def _require_columns(table: pa.Table, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DatasetError(f"{where}: missing columns {missing}")


def read_lerobot_episodes(directory: str | Path) -> tuple[dict, Iterator[Episode]]:
    """The dataset's meta (the keys of a vla_ros meta.json, plus ``ignored_features``: those that
    have no place in an Episode) and its episodes, read one at a time."""
    root = Path(directory)
    info = load_info(root)
    features = info["features"]
    for key in (STATE, ACTION):
        if key not in features:
            raise DatasetError(f"{root / INFO_PATH}: features has no {key!r} (found {sorted(features)})")
    camera_keys = [k for k, f in features.items() if f.get("dtype") in ("video", "image")]
    if not camera_keys:
        raise DatasetError(f"{root / INFO_PATH}: no camera (no feature of dtype video or image)")
    cameras = [camera_name(k) for k in camera_keys]
    known = {STATE, ACTION, *camera_keys, *INDEX_FEATURES}
    ignored = sorted(k for k in features if k not in known)
    shapes = {tuple(features[k]["shape"]) for k in camera_keys}
    h, w = _image_size(next(iter(shapes)), features[camera_keys[0]].get("names"))
    fps = info["fps"]
    meta = {"format": "lerobot", "codebase_version": info["codebase_version"], "fps": fps,
            "cameras": cameras, "image_size": [h, w], "state_names": _names(info, STATE),
            "action_names": _names(info, ACTION), "episodes": info.get("total_episodes"),
            "frames": info.get("total_frames"), "robot_type": info.get("robot_type"),
            "ignored_features": ignored}
    episodes_table = _read_parquets(root / "meta" / "episodes", "episodes")
    _require_columns(episodes_table, ["episode_index", "dataset_from_index", "dataset_to_index"],
                     str(root / "meta" / "episodes"))
    tasks_path = root / TASKS_PATH
    try:
        tasks_table = pq.read_table(tasks_path)
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"{tasks_path}: cannot read tasks ({exc})") from exc
    _require_columns(tasks_table, ["task", "task_index"], str(tasks_path))
    tasks = dict(zip(tasks_table["task_index"].to_pylist(), tasks_table["task"].to_pylist(), strict=True))
    return meta, _episodes(root, info, episodes_table.to_pylist(), tasks, camera_keys)


def _image_size(shape: tuple, names) -> tuple[int, int]:
    if isinstance(names, list) and len(names) == 3 and names[0] in ("channel", "channels"):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _episodes(root: Path, info: dict, rows: list[dict], tasks: dict[int, str],
              camera_keys: list[str]) -> Iterator[Episode]:
    features = info["features"]
    video_keys = [k for k in camera_keys if features[k]["dtype"] == "video"]
    image_keys = [k for k in camera_keys if features[k]["dtype"] == "image"]
    columns = [STATE, ACTION, "timestamp", "episode_index", "index", "task_index", *image_keys]
    data = _read_parquets(root / "data", "data", columns)
    order = np.argsort(data["index"].to_numpy(), kind="stable")
    data = data.take(pa.array(order))
    index = data["index"].to_numpy()
    videos: dict[str, tuple[Path, np.ndarray, np.ndarray]] = {}
    for row in sorted(rows, key=lambda r: r["episode_index"]):
        ep = row["episode_index"]
        where = f"{root}: episode {ep}"
        lo, hi = np.searchsorted(index, [row["dataset_from_index"], row["dataset_to_index"]])
        if hi - lo != row["dataset_to_index"] - row["dataset_from_index"] or hi == lo:
            raise DatasetError(f"{where}: rows {row['dataset_from_index']}..{row['dataset_to_index']} "
                               f"of the episodes table are not all in data/")
        part = data.slice(lo, hi - lo)
        if set(part["episode_index"].to_pylist()) != {ep}:
            raise DatasetError(f"{where}: data rows {lo}..{hi} carry other episode indices")
        task_ids = sorted(set(part["task_index"].to_pylist()))
        if len(task_ids) != 1 or task_ids[0] not in tasks:
            raise DatasetError(f"{where}: task_index {task_ids}; an Episode has exactly one instruction "
                               f"(known task indices {sorted(tasks)})")
        timestamp = _seconds(part["timestamp"].to_numpy(), info["fps"])
        images = {}
        for key in video_keys:
            images[camera_name(key)] = _video_frames(root, info, row, key, timestamp, videos, where)
        for key in image_keys:
            images[camera_name(key)] = np.stack(
                [decode_png(cell["bytes"], f"{where} {key}") for cell in part[key].to_pylist()])
        task = json.loads(row[TASK_COLUMN]) if row.get(TASK_COLUMN) else {}
        success = bool(row[SUCCESS_COLUMN]) if row.get(SUCCESS_COLUMN) is not None else True
        yield Episode(images=images, state=_matrix(part[STATE], where, STATE),
                      action=_matrix(part[ACTION], where, ACTION), timestamp=timestamp,
                      instruction=tasks[task_ids[0]], task=task, success=success)


def _seconds(stored: np.ndarray, fps: int) -> np.ndarray:
    """Timestamps as float64. LeRobot writes frame k's as float32(k / fps); where every stored
    value is exactly that, the float64 k / fps it was rounded from is returned, so an exported
    and imported episode keeps its timestamps bit for bit; otherwise the stored values."""
    exact = np.arange(len(stored)) / fps
    if stored.dtype == np.float32 and np.array_equal(exact.astype(np.float32), stored):
        return exact
    return stored.astype(np.float64)


def _matrix(column: pa.ChunkedArray, where: str, key: str) -> np.ndarray:
    try:
        return np.asarray(column.to_pylist(), dtype=np.float32)
    except ValueError as exc:
        raise DatasetError(f"{where}: {key} rows of unequal length ({exc})") from exc


def _video_frames(root: Path, info: dict, row: dict, key: str, timestamp: np.ndarray,
                  cache: dict, where: str) -> np.ndarray:
    missing = [c for c in (f"videos/{key}/chunk_index", f"videos/{key}/file_index",
                           f"videos/{key}/from_timestamp") if row.get(c) is None]
    if missing:
        raise DatasetError(f"{where}: episodes table lacks {missing}")
    path = root / info.get("video_path", VIDEO_PATH).format(video_key=key,
                                                            chunk_index=row[f"videos/{key}/chunk_index"],
                                                            file_index=row[f"videos/{key}/file_index"])
    if cache.get(key, (None,))[0] != path:  # files are read in episode order: one per camera at a time
        cache[key] = (path, *decode_video(path))
    _, frames, times = cache[key]
    wanted = row[f"videos/{key}/from_timestamp"] + timestamp
    at = np.clip(np.searchsorted(times, wanted), 1, len(times) - 1)
    nearest = np.where(np.abs(times[at - 1] - wanted) <= np.abs(times[at] - wanted), at - 1, at)
    off = np.abs(times[nearest] - wanted)
    if len(times) == 1:
        nearest, off = np.zeros(len(wanted), dtype=int), np.abs(times[0] - wanted)
    if np.any(off > TIMESTAMP_TOLERANCE_S):
        k = int(np.argmax(off))
        raise DatasetError(f"{where}: {path} has no frame within {TIMESTAMP_TOLERANCE_S} s of "
                           f"{wanted[k]:.6f} s (frame {k}; nearest {times[nearest[k]]:.6f} s)")
    return frames[nearest]


def load_lerobot_dataset(directory: str | Path) -> tuple[dict, list[Episode]]:
    meta, episodes = read_lerobot_episodes(directory)
    return meta, list(episodes)
