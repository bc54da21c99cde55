"""Demonstration datasets in the LeRobot v3 layout: write them episode by episode, load them, check them.

The files are LeRobot's codebase v3.0 layout, so LeRobot's tools read what s2r writes:

    meta/info.json                              fps, features (dtype, shape, names), totals, path templates
    meta/stats.json                             per feature: min, max, mean, std, count
    meta/tasks.parquet                          task_index, task
    meta/episodes/chunk-000/file-000.parquet    per episode: length, frame range, files, stats, success
    data/chunk-000/file-000.parquet             per frame: observation.state, action, timestamp,
                                                frame_index, episode_index, index, task_index
    videos/observation.images.top/chunk-000/file-000.mp4    H.264, the episodes one after another

A frame's `timestamp` is the time it was captured, as the caller reports it, stored in
seconds since the episode's first frame; it is never derived from the frame's index, so
`check_dataset` can tell a recording that missed its rate.

What the writer guarantees: `end_episode` returns once the episode is on disk, staged under
`.staging/` by an atomic rename, so a crash loses at most the episode being recorded, and a
writer opened on the same root takes the staged episodes back. `close()` merges them into
the dataset's files and writes `meta/` last (`meta/episodes` is the commit point). A
discarded episode leaves no trace. A writer opened on an existing dataset appends to it.

    with DatasetWriter(root, fps=10, features=features, robot="pusher", task="push_t") as writer:
        for state, action, stamp in episode:
            writer.add_frame({OBS_STATE: state, ACTION: action}, timestamp=stamp)
        writer.end_episode(success=True)
    dataset = load_dataset(root)                # dataset.episodes[0][ACTION]: (T, A) float32
    report = check_dataset(root, task="push_t")  # or DatasetError naming the episode and file
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
OBS_STATE = "observation.state"
ACTION = "action"
ACTION_PLAN = "action.plan"
"""Optional: an expert's next H actions from the frame's state, flattened (H * A,) step-major (sim.demos)."""
IMAGES = "observation.images."
"""Prefix of camera features: `observation.images.top` is the camera `top`."""
TIMESTAMP = "timestamp"
FRAME_INDEX = "frame_index"
EPISODE_INDEX = "episode_index"
INDEX = "index"
TASK_INDEX = "task_index"

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
STAGING = ".staging"

DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    TIMESTAMP: {"dtype": "float32", "shape": [1], "names": None},
    FRAME_INDEX: {"dtype": "int64", "shape": [1], "names": None},
    EPISODE_INDEX: {"dtype": "int64", "shape": [1], "names": None},
    INDEX: {"dtype": "int64", "shape": [1], "names": None},
    TASK_INDEX: {"dtype": "int64", "shape": [1], "names": None},
}
NUMERIC_DTYPES = ("float32", "float64", "int64")
VIDEO_CODEC = "h264"
_FFMPEG_ENCODE = ["-crf", "18", "-bf", "0", "-movflags", "+faststart"]
"""H.264 without B-frames (no reordering delay, exact frame counts), index up front (a truncated file still plays)."""
_STATS = ("min", "max", "mean", "std")


class DatasetError(ValueError):
    """A dataset is malformed or misused; the message names the file and, where it applies, the episode."""


# --- features ---------------------------------------------------------------------------------

def is_video(spec: Mapping[str, Any]) -> bool:
    return spec["dtype"] in ("video", "image")


def _check_features(features: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The user features, validated and normalized (shape as a list of ints)."""
    if ACTION not in features:
        raise DatasetError(f"features: missing {ACTION!r} (known: {', '.join(features)})")
    checked = {}
    for key, spec in features.items():
        if key in DEFAULT_FEATURES:
            raise DatasetError(f"features.{key}: reserved; the writer adds it")
        if "dtype" not in spec or "shape" not in spec:
            raise DatasetError(f"features.{key}: expected dtype and shape, got {dict(spec)}")
        shape = [int(s) for s in spec["shape"]]
        if is_video(spec):
            if not key.startswith(IMAGES) or len(shape) != 3 or shape[2] != 3 or shape[0] % 2 or shape[1] % 2:
                raise DatasetError(f"features.{key}: a camera is {IMAGES}NAME with shape [height, width, 3], "
                                   f"both even; got {key} {shape}")
            checked[key] = {"dtype": "video", "shape": shape, "names": ["height", "width", "channels"]}
        else:
            if spec["dtype"] not in NUMERIC_DTYPES or len(shape) != 1:
                raise DatasetError(f"features.{key}: expected a vector of {'/'.join(NUMERIC_DTYPES)} "
                                   f"with shape [size], got {spec['dtype']} {shape}")
            names = spec.get("names")
            if names is not None and len(names) != shape[0]:
                raise DatasetError(f"features.{key}.names: {len(names)} names for shape {shape}")
            checked[key] = {"dtype": spec["dtype"], "shape": shape, "names": list(names) if names else None}
    return checked


# --- statistics -------------------------------------------------------------------------------

