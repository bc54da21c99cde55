"""What every bus driver shares: motor calibration, unit conversion, fault accounting, diagnostics, `BusRobot`.

A bus robot is a set of motors, one per actuated joint, each with an id on a serial or CAN bus.
Its calibration (one YAML per robot, bound to the robot's name, joints, motor ids and models)
says how a motor's shaft angle maps to its joint:

    q = direction · (shaft - offset) / gear_ratio          rad (shaft and offset in shaft rad)
    dq = direction · shaft_velocity / gear_ratio           rad/s
    tau = direction · shaft_torque · gear_ratio            N·m
    (gains: kp_shaft = kp / gear_ratio², kd_shaft = kd / gear_ratio²)

and a driver subclasses `BusRobot`, which owns the rules every bus follows:

    class Dynamixel(BusRobot):               # implements _open, _read_bus, _write_bus, _torque, ...
        ...
    with Dynamixel(spec, config) as robot:   # connect: open the port, ping every motor, check its model
        robot.enable()                       # refuses a joint outside its calibrated range, naming it
        state = robot.read_state()           # one bus read; RobotState in joint units, spec order

Faults (the rule, documented in docs/drivers.md):
- a motor whose reply is missing or corrupted in a tick is stale: `read_state` returns its last
  good measurement, and the state's stamp is the OLDEST of the motors' last good stamps, so the
  watchdog of the SafetyFilter and the RobotLoop sees the state age and damps;
- a motor that misses `FaultConfig.lost_after` ticks in a row, or reports a hardware error
  (overload, overheating, electrical shock, encoder), latches the robot's fault: from then on
  every command written is replaced by damping (kp = 0, kd = the spec's) for the motors that still
  answer, until `disable()` and `enable()` (which checks the motors again);
- every missed reply, corrupted reply, retry and error flag is counted per motor (`faults()`),
  and `diagnostics()` reports temperature, voltage and error flags per motor for
  diagnostic_msgs and the recording.

numpy only: this runs on the robot computer.
"""

from __future__ import annotations

import math
import re
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from s2r.interface import RobotError, RobotInterface
from s2r.spec import RobotSpec
from s2r.state import Command, RobotState
from s2r.yaml_file import check_fields, read_yaml


class MotorCalibrationError(ValueError):
    """A motor calibration file is malformed or belongs to another robot; the message names the file and field."""


# --- calibration -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MotorCalibration:
    """One joint's motor: where it is on the bus, what it is, and how its shaft maps to the joint."""

    joint: str
    """The joint it drives (spec name)."""
    id: int
    """Motor id on the bus (0..252)."""
    model: str
    """Motor model as its maker names it ("XM430-W350", "STS3215", "AK80-6")."""
    offset: float = math.pi
    """Shaft angle (rad, 0 at the encoder's zero) at which the joint is at 0."""
    direction: int = 1
    """+1 when the joint turns the way the shaft does, -1 when reversed."""
    gear_ratio: float = 1.0
    """Shaft turns per joint turn (> 0)."""
    range: tuple[float, float] = (-math.inf, math.inf)
    """Recorded range of the joint (rad), e.g. by `s2r calibrate-motors`; enabling refuses a joint outside it."""

    def __post_init__(self) -> None:
        where = f"motor {self.joint!r}"
        if not isinstance(self.id, int) or isinstance(self.id, bool) or not 0 <= self.id <= 252:
            raise MotorCalibrationError(f"{where}: id: expected an integer in 0..252, got {self.id!r}")
        if self.direction not in (-1, 1):
            raise MotorCalibrationError(f"{where}: direction: expected +1 or -1, got {self.direction!r}")
        if not (math.isfinite(self.gear_ratio) and self.gear_ratio > 0):
            raise MotorCalibrationError(f"{where}: gear_ratio: expected a number > 0, got {self.gear_ratio!r}")
        if not math.isfinite(self.offset):
            raise MotorCalibrationError(f"{where}: offset: expected a finite number, got {self.offset!r}")
        if len(self.range) != 2 or not self.range[0] < self.range[1]:
            raise MotorCalibrationError(f"{where}: range: expected [lower, upper] with lower < upper, got "
                                        f"{list(self.range)}")


