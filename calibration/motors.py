"""Motor calibration of a bus robot: homing, direction and range, written as the robot's calibration YAML.

`s2r calibrate-motors --driver KIND:PORT --robot SPEC --out FILE` walks an operator through three
steps on a torque-free arm, opened with the default calibration of its spec (motor ids from the
spec's `bus_id`s, every motor's model checked at connect):

    1. home       the arm at the spec's zero pose (for the SO-101: every joint in the middle of its
                  range); each motor's shaft angle there becomes its offset
    2. direction  each joint in turn, turned towards its upper limit by about 0.3 rad; the sign of the
                  measured shaft motion is the joint's direction (-1: the motor is mounted reversed)
    3. range      every joint moved through its whole range; the extremes seen since home, in joint
                  rad, become the recorded range that `enable()` checks

and writes `s2r.hardware.motors`' calibration file, bound to the robot (name, spec hash, motor
ids and models). `--yes` runs without waiting for the Enter key (scripted use: the motion steps
still wait for the motion). `--from-lerobot FILE.json` converts LeRobot's calibration of an
SO-100/SO-101 arm instead (`from_lerobot`).

    calibration = calibrate_motors(robot, TerminalOperator())     # robot: a connected BusRobot
    write_motor_calibration(calibration, "so101_motors.yaml")

Only `s2r.hardware` and numpy: this runs on the robot computer.
"""

from __future__ import annotations

import json
import math
import select
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from s2r.hardware.motors import BusRobot, MotorCalibration, MotorCalibrationError, RobotCalibration
from s2r.spec import RobotSpec


class Operator(Protocol):
    """The person (or the script) moving the arm: told each step, asked whether a recording step is done."""

    def tell(self, step: str, message: str) -> None:
        """Say what to do now. step: "home" (returns once the arm is there), "direction:JOINT" or "range"."""

    def done(self) -> bool:
        """While a step records: whether the operator says it is done (polled, must not block)."""


class TerminalOperator:
    """An operator at the terminal: steps printed, Enter confirms (`--yes`: never waits, range recorded for record_s)."""

    def __init__(self, *, yes: bool = False, record_s: float = 10.0, out=sys.stderr) -> None:
        self.yes, self.record_s, self.out = yes, record_s, out
        self._since = time.monotonic()

    def tell(self, step: str, message: str) -> None:
        wait = step in ("home", "range") and not self.yes
        print(f"{message}{' Press Enter when done.' if wait else ''}", file=self.out, flush=True)
        self._since = time.monotonic()
        if step == "home" and not self.yes:
            sys.stdin.readline()

    def done(self) -> bool:
        if self.yes:
            return time.monotonic() - self._since >= self.record_s
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        return bool(ready) and sys.stdin.readline() is not None


@dataclass(frozen=True)
class CalibrationSettings:
    """How the flow judges the motion."""

    direction_threshold: float = 0.15
    """rad a joint must move from home before its direction is taken."""
    step_timeout_s: float = 60.0
    """Seconds a motion step waits for the motion before giving up (naming the joint)."""
    sample_period_s: float = 0.01
    """Seconds between two reads while recording."""

    def __post_init__(self) -> None:
        for name in ("direction_threshold", "step_timeout_s", "sample_period_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CalibrationSettings.{name}: expected > 0, got {getattr(self, name)}")


class CalibrationAborted(RuntimeError):
    """A step did not happen (no motion within the timeout); the message names the joint and the step."""


def calibrate_motors(robot: BusRobot, operator: Operator, settings: CalibrationSettings = CalibrationSettings()
                     ) -> tuple[RobotCalibration, dict]:
    """Home, direction and range of every motor of `robot` (connected, torque off), as a new calibration.

    Returns the calibration and a report: per joint its direction, recorded range (rad) and
    whether the motor was found reversed.
    """
    spec, base = robot.spec, robot.calibration
    names = [m.joint for m in base.motors]

    def shafts() -> np.ndarray:
        return base.shaft_position(robot.read_state().q)

    operator.tell("home", f"1/3 home: put {spec.name} in its zero pose (every joint at 0 rad; the SO-101's: arm "
                          f"joints mid-range, gripper closed, docs/so101.md) and hold it still.")
    home = shafts()
    low, high = home.copy(), home.copy()
    directions = np.ones(len(names), dtype=int)
    for i, name in enumerate(names):
        operator.tell(f"direction:{name}", f"2/3 direction: turn {name} towards its upper limit (+) by about "
                                           f"{math.degrees(2 * settings.direction_threshold):.0f}°, then back.")
        end = time.monotonic() + settings.step_timeout_s
        while True:
            sample = shafts()
            low, high = np.minimum(low, sample), np.maximum(high, sample)
            moved = sample[i] - home[i]
            if abs(moved) >= settings.direction_threshold:
                directions[i] = 1 if moved > 0 else -1
                break
            if time.monotonic() > end:
                raise CalibrationAborted(f"direction: {name} did not move {settings.direction_threshold} rad from home "
                                         f"within {settings.step_timeout_s:.0f} s")
            time.sleep(settings.sample_period_s)
    operator.tell("range", "3/3 range: move every joint slowly through its whole range, to both ends.")
    while not operator.done():
        sample = shafts()
        low, high = np.minimum(low, sample), np.maximum(high, sample)
        time.sleep(settings.sample_period_s)
    motors, report = [], {}
    for i, motor in enumerate(base.motors):
        ends = sorted(directions[i] * (np.array([low[i], high[i]]) - home[i]) / motor.gear_ratio)
        if not ends[0] < ends[1]:
            raise CalibrationAborted(f"range: {motor.joint} did not move during the range step")
        motors.append(replace(motor, offset=float(home[i]), direction=int(directions[i]),
                              range=(float(ends[0]), float(ends[1]))))
        report[motor.joint] = {"id": motor.id, "direction": int(directions[i]), "reversed": bool(directions[i] < 0),
                               "range": [round(float(e), 4) for e in ends],
                               "spec_limits": list(spec.joints[spec.actuated_index[i]].limits)}
    return RobotCalibration(spec.name, spec.hash, tuple(motors)), report


