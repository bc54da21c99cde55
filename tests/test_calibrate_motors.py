"""Motor calibration against an emulated SO-101 moved by a scripted hand: homing, a reversed servo found by its
motion, recorded ranges, and LeRobot's calibration JSON read into the same file format."""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from s2r.apps.cli import main
from s2r.calibration.motors import CalibrationSettings, from_lerobot, run_calibrate_motors
from s2r.hardware.drivers.feetech import FeetechRobot
from s2r.hardware.drivers.feetech_bus import FeetechBus
from s2r.hardware.drivers.feetech_protocol import Register, register_bytes
from s2r.hardware.emulators.feetech import FeetechServos, HandPlant
from s2r.hardware.emulators.serial_bus import PtyBus
from s2r.hardware.motors import MotorCalibrationError, default_calibration, read_motor_calibration
from s2r.spec import robot_spec

SPEC = robot_spec("so101")
TICKS_PER_RAD = 4096 / (2 * math.pi)


def mounting(zero_ticks: dict[int, int], reversed_ids=()):
    """How the servos sit on the emulated arm: encoder tick at each joint's zero, and the reversed ones."""
    motors = default_calibration(SPEC, "STS3215").motors
    return replace(default_calibration(SPEC, "STS3215"), motors=tuple(
        replace(m, offset=zero_ticks.get(m.id, 2048) / TICKS_PER_RAD, direction=-1 if m.id in reversed_ids else 1)
        for m in motors))


MOUNTING = mounting({1: 1700, 3: 2300, 6: 2600}, reversed_ids=(3,))
"""Servo 3 (elbow_flex) is mounted the other way round; servos 1, 3 and 6 were assembled off-centre."""