@dataclass(frozen=True)
class RobotCalibration:
    """The motors of one robot, in the spec's order of actuated joints, and the vectorized unit conversions.

    Shapes: every array is (num_motors,), ordered as the spec's actuated joints.
    """

    robot: str
    """The robot's name (spec name) the calibration was made for."""
    spec_hash: str
    """The spec's hash when the calibration was written (provenance; a spec edit does not void it)."""
    motors: tuple[MotorCalibration, ...]
    source: Path | None = field(default=None, compare=False)
    """The YAML file it was read from, for error messages."""

    def __post_init__(self) -> None:
        ids = [m.id for m in self.motors]
        for i, motor in enumerate(self.motors):
            if ids.count(motor.id) > 1:
                raise MotorCalibrationError(f"{self.where}: motors[{i}].id: id {motor.id} is used twice")
        for name in ("offset", "direction", "gear_ratio"):
            object.__setattr__(self, f"_{name}", np.array([getattr(m, name) for m in self.motors], dtype=np.float64))

    @property
    def where(self) -> str:
        return str(self.source) if self.source else f"calibration of {self.robot}"

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(m.id for m in self.motors)

    @property
    def lower(self) -> np.ndarray:
        """(num_motors,) rad: the recorded range's lower ends."""
        return np.array([m.range[0] for m in self.motors])

    @property
    def upper(self) -> np.ndarray:
        """(num_motors,) rad: the recorded range's upper ends."""
        return np.array([m.range[1] for m in self.motors])

    def joint_position(self, shaft: np.ndarray) -> np.ndarray:
        """Joint positions (rad) from shaft angles (rad), both (num_motors,)."""
        return self._direction * (shaft - self._offset) / self._gear_ratio

    def joint_velocity(self, shaft_velocity: np.ndarray) -> np.ndarray:
        """Joint velocities (rad/s) from shaft velocities (rad/s)."""
        return self._direction * shaft_velocity / self._gear_ratio

    def joint_torque(self, shaft_torque: np.ndarray) -> np.ndarray:
        """Joint torques (N·m) from shaft torques (N·m)."""
        return self._direction * shaft_torque * self._gear_ratio

    def shaft_position(self, q: np.ndarray) -> np.ndarray:
        """Shaft angles (rad) that put the joints at `q` (rad)."""
        return self._offset + self._direction * self._gear_ratio * q

    def shaft_velocity(self, dq: np.ndarray) -> np.ndarray:
        """Shaft velocities (rad/s) for joint velocities `dq` (rad/s)."""
        return self._direction * self._gear_ratio * dq

    def shaft_torque(self, tau: np.ndarray) -> np.ndarray:
        """Shaft torques (N·m) that make joint torques `tau` (N·m)."""
        return self._direction * tau / self._gear_ratio

    def shaft_gains(self, kp: np.ndarray, kd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shaft PD gains (N·m/rad, N·m·s/rad) equivalent to joint gains `kp`, `kd`."""
        return kp / self._gear_ratio**2, kd / self._gear_ratio**2

    def shaft_command(self, command: Command) -> Command:
        """`command` (joint units) in shaft units: targets through the mapping, gains divided by gear_ratio²."""
        kp, kd = self.shaft_gains(command.kp, command.kd)
        return Command(q=self.shaft_position(command.q), dq=self.shaft_velocity(command.dq), kp=kp, kd=kd,
                       tau_ff=self.shaft_torque(command.tau_ff))

    def to_dict(self) -> dict[str, Any]:
        """The calibration as plain data, as its YAML file holds it."""
        def motor(m: MotorCalibration) -> dict[str, Any]:
            return {"joint": m.joint, "id": m.id, "model": m.model, "offset": float(m.offset),
                    "direction": int(m.direction), "gear_ratio": float(m.gear_ratio),
                    "range": [float(m.range[0]), float(m.range[1])]}
        return {"robot": self.robot, "spec_hash": self.spec_hash, "motors": [motor(m) for m in self.motors]}


def default_calibration(spec: RobotSpec, models: str | dict[str, str], *,
                        gear_ratios: dict[str, float] | None = None, offset: float = math.pi) -> RobotCalibration:
    """A calibration from the spec alone: its `bus_id`s, joints at `offset` (shaft rad; default mid-encoder),
    direction +1, the given gear ratios (default 1) and the spec's limits as ranges.

    models: one model for every motor, or joint name → model.
    """
    motors = []
    for i in spec.actuated_index:
        joint = spec.joints[i]
        if joint.bus_id < 0:
            raise MotorCalibrationError(f"{spec.source}: joints[{i}].bus_id: missing (a bus robot needs the id of "
                                        f"joint {joint.name!r}'s motor)")
        model = models if isinstance(models, str) else models[joint.name]
        motors.append(MotorCalibration(joint.name, joint.bus_id, model, offset=offset,
                                       gear_ratio=(gear_ratios or {}).get(joint.name, 1.0), range=joint.limits))
    return RobotCalibration(spec.name, spec.hash, tuple(motors))


_MOTOR_FIELDS = {"joint": str, "id": int, "model": str, "offset": float, "direction": int, "gear_ratio": float,
                 "range": list}


def read_motor_calibration(path: str | Path, spec: RobotSpec) -> RobotCalibration:
    """The calibration in `path`, checked against `spec`; MotorCalibrationError naming the file, field and motor.

    Refused: a file of another robot (its `robot` differs, or it names a motor whose joint or id
    is not the spec's), a joint without its motor, a motor twice.
    """
    path = Path(path)
    data = read_yaml(path, "motor calibration", MotorCalibrationError)
    check_fields(data, path, MotorCalibrationError, required={"robot": str, "spec_hash": str, "motors": list})
    motors = []
    for i, entry in enumerate(data["motors"]):
        where = f"motors[{i}]."
        check_fields(entry, path, MotorCalibrationError, required={k: _MOTOR_FIELDS[k] for k in ("joint", "id", "model")},
                     optional={k: v for k, v in _MOTOR_FIELDS.items() if k not in ("joint", "id", "model")}, where=where)
        values = {k: entry[k] for k in entry}
        if "range" in values:
            bounds = values["range"]
            if len(bounds) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
                raise MotorCalibrationError(f"{path}: {where}range: expected [lower, upper] in rad, got {bounds!r}")
            values["range"] = (float(bounds[0]), float(bounds[1]))
        try:
            motors.append(MotorCalibration(**values))
        except MotorCalibrationError as error:
            raise MotorCalibrationError(f"{path}: {where}{str(error).split(': ', 1)[1]}") from None
    calibration = RobotCalibration(data["robot"], data["spec_hash"], tuple(motors), source=path)
    check_calibration(calibration, spec)
    return calibration


def check_calibration(calibration: RobotCalibration, spec: RobotSpec) -> None:
    """Refuse a calibration that is not of `spec`'s robot, naming the motor that shows it."""
    where = calibration.where
    actuated = [spec.joints[i] for i in spec.actuated_index]
    for i, motor in enumerate(calibration.motors):
        if calibration.robot != spec.name:
            raise MotorCalibrationError(f"{where}: robot: {calibration.robot!r}, but the robot is {spec.name!r} "
                                        f"(motor {motor.id} is calibrated for joint {motor.joint!r} of "
                                        f"{calibration.robot}); calibrate this robot's motors")
        if i >= len(actuated) or motor.joint != actuated[i].name:
            expected = actuated[i].name if i < len(actuated) else "no more motors"
            raise MotorCalibrationError(f"{where}: motors[{i}].joint: {motor.joint!r} (motor {motor.id}), but "
                                        f"{spec.name}'s actuated joint {i} is {expected!r} (joints: "
                                        f"{', '.join(j.name for j in actuated)})")
        bus_id = actuated[i].bus_id
        if bus_id >= 0 and bus_id != motor.id:
            raise MotorCalibrationError(f"{where}: motors[{i}].id: {motor.id} drives joint {motor.joint!r}, but "
                                        f"{spec.source or spec.name} gives that joint bus_id {bus_id}")
    if len(calibration.motors) < len(actuated):
        missing = actuated[len(calibration.motors)].name
        raise MotorCalibrationError(f"{where}: motors: no motor for joint {missing!r} (expected one motor per "
                                    f"actuated joint of {spec.name}, in spec order)")


def write_motor_calibration(calibration: RobotCalibration, path: str | Path) -> Path:
    """Write `calibration` as YAML (atomically: a crash leaves the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    text = f"# Motor calibration of {calibration.robot}: offsets in shaft rad, ranges in joint rad (s2r.hardware.motors)\n"
    partial.write_text(text + yaml.safe_dump(calibration.to_dict(), sort_keys=False, default_flow_style=None))
    partial.replace(path)
    return path


# --- where a bus is: PORT[@BAUD][,calibration=FILE] ---------------------------------------------------------------
@dataclass(frozen=True)
class BusAddress:
    """A bus driver's WHERE: `PORT[@BAUD][,calibration=FILE]` (e.g. `/dev/ttyUSB0@1000000,calibration=arm.yaml`)."""

    port: str
    """The serial device (or CAN channel)."""
    baud: int | None = None
    """Bits per second; None: the driver's default."""
    calibration: Path | None = None
    """The motor calibration YAML; None: the default calibration from the spec's bus ids."""


def parse_bus_address(where: str, kind: str) -> BusAddress:
    """`PORT[@BAUD][,calibration=FILE]` as a BusAddress; ValueError naming `--driver` otherwise."""
    match = re.fullmatch(r"(?P<port>[^@,]+)(@(?P<baud>[^,]*))?(,calibration=(?P<calibration>.+))?", where or "")
    if not match:
        raise ValueError(f"--driver {kind}:{where}: expected {kind}:PORT[@BAUD][,calibration=FILE] "
                         f"(e.g. {kind}:/dev/ttyUSB0@1000000)")
    baud = match["baud"]
    if baud is not None and not (baud.isdigit() and int(baud) > 0):
        raise ValueError(f"--driver {kind}:{where}: baud rate {baud!r} is not a positive integer")
    calibration = match["calibration"]
    return BusAddress(match["port"], int(baud) if baud else None, Path(calibration) if calibration else None)


# --- faults and diagnostics --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaultConfig:
    """When a bus robot gives up on a motor."""

    lost_after: int = 5
    """Consecutive ticks without a good reply after which a motor is lost and the robot's fault latches."""
    retries: int = 1
    """Extra reads, within one tick, of the motors whose reply was missing or corrupted (each one counted)."""
    range_margin: float = 0.05
    """rad a joint may lie outside its calibrated range and still be enabled."""

    def __post_init__(self) -> None:
        if not (isinstance(self.lost_after, int) and self.lost_after >= 1):
            raise ValueError(f"FaultConfig.lost_after: expected an integer >= 1, got {self.lost_after!r}")
        if not (isinstance(self.retries, int) and self.retries >= 0):
            raise ValueError(f"FaultConfig.retries: expected an integer >= 0, got {self.retries!r}")
        if not self.range_margin >= 0:
            raise ValueError(f"FaultConfig.range_margin: expected >= 0, got {self.range_margin!r}")


@dataclass
class MotorFaults:
    """What went wrong with one motor since the robot connected."""

    missed: int = 0
    """Replies that did not come (timeouts), retries included."""
    corrupted: int = 0
    """Replies that came with a bad checksum or a malformed packet."""
    retries: int = 0
    """Extra reads of this motor after a missed or corrupted reply."""
    error_ticks: int = 0
    """Ticks on which the motor reported a hardware error."""
    consecutive: int = 0
    """Ticks in a row without a good reply (0 after a good one)."""
    error_flags: tuple[str, ...] = ()
    """The hardware errors it reports now (e.g. "overload", "overheating")."""
    lost: bool = False
    """True once it missed `lost_after` ticks in a row."""


@dataclass(frozen=True)
class BusReading:
    """One read of every motor, in shaft units, arrays (num_motors,); entries of motors without a good reply are 0."""

    position: np.ndarray
    """Shaft angles, rad."""
    velocity: np.ndarray
    """Shaft velocities, rad/s."""
    torque: np.ndarray
    """Shaft torques, N·m (from the measured current)."""
    good: np.ndarray
    """bool: the motor's reply came, intact."""
    corrupted: np.ndarray
    """bool: the motor's reply came, corrupted (a miss otherwise, where not good)."""
    error_flags: tuple[tuple[str, ...], ...] = ()
    """Per motor, the hardware errors its reply reports (empty tuples when none; () when not read)."""
    retries: np.ndarray | None = None
    """int: extra reads per motor in this tick."""


@dataclass(frozen=True)
class MotorHealth:
    """Slow readings of one motor for diagnostics: None where the motor did not answer."""

    temperature: float | None = None
    """°C."""
    voltage: float | None = None
    """V, the motor's supply."""


@dataclass(frozen=True)
class MotorStatus:
    """One motor's diagnostics: what diagnostic_msgs/DiagnosticStatus and the recording carry."""

    joint: str
    id: int
    model: str
    level: str
    """"OK", "WARN" (faults counted, or an error flag) or "ERROR" (lost, or a hardware error)."""
    message: str
    temperature: float | None
    voltage: float | None
    faults: MotorFaults

    def key_values(self) -> dict[str, str]:
        """Flat key → text pairs (DiagnosticStatus.values)."""
        f = self.faults
        return {"id": str(self.id), "model": self.model,
                "temperature_c": "" if self.temperature is None else f"{self.temperature:.0f}",
                "voltage_v": "" if self.voltage is None else f"{self.voltage:.1f}",
                "error_flags": ",".join(f.error_flags), "missed": str(f.missed), "corrupted": str(f.corrupted),
                "retries": str(f.retries), "error_ticks": str(f.error_ticks), "consecutive": str(f.consecutive),
                "lost": str(f.lost).lower()}


# --- the base class ---------------------------------------------------------------------------------------------
class BusRobot(RobotInterface):
    """A robot of motors on one bus, one per actuated joint; subclasses speak the bus.

    A subclass implements `_open` (port and motors checked, torque off), `_read_bus` (one
    transaction reading every motor, retries included), `_write_bus` (one transaction writing
    every motor, shaft units), `_torque`, `_read_health` and `_close_bus`. This class converts
    units, keeps the last good measurement per motor, counts faults, latches the fault state and
    checks ranges on enable. Robots without passive joints only: every joint has a motor.
    """

    health_period_s = 1.0
    """Seconds between reads of temperature and voltage (one extra bus transaction)."""

    def __init__(self, spec: RobotSpec, calibration: RobotCalibration, faults: FaultConfig = FaultConfig()) -> None:
        if len(spec.actuated_index) != spec.num_joints:
            raise RobotError(f"{type(self).__name__}({spec.name}): every joint needs a motor; "
                             f"{spec.num_joints - len(spec.actuated_index)} are passive")
        check_calibration(calibration, spec)
        self.spec, self.calibration, self.fault_config = spec, calibration, faults
        n = len(calibration.motors)
        self._lock = threading.RLock()
        self._faults = [MotorFaults() for _ in range(n)]
        self._health = [MotorHealth() for _ in range(n)]
        self._q = np.zeros(n)
        self._dq = np.zeros(n)
        self._tau = np.zeros(n)
        self._stamps = np.full(n, -math.inf)
        """Per motor, the time.time() of its last good reading."""
        self._connected = False
        self._enabled = False
        self._faulted: str | None = None
        self._next_health = 0.0
        self._spec_kd = spec.joint_array("kd")

    # --- what a subclass implements ---------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Open the bus, find every motor of the calibration (model checked), torque off; RobotError otherwise."""

    @abstractmethod
    def _read_bus(self) -> BusReading:
        """Read every motor once (one transaction, retries of the missing ones included)."""

    @abstractmethod
    def _write_bus(self, command: Command) -> None:
        """Write every motor once, in shaft units, (num_motors,) arrays (one transaction where the bus allows)."""

    @abstractmethod
    def _torque(self, on: bool) -> None:
        """Torque on or off on every motor that answers."""

    @abstractmethod
    def _read_health(self) -> list[MotorHealth]:
        """Temperature and voltage of every motor."""

    @abstractmethod
    def _close_bus(self) -> None:
        """Close the port. Safe to call twice."""

    # --- RobotInterface ---------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the bus and check every motor (RobotError naming it otherwise); motors stay disabled."""
        with self._lock:
            if self._connected:
                return
            self._open()
            self._connected = True
            self._faults = [MotorFaults() for _ in self.calibration.motors]
            self.read_state()

    def enable(self) -> None:
        """Torque on, after checking every joint lies within its calibrated range (RobotError naming the joint).

        Clears a latched fault only if every motor answers again without a hardware error.
        """
        with self._lock:
            self.check_enable()
            for faults in self._faults:
                faults.consecutive, faults.lost, faults.error_flags = 0, False, ()
            self._faulted = None
            self._torque(True)
            self._enabled = True

    def check_enable(self) -> None:
        """What `enable` checks, without turning torque on: every motor answers without a hardware error and every
        joint lies within its calibrated range (RobotError naming the motor or joint otherwise)."""
        with self._lock:
            self._require_connected()
            reading = self._read_bus()
            missing = [m for m, good in zip(self.calibration.motors, reading.good) if not good]
            if missing:
                raise RobotError(f"{self.spec.name}: cannot enable: motor {missing[0].id} (joint {missing[0].joint}) "
                                 f"does not answer")
            flagged = [(m, flags) for m, flags in zip(self.calibration.motors, reading.error_flags) if flags]
            if flagged:
                motor, flags = flagged[0]
                raise RobotError(f"{self.spec.name}: cannot enable: motor {motor.id} (joint {motor.joint}) reports "
                                 f"{', '.join(flags)}; power-cycle or reboot it once the cause is gone")
            self._accept(reading, time.time())
            q = self.calibration.joint_position(reading.position)
            margin = self.fault_config.range_margin
            for i, motor in enumerate(self.calibration.motors):
                if not motor.range[0] - margin <= q[i] <= motor.range[1] + margin:
                    raise RobotError(f"{self.spec.name}: cannot enable: joint {motor.joint} is at {q[i]:.3f} rad, "
                                     f"outside its calibrated range [{motor.range[0]:.3f}, {motor.range[1]:.3f}] "
                                     f"(motor {motor.id}); move it into range by hand, or recalibrate")

    def read_state(self) -> RobotState:
        """One bus read; motors without a good reply keep their last good measurement and stamp (see the module).

        The state's stamp is the oldest of the motors' last good stamps, so a missed motor makes it age.
        """
        with self._lock:
            self._require_connected()
            stamp = time.time()
            reading = self._read_bus()
            self._account(reading)
            self._accept(reading, stamp)
            if time.monotonic() >= self._next_health:
                self._next_health = time.monotonic() + self.health_period_s
                self._health = self._read_health()
            return RobotState(stamp=float(self._stamps.min()), q=self._q.copy(), dq=self._dq.copy(),
                              tau=self._tau.copy(), fault=self._faulted)

    def write_command(self, command: Command) -> None:
        """Write one command (joint units, (num_motors,) arrays); after a fault, damping instead; ignored while disabled."""
        checked = _checked_command(command, len(self.calibration.motors))
        with self._lock:
            self._require_connected()
            if not self._enabled:
                return
            if self._faulted is not None:
                checked = Command(q=self._q.copy(), dq=np.zeros_like(self._q), kp=np.zeros_like(self._q),
                                  kd=self._spec_kd.copy(), tau_ff=np.zeros_like(self._q))
            self._write_bus(self.calibration.shaft_command(checked))

    def disable(self) -> None:
        """Torque off on every motor that answers. Safe to call twice."""
        with self._lock:
            if self._connected:
                self._torque(False)
            self._enabled = False

    def close(self) -> None:
        """Torque off and close the bus. Safe to call twice."""
        with self._lock:
            try:
                if self._connected:
                    self._torque(False)
            finally:
                self._enabled = False
                self._connected = False
                self._close_bus()

    # --- faults and diagnostics ----------------------------------------------------------------------------
    @property
    def fault(self) -> str | None:
        """Why the robot went to damping (the first motor lost or in error), or None."""
        return self._faulted

    def faults(self) -> dict[str, MotorFaults]:
        """Joint name → a copy of its motor's fault counters."""
        with self._lock:
            return {m.joint: replace(f) for m, f in zip(self.calibration.motors, self._faults)}

    def diagnostics(self) -> list[MotorStatus]:
        """One status per motor, in spec order (temperature and voltage as last read, at most health_period_s old)."""
        with self._lock:
            statuses = []
            for motor, faults, health in zip(self.calibration.motors, self._faults, self._health):
                if faults.lost:
                    level, message = "ERROR", f"lost: {faults.consecutive} ticks without a reply"
                elif faults.error_flags:
                    level, message = "ERROR", "hardware error: " + ", ".join(faults.error_flags)
                elif faults.missed or faults.corrupted or faults.consecutive:
                    level, message = "WARN", f"{faults.missed} missed, {faults.corrupted} corrupted replies"
                else:
                    level, message = "OK", "ok"
                statuses.append(MotorStatus(motor.joint, motor.id, motor.model, level, message, health.temperature,
                                            health.voltage, replace(faults)))
            return statuses

    # --- internals -------------------------------------------------------------------------------------------
    def _account(self, reading: BusReading) -> None:
        """Count this tick's faults per motor; latch the robot's fault on a lost motor or a hardware error."""
        retries = reading.retries if reading.retries is not None else np.zeros(len(self._faults), dtype=int)
        flags = reading.error_flags or ((),) * len(self._faults)
        for i, faults in enumerate(self._faults):
            faults.retries += int(retries[i])
            if reading.good[i]:
                faults.consecutive = 0
                faults.missed += int(retries[i])  # the tries before the good one
            else:
                faults.consecutive += 1
                faults.corrupted += int(reading.corrupted[i])
                faults.missed += int(retries[i]) + int(not reading.corrupted[i])
            if flags[i]:
                faults.error_ticks += 1
                faults.error_flags = flags[i]
            if faults.consecutive >= self.fault_config.lost_after:
                faults.lost = True
            motor = self.calibration.motors[i]
            if self._faulted is None and (faults.lost or flags[i]):
                reason = "lost" if faults.lost else ", ".join(flags[i])
                self._faulted = f"motor {motor.id} (joint {motor.joint}): {reason}"

    def _accept(self, reading: BusReading, stamp: float) -> None:
        good = reading.good
        self._q[good] = self.calibration.joint_position(reading.position)[good]
        self._dq[good] = self.calibration.joint_velocity(reading.velocity)[good]
        self._tau[good] = self.calibration.joint_torque(reading.torque)[good]
        self._stamps[good] = stamp

    def _require_connected(self) -> None:
        if not self._connected:
            raise RobotError(f"{type(self).__name__}({self.spec.name}): not connected; call connect() or use it as "
                             f"a context manager")


def _checked_command(command: Command, size: int) -> Command:
    """The command as float64 (size,) arrays; RobotError naming the field otherwise."""
    fields = {}
    for key in ("q", "dq", "kp", "kd", "tau_ff"):
        value = np.asarray(getattr(command, key), dtype=np.float64)
        if value.shape != (size,):
            raise RobotError(f"Command.{key}: expected shape ({size},) for the motors, got {value.shape}")
        if not np.isfinite(value).all():
            raise RobotError(f"Command.{key}: non-finite value {value}; commands go through the SafetyFilter")
        fields[key] = value
    return Command(**fields)