@dataclass
class _RunningStats:
    """Per-channel min, max, sum and sum of squares of one episode's values."""

    minimum: np.ndarray
    maximum: np.ndarray
    total: np.ndarray
    squares: np.ndarray
    count: int = 0
    """Values per channel."""
    frames: int = 0

    @classmethod
    def empty(cls, channels: int) -> _RunningStats:
        return cls(np.full(channels, np.inf), np.full(channels, -np.inf), np.zeros(channels), np.zeros(channels))

    def update(self, values: np.ndarray) -> None:
        """values: (n, channels) float64."""
        self.minimum = np.minimum(self.minimum, values.min(axis=0))
        self.maximum = np.maximum(self.maximum, values.max(axis=0))
        self.total += values.sum(axis=0)
        self.squares += np.square(values).sum(axis=0)
        self.count += len(values)

    def result(self) -> dict[str, list[float]]:
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean**2, 0.0))
        return {"min": self.minimum.tolist(), "max": self.maximum.tolist(), "mean": mean.tolist(),
                "std": std.tolist(), "count": [self.frames]}


def _vector_stats(values: np.ndarray) -> dict[str, list[float]]:
    """values: (T, D)."""
    values = values.astype(np.float64)
    return {"min": values.min(axis=0).tolist(), "max": values.max(axis=0).tolist(),
            "mean": values.mean(axis=0).tolist(), "std": values.std(axis=0).tolist(), "count": [len(values)]}


def aggregate_stats(parts: list[dict[str, list[float]]]) -> dict[str, np.ndarray]:
    """Combine per-episode stats (min, max, mean, std, count) into the dataset's, weighting by count.

    var = Σ n_i (σ_i² + (μ_i − μ)²) / Σ n_i, the parallel form of the variance.
    """
    counts = np.array([p["count"][0] for p in parts], dtype=np.float64)
    means = np.array([p["mean"] for p in parts])
    stds = np.array([p["std"] for p in parts])
    total = counts.sum()
    mean = (counts[:, None] * means).sum(axis=0) / total
    var = (counts[:, None] * (stds**2 + (means - mean) ** 2)).sum(axis=0) / total
    return {"min": np.min([p["min"] for p in parts], axis=0), "max": np.max([p["max"] for p in parts], axis=0),
            "mean": mean, "std": np.sqrt(var), "count": np.array([int(total)])}


def _stats_shape(spec: Mapping[str, Any]) -> tuple[int, ...]:
    """LeRobot's shapes: per channel (3, 1, 1) for cameras, the feature's shape otherwise."""
    return (3, 1, 1) if is_video(spec) else tuple(spec["shape"])


# --- video ------------------------------------------------------------------------------------

def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise DatasetError("camera features need imageio-ffmpeg (pip install imageio-ffmpeg)") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


class _VideoEncoder:
    """An ffmpeg process encoding RGB frames (H, W, 3) uint8 to an MP4 file."""

    def __init__(self, path: Path, height: int, width: int, fps: float) -> None:
        _ffmpeg()
        import imageio_ffmpeg

        self.path = path
        self.frames = 0
        self._writer = imageio_ffmpeg.write_frames(
            str(path), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=None, macro_block_size=1, ffmpeg_log_level="error", output_params=_FFMPEG_ENCODE)
        self._writer.send(None)

    def add(self, image: np.ndarray) -> None:
        self._writer.send(np.ascontiguousarray(image))
        self.frames += 1

    def close(self) -> None:
        self._writer.close()


def _decode(path: Path, height: int, width: int) -> np.ndarray:
    """Every frame of an MP4 that decodes, (n, H, W, 3) uint8; raises DatasetError when none can be read."""
    import imageio_ffmpeg

    frames = []
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        if tuple(meta["size"]) != (width, height):
            raise _Undecodable(f"frames are {meta['size'][0]}×{meta['size'][1]}, features say {width}×{height}")
        for buffer in reader:
            frames.append(np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3))
    except (RuntimeError, OSError, StopIteration) as error:
        if not frames:
            raise _Undecodable(_ffmpeg_reason(error)) from None
    return np.stack(frames)


class _Undecodable(Exception):
    """An MP4 of which not one frame decodes; the message is ffmpeg's reason."""


