"""Writing a dataset episode by episode, so that a crash loses at most the episode being recorded.

A frame's `timestamp` is the time it was captured, as the caller reports it, stored in
seconds since the episode's first frame; it is never derived from the frame's index, so
`check_dataset` can tell a recording that missed its rate.

What the writer guarantees: `end_episode` returns once the episode is on disk, staged under
`.staging/` by an atomic rename, so a crash loses at most the episode being recorded, and a
writer opened on the same root takes the staged episodes back. `close()` merges them into
the dataset's files and writes `meta/` last (`meta/episodes` is the commit point). A
discarded episode leaves no trace. A writer opened on an existing dataset appends to it.

    with DatasetWriter(root, fps=10, features=features, robot="pusher", task="push_t",
                       contract=env.contract()) as writer:
        for obs, action, stamp in episode:
            writer.add_frame({**layout.split(obs), ACTION: action}, timestamp=stamp)
        writer.end_episode(success=True)
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from s2r.contract import PolicyContract
from s2r.dataset.layout import (
    CODEBASE_VERSION,
    CONTRACT_KEY,
    DATA_PATH,
    DEFAULT_FEATURES,
    EPISODE_INDEX,
    EPISODES_PATH,
    FRAME_INDEX,
    INDEX,
    INFO_PATH,
    STAGING,
    STATS_PATH,
    TASK_INDEX,
    TASKS_PATH,
    TIMESTAMP,
    VIDEO_PATH,
    DatasetError,
    check_features,
    is_video,
)
from s2r.dataset.reader import Meta
from s2r.dataset.stats import RunningStats, aggregate_stats, episode_stats, stats_shape, vector_stats
from s2r.dataset.video import VIDEO_CODEC, VideoEncoder, concat_videos

log = logging.getLogger(__name__)


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

    features: the recorded features besides the bookkeeping ones (s2r.dataset.layout.check_features), e.g.
        {"observation.state": {"dtype": "float32", "shape": [4], "names": [...]},
         "observation.environment_state": {"dtype": "float32", "shape": [4], "names": [...]},
         "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
         "observation.images.top": {"dtype": "video", "shape": [96, 96, 3]}}
    fps: the rate the frames are captured at, Hz; robot: the robot's name (`robot_type`);
    task: the task the episodes demonstrate; contract: the policy contract of what the frames
    hold (observation terms, action mapping), stored in meta/info.json as `s2r_contract`. A root
    that holds a dataset is appended to, and must agree on all of them (a contract but for its
    provenance).
    """

    def __init__(self, root: Path, *, fps: float, features: Mapping[str, Mapping[str, Any]], robot: str,
                 task: str, contract: PolicyContract | None = None) -> None:
        if not fps > 0:
            raise DatasetError(f"fps: expected > 0, got {fps}")
        if contract is not None and contract.robot != robot:
            raise DatasetError(f"contract.robot: {contract.robot!r}, but the dataset's robot is {robot!r}")
        self.root = Path(root)
        self.fps = float(fps)
        self.features = check_features(features)
        self.robot = robot
        self.task = task
        self.contract = contract
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
        stats = {key: vector_stats(np.stack(self._buffers[key])) for key in self._vectors}
        stats |= {key: self._image_stats[key].result() for key in self._cameras}
        for key in (TIMESTAMP, FRAME_INDEX, EPISODE_INDEX, INDEX, TASK_INDEX):
            stats[key] = vector_stats(columns[key].to_numpy()[:, None])
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
        self._encoders: dict[str, VideoEncoder] = {}
        self._image_stats = {key: RunningStats.empty(3) for key in self._cameras}
        self._tmp = self._staging / f"episode-{self.num_episodes:06d}.tmp"
        if self._tmp.exists():
            shutil.rmtree(self._tmp)

    def _encoder(self, key: str) -> VideoEncoder:
        if key not in self._encoders:
            self._tmp.mkdir(parents=True, exist_ok=True)
            height, width, _ = self.features[key]["shape"]
            self._encoders[key] = VideoEncoder(self._tmp / f"{key}.mp4", height, width, self.fps)
        return self._encoders[key]

    def _open_existing(self) -> list[dict[str, Any]]:
        """The committed episodes of the dataset at root, after checking that it matches this writer."""
        meta = Meta.read(self.root)
        for name, mine, theirs in (("fps", self.fps, meta.fps), ("robot", self.robot, meta.robot),
                                   ("task", self.task, meta.task)):
            if mine != theirs:
                raise DatasetError(f"{self.root / INFO_PATH}: {name}: the dataset has {theirs!r}, "
                                   f"the writer {mine!r}; write to another root")
        theirs = {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in meta.user_features.items()}
        mine = {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in self.features.items()}
        if theirs != mine:
            raise DatasetError(f"{self.root / INFO_PATH}: features: the dataset has {theirs}, the writer {mine}")
        if meta.contract is not None and self.contract is not None:
            theirs, mine = _without_provenance(meta.contract), _without_provenance(self.contract)
            differ = sorted(k for k in mine if theirs.get(k) != mine[k])
            if differ:
                raise DatasetError(f"{self.root / INFO_PATH}: {CONTRACT_KEY}.{differ[0]}: the dataset has "
                                   f"{theirs.get(differ[0])}, the writer {mine[differ[0]]}; write to another root")
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
            _write_atomic(video_path, lambda tmp: concat_videos(parts, tmp, frames=frames))
        self._place(episodes)
        features = {**self.features, **DEFAULT_FEATURES}
        stats = {}
        for key, spec in features.items():
            combined = aggregate_stats([episode_stats(e, key) for e in episodes])
            stats[key] = {name: value if name == "count" else value.reshape(stats_shape(spec))
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
            CONTRACT_KEY: None if self.contract is None else self.contract.to_dict(),
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


def _without_provenance(contract: PolicyContract) -> dict[str, Any]:
    return {k: v for k, v in contract.to_dict().items() if k != "provenance"}
