"""Videos of what a policy does: `s2r eval --video` and `s2r train --video-every`, rendered off-screen."""

from pathlib import Path

import numpy as np
import pytest

from s2r.dataset.video import decode
from s2r.policies.train import default_config, train


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory) -> Path:
    """A pendulum run directory after two short iterations (a policy that does something, not much)."""
    run = tmp_path_factory.mktemp("pendulum")
    train(default_config("pendulum", num_envs=8, iterations=2), run, progress=False)
    return run


def test_an_evaluation_video_tiles_the_first_worlds_for_the_whole_episode_with_its_overlay(pendulum_run, tmp_path):
    from s2r.policies.evaluate import evaluate
    from s2r.sim.render import TILE, VIDEO_FPS

    video = tmp_path / "eval.mp4"
    result = evaluate(pendulum_run, episodes=3, video=video, video_worlds=2)
    assert result["video"] == str(video)
    assert result["video_still"] == str(tmp_path / "eval.png") and (tmp_path / "eval.png").is_file()
    # Two worlds side by side; one frame per 1/25 s of the 5 s episode, the first (reset) and the last (marked).
    height, width = TILE[0], 2 * TILE[1]
    frames = decode(video, height, width)
    steps = round(5.0 / 0.02)
    every = round(1 / (VIDEO_FPS * 0.02))
    assert len(frames) == result["video_frames"] == steps // every + 2
    first = frames[0].astype(float)
    assert first.std() > 10, "the first frame is blank"
    # The left and right tiles differ (two worlds, two random starts), and the overlay is lit text on a dark band.
    assert np.abs(first[:, : TILE[1]] - first[:, TILE[1]:]).mean() > 1
    assert frames[0][:20, :150].max() > 200
    # The last frame marks each world's end (failure, red: two iterations do not swing a pendulum up).
    last = frames[-1].astype(int)
    border = last[TILE[0] // 2, 1]
    assert border[0] > 150 and border[1] < 120, f"no red end mark: {border}"


def test_eval_refuses_a_video_into_a_missing_or_unwritable_folder_in_one_line_before_evaluating(pendulum_run, tmp_path,
                                                                                             capsys):
    from s2r.apps.cli import main

    assert main(["eval", str(pendulum_run), "--video", str(tmp_path / "no" / "such" / "out.mp4")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"s2r eval: error: --video {tmp_path}/no/such/out.mp4: folder {tmp_path}/no/such does not exist "
        f"(create it first)"]
    assert main(["eval", str(pendulum_run), "--video", "/proc/out.mp4"]) == 2
    line, = capsys.readouterr().err.splitlines()
    assert line.startswith("s2r eval: error: --video /proc/out.mp4: folder /proc cannot be written")
    assert main(["eval", str(pendulum_run), "--worlds", "2"]) == 2
    assert capsys.readouterr().err.splitlines() == ["s2r eval: --worlds applies to --video only"]


@pytest.mark.slow
def test_training_with_video_every_writes_clips_and_shows_them_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(default_config("pendulum", num_envs=8, iterations=2, video_every=2), tmp_path, progress=False)
    clip = tmp_path / "videos" / "iteration_00002.mp4"
    from s2r.sim.render import TILE

    frames = decode(clip, 2 * TILE[0], 2 * TILE[1])
    assert len(frames) > 10 and frames[0].std() > 10
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    image, = events.Images("videos/policy")
    assert image.step == 2 and image.encoded_image_string[:6] == b"GIF89a"
