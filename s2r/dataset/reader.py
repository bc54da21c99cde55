"""Reading a dataset: meta/ parsed with errors that name the file, episodes loaded as arrays.

    dataset = load_dataset(Path("data/push_t"))
    dataset.episodes[0][ACTION]              # (T, A) float32
    dataset.episodes[0][OBS_ENV_STATE]       # (T, 4): the block's x, y, sin yaw, cos yaw
    dataset.contract                         # the recorder's PolicyContract, or None
    load_dataset(root, images=True).episodes[0]["observation.images.top"]   # (T, H, W, 3) uint8
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from s2r.contract import ContractError, PolicyContract
from s2r.dataset.layout import (
    ACTION,
    CODEBASE_VERSION,
    CONTRACT_KEY,
    DEFAULT_FEATURES,
    EPISODE_INDEX,
    FRAME_INDEX,
    INFO_PATH,
    STAT_NAMES,
    STATS_PATH,
    TASKS_PATH,
    TIMESTAMP,
    DatasetError,
    is_video,
)
from s2r.dataset.stats import stats_shape
from s2r.dataset.video import Undecodable, decode


@dataclass
class Meta:
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
    def vectors(self) -> list[str]:
        return [k for k, v in self.user_features.items() if not is_video(v)]

    @property
    def cameras(self) -> list[str]:
        return [k for k, v in self.features.items() if is_video(v)]

    @property
    def contract(self) -> PolicyContract | None:
        """The PolicyContract the recorder stored under `s2r_contract` (None: the recorder had none)."""
        if self.info.get(CONTRACT_KEY) is None:
            return None
        try:
            return PolicyContract.from_dict(self.info[CONTRACT_KEY])
        except ContractError as error:
            raise DatasetError(f"{self.root / INFO_PATH}: {CONTRACT_KEY}: {error}") from None

    @classmethod
    def read(cls, root: Path) -> Meta:
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
            episodes += read_parquet(path, root).to_pylist()
        episodes.sort(key=lambda e: e["episode_index"])
        if not files and info["total_episodes"]:
            raise DatasetError(f"{root / 'meta/episodes'}: missing, info.json says {info['total_episodes']} episodes")
        tasks_path = root / TASKS_PATH
        tasks = read_parquet(tasks_path, root).to_pydict() if tasks_path.is_file() else {}
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
            if key not in raw or any(s not in raw[key] for s in STAT_NAMES):
                raise DatasetError(f"{path}: {key}: missing, or lacks one of {', '.join(STAT_NAMES)}")
            stats[key] = {name: np.asarray(value, dtype=np.float64) for name, value in raw[key].items()}
            for name in STAT_NAMES:
                if stats[key][name].shape != stats_shape(spec):
                    raise DatasetError(f"{path}: {key}.{name}: shape {stats[key][name].shape}, "
                                       f"expected {stats_shape(spec)}")
        for key in DEFAULT_FEATURES:
            if key in raw:
                stats[key] = {name: np.asarray(value, dtype=np.float64) for name, value in raw[key].items()}
        return stats


def read_parquet(path: Path, root: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise DatasetError(f"{path.relative_to(root)}: cannot be read ({error})") from None


def read_vector(table: pa.Table, key: str, size: int, where: str) -> np.ndarray:
    """A vector column as (T, size)."""
    column = table[key].combine_chunks()
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    if len(flat) != len(column) * size:
        raise DatasetError(f"{where}: {key}: rows hold {len(flat) / max(len(column), 1):g} values, "
                           f"features say {size}")
    return flat.reshape(len(column), size)


def episode_rows(table: pa.Table, episode: int) -> pa.Table:
    """Episode `episode`'s rows of a data file, in frame order."""
    rows = table.filter(pc.equal(table[EPISODE_INDEX], episode))
    return rows.take(pc.sort_indices(rows[FRAME_INDEX]))


def episode_frames(meta: Meta, key: str) -> Iterator[np.ndarray]:
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
                decoded[path] = decode(path, height, width)
            except Undecodable as error:
                raise DatasetError(f"{where}: the MP4 cannot be decoded, truncated or corrupt ({error})") from None
        first = round(row[f"videos/{key}/from_timestamp"] * meta.fps)
        frames = decoded[path][first:first + row["length"]]
        if len(frames) != row["length"]:
            raise DatasetError(f"{where}: truncated MP4: {len(frames)} of the episode's {row['length']} frames decode")
        yield frames


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
    """Per episode: each vector feature (T, D) (observation.state, observation.environment_state, action, ...),
    timestamp (T,) s since the episode's first frame, and each camera (T, H, W, 3) uint8 when loaded
    with images=True."""
    success: list[bool | None] = field(default_factory=list)
    """Per episode: whether its recorder marked it a success (None: unmarked)."""
    contract: PolicyContract | None = None
    """The recorder's policy contract (observation terms in order with sizes and scales, action mapping)."""

    @property
    def num_frames(self) -> int:
        return sum(len(e[TIMESTAMP]) for e in self.episodes)

    @property
    def cameras(self) -> list[str]:
        return [k for k, v in self.features.items() if is_video(v)]


def load_dataset(root: Path, *, images: bool = False) -> Dataset:
    """Load the dataset at `root`; camera frames are decoded only with images=True (T×H×W×3 bytes each)."""
    meta = Meta.read(Path(root))
    stats = meta.read_stats()
    tables: dict[Path, pa.Table] = {}
    episodes = []
    for row in meta.episodes:
        path = meta.path(meta.info["data_path"], row, "data")
        where = f"episode {row['episode_index']} ({path.relative_to(meta.root)})"
        if path not in tables:
            if not path.is_file():
                raise DatasetError(f"{where}: data file missing")
            tables[path] = read_parquet(path, meta.root)
        table = episode_rows(tables[path], row["episode_index"])
        episode = {key: read_vector(table, key, meta.features[key]["shape"][0], where) for key in meta.vectors}
        episode[TIMESTAMP] = table[TIMESTAMP].to_numpy()
        episodes.append(episode)
    if images:
        for key in meta.cameras:
            for episode, frames in zip(episodes, episode_frames(meta, key), strict=True):
                episode[key] = frames
    return Dataset(root=meta.root, fps=meta.fps, robot=meta.robot, task=meta.task, features=meta.features,
                   stats=stats, episodes=episodes, success=[row.get("success") for row in meta.episodes],
                   contract=meta.contract)
