"""Leader–follower teleoperation between two emulated SO-101 buses: the leader moved by a scripted hand, the follower's
MuJoCo arm driven through the safety filter, and the recording a LeRobot v3 dataset with each frame's measurement times."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from s2r.apps.cli import main
from s2r.dataset import ACTION, OBS_STATE, load_dataset
from s2r.hardware.drivers import open_driver
from s2r.hardware.drivers.feetech import FeetechRobot
from s2r.hardware.emulators.feetech import FeetechServos, HandPlant
from s2r.hardware.emulators.serial_bus import PtyBus
from s2r.hardware.safety import SafetyConfig
from s2r.hardware.teleop.leader_follower import ACTION_STAMP, OBS_STAMP, run_leader_follower
from s2r.sim.motor_plant import MujocoPlant
from s2r.spec import robot_spec

SPEC = robot_spec("so101")
AMPLITUDE = np.array([0.5, 0.4, 0.5, 0.4, 0.8, 0.4])
"""rad of the leader's motion per joint about CENTRE, at 0.25 Hz: up to 1.3 rad/s on the wrist roll."""
CENTRE = np.array([0, 0, 0, 0, 0, 0.6])
"""The gripper moves within its range [-0.17, 1.75] rad."""
TRACKING_P95_RAD = 0.1
"""The stated tracking error: 95 % of the follower's joint errors to the leader stay below it while the hand moves
(measured 0.08: a position servo of kp 17.8 N·m/rad lags a moving goal by (kd + damping) · speed / kp, about
0.07 rad at 1.3 rad/s, plus a tick of transport and the sag under the arm's weight)."""


@pytest.fixture
def arms():
    hand = HandPlant(np.zeros(6))
    leader_servos = FeetechServos(SPEC, hand)
    follower_servos = FeetechServos(SPEC, MujocoPlant(SPEC))
    with PtyBus(leader_servos, baud=1_000_000, faults=leader_servos.faults) as leader_bus, \
            PtyBus(follower_servos, baud=1_000_000, faults=follower_servos.faults) as follower_bus:
        yield hand, leader_bus, follower_bus, leader_servos, follower_servos


def test_the_follower_tracks_the_hand_moved_leader_and_the_run_is_recorded_with_measurement_times(arms, tmp_path):
    hand, leader_bus, follower_bus, leader_servos, follower_servos = arms
    hand.follow(lambda t: CENTRE + AMPLITUDE * np.sin(2 * np.pi * 0.25 * t))
    out = tmp_path / "so101_teleop"
    with FeetechRobot(SPEC, leader_bus.port) as leader, FeetechRobot(SPEC, follower_bus.port) as follower:
        summary = run_leader_follower(leader, follower, duration_s=4.0, record=out,
                                      safety=SafetyConfig(soft_start_s=0.3, fade_in_s=0.3), log=lambda _: None)
    assert summary["loop_failure"] is None, summary
    assert not leader_servos.torque_enabled().any(), "the leader stays torque-free"
    assert summary["tracking_error_p95_rad"] < TRACKING_P95_RAD, summary
    assert summary["frames"] > 100

    episode = load_dataset(out).episodes[0]
    assert episode[OBS_STATE].shape[1] == 6 and episode[ACTION].shape == episode[OBS_STATE].shape
    follower_stamps = episode[OBS_STAMP][:, 0]
    assert np.all(np.diff(follower_stamps) > 0), "one frame per new follower measurement"
    np.testing.assert_allclose(episode["timestamp"], follower_stamps - follower_stamps[0], atol=1e-4)
    lag = follower_stamps - episode[ACTION_STAMP][:, 0]
    assert np.all(np.abs(lag) < 0.05), "each frame's leader reading was taken within the same tick"


def test_a_leader_that_stops_answering_mid_run_sends_the_follower_to_damping(arms):
    hand, leader_bus, follower_bus, _, follower_servos = arms
    hand.follow(lambda t: CENTRE + AMPLITUDE * np.sin(2 * np.pi * 0.25 * t))
    unplug = threading.Timer(1.0, lambda: setattr(leader_bus.faults, "bus_down", True))
    with FeetechRobot(SPEC, leader_bus.port) as leader, FeetechRobot(SPEC, follower_bus.port) as follower:
        unplug.start()
        summary = run_leader_follower(leader, follower, duration_s=2.0, log=lambda _: None,
                                      safety=SafetyConfig(soft_start_s=0.2, fade_in_s=0.2))
        unplug.join()
        held = follower_servos.plant.q
    # After the unplug each leader read waits out its reply timeout, so how many ticks that second holds
    # depends on the machine: that the stale states were seen and gave no command is what counts.
    assert summary["leader_stale"] > 0, "the unplugged leader's stale states give no command"
    assert summary["safety_events"]["watchdog"] > 0, "no leader commands after the fade: the watchdog damps"
    assert np.abs(held - hand.q).max() > 0.05, "the follower stopped following"


def test_arms_with_different_joints_are_refused(arms):
    _, leader_bus, follower_bus, _, _ = arms
    leader = open_driver("sim", robot_spec("arm"))  # not connected: refused before anything moves
    with FeetechRobot(SPEC, follower_bus.port) as follower, pytest.raises(ValueError, match="leader arm has joints"):
        run_leader_follower(leader, follower, duration_s=1.0)


def test_s2r_teleop_runs_leader_follower_from_the_command_line_and_refuses_mixed_modes(arms, tmp_path, capsys):
    hand, leader_bus, follower_bus, _, _ = arms
    hand.follow(lambda t: CENTRE + 0.2 * np.sin(2 * np.pi * 0.25 * t))
    assert main(["teleop", "--leader", f"feetech:{leader_bus.port}", "--follower", f"feetech:{follower_bus.port}",
                 "--duration", "1.5", "--record", str(tmp_path / "rec"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["loop_failure"] is None and summary["frames"] > 50, summary
    assert summary["record"] == str(tmp_path / "rec")
    assert load_dataset(tmp_path / "rec").episodes[0][ACTION].shape[1] == 6
    assert main(["teleop", "reach", "--leader", f"feetech:{leader_bus.port}", "--follower", "feetech:x"]) == 2
    assert "task does not apply to leader-follower teleop" in capsys.readouterr().err