def _ffmpeg_reason(error: BaseException) -> str:
    """ffmpeg's own complaint, out of the log that imageio-ffmpeg wraps in its exception."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    component = [line.split("] ", 1)[1] for line in lines if line.startswith("[") and "] " in line]
    return component[0] if component else (lines[0] if lines else type(error).__name__)


def _concat_videos(parts: list[Path], out: Path, *, frames: int) -> None:
    """Join MP4 files of one encoding into `out` without re-encoding, keeping the first `frames` frames.

    Without B-frames packets come in display order, so cutting after `frames` packets is exact:
    it drops what a close() that crashed before its commit point had already appended.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.writelines(f"file '{p.resolve()}'\n" for p in parts)
    try:
        subprocess.run([_ffmpeg(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", listing.name,
                        "-frames:v", str(frames), "-c", "copy", "-movflags", "+faststart", str(out)],
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        reason = error.stderr.decode().strip()
        raise DatasetError(f"{out}: joining {len(parts)} episode videos failed: {reason}") from None
    finally:
        os.unlink(listing.name)


# --- writing ----------------------------------------------------------------------------------

def _write_atomic(path: Path, write) -> None:
    """Write through `write(tmp_path)` then rename onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=_json_default)))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _vector_column(values: np.ndarray, dtype: str) -> pa.Array:
    """(T, D) values as a fixed-size list column."""
    flat = pa.array(values.reshape(-1).astype(dtype))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


class DatasetWriter:
    """Records episodes frame by frame into a LeRobot v3 dataset at `root` (see the module docstring).

    features: the recorded features besides the bookkeeping ones, e.g.
        {"observation.state": {"dtype": "float32", "shape": [8], "names": [...]},
         "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
         "observation.images.top": {"dtype": "video", "shape": [96, 96, 3]}}
    fps: the rate the frames are captured at, Hz; robot: the robot's name (`robot_type`);
    task: the task the episodes demonstrate. A root that holds a dataset is appended to, and
    must agree on all four.
    """

    def __init__(self, root: Path, *, fps: float, features: Mapping[str, Mapping[str, Any]], robot: str,
                 task: str) -> None:
        if not fps > 0:
            raise DatasetError(f"fps: expected > 0, got {fps}")
        self.root = Path(root)
        self.fps = float(fps)
        self.features = _check_features(features)
        self.robot = robot
        self.task = task
        self._cameras = [k for k, spec in self.features.items() if is_video(spec)]
        self._vectors = [k for k in self.features if k not in self._cameras]
        self._staging = self.root / STAGING
        self._committed: list[dict[str, Any]] = []
        if (self.root / INFO_PATH).is_file():
            self._committed = self._open_existing()
        self._staged = self._recover_staged()
        self._closed = False
        self._reset_episode()

    # -- the episode in progress --
    @property
    def num_episodes(self) -> int:
        """Finished episodes: committed, staged and just ended."""
        return len(self._committed) + len(self._staged)

    @property
    def num_frames(self) -> int:
        return sum(e["length"] for e in self._committed) + sum(e["length"] for e in self._staged)

    @property
    def frames_in_episode(self) -> int:
        return len(self._stamps)

    def add_frame(self, frame: Mapping[str, np.ndarray], timestamp: float) -> None:
        """Add one frame of the current episode (started by its first frame).

        frame: every feature, vectors (D,) and camera images (H, W, 3) uint8;
        timestamp: seconds when the frame was captured, on any clock, increasing.
        """
        self._require_open()
        if set(frame) != set(self.features):
            missing, extra = set(self.features) - set(frame), set(frame) - set(self.features)
            raise DatasetError(f"frame {self.frames_in_episode}: missing features {sorted(missing)}, "
                               f"unknown features {sorted(extra)}")
        stamp = float(timestamp)
        if not math.isfinite(stamp) or (self._stamps and stamp <= self._stamps[-1]):
            last = self._stamps[-1] if self._stamps else None
            raise DatasetError(f"frame {self.frames_in_episode}: timestamp {stamp} must be finite and after "
                               f"the previous frame's {last}")
        values = {}
        for key in self._vectors:
            value = np.asarray(frame[key], dtype=self.features[key]["dtype"])
            if value.shape != tuple(self.features[key]["shape"]):
                raise DatasetError(f"frame {self.frames_in_episode}: {key}: expected shape "
                                   f"{tuple(self.features[key]['shape'])}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise DatasetError(f"frame {self.frames_in_episode}: {key}: not finite: {value}")
            values[key] = value
        for key in self._cameras:
            image = np.asarray(frame[key])
            if image.shape != tuple(self.features[key]["shape"]) or image.dtype != np.uint8:
                raise DatasetError(f"frame {self.frames_in_episode}: {key}: expected uint8 "
                                   f"{tuple(self.features[key]['shape'])}, got {image.dtype} {image.shape}")
            self._encoder(key).add(image)
            stats = self._image_stats[key]
            stats.update(image.reshape(-1, 3).astype(np.float64) / 255.0)
            stats.frames += 1
        for key, value in values.items():
            self._buffers[key].append(value)
        self._stamps.append(stamp)

    def end_episode(self, *, success: bool | None = None) -> int:
        """Finish the current episode and stage it on disk; returns its episode index.

        success: whether the demonstration achieved the task, as marked by its recorder (None: unmarked).
        """
        self._require_open()
        if not self._stamps:
            raise DatasetError("end_episode: the episode has no frames")
        index = self.num_episodes
        length = len(self._stamps)
        for key, encoder in self._encoders.items():
            encoder.close()
            if encoder.frames != length:
                raise DatasetError(f"{encoder.path}: {encoder.frames} frames encoded, the episode has {length}")
        start = self.num_frames
        stamps = np.asarray(self._stamps)
        columns = {key: _vector_column(np.stack(self._buffers[key]), self.features[key]["dtype"])
                   for key in self._vectors}
        columns[TIMESTAMP] = pa.array((stamps - stamps[0]).astype(np.float32))
        columns[FRAME_INDEX] = pa.array(np.arange(length, dtype=np.int64))
        columns[EPISODE_INDEX] = pa.array(np.full(length, index, dtype=np.int64))
        columns[INDEX] = pa.array(np.arange(start, start + length, dtype=np.int64))
        columns[TASK_INDEX] = pa.array(np.zeros(length, dtype=np.int64))
        self._tmp.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), self._tmp / "data.parquet")
        stats = {key: _vector_stats(np.stack(self._buffers[key])) for key in self._vectors}
        stats |= {key: self._image_stats[key].result() for key in self._cameras}
        for key in (TIMESTAMP, FRAME_INDEX, EPISODE_INDEX, INDEX, TASK_INDEX):
            stats[key] = _vector_stats(columns[key].to_numpy()[:, None])
        episode = {"episode_index": index, "length": length, "success": success, "stats": stats}
        (self._tmp / "episode.json").write_text(json.dumps(episode))
        staged = self._staging / f"episode-{index:06d}"
        os.replace(self._tmp, staged)
        self._staged.append({**episode, "dir": staged})
        self._reset_episode()
        return index

    def discard_episode(self) -> None:
        """Drop the current episode (an unplugged device, a failed take): nothing of it remains."""
        for encoder in self._encoders.values():
            encoder.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._reset_episode()

    def close(self) -> None:
        """Merge the staged episodes into the dataset files and write meta/ and the stats.

        An episode still in progress is discarded (a warning is logged): end it first to keep it.
        """
        if self._closed:
            return
        if self._stamps:
            log.warning("%s: discarding an unfinished episode of %d frames", self.root, len(self._stamps))
        self.discard_episode()
        self._commit()
        self._closed = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --
    def _require_open(self) -> None:
        if self._closed:
            raise DatasetError(f"{self.root}: the writer is closed")

    def _reset_episode(self) -> None:
        self._buffers: dict[str, list[np.ndarray]] = {key: [] for key in self._vectors}
        self._stamps: list[float] = []
        self._encoders: dict[str, _VideoEncoder] = {}
        self._image_stats = {key: _RunningStats.empty(3) for key in self._cameras}
        self._tmp = self._staging / f"episode-{self.num_episodes:06d}.tmp"
        if self._tmp.exists():
            shutil.rmtree(self._tmp)

    def _encoder(self, key: str) -> _VideoEncoder:
        if key not in self._encoders:
            self._tmp.mkdir(parents=True, exist_ok=True)
            height, width, _ = self.features[key]["shape"]
            self._encoders[key] = _VideoEncoder(self._tmp / f"{key}.mp4", height, width, self.fps)
        return self._encoders[key]

    def _open_existing(self) -> list[dict[str, Any]]:
        """The committed episodes of the dataset at root, after checking that it matches this writer."""
        meta = _Meta.read(self.root)
        for name, mine, theirs in (("fps", self.fps, meta.fps), ("robot", self.robot, meta.robot),
                                   ("task", self.task, meta.task)):
            if mine != theirs:
                raise DatasetError(f"{self.root / INFO_PATH}: {name}: the dataset has {theirs!r}, "
                                   f"the writer {mine!r}; write to another root")
        theirs = {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in meta.user_features.items()}
        mine = {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in self.features.items()}
        if theirs != mine:
            raise DatasetError(f"{self.root / INFO_PATH}: features: the dataset has {theirs}, the writer {mine}")
        if any(e["data/file_index"] or e["data/chunk_index"] for e in meta.episodes):
            raise DatasetError(f"{self.root}: appending to a dataset of several data files is not supported")
        return meta.episodes

    def _recover_staged(self) -> list[dict[str, Any]]:
        """Episodes staged by a writer that did not close (a crash), beyond those already committed."""
        staged = []
        if not self._staging.is_dir():
            return staged
        for path in sorted(self._staging.iterdir()):
            if path.suffix == ".tmp":
                shutil.rmtree(path)  # an episode cut short by the crash
                continue
            episode = json.loads((path / "episode.json").read_text())
            if episode["episode_index"] < len(self._committed):
                shutil.rmtree(path)  # committed by a close() that stopped before cleaning up
                continue
            if episode["episode_index"] != len(self._committed) + len(staged):
                raise DatasetError(f"{path}: staged episode {episode['episode_index']} does not follow "
                                   f"episode {len(self._committed) + len(staged) - 1}")
            staged.append({**episode, "dir": path})
        if staged:
            log.warning("%s: recovered %d episodes staged by an interrupted recording", self.root, len(staged))
        return staged

    def _commit(self) -> None:
        if not self._staged:  # nothing new: leave the dataset (or the empty root) as it is
            shutil.rmtree(self._staging, ignore_errors=True)
            return
        data_path = self.root / DATA_PATH.format(chunk_index=0, file_index=0)
        tables = []
        if self._committed:
            existing = pq.read_table(data_path)
            tables.append(existing.filter(pc.less(existing[EPISODE_INDEX], len(self._committed))))
        tables += [pq.read_table(e["dir"] / "data.parquet") for e in self._staged]
        _write_atomic(data_path, lambda tmp: pq.write_table(pa.concat_tables(tables), tmp))
        episodes = self._committed + [self._episode_row(e) for e in self._staged]
        frames = sum(e["length"] for e in episodes)
        for key in self._cameras:
            video_path = self.root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
            parts = ([video_path] if self._committed else []) + [e["dir"] / f"{key}.mp4" for e in self._staged]
            _write_atomic(video_path, lambda tmp: _concat_videos(parts, tmp, frames=frames))
        self._place(episodes)
        features = {**self.features, **DEFAULT_FEATURES}
        stats = {}
        for key, spec in features.items():
            combined = aggregate_stats([_unflatten_stats(e, key) for e in episodes])
            stats[key] = {name: value if name == "count" else value.reshape(_stats_shape(spec))
                          for name, value in combined.items()}
        _write_json(self.root / STATS_PATH, stats)
        _write_atomic(self.root / TASKS_PATH, lambda tmp: pq.write_table(_tasks_table([self.task]), tmp))
        _write_json(self.root / INFO_PATH, self._info(episodes))
        episodes_path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        _write_atomic(episodes_path, lambda tmp: pq.write_table(pa.Table.from_pylist(episodes), tmp))
        shutil.rmtree(self._staging, ignore_errors=True)
        self._committed, self._staged = episodes, []

    def _episode_row(self, episode: dict[str, Any]) -> dict[str, Any]:
        row = {"episode_index": episode["episode_index"], "tasks": [self.task], "length": episode["length"],
               "success": episode["success"], "data/chunk_index": 0, "data/file_index": 0}
        for key in self._cameras:
            row |= {f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0}
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        for key, stats in episode["stats"].items():
            row |= {f"stats/{key}/{name}": [float(v) for v in values] for name, values in stats.items()}
        return row

    def _place(self, episodes: list[dict[str, Any]]) -> None:
        """Fill each episode's frame range and video time range, the episodes one after another."""
        start = 0
        for row in episodes:
            row["dataset_from_index"], row["dataset_to_index"] = start, start + row["length"]
            for key in self._cameras:
                row[f"videos/{key}/from_timestamp"] = start / self.fps
                row[f"videos/{key}/to_timestamp"] = (start + row["length"]) / self.fps
            start += row["length"]

    def _info(self, episodes: list[dict[str, Any]]) -> dict[str, Any]:
        features = {}
        for key, spec in self.features.items():
            features[key] = dict(spec)
            if is_video(spec):
                features[key]["info"] = {"video.height": spec["shape"][0], "video.width": spec["shape"][1],
                                         "video.codec": VIDEO_CODEC, "video.pix_fmt": "yuv420p",
                                         "video.is_depth_map": False, "video.fps": self.fps, "video.channels": 3,
                                         "has_audio": False}
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot,
            "total_episodes": len(episodes),
            "total_frames": sum(e["length"] for e in episodes),
            "total_tasks": 1,
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": int(self.fps) if self.fps.is_integer() else self.fps,
            "splits": {"train": f"0:{len(episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self._cameras else None,
            "features": {**features, **DEFAULT_FEATURES},
        }


def _tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet: task_index by task, with pandas metadata making `task` the index, as LeRobot reads it."""
    table = pa.table({TASK_INDEX: pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas = {"index_columns": ["task"], "column_indexes": [
        {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
         "metadata": {"encoding": "UTF-8"}}], "columns": [
        {"name": TASK_INDEX, "field_name": TASK_INDEX, "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    return table.replace_schema_metadata({"pandas": json.dumps(pandas)})


def _unflatten_stats(row: Mapping[str, Any], key: str) -> dict[str, list[float]]:
    return {name: row[f"stats/{key}/{name}"] for name in (*_STATS, "count")}


# --- reading ----------------------------------------------------------------------------------

@dataclass
class _Meta:
    """meta/: info.json and the episodes table, parsed with errors that name the file."""

    root: Path
    info: dict[str, Any]
    episodes: list[dict[str, Any]]
    task: str

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def robot(self) -> str:
        return self.info.get("robot_type") or ""

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return self.info["features"]

    @property
    def user_features(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.features.items() if k not in DEFAULT_FEATURES}

    @property
    def cameras(self) -> list[str]:
        return [k for k, v in self.features.items() if is_video(v)]

    @classmethod
    def read(cls, root: Path) -> _Meta:
        root = Path(root)
        info_path = root / INFO_PATH
        if not info_path.is_file():
            raise DatasetError(f"{info_path}: missing; {root} is not a LeRobot dataset")
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as error:
            raise DatasetError(f"{info_path}: not valid JSON: {error}") from None
        for key in ("codebase_version", "fps", "features", "total_episodes", "total_frames", "data_path"):
            if key not in info:
                raise DatasetError(f"{info_path}: {key}: missing")
        if info["codebase_version"] != CODEBASE_VERSION:
            raise DatasetError(f"{info_path}: codebase_version: {info['codebase_version']!r}, "
                               f"s2r reads {CODEBASE_VERSION!r}")
        if not float(info["fps"]) > 0:
            raise DatasetError(f"{info_path}: fps: expected > 0, got {info['fps']}")
        for key in (ACTION, *DEFAULT_FEATURES):
            if key not in info["features"]:
                raise DatasetError(f"{info_path}: features.{key}: missing")
        files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        episodes: list[dict[str, Any]] = []
        for path in files:
            episodes += _read_parquet(path, root).to_pylist()
        episodes.sort(key=lambda e: e["episode_index"])
        if not files and info["total_episodes"]:
            raise DatasetError(f"{root / 'meta/episodes'}: missing, info.json says {info['total_episodes']} episodes")
        tasks_path = root / TASKS_PATH
        tasks = _read_parquet(tasks_path, root).to_pydict() if tasks_path.is_file() else {}
        task = (tasks.get("task") or tasks.get("__index_level_0__") or [""])[0]
        return cls(root, info, episodes, task)

    def path(self, template: str, row: Mapping[str, Any], kind: str, key: str = "") -> Path:
        if kind == "data":
            return self.root / template.format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        return self.root / template.format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                           file_index=row[f"videos/{key}/file_index"])

    def read_stats(self) -> dict[str, dict[str, np.ndarray]]:
        path = self.root / STATS_PATH
        if not path.is_file():
            raise DatasetError(f"{path}: missing; the dataset's normalization statistics are written by "
                               f"DatasetWriter.close() (a recording that did not close?)")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}: not valid JSON: {error}") from None
        stats = {}
        for key, spec in self.user_features.items():
            if key not in raw or any(s not in raw[key] for s in _STATS):
                raise DatasetError(f"{path}: {key}: missing, or lacks one of {', '.join(_STATS)}")
            stats[key] = {name: np.asarray(value, dtype=np.float64) for name, value in raw[key].items()}
            for name in _STATS:
                if stats[key][name].shape != _stats_shape(spec):
                    raise DatasetError(f"{path}: {key}.{name}: shape {stats[key][name].shape}, "
                                       f"expected {_stats_shape(spec)}")
        for key in DEFAULT_FEATURES:
            if key in raw:
                stats[key] = {name: np.asarray(value, dtype=np.float64) for name, value in raw[key].items()}
        return stats


def _read_parquet(path: Path, root: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise DatasetError(f"{path.relative_to(root)}: cannot be read ({error})") from None


def _vector(table: pa.Table, key: str, size: int, where: str) -> np.ndarray:
    """A vector column as (T, size)."""
    column = table[key].combine_chunks()
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    if len(flat) != len(column) * size:
        raise DatasetError(f"{where}: {key}: rows hold {len(flat) / max(len(column), 1):g} values, "
                           f"features say {size}")
    return flat.reshape(len(column), size)


@dataclass
class Dataset:
    """A loaded dataset: one dict of arrays per episode, in episode order."""

    root: Path
    fps: float
    """Frames per second the episodes were recorded at."""
    robot: str
    task: str
    features: dict[str, dict[str, Any]]
    """Feature key → dtype, shape, names, as in meta/info.json (bookkeeping columns included)."""
    stats: dict[str, dict[str, np.ndarray]]
    """Feature key → min, max, mean, std (the feature's shape; (3, 1, 1) for cameras, in [0, 1]) and count."""
    episodes: list[dict[str, np.ndarray]]
    """Per episode: observation.state (T, D), action (T, A), timestamp (T,) s since the episode's
    first frame, and each camera (T, H, W, 3) uint8 when loaded with images=True."""
    success: list[bool | None] = field(default_factory=list)
    """Per episode: whether its recorder marked it a success (None: unmarked)."""

    @property
    def num_frames(self) -> int:
        return sum(len(e[TIMESTAMP]) for e in self.episodes)

    @property
    def cameras(self) -> list[str]:
        return [k for k, v in self.features.items() if is_video(v)]


def load_dataset(root: Path, *, images: bool = False) -> Dataset:
    """Load the dataset at `root`; camera frames are decoded only with images=True (T×H×W×3 bytes each)."""
    meta = _Meta.read(Path(root))
    stats = meta.read_stats()
    vectors = [k for k in meta.user_features if not is_video(meta.features[k])]
    tables: dict[Path, pa.Table] = {}
    episodes = []
    for row in meta.episodes:
        path = meta.path(meta.info["data_path"], row, "data")
        where = f"episode {row['episode_index']} ({path.relative_to(meta.root)})"
        if path not in tables:
            if not path.is_file():
                raise DatasetError(f"{where}: data file missing")
            tables[path] = _read_parquet(path, meta.root)
        table = _episode_rows(tables[path], row["episode_index"])
        episode = {key: _vector(table, key, meta.features[key]["shape"][0], where) for key in vectors}
        episode[TIMESTAMP] = table[TIMESTAMP].to_numpy()
        episodes.append(episode)
    if images:
        for key in meta.cameras:
            for row, episode, frames in zip(meta.episodes, episodes, _episode_frames(meta, key), strict=True):
                episode[key] = frames
    return Dataset(root=meta.root, fps=meta.fps, robot=meta.robot, task=meta.task, features=meta.features,
                   stats=stats, episodes=episodes, success=[row.get("success") for row in meta.episodes])


def _episode_rows(table: pa.Table, episode: int) -> pa.Table:
    rows = table.filter(pc.equal(table[EPISODE_INDEX], episode))
    return rows.take(pc.sort_indices(rows[FRAME_INDEX]))


def _episode_frames(meta: _Meta, key: str) -> Iterator[np.ndarray]:
    """Each episode's frames of camera `key`, (T, H, W, 3), decoding each video file once."""
    height, width, _ = meta.features[key]["shape"]
    decoded: dict[Path, np.ndarray] = {}
    for row in meta.episodes:
        path = meta.path(meta.info["video_path"], row, "video", key)
        where = f"episode {row['episode_index']} ({path.relative_to(meta.root)})"
        if path not in decoded:
            if not path.is_file():
                raise DatasetError(f"{where}: video missing")
            try:
                decoded[path] = _decode(path, height, width)
            except _Undecodable as error:
                raise DatasetError(f"{where}: the MP4 cannot be decoded, truncated or corrupt ({error})") from None
        first = round(row[f"videos/{key}/from_timestamp"] * meta.fps)
        frames = decoded[path][first:first + row["length"]]
        if len(frames) != row["length"]:
            raise DatasetError(f"{where}: truncated MP4: {len(frames)} of the episode's {row['length']} frames decode")
        yield frames


# --- checking ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetReport:
    """What `dataset_info` and `check_dataset` found: totals, features and statistics."""

    root: Path
    robot: str
    task: str
    fps: float
    episodes: int
    frames: int
    features: dict[str, dict[str, Any]]
    stats: dict[str, dict[str, np.ndarray]]
    success_rate: float | None
    """Fraction of the episodes marked successful, over those marked; None when none is."""
    checked: bool
    """True when every frame and video was validated (check_dataset), False for meta only (dataset_info)."""

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "robot": self.robot, "task": self.task, "fps": self.fps,
                "episodes": self.episodes, "frames": self.frames, "duration_s": self.duration_s,
                "success_rate": self.success_rate, "checked": self.checked,
                "features": {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in self.features.items()},
                "stats": {k: {n: np.asarray(v).reshape(-1).tolist() for n, v in s.items()}
                          for k, s in self.stats.items()}}

    def format(self) -> str:
        """A plain-text summary: totals, then per feature its shape and per-dimension statistics."""
        rate = "unmarked" if self.success_rate is None else f"{self.success_rate:.0%}"
        lines = [f"{self.root}: {self.episodes} episodes, {self.frames} frames ({self.duration_s:.1f} s) "
                 f"at {self.fps:g} fps; robot {self.robot}, task {self.task}; successful: {rate}"
                 + ("; checked: ok" if self.checked else "")]
        for key, spec in self.features.items():
            if key in DEFAULT_FEATURES and key != TIMESTAMP:
                continue
            lines.append(f"  {key}  {spec['dtype']} {list(spec['shape'])}")
            if key not in self.stats:
                continue
            names = spec.get("names") if not is_video(spec) else ["r", "g", "b"]
            values = {n: np.asarray(self.stats[key][n]).reshape(-1) for n in _STATS}
            for i in range(len(values["mean"])):
                label = names[i] if names and i < len(names) else str(i)
                lines.append(f"    {label:>16}  min {values['min'][i]:+.4g}  max {values['max'][i]:+.4g}  "
                             f"mean {values['mean'][i]:+.4g}  std {values['std'][i]:.4g}")
        return "\n".join(lines)


def dataset_info(root: Path) -> DatasetReport:
    """Totals, features and statistics from meta/ alone (fast; validates nothing else)."""
    meta = _Meta.read(Path(root))
    return _report(meta, meta.read_stats(), checked=False)


def _report(meta: _Meta, stats: dict[str, dict[str, np.ndarray]], *, checked: bool) -> DatasetReport:
    marked = [e["success"] for e in meta.episodes if e.get("success") is not None]
    return DatasetReport(root=meta.root, robot=meta.robot, task=meta.task, fps=meta.fps,
                         episodes=len(meta.episodes), frames=sum(e["length"] for e in meta.episodes),
                         features=meta.features, stats=stats,
                         success_rate=float(np.mean(marked)) if marked else None, checked=checked)


def check_dataset(root: Path, *, task: str | None = None, tolerance_s: float | None = None) -> DatasetReport:
    """Validate a dataset; raise DatasetError naming the episode and file of the first fault.

    Checks meta/ (info, tasks, episodes, stats present and consistent), every episode's rows
    (no frame missing: frame_index 0..T-1 without gaps, the lengths meta/ claims), its time
    stamps against fps (each interval within `tolerance_s` of 1/fps; default a quarter of a
    period), finite values of the declared widths, and that every camera video decodes to
    all its frames (a truncated MP4 names the first episode it cuts).

    task: also check that the features fit this simulator task (robot, observation and
    action sizes), the way a trainer for that task would read them. Resolving the task
    needs the `sim` package (the workstation side), imported only then.
    """
    meta = _Meta.read(Path(root))
    root = meta.root
    stats = meta.read_stats()
    if not (root / TASKS_PATH).is_file():
        raise DatasetError(f"{root / TASKS_PATH}: missing")
    info = meta.info
    if len(meta.episodes) != info["total_episodes"]:
        raise DatasetError(f"{root / INFO_PATH}: total_episodes {info['total_episodes']}, "
                           f"but meta/episodes lists {len(meta.episodes)}")
    for i, row in enumerate(meta.episodes):
        if row["episode_index"] != i:
            raise DatasetError(f"{root / 'meta/episodes'}: episode {i} is missing (next is {row['episode_index']})")
    total = sum(row["length"] for row in meta.episodes)
    if total != info["total_frames"]:
        raise DatasetError(f"{root / INFO_PATH}: total_frames {info['total_frames']}, but the episodes hold {total}")
    if task is not None:
        _check_task(meta, task)
    period = 1.0 / meta.fps
    tolerance = 0.25 * period if tolerance_s is None else tolerance_s
    vectors = [k for k in meta.user_features if not is_video(meta.features[k])]
    tables: dict[Path, pa.Table] = {}
    for row in meta.episodes:
        episode = row["episode_index"]
        path = meta.path(info["data_path"], row, "data")
        name = path.relative_to(root)
        if not path.is_file():
            raise DatasetError(f"episode {episode} ({name}): data file missing")
        if path not in tables:
            tables[path] = _read_parquet(path, root)
            missing = [k for k in (*vectors, *DEFAULT_FEATURES) if k not in tables[path].column_names]
            if missing:
                raise DatasetError(f"{name}: columns {missing} missing")
        table = _episode_rows(tables[path], episode)
        where = f"episode {episode} ({name})"
        frames = table[FRAME_INDEX].to_numpy()
        expected = np.arange(len(frames))
        if len(frames) and not np.array_equal(frames, expected):
            at = int(np.flatnonzero(frames != expected)[0])
            before = int(frames[at - 1]) if at else -1
            raise DatasetError(f"{where}: frame_index jumps from {before} to {int(frames[at])}: "
                               f"frame {before + 1} is missing")
        if len(frames) != row["length"]:
            raise DatasetError(f"{where}: {len(frames)} frames, meta/episodes says {row['length']}: "
                               f"frames {len(frames)}..{row['length'] - 1} are missing")
        index = table[INDEX].to_numpy()
        if not np.array_equal(index, np.arange(row["dataset_from_index"], row["dataset_to_index"])):
            raise DatasetError(f"{where}: index runs {index[:1]}..{index[-1:]}, meta/episodes says "
                               f"{row['dataset_from_index']}..{row['dataset_to_index'] - 1}")
        stamps = table[TIMESTAMP].to_numpy().astype(np.float64)
        if abs(stamps[0]) > tolerance:
            raise DatasetError(f"{where}: the first frame's timestamp is {stamps[0]:.4f} s, expected 0")
        gaps = np.diff(stamps)
        bad = np.flatnonzero(np.abs(gaps - period) > tolerance)
        if len(bad):
            at = int(bad[0])
            raise DatasetError(f"{where}: frame {at + 1} comes {gaps[at]:.4f} s after frame {at}; at {meta.fps:g} fps "
                               f"expected {period:.4f} ± {tolerance:.4f} s ({len(bad)} intervals off; "
                               f"recorded at {1 / np.median(gaps):.3g} fps?)")
        for key in vectors:
            values = _vector(table, key, meta.features[key]["shape"][0], where)
            if not np.all(np.isfinite(values)):
                raise DatasetError(f"{where}: {key}: frame {int(np.flatnonzero(~np.isfinite(values).all(1))[0])} "
                                   f"is not finite")
    for key in meta.cameras:
        for _ in _episode_frames(meta, key):
            pass
    return _report(meta, stats, checked=True)


def _check_task(meta: _Meta, task: str) -> None:
    from s2r.sim.demos import task_features
    from s2r.sim.tasks import make_task

    info_path = meta.root / INFO_PATH
    expected, robot = task_features(task), make_task(task).config.robot
    if meta.robot != robot:
        raise DatasetError(f"{info_path}: robot_type: {meta.robot!r}, task {task} runs robot {robot!r}")
    for key, spec in sorted(expected.items(), key=lambda item: item[0] != ACTION):
        if key not in meta.features:
            raise DatasetError(f"{info_path}: features.{key}: missing; task {task} needs {spec['shape']}")
        shape = list(meta.features[key]["shape"])
        if shape != list(spec["shape"]):
            names = f" ({', '.join(spec['names'])})" if spec.get("names") else ""
            raise DatasetError(f"{info_path}: features.{key}.shape: {shape}, but task {task} has "
                               f"{spec['shape']}{names}")
