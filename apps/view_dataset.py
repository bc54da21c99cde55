"""`s2r dataset view DIR`: one episode of a dataset in rerun, as LeRobot shows its datasets.

Camera frames, every state and action dimension as a plot (named by the features' `names`), on
one time line (`time`, seconds since the episode's first frame, and `frame`). The rerun viewer
is spawned (it needs a display); `save` writes an .rrd file instead, for a headless machine, to
open elsewhere with `rerun FILE.rrd`.

    view_dataset(Path("data/push_t"), episode=3, save=Path("push_t_3.rrd"))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from s2r.dataset import load_dataset
from s2r.dataset.layout import TIMESTAMP


def view_dataset(root: Path, *, episode: int = 0, save: Path | None = None) -> dict[str, Any]:
    """Show (or with `save`, write as .rrd) episode `episode` of the dataset at `root`; what was shown."""
    import rerun as rr

    if save is not None:
        save = Path(save)
        if save.suffix != ".rrd":
            raise ValueError(f"--save {save}: expected a .rrd file")
        if not save.parent.is_dir():
            raise ValueError(f"--save {save}: folder {save.parent} does not exist (create it first)")
    elif not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise ValueError("no display to open the rerun viewer on: pass --save FILE.rrd and open it with "
                         "`rerun FILE.rrd` where there is one")
    dataset = load_dataset(Path(root), images=True)
    if not 0 <= episode < len(dataset.episodes):
        raise ValueError(f"{root}: --episode {episode}: the dataset has episodes 0 to {len(dataset.episodes) - 1}")
    frames = dataset.episodes[episode]
    stamps = frames[TIMESTAMP]
    recording = rr.RecordingStream("s2r dataset", recording_id=f"{Path(root).resolve()}#{episode}")
    if save is not None:
        recording.save(save)
    else:
        recording.spawn()
    indexes = [rr.TimeColumn("time", duration=stamps), rr.TimeColumn("frame", sequence=np.arange(len(stamps)))]
    plotted = []
    for key, values in frames.items():
        if key == TIMESTAMP or key in dataset.cameras:
            continue
        names = dataset.features[key].get("names") or [str(i) for i in range(values.shape[1])]
        for column, name in enumerate(names):
            recording.send_columns(f"{key}/{name}", indexes=indexes,
                                   columns=rr.Scalars.columns(scalars=values[:, column].astype(np.float64)))
            plotted.append(f"{key}/{name}")
    for camera in dataset.cameras:
        for index, (stamp, image) in enumerate(zip(stamps, frames[camera])):
            recording.set_time("time", duration=float(stamp))
            recording.set_time("frame", sequence=index)
            recording.log(camera, rr.Image(image))
    recording.flush()
    if save is not None:
        recording.disconnect()
    return {"dataset": str(root), "episode": episode, "frames": len(stamps), "cameras": dataset.cameras,
            "plots": plotted, "success": dataset.success[episode], "saved": str(save) if save else None}
