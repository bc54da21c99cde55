"""`s2r dataset view`: an episode of a dataset in rerun, camera frames and plots on one time line."""

from pathlib import Path

import numpy as np
import pytest

from s2r.dataset import ACTION, OBS_STATE, DatasetWriter

CAMERA = "observation.images.top"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """Two episodes (8 and 12 frames at 10 fps) of a state, an action and a 32×48 camera."""
    root = tmp_path_factory.mktemp("view") / "ds"
    features = {OBS_STATE: {"dtype": "float32", "shape": [2], "names": ["joint_pos.x", "joint_pos.y"]},
                ACTION: {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
                CAMERA: {"dtype": "video", "shape": [32, 48, 3]}}
    y, x = np.mgrid[0:32, 0:48]
    with DatasetWriter(root, fps=10, features=features, robot="pusher", task="push_t") as writer:
        for length in (8, 12):
            for t in range(length):
                image = np.stack([(x * 5 + t * 3) % 256, (y * 7) % 256, np.full_like(x, 60 + t)], -1).astype(np.uint8)
                writer.add_frame({OBS_STATE: np.array([t, -t], np.float32), ACTION: np.array([0.5 * t, 1], np.float32),
                                  CAMERA: image}, timestamp=0.1 * t)
            writer.end_episode(success=length == 12)
    return root


def test_dataset_view_save_writes_an_rrd_that_rerun_reads_back_with_frames_and_plots_on_one_time_line(recorded,
                                                                                                       tmp_path):
    import rerun.chunk

    from s2r.apps.cli import main

    rrd = tmp_path / "episode1.rrd"
    assert main(["dataset", "view", str(recorded), "--episode", "1", "--save", str(rrd)]) == 0
    reader = rerun.chunk.RrdReader(rrd)
    rows: dict[str, int] = {}
    values: dict[str, list[float]] = {}
    for chunk in reader.store().stream():
        if chunk.is_static:
            continue
        assert {"time", "frame"} <= set(chunk.timeline_names)
        rows[chunk.entity_path] = rows.get(chunk.entity_path, 0) + chunk.num_rows
        batch = chunk.to_record_batch()
        for name in batch.schema.names:
            if name.endswith("Scalars:scalars"):
                values.setdefault(chunk.entity_path, []).extend(v[0] for v in batch.column(name).to_pylist())
    # Episode 1 has 12 frames: 12 images and 12 points on each plot, named by the features' names.
    assert rows == {f"/{CAMERA}": 12, "/observation.state/joint_pos.x": 12, "/observation.state/joint_pos.y": 12,
                    "/action/x": 12, "/action/y": 12}
    assert values["/observation.state/joint_pos.y"] == [-t for t in range(12)]
    assert values["/action/x"] == [0.5 * t for t in range(12)]


def test_dataset_view_refuses_an_episode_out_of_range_and_no_display_without_save_in_one_line(recorded, tmp_path,
                                                                                               capsys, monkeypatch):
    from s2r.apps.cli import main

    assert main(["dataset", "view", str(recorded), "--episode", "2", "--save", str(tmp_path / "x.rrd")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"s2r dataset: error: {recorded}: --episode 2: the dataset has episodes 0 to 1"]
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["dataset", "view", str(recorded)]) == 2
    line, = capsys.readouterr().err.splitlines()
    assert line.startswith("s2r dataset: error: no display to open the rerun viewer on: pass --save FILE.rrd")
