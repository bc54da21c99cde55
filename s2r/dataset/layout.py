"""The dataset layout: feature keys, file paths and the checks a feature description must pass.

s2r writes LeRobot's codebase v3.0 layout, so LeRobot's tools read it as they read LeRobot's
own push-T (`lerobot/pusht`):

    meta/info.json                              fps, features (dtype, shape, names), totals, path
                                                templates, the recorder's policy contract (s2r_contract)
    meta/stats.json                             per feature: min, max, mean, std, count
    meta/tasks.parquet                          task_index, task
    meta/episodes/chunk-000/file-000.parquet    per episode: length, frame range, files, stats, success
    data/chunk-000/file-000.parquet             per frame: observation.state, observation.environment_state,
                                                action, timestamp, frame_index, episode_index, index, task_index
    videos/observation.images.top/chunk-000/file-000.mp4    H.264, the episodes one after another

    features = check_features({OBS_STATE: {"dtype": "float32", "shape": [4]},
                               ACTION: {"dtype": "float32", "shape": [2]}})
    DATA_PATH.format(chunk_index=0, file_index=0)       # 'data/chunk-000/file-000.parquet'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CODEBASE_VERSION = "v3.0"
OBS_STATE = "observation.state"
"""What the policy observes of the robot: proprioception, commands, its last action (s2r.dataset.observation)."""
OBS_ENV_STATE = "observation.environment_state"
"""What the policy observes of the world outside the robot: the manipulated object's pose."""
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
CONTRACT_KEY = "s2r_contract"
"""meta/info.json's key for the recorder's PolicyContract (the key an ONNX file's metadata uses)."""

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
"""The bookkeeping columns every frame has; the writer adds them."""
NUMERIC_DTYPES = ("float32", "float64", "int64")
STAT_NAMES = ("min", "max", "mean", "std")


class DatasetError(ValueError):
    """A dataset is malformed or misused; the message names the file and, where it applies, the episode."""


def is_video(spec: Mapping[str, Any]) -> bool:
    return spec["dtype"] in ("video", "image")


def check_features(features: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The user features (all but DEFAULT_FEATURES), validated and normalized (shape as a list of ints).

    A vector is {"dtype": one of NUMERIC_DTYPES, "shape": [size], "names": size names or None};
    a camera is `observation.images.NAME` with {"dtype": "video", "shape": [height, width, 3]}, both even.
    """
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
