"""Checking a dataset: totals and statistics from meta/ (`dataset_info`), every frame and video (`check_dataset`).

`check_dataset` can also check that the dataset fits a consumer, given as plain data (a
DatasetExpectation: the robot and the feature shapes it reads), so that the core never needs to
know the simulator's tasks; `s2r.sim.task_dataset.task_expectation("push_t")` gives a task's.

    print(dataset_info(root).format())                  # meta/ only: fast
    report = check_dataset(root, expect=DatasetExpectation("task push_t", "pusher", features))
    report.to_dict()                                     # or DatasetError naming the episode and file
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from s2r.contract import PolicyContract
from s2r.dataset.layout import (
    ACTION,
    CONTRACT_KEY,
    DEFAULT_FEATURES,
    FRAME_INDEX,
    INDEX,
    INFO_PATH,
    STAT_NAMES,
    TASKS_PATH,
    TIMESTAMP,
    DatasetError,
    is_video,
)
from s2r.dataset.reader import Meta, episode_frames, episode_rows, read_parquet, read_vector


@dataclass(frozen=True)
class DatasetExpectation:
    """What a consumer of a dataset (a task's trainer) needs of it: the robot and the features it reads."""

    consumer: str
    """Named in errors: "task push_t"."""
    robot: str
    """The robot's name the dataset's `robot_type` must be."""
    features: Mapping[str, Mapping[str, Any]]
    """Feature key → {"shape": [size], "names": [...] or None}: each must be in the dataset with this shape."""
    observation: tuple[tuple[str, int, float], ...] = ()
    """The policy observation's terms in order, (name, size, scale): a dataset whose recorder stored a contract
    must list the same."""

    def check(self, root: Path, robot: str, features: Mapping[str, Mapping[str, Any]],
              contract: PolicyContract | None = None) -> None:
        """Raise DatasetError naming root's meta/info.json and the first field that does not fit: the robot,
        the features (the action first), the contract's observation terms."""
        info_path = Path(root) / INFO_PATH
        if robot != self.robot:
            raise DatasetError(f"{info_path}: robot_type: {robot!r}, {self.consumer} runs robot {self.robot!r}")
        for key, spec in sorted(self.features.items(), key=lambda item: item[0] != ACTION):
            if key not in features:
                raise DatasetError(f"{info_path}: features.{key}: missing; {self.consumer} needs {spec['shape']}")
            shape = list(features[key]["shape"])
            if shape != list(spec["shape"]):
                names = f" ({', '.join(spec['names'])})" if spec.get("names") else ""
                raise DatasetError(f"{info_path}: features.{key}.shape: {shape}, but {self.consumer} has "
                                   f"{list(spec['shape'])}{names}")
        if contract is not None and self.observation:
            theirs = tuple(zip((t.name for t in contract.observation), contract.observation_sizes,
                               (t.scale for t in contract.observation), strict=True))
            if theirs != self.observation:
                raise DatasetError(f"{info_path}: {CONTRACT_KEY}.observation: the frames hold {_terms(theirs)}, "
                                   f"{self.consumer} observes {_terms(self.observation)}")


def _terms(terms: tuple[tuple[str, int, float], ...]) -> str:
    return ", ".join(f"{name}[{size}]×{scale:g}" for name, size, scale in terms)


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
            values = {n: np.asarray(self.stats[key][n]).reshape(-1) for n in STAT_NAMES}
            for i in range(len(values["mean"])):
                label = names[i] if names and i < len(names) else str(i)
                lines.append(f"    {label:>16}  min {values['min'][i]:+.4g}  max {values['max'][i]:+.4g}  "
                             f"mean {values['mean'][i]:+.4g}  std {values['std'][i]:.4g}")
        return "\n".join(lines)


def dataset_info(root: Path) -> DatasetReport:
    """Totals, features and statistics from meta/ alone (fast; validates nothing else)."""
    meta = Meta.read(Path(root))
    return _report(meta, meta.read_stats(), checked=False)


def _report(meta: Meta, stats: dict[str, dict[str, np.ndarray]], *, checked: bool) -> DatasetReport:
    marked = [e["success"] for e in meta.episodes if e.get("success") is not None]
    return DatasetReport(root=meta.root, robot=meta.robot, task=meta.task, fps=meta.fps,
                         episodes=len(meta.episodes), frames=sum(e["length"] for e in meta.episodes),
                         features=meta.features, stats=stats,
                         success_rate=float(np.mean(marked)) if marked else None, checked=checked)


def check_dataset(root: Path, *, expect: DatasetExpectation | None = None,
                  tolerance_s: float | None = None) -> DatasetReport:
    """Validate a dataset; raise DatasetError naming the episode and file of the first fault.

    Checks meta/ (info, tasks, episodes, stats present and consistent), every episode's rows
    (no frame missing: frame_index 0..T-1 without gaps, the lengths meta/ claims), its time
    stamps against fps (each interval within `tolerance_s` of 1/fps; default a quarter of a
    period), finite values of the declared widths, and that every camera video decodes to
    all its frames (a truncated MP4 names the first episode it cuts).

    expect: also check that the robot and the features fit this consumer, the way it would read
    them (a simulator task's: `s2r.sim.task_dataset.task_expectation`).
    """
    meta = Meta.read(Path(root))
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
    if expect is not None:
        expect.check(root, meta.robot, meta.features, meta.contract)
    period = 1.0 / meta.fps
    tolerance = 0.25 * period if tolerance_s is None else tolerance_s
    tables: dict[Path, pa.Table] = {}
    for row in meta.episodes:
        episode = row["episode_index"]
        path = meta.path(info["data_path"], row, "data")
        name = path.relative_to(root)
        if not path.is_file():
            raise DatasetError(f"episode {episode} ({name}): data file missing")
        if path not in tables:
            tables[path] = read_parquet(path, root)
            missing = [k for k in (*meta.vectors, *DEFAULT_FEATURES) if k not in tables[path].column_names]
            if missing:
                raise DatasetError(f"{name}: columns {missing} missing")
        table = episode_rows(tables[path], episode)
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
        for key in meta.vectors:
            values = read_vector(table, key, meta.features[key]["shape"][0], where)
            if not np.all(np.isfinite(values)):
                raise DatasetError(f"{where}: {key}: frame {int(np.flatnonzero(~np.isfinite(values).all(1))[0])} "
                                   f"is not finite")
    for key in meta.cameras:
        for _ in episode_frames(meta, key):
            pass
    return _report(meta, stats, checked=True)