# --- LeRobot's calibration JSON -------------------------------------------------------------------------------
LEROBOT_FIELDS = ("id", "drive_mode", "homing_offset", "range_min", "range_max")
"""Per motor in LeRobot's calibration JSON (its `MotorCalibration`), keyed by the motor's name."""
LEROBOT_RESOLUTION = 4096
"""Ticks per turn of the STS3215 that LeRobot's SO-100/SO-101 calibrations are written in."""


def from_lerobot(path: str | Path, spec: RobotSpec, *, model: str = "STS3215") -> RobotCalibration:
    """LeRobot's calibration JSON of an SO-100/SO-101 arm as a calibration of `spec`.

    LeRobot writes `homing_offset` into each servo (present = encoder - offset, the middle of the
    recorded range reading 2047) and records `range_min`/`range_max` in present-position ticks;
    `drive_mode` 1 reverses a joint. The middle of the recorded range is taken to be the middle of
    the spec's limits (0 for the SO-101's arm joints, whose zero LeRobot also puts mid-range; the
    gripper's recorded closed-to-open range onto its limits' middle), so the offset is the encoder
    angle there, `mid + homing_offset` ticks, less the limits' middle; the range is the recorded
    one about it. The driver reads each servo's homing offset at connect, so the file is right
    whether or not the servos still hold LeRobot's. Joints are matched by name (LeRobot's SO-101
    names are the spec's) and their ids must be the spec's bus ids.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MotorCalibrationError(f"{path}: no such file (expected LeRobot's calibration JSON)") from None
    except json.JSONDecodeError as error:
        raise MotorCalibrationError(f"{path}: not JSON ({error})") from None
    if not isinstance(data, dict):
        raise MotorCalibrationError(f"{path}: expected an object of motor name → calibration, got "
                                    f"{type(data).__name__}")
    joints = [spec.joints[i] for i in spec.actuated_index]
    extra = sorted(set(data) - {j.name for j in joints})
    if extra:
        raise MotorCalibrationError(f"{path}: {extra[0]}: no joint of that name in {spec.name} (joints: "
                                    f"{', '.join(j.name for j in joints)})")
    rad = 2 * math.pi / LEROBOT_RESOLUTION
    motors = []
    for joint in joints:
        entry = data.get(joint.name)
        if entry is None:
            raise MotorCalibrationError(f"{path}: {joint.name}: missing (expected a calibration of every joint of "
                                        f"{spec.name})")
        for key in LEROBOT_FIELDS:
            if not isinstance(entry.get(key), int) or isinstance(entry.get(key), bool):
                raise MotorCalibrationError(f"{path}: {joint.name}.{key}: expected an integer, got "
                                            f"{entry.get(key)!r}")
        if entry["id"] != joint.bus_id:
            raise MotorCalibrationError(f"{path}: {joint.name}.id: {entry['id']}, but {spec.name} has joint "
                                        f"{joint.name} on bus id {joint.bus_id}")
        if not 0 <= entry["range_min"] < entry["range_max"] < LEROBOT_RESOLUTION:
            raise MotorCalibrationError(f"{path}: {joint.name}: range_min {entry['range_min']} and range_max "
                                        f"{entry['range_max']}: expected 0 <= min < max < {LEROBOT_RESOLUTION}")
        mid = (entry["range_min"] + entry["range_max"]) / 2
        half = (entry["range_max"] - entry["range_min"]) / 2 * rad
        centre = (joint.limits[0] + joint.limits[1]) / 2
        direction = -1 if entry["drive_mode"] else 1
        motors.append(MotorCalibration(joint.name, entry["id"], model, direction=direction,
                                       offset=((mid + entry["homing_offset"]) % LEROBOT_RESOLUTION) * rad
                                       - direction * centre, range=(centre - half, centre + half)))
    return RobotCalibration(spec.name, spec.hash, tuple(motors), source=path)


def run_calibrate_motors(driver: str, spec: RobotSpec, out: Path, *, operator: Operator | None = None,
                         lerobot: Path | None = None, settings: CalibrationSettings = CalibrationSettings()) -> dict:
    """`s2r calibrate-motors`: calibrate the robot behind `driver` (or convert `lerobot`'s JSON) and write `out`.

    The robot is opened with its spec's default calibration (a `--driver` WHERE naming a
    calibration file is refused: the flow makes one) and left with its torque off. Returns the
    summary: the file, and per joint id, direction, whether reversed, and the recorded range.
    """
    from s2r.hardware.drivers import open_driver
    from s2r.hardware.motors import write_motor_calibration

    if lerobot is not None:
        calibration = from_lerobot(lerobot, spec)
        report = {m.joint: {"id": m.id, "direction": m.direction, "reversed": m.direction < 0,
                            "range": [round(r, 4) for r in m.range]} for m in calibration.motors}
    else:
        robot = open_driver(driver, spec)
        if not isinstance(robot, BusRobot):
            raise ValueError(f"--driver {driver}: not a bus robot; calibrate-motors calibrates motors on a bus")
        if robot.calibration.source is not None:
            raise ValueError(f"--driver {driver}: calibrate-motors writes the calibration; name the port only")
        with robot:
            calibration, report = calibrate_motors(robot, operator or TerminalOperator(), settings)
    write_motor_calibration(calibration, out)
    return {"robot": spec.name, "out": str(out), "joints": report,
            "reversed": [name for name, entry in report.items() if entry["reversed"]]}
