"""Demonstration datasets in the LeRobot v3 layout: write them episode by episode, load them, check them.

LeRobot's tools read what s2r writes as they read LeRobot's own push-T: the robot's side of the
policy observation in `observation.state`, the manipulated object's pose in
`observation.environment_state`, the action in `action`, cameras as MP4 under
`observation.images.NAME`, and the recorder's PolicyContract in meta/info.json. The package:

    layout        feature keys, file paths, DatasetError, the checks a feature description passes
    observation   a policy observation split into those features and joined back (ObservationLayout)
    stats         per-feature min, max, mean, std, per episode and combined
    video         ffmpeg: encode, decode, join H.264 MP4
    writer        DatasetWriter: episode by episode, crash-safe, appending
    reader        load_dataset → Dataset
    check         dataset_info, check_dataset → DatasetReport; DatasetExpectation

    layout = ObservationLayout(task.config.policy_terms, spec)
    with DatasetWriter(root, fps=10, features={**layout.features(), ACTION: action_feature},
                       robot="pusher", task="push_t", contract=env.contract()) as writer:
        for obs, action, stamp in episode:
            writer.add_frame({**layout.split(obs), ACTION: action}, timestamp=stamp)
        writer.end_episode(success=True)
    dataset = load_dataset(root)                    # dataset.episodes[0][ACTION]: (T, A) float32
    obs = policy_observation(dataset.episodes[0])   # (T, D): what the policy saw, in term order
    report = check_dataset(root)                    # or DatasetError naming the episode and file
"""

from s2r.dataset.check import DatasetExpectation, DatasetReport, check_dataset, dataset_info
from s2r.dataset.layout import (
    ACTION,
    ACTION_PLAN,
    CODEBASE_VERSION,
    CONTRACT_KEY,
    DATA_PATH,
    DEFAULT_FEATURES,
    EPISODE_INDEX,
    EPISODES_PATH,
    FRAME_INDEX,
    IMAGES,
    INDEX,
    INFO_PATH,
    OBS_ENV_STATE,
    OBS_STATE,
    STATS_PATH,
    TASK_INDEX,
    TASKS_PATH,
    TIMESTAMP,
    VIDEO_PATH,
    DatasetError,
    is_video,
)
from s2r.dataset.observation import ObservationLayout, policy_observation
from s2r.dataset.reader import Dataset, load_dataset
from s2r.dataset.stats import aggregate_stats
from s2r.dataset.writer import DatasetWriter

__all__ = [
    "ACTION",
    "ACTION_PLAN",
    "CODEBASE_VERSION",
    "CONTRACT_KEY",
    "DATA_PATH",
    "DEFAULT_FEATURES",
    "EPISODES_PATH",
    "EPISODE_INDEX",
    "FRAME_INDEX",
    "IMAGES",
    "INDEX",
    "INFO_PATH",
    "OBS_ENV_STATE",
    "OBS_STATE",
    "STATS_PATH",
    "TASKS_PATH",
    "TASK_INDEX",
    "TIMESTAMP",
    "VIDEO_PATH",
    "Dataset",
    "DatasetError",
    "DatasetExpectation",
    "DatasetReport",
    "DatasetWriter",
    "ObservationLayout",
    "aggregate_stats",
    "check_dataset",
    "dataset_info",
    "is_video",
    "load_dataset",
    "policy_observation",
]
