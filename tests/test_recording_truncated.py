"""A recording whose writer died (a killed recorder, power lost) reads back to its last complete chunk."""

from __future__ import annotations

import numpy as np
import pytest

from s2r.calibration.recording import RecordingError, RecordingWriter, read_recording
from s2r.spec import robot_spec
from s2r.state import Command, RobotState

PERIOD = 0.02


def record_without_finishing(path, ticks: int) -> None:
    """`ticks` states and commands of the cartpole written in small chunks, the file then left as a
    killed writer leaves it: every finished chunk on disk, no index, no footer."""
    spec = robot_spec("cartpole")
    writer = RecordingWriter(path, spec, chunk_size=2048)
    for i in range(ticks):
        stamp = 100.0 + i * PERIOD
        writer.write_state(RobotState(stamp, np.array([0.01 * i, np.pi]), np.zeros(2), np.zeros(2)))
        writer.write_command(Command(np.array([0.0]), np.zeros(1), np.zeros(1), np.zeros(1), np.array([0.1 * i])),
                             stamp + 0.001)
    writer._file.flush()   # what a killed process leaves: the file as written so far, nothing of finish()


def test_a_recording_cut_off_mid_chunk_reads_to_its_last_complete_chunk(tmp_path):
    path = tmp_path / "killed.mcap"
    record_without_finishing(path, 600)
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(path.read_bytes()[:-37])   # power lost in the middle of the next chunk
    recording = read_recording(cut, robot_spec("cartpole"))
    states = len(recording.state_time)
    assert 500 < states < 600, "more than the last chunk was lost, or a cut-off chunk was read"
    np.testing.assert_allclose(recording.state_time, 100.0 + np.arange(states) * PERIOD)
    np.testing.assert_allclose(recording.q[:, 0], 0.01 * np.arange(states))
    commands = len(recording.command_time)
    np.testing.assert_allclose(recording.commands.tau_ff[:, 0], 0.1 * np.arange(commands))


def test_a_file_that_is_not_a_recording_is_refused_naming_it(tmp_path):
    path = tmp_path / "noise.mcap"
    path.write_bytes(b"not an mcap file at all")
    with pytest.raises(RecordingError, match=f"{path}: not a readable MCAP recording"):
        read_recording(path, robot_spec("cartpole"))