def through(points: list[np.ndarray], seconds: float):
    """A path through `points` (each (6,) rad), a straight smoothstep segment of `seconds` to each, then held."""
    def path(t: float) -> np.ndarray:
        k = min(int(t // seconds), len(points) - 2)
        s = min(max(t / seconds - k, 0.0), 1.0)
        return points[k] + (points[k + 1] - points[k]) * (3 * s**2 - 2 * s**3)
    return path


class Hand:
    """The operator: does what each step asks, on the emulated arm."""

    def __init__(self, plant: HandPlant) -> None:
        self.plant = plant
        self.sweep_ends = math.inf
        self.steps: list[str] = []

    def tell(self, step: str, message: str) -> None:
        self.steps.append(step)
        if step == "home":
            self.plant.move_to(np.zeros(6), 0.1)
            time.sleep(0.3)
        elif step.startswith("direction:"):
            i = SPEC.joint_names.index(step.split(":")[1])
            bump = np.zeros(6)
            bump[i] = 0.4
            self.plant.follow(lambda t: bump * math.sin(math.pi * min(t / 0.5, 1.0)))
        elif step == "range":
            zero, lower, upper = np.zeros(6), SPEC.lower, SPEC.upper
            start = self.plant.time
            self.plant.follow(through([self.plant.q, zero, lower, lower, upper, upper, zero], 0.25))
            self.sweep_ends = start + 6 * 0.25

    def done(self) -> bool:
        return self.plant.time >= self.sweep_ends


@pytest.fixture
def hand_moved_arm():
    plant = HandPlant(np.array([0.3, -0.2, 0.1, 0.0, 0.5, 0.2]))
    servos = FeetechServos(SPEC, plant, mounting=MOUNTING)
    with PtyBus(servos, baud=1_000_000, faults=servos.faults) as bus:
        yield plant, bus


def test_calibration_finds_the_reversed_servo_the_offsets_and_the_ranges_and_the_arm_then_reads_true(
        hand_moved_arm, tmp_path):
    plant, bus = hand_moved_arm
    hand = Hand(plant)
    out = tmp_path / "so101_motors.yaml"
    summary = run_calibrate_motors(f"feetech:{bus.port}", SPEC, out, operator=hand,
                                   settings=CalibrationSettings(step_timeout_s=10))
    assert summary["reversed"] == ["elbow_flex"], "the servo mounted the other way round is found by its motion"
    assert hand.steps == ["home"] + [f"direction:{n}" for n in SPEC.joint_names] + ["range"]
    calibration = read_motor_calibration(out, SPEC)
    offsets = np.array([m.offset for m in calibration.motors]) * TICKS_PER_RAD
    assert np.abs(offsets - [1700, 2048, 2300, 2048, 2048, 2600]).max() <= 1
    ranges = np.array([m.range for m in calibration.motors])
    assert np.abs(ranges - np.stack([SPEC.lower, SPEC.upper], axis=1)).max() < 0.02, "the sweep's ends are recorded"
    assert calibration.robot == "so101" and calibration.ids == (1, 2, 3, 4, 5, 6)

    plant.follow(lambda t: np.array([0.5, -0.4, 0.8, -0.3, 1.2, 0.4]))
    with FeetechRobot(SPEC, f"{bus.port},calibration={out}") as robot:
        time.sleep(0.05)
        measured = robot.read_state().q
    assert np.abs(measured - [0.5, -0.4, 0.8, -0.3, 1.2, 0.4]).max() < 0.005, \
        "with the calibration the driver reads the joints as they are, the reversed one included"


def test_a_joint_that_never_moves_stops_the_calibration_naming_it(hand_moved_arm, tmp_path):
    plant, bus = hand_moved_arm

    class StillHand(Hand):
        def tell(self, step: str, message: str) -> None:
            if step != "direction:shoulder_lift":
                super().tell(step, message)

    with pytest.raises(RuntimeError, match="direction: shoulder_lift did not move 0.15 rad from home within 1 s"):
        run_calibrate_motors(f"feetech:{bus.port}", SPEC, tmp_path / "x.yaml", operator=StillHand(plant),
                             settings=CalibrationSettings(step_timeout_s=1))
    assert not (tmp_path / "x.yaml").exists()


def lerobot_json(path, zero_ticks):
    """LeRobot's calibration of the arm whose servos read `zero_ticks` (id → encoder tick) at the joints' zero, as its
    SO-101 calibration writes it after a sweep over each joint's full range: the homing offset puts the middle of the
    range at tick 2047, ranges in present-position ticks. Returns the path and the homing offsets."""
    data, homing = {}, {}
    for joint, motor_id in zip(SPEC.joints, range(1, 7)):
        lower, upper = joint.limits
        homing[motor_id] = round(zero_ticks[motor_id] + (lower + upper) / 2 * TICKS_PER_RAD - 2047)
        half = (upper - lower) / 2 * TICKS_PER_RAD
        data[joint.name] = {"id": motor_id, "drive_mode": 0, "homing_offset": homing[motor_id],
                            "range_min": round(2047 - half), "range_max": round(2047 + half)}
    path.write_text(json.dumps(data, indent=4))
    return path, homing


def test_lerobots_calibration_json_drives_the_arm_with_the_homing_offsets_lerobot_wrote(tmp_path):
    zero = {1: 1700, 2: 2048, 3: 2300, 4: 2048, 5: 2048, 6: 2600}
    plant = HandPlant(np.zeros(6))
    servos = FeetechServos(SPEC, plant, mounting=mounting(zero))
    source, homing = lerobot_json(tmp_path / "so101_follower.json", zero)
    with PtyBus(servos, baud=1_000_000, faults=servos.faults) as bus:
        with FeetechBus(bus.port) as wire:  # LeRobot wrote these into the servos' EPROM
            for motor_id, offset in homing.items():
                wire.write(motor_id, Register.HOMING_OFFSET, register_bytes(Register.HOMING_OFFSET, offset))
        out = tmp_path / "so101_motors.yaml"
        assert main(["calibrate-motors", "--robot", "so101", "--from-lerobot", str(source), "--out", str(out),
                     "--json"]) == 0
        calibration = read_motor_calibration(out, SPEC)
        ranges = np.array([m.range for m in calibration.motors])
        assert np.abs(ranges - np.stack([SPEC.lower, SPEC.upper], axis=1)).max() < 0.002
        pose = np.array([0.5, -0.4, 0.8, -0.3, 1.2, 1.1])
        plant.follow(lambda t: pose)
        with FeetechRobot(SPEC, f"{bus.port},calibration={out}") as robot:
            time.sleep(0.05)
            measured = robot.read_state().q
    assert np.abs(measured - pose).max() < 0.005, "LeRobot's mid-range is the middle of the SO-101 spec's limits"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("gripper"), "gripper: missing"),
    (lambda d: d.update(elbow=d.pop("elbow_flex")), "elbow: no joint of that name in so101"),
    (lambda d: d["wrist_flex"].update(id=9), "wrist_flex.id: 9, but so101 has joint wrist_flex on bus id 4"),
    (lambda d: d["shoulder_pan"].update(range_min=3500), "shoulder_pan: range_min 3500 and range_max"),
    (lambda d: d["shoulder_pan"].update(homing_offset="12"), "shoulder_pan.homing_offset: expected an integer"),
])
def test_a_malformed_lerobot_calibration_is_refused_naming_the_field(tmp_path, edit, message):
    path, _ = lerobot_json(tmp_path / "c.json", {i: 2048 for i in range(1, 7)})
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(MotorCalibrationError, match=message.replace(".", r"\.")):
        from_lerobot(path, SPEC)


def test_the_cli_refuses_a_simulated_robot_and_a_missing_port_in_one_line(capsys, tmp_path):
    assert main(["calibrate-motors", "--robot", "so101", "--driver", "sim", "--out", str(tmp_path / "c.yaml")]) == 2
    assert "not a bus robot" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_status:
        main(["calibrate-motors", "--robot", "so101", "--driver", "feetech:/dev/ttyNOPE3", "--yes",
              "--out", str(tmp_path / "c.yaml")])
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.strip() == "s2r calibrate-motors: error: /dev/ttyNOPE3: port does not exist"


def test_the_calibration_flow_waits_for_no_one_in_scripted_mode(hand_moved_arm, tmp_path, capsys):
    plant, bus = hand_moved_arm

    def script():  # the hand that turns each joint positive in turn while the command runs with --yes
        time.sleep(1.0)
        for i in range(6):
            bump = np.zeros(6)
            bump[i] = 0.4
            plant.follow(lambda t, b=bump: b * math.sin(math.pi * min(t / 0.4, 1.0)))
            time.sleep(0.5)

    plant.move_to(np.zeros(6), 0.0)
    mover = threading.Thread(target=script, daemon=True)
    mover.start()
    out = tmp_path / "c.yaml"
    code = main(["calibrate-motors", "--robot", "so101", "--driver", f"feetech:{bus.port}", "--yes",
                 "--record-s", "0.3", "--out", str(out), "--json"])
    mover.join()
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reversed"] == ["elbow_flex"]
