"""Datasets: what is written is what is read, and a damaged dataset is refused with the episode and file named."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from s2r.dataset import (
    ACTION,
    OBS_ENV_STATE,
    OBS_STATE,
    DatasetError,
    DatasetWriter,
    check_dataset,
    dataset_info,
    load_dataset,
)
from s2r.observations import ObsTerm
from s2r.sim.demos import record_demos
from s2r.sim.env import BatchEnv
from s2r.sim.task_dataset import task_expectation
from s2r.sim.tasks import make_task

CAMERA = "observation.images.top"
DATA = "data/chunk-000/file-000.parquet"
VIDEO = f"videos/{CAMERA}/chunk-000/file-000.mp4"


def features(image: bool = False, actions: int = 2) -> dict:
    out = {OBS_STATE: {"dtype": "float32", "shape": [4], "names": list("abcd")},
           OBS_ENV_STATE: {"dtype": "float32", "shape": [4], "names": list("efgh")},
           ACTION: {"dtype": "float32", "shape": [actions], "names": None}}
    if image:
        out[CAMERA] = {"dtype": "video", "shape": [32, 48, 3]}
    return out


def make_episode(rng, length: int, image: bool = False, actions: int = 2) -> dict:
    """Random frames, captured every 0.1 s with jitter from an arbitrary clock."""
    episode = {OBS_STATE: rng.normal(size=(length, 4)).astype(np.float32),
               OBS_ENV_STATE: rng.normal(size=(length, 4)).astype(np.float32),
               ACTION: rng.uniform(-1, 1, (length, actions)).astype(np.float32),
               "stamps": 1000.0 + 0.1 * np.arange(length) + rng.uniform(-0.01, 0.01, length)}
    if image:
        # Smooth images, so that H.264 keeps them close.
        y, x = np.mgrid[0:32, 0:48]
        episode[CAMERA] = np.stack([np.stack([(x * 5 + t * 3) % 256, (y * 7) % 256, np.full_like(x, 60 + t)], -1)
                                    for t in range(length)]).astype(np.uint8)
    return episode


def write(writer: DatasetWriter, episode: dict, success=None) -> None:
    for t, stamp in enumerate(episode["stamps"]):
        writer.add_frame({k: v[t] for k, v in episode.items() if k != "stamps"}, timestamp=stamp)
    writer.end_episode(success=success)


def dataset(root: Path, episodes: list[dict], image: bool = False, actions: int = 2) -> Path:
    with DatasetWriter(root, fps=10, features=features(image, actions), robot="pusher", task="push_t") as writer:
        for episode in episodes:
            write(writer, episode)
    return root


@pytest.fixture(scope="module")
def video_dataset(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    return dataset(tmp_path_factory.mktemp("video") / "ds", [make_episode(rng, n, image=True) for n in (12, 9, 15)],
                   image=True)


def damaged(source: Path, tmp_path: Path) -> Path:
    root = tmp_path / "damaged"
    shutil.copytree(source, root)
    return root


def test_a_written_dataset_loads_back_with_the_same_frames_stats_and_capture_times(tmp_path):
    rng = np.random.default_rng(1)
    episodes = [make_episode(rng, n) for n in (7, 11, 5)]
    with DatasetWriter(tmp_path / "ds", fps=10, features=features(), robot="pusher", task="push_t") as writer:
        for episode, success in zip(episodes, (True, False, None), strict=True):
            write(writer, episode, success)
    loaded = load_dataset(tmp_path / "ds")
    assert (loaded.fps, loaded.robot, loaded.task, loaded.num_frames) == (10.0, "pusher", "push_t", 23)
    assert loaded.success == [True, False, None]
    for written, read in zip(episodes, loaded.episodes, strict=True):
        for key in (OBS_STATE, OBS_ENV_STATE, ACTION):
            assert np.array_equal(read[key], written[key])
        # Time stamps are the capture times given, from the episode's first frame, not index / fps.
        assert np.allclose(read["timestamp"], written["stamps"] - written["stamps"][0], atol=1e-5)
    for key in (OBS_STATE, OBS_ENV_STATE, ACTION):
        values = np.concatenate([e[key] for e in episodes]).astype(np.float64)
        stats = loaded.stats[key]
        assert np.allclose(stats["mean"], values.mean(0)) and np.allclose(stats["std"], values.std(0))
        assert np.allclose(stats["min"], values.min(0)) and np.allclose(stats["max"], values.max(0))
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 23
    assert info["features"][OBS_STATE]["names"] == list("abcd")
    assert info["features"][OBS_ENV_STATE]["names"] == list("efgh")
    rows = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 7), (7, 18), (18, 23)]
    assert pq.read_table(tmp_path / "ds" / DATA).column_names == [
        OBS_STATE, OBS_ENV_STATE, ACTION, "timestamp", "frame_index", "episode_index", "index", "task_index"]
    report = check_dataset(tmp_path / "ds", expect=task_expectation("push_t"))
    assert (report.episodes, report.frames, report.success_rate) == (3, 23, 0.5)


def test_camera_frames_round_trip_through_mp4(video_dataset):
    loaded = load_dataset(video_dataset, images=True)
    rng = np.random.default_rng(0)
    expected = [make_episode(rng, n, image=True)[CAMERA] for n in (12, 9, 15)]
    for episode, frames in zip(loaded.episodes, expected, strict=True):
        assert episode[CAMERA].shape == frames.shape and episode[CAMERA].dtype == np.uint8
        assert np.abs(episode[CAMERA].astype(int) - frames).mean() < 3  # H.264 is lossy
    assert loaded.stats[CAMERA]["mean"].shape == (3, 1, 1)
    assert np.allclose(loaded.stats[CAMERA]["mean"].reshape(3), np.concatenate(expected).mean((0, 1, 2)) / 255)
    assert CAMERA not in load_dataset(video_dataset).episodes[0]


def test_a_missing_frame_is_named_with_its_episode_and_file(tmp_path):
    root = dataset(tmp_path / "ds", [make_episode(np.random.default_rng(2), n) for n in (6, 8)])
    table = pq.read_table(root / DATA)
    keep = pc.invert(pc.and_(pc.equal(table["episode_index"], 1), pc.equal(table["frame_index"], 4)))
    pq.write_table(table.filter(keep), root / DATA)
    with pytest.raises(DatasetError, match=rf"episode 1 \({DATA}\): frame_index jumps from 3 to 5: frame 4 is missing"):
        check_dataset(root)


def test_time_stamps_that_disagree_with_fps_are_named_with_their_episode_and_file(tmp_path):
    root = dataset(tmp_path / "ds", [make_episode(np.random.default_rng(3), 6)])
    info = json.loads((root / "meta/info.json").read_text())
    info["fps"] = 30
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=rf"episode 0 \({DATA}\): frame 1 comes 0.1\d* s after frame 0; at 30 fps"):
        check_dataset(root)


def test_a_missing_stats_file_is_named(tmp_path, video_dataset):
    root = damaged(video_dataset, tmp_path)
    (root / "meta/stats.json").unlink()
    with pytest.raises(DatasetError, match=r"meta/stats.json: missing"):
        check_dataset(root)
    with pytest.raises(DatasetError, match=r"meta/stats.json: missing"):
        load_dataset(root)


def test_a_truncated_mp4_is_named_with_the_first_episode_it_cuts(tmp_path, video_dataset):
    root = damaged(video_dataset, tmp_path)
    video = root / VIDEO
    with open(video, "r+b") as file:
        file.truncate(int(video.stat().st_size * 0.7))
    with pytest.raises(DatasetError, match=rf"episode [12] \({VIDEO}\): truncated MP4"):
        check_dataset(root)
    with open(video, "r+b") as file:
        file.truncate(200)
    with pytest.raises(DatasetError, match=rf"episode 0 \({VIDEO}\): the MP4 cannot be decoded"):
        check_dataset(root)


def test_a_dataset_whose_actions_do_not_fit_the_task_is_refused(tmp_path):
    root = dataset(tmp_path / "ds", [make_episode(np.random.default_rng(4), 5, actions=3)], actions=3)
    check_dataset(root)
    with pytest.raises(DatasetError, match=r"meta/info.json: features.action.shape: \[3\], but task push_t has \[2\]"):
        check_dataset(root, expect=task_expectation("push_t"))


def test_a_discarded_episode_leaves_no_trace(tmp_path):
    rng = np.random.default_rng(5)
    kept = [make_episode(rng, 6, image=True), make_episode(rng, 4, image=True)]
    unplugged = make_episode(rng, 9, image=True)
    with DatasetWriter(tmp_path / "a", fps=10, features=features(True), robot="pusher", task="push_t") as writer:
        write(writer, kept[0])
        for t in range(5):  # the device goes away mid-episode
            writer.add_frame({k: v[t] for k, v in unplugged.items() if k != "stamps"}, timestamp=unplugged["stamps"][t])
        writer.discard_episode()
        write(writer, kept[1])
    dataset(tmp_path / "b", kept, image=True)
    files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*"))  # noqa: E731
    assert files(tmp_path / "a") == files(tmp_path / "b")
    for name in ("meta/episodes/chunk-000/file-000.parquet", DATA, "meta/stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert check_dataset(tmp_path / "a").frames == 10


def test_a_crash_loses_only_the_episode_being_recorded_and_a_later_writer_appends(tmp_path):
    rng = np.random.default_rng(6)
    episodes = [make_episode(rng, n, image=True) for n in (5, 7, 6, 4)]
    crashed = DatasetWriter(tmp_path / "ds", fps=10, features=features(True), robot="pusher", task="push_t")
    write(crashed, episodes[0])
    write(crashed, episodes[1])
    crashed.add_frame({k: v[0] for k, v in episodes[2].items() if k != "stamps"}, timestamp=0.0)
    del crashed  # the process dies: close() never runs
    with DatasetWriter(tmp_path / "ds", fps=10, features=features(True), robot="pusher", task="push_t") as writer:
        assert writer.num_episodes == 2
        write(writer, episodes[2])
    with DatasetWriter(tmp_path / "ds", fps=10, features=features(True), robot="pusher", task="push_t") as writer:
        write(writer, episodes[3])
    report = check_dataset(tmp_path / "ds")
    assert (report.episodes, report.frames) == (4, 22)
    loaded = load_dataset(tmp_path / "ds", images=True)
    for written, read in zip(episodes, loaded.episodes, strict=True):
        assert np.array_equal(read[ACTION], written[ACTION]) and len(read[CAMERA]) == len(written[CAMERA])
    assert not (tmp_path / "ds/.staging").exists()
    with pytest.raises(DatasetError, match="fps"):
        DatasetWriter(tmp_path / "ds", fps=30, features=features(True), robot="pusher", task="push_t")


def test_frames_that_do_not_match_the_features_are_refused(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", fps=10, features=features(), robot="pusher", task="push_t")
    with pytest.raises(DatasetError, match=r"action: expected shape \(2,\), got \(3,\)"):
        writer.add_frame({OBS_STATE: np.zeros(4), OBS_ENV_STATE: np.zeros(4), ACTION: np.zeros(3)}, timestamp=0.0)
    with pytest.raises(DatasetError, match=r"missing features \['action'\]"):
        writer.add_frame({OBS_STATE: np.zeros(4), OBS_ENV_STATE: np.zeros(4)}, timestamp=0.0)
    writer.add_frame({OBS_STATE: np.zeros(4), OBS_ENV_STATE: np.zeros(4), ACTION: np.zeros(2)}, timestamp=0.0)
    with pytest.raises(DatasetError, match="timestamp"):
        writer.add_frame({OBS_STATE: np.zeros(4), OBS_ENV_STATE: np.zeros(4), ACTION: np.zeros(2)}, timestamp=0.0)
    writer.close()
    assert not (tmp_path / "ds/meta").exists(), "an unfinished episode is not written"


def test_scripted_push_t_demonstrations_record_state_action_image_and_sim_time(tmp_path):
    result = record_demos("push_t", episodes=2, out=tmp_path / "demos", image=True, seed=2, num_envs=2)
    assert result["episodes"] == 2 and result["success_rate"] > 0
    report = check_dataset(tmp_path / "demos", expect=task_expectation("push_t"))
    assert report.frames == result["frames"] and report.fps == 10
    loaded = load_dataset(tmp_path / "demos", images=True)
    episode = loaded.episodes[0]
    length = len(episode["timestamp"])
    assert episode[OBS_STATE].shape == (length, 4) and episode[OBS_ENV_STATE].shape == (length, 4)
    assert episode[ACTION].shape == (length, 2)
    assert episode[CAMERA].shape == (length, 96, 96, 3)
    assert np.allclose(episode["timestamp"], 0.1 * np.arange(length), atol=1e-5)
    # The action is the raw policy output: the next position target over the action scale, in [-1, 1].
    assert np.abs(episode[ACTION]).max() <= 1.0
    assert dataset_info(tmp_path / "demos").episodes == 2


def test_a_crash_inside_close_before_meta_is_written_keeps_every_finished_episode_once(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    episodes = [make_episode(rng, n, image=True) for n in (5, 6, 7, 8)]
    dataset(tmp_path / "ds", episodes[:2], image=True)
    writer = DatasetWriter(tmp_path / "ds", fps=10, features=features(True), robot="pusher", task="push_t")
    write(writer, episodes[2])
    write(writer, episodes[3])
    def die(*_):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # data and video are merged, then the process dies before meta/
        patch.setattr(DatasetWriter, "_info", die)
        with pytest.raises(KeyboardInterrupt):
            writer.close()
    DatasetWriter(tmp_path / "ds", fps=10, features=features(True), robot="pusher", task="push_t").close()
    assert check_dataset(tmp_path / "ds").frames == 26
    loaded = load_dataset(tmp_path / "ds", images=True)
    for written, read in zip(episodes, loaded.episodes, strict=True):
        assert np.array_equal(read[ACTION], written[ACTION])
        assert np.abs(read[CAMERA].astype(int) - written[CAMERA]).mean() < 3


def test_inspecting_and_checking_a_dataset_imports_neither_torch_nor_mujoco(tmp_path):
    # A robot computer without torch or MuJoCo can inspect what it recorded: s2r dataset info, and check.
    root = dataset(tmp_path / "ds", [make_episode(np.random.default_rng(8), 6)])
    script = f"""
