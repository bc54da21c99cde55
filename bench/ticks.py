"""The time of a robot's control tick, one read_state and one write_command, as the bus benchmarks measure it."""

from __future__ import annotations

import time

import numpy as np

from s2r.interface import RobotInterface
from s2r.state import Command


def tick_times(robot: RobotInterface, command: Command, ticks: int) -> np.ndarray:
    """Seconds of each of `ticks` back-to-back ticks (read the state, write `command`), shape (ticks,)."""
    times = np.empty(ticks)
    for k in range(ticks):
        start = time.perf_counter()
        robot.read_state()
        robot.write_command(command)
        times[k] = time.perf_counter() - start
    return times