import os, sys
sys.modules["torch"] = None
sys.modules["mujoco"] = None
from s2r.apps.cli import main
from s2r.dataset import check_dataset, load_dataset
assert main(["dataset", "info", {str(root)!r}]) == 0
assert main(["dataset", "check", {str(root)!r}]) == 0
assert check_dataset({str(root)!r}).frames == load_dataset({str(root)!r}).num_frames == 6
assert "MUJOCO_GL" not in os.environ
"""
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "6 frames" in done.stdout and "checked: ok" in done.stdout


def test_a_dataset_recorded_with_other_observation_scales_is_refused_for_the_task(tmp_path):
    # Sizes alone would pass: the contract in meta/info.json says the frames hold joint_vel × 0.2.
    env = BatchEnv(make_task("push_t"), 1)
    scaled = replace(env.contract(), observation=(ObsTerm("joint_pos"), ObsTerm("joint_vel", scale=0.2),
                                                  ObsTerm("object_pose")))
    rng = np.random.default_rng(9)
    with DatasetWriter(tmp_path / "ds", fps=10, features=features(), robot="pusher", task="push_t",
                       contract=scaled) as writer:
        write(writer, make_episode(rng, 5))
    assert load_dataset(tmp_path / "ds").contract == scaled
    with pytest.raises(DatasetError, match=r"s2r_contract.observation: the frames hold .*joint_vel\[2\]×0.2.*"
                                           r"task push_t observes .*joint_vel\[2\]×1,"):
        check_dataset(tmp_path / "ds", expect=task_expectation("push_t"))
    with pytest.raises(DatasetError, match=r"s2r_contract.observation: the dataset has"):
        DatasetWriter(tmp_path / "ds", fps=10, features=features(), robot="pusher", task="push_t",
                      contract=env.contract())
