"""Dynamixel X-series motors, protocol 2.0, through the vendor's SDK (`dynamixel-sdk`): a `BusRobot`.

Selected as `--driver dynamixel:PORT[@BAUD][,calibration=FILE]` (baud default 1000000; X-series
motors leave the factory at 57600). Without a calibration file the calibration is the spec's
`bus_id`s with the models the motors report, offsets at mid-encoder (2048 ticks) and direction
+1; with one, every motor's model must be the calibration's (`s2r.hardware.motors`).

    config = load_dynamixel_config("/dev/ttyUSB0@1000000,calibration=hardware/configs/arm_dynamixel.yaml")
    with Dynamixel(robot_spec("arm"), config) as robot:   # ping, model check, torque off, return delay 0
        robot.enable()                                     # range check, torque on
        robot.write_command(command)                       # one GroupSyncWrite of goal position
        state = robot.read_state()                         # one GroupSyncRead of current, velocity, position

Each tick is one sync read (present current 126, velocity 128, position 132: 10 bytes per
motor) and one sync write (goal position 116 in the position modes, goal current 102 in current
mode); a change of the command's gains adds one sync write of the position D/I/P gains (80..85).
A status packet that does not come (or comes corrupted) is retried with a sync read of the
motors that missed, `FaultConfig.retries` times, each retry counted per motor. A status packet
whose error byte has the alert bit set is followed by a read of the motor's hardware error
status (70). Temperature (146) and input voltage (144) are read once a second.

Operating modes (`DynamixelConfig.mode`):
- "position" (X-series mode 3): the motor's own position PID runs the command's kp and kd
  (written as Position P/D Gain, `gain_units`); dq and tau_ff are not used.
- "current_position" (mode 5): the same, with goal current holding the torque to the spec's effort limit.
- "current" (mode 0): the PD law tau = kp (q* - q) + kd (dq* - dq) + tau_ff runs here, at the tick
  rate, on the tick's measurement; the torque is written as goal current.

Gains: the X-series position controller outputs PWM = KPP·e + KPD·ė (e in pulses, ė in
pulses/ms, KPP = P/128, KPD = D/16; 885 is full PWM), and a motor's torque at full PWM is its
stall torque: kp = P/128 · stall/885 · 4096/2π N·m/rad and kd = D/16 · stall/885 · 4096/2π · 1e-3
N·m·s/rad on the shaft. The emulator (`s2r.hardware.emulators.dynamixel`) runs the same law.
"""

from __future__ import annotations

import math
import os
import select
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import serial
from dynamixel_sdk import (
    COMM_RX_CORRUPT,
    COMM_SUCCESS,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
    PortHandler,
)

from s2r.hardware.motors import (
    BusAddress,
    BusReading,
    BusRobot,
    FaultConfig,
    MotorCalibration,
    MotorHealth,
    RobotCalibration,
    default_calibration,
    parse_bus_address,
    read_motor_calibration,
)
from s2r.interface import RobotError
from s2r.spec import RobotSpec
from s2r.state import Command

# --- the X-series control table (e-Manual, XM430-W350), (address, bytes) ---------------------------------------
MODEL_NUMBER = (0, 2)
FIRMWARE_VERSION = (6, 1)
ID = (7, 1)
BAUD_RATE = (8, 1)
RETURN_DELAY_TIME = (9, 1)
"""Units of 2 µs; factory 250 (500 µs)."""
OPERATING_MODE = (11, 1)
TEMPERATURE_LIMIT = (31, 1)
CURRENT_LIMIT = (38, 2)
MAX_POSITION_LIMIT = (48, 4)
MIN_POSITION_LIMIT = (52, 4)
SHUTDOWN = (63, 1)
TORQUE_ENABLE = (64, 1)
HARDWARE_ERROR_STATUS = (70, 1)
POSITION_D_GAIN = (80, 2)
POSITION_I_GAIN = (82, 2)
POSITION_P_GAIN = (84, 2)
GOAL_CURRENT = (102, 2)
PROFILE_ACCELERATION = (108, 4)
PROFILE_VELOCITY = (112, 4)
GOAL_POSITION = (116, 4)
PRESENT_CURRENT = (126, 2)
PRESENT_VELOCITY = (128, 4)
PRESENT_POSITION = (132, 4)
PRESENT_INPUT_VOLTAGE = (144, 2)
PRESENT_TEMPERATURE = (146, 1)

STATE_BLOCK = (126, 10)
"""Present current, velocity and position: one sync read per tick."""
GAIN_BLOCK = (80, 6)
"""Position D, I and P gains."""
HEALTH_BLOCK = (144, 3)
"""Input voltage and temperature."""

MODES = {"current": 0, "position": 3, "current_position": 5}
"""Operating mode name → the value of address 11."""
HARDWARE_ERRORS = {0x01: "input_voltage", 0x04: "overheating", 0x08: "motor_encoder", 0x10: "electrical_shock",
                   0x20: "overload"}
"""Hardware error status (70) bit → name."""
ALERT = 0x80
"""The status packet's error byte: the motor has a hardware error (read address 70)."""
BAUD_RATES = {9600: 0, 57600: 1, 115200: 2, 1_000_000: 3, 2_000_000: 4, 3_000_000: 5, 4_000_000: 6}
"""Bits per second → the value of address 8 (4.5 Mbaud, which the motors take, is not one the SDK opens)."""

TICKS_PER_TURN = 4096
RAD_PER_TICK = 2 * math.pi / TICKS_PER_TURN
RAD_S_PER_VELOCITY_UNIT = 0.229 * 2 * math.pi / 60
"""Present velocity: 0.229 rpm per unit."""
AMPERE_PER_CURRENT_UNIT = 2.69e-3
VOLT_PER_VOLTAGE_UNIT = 0.1
FULL_PWM = 885
MAX_GAIN = 16383
PING_TRIES = 3
"""Pings of each motor at connect before it counts as absent (a motor busy at power-up answers the next)."""


@dataclass(frozen=True)
class XSeriesModel:
    """One X-series motor's figures at 12 V (ROBOTIS e-Manual)."""

    name: str
    model_number: int
    stall_torque: float
    """N·m."""
    stall_current: float
    """A."""
    no_load_speed: float
    """rad/s."""
    current_limit: int
    """Factory current limit, units of 2.69 mA."""

    @property
    def torque_per_ampere(self) -> float:
        """N·m/A (stall torque over stall current)."""
        return self.stall_torque / self.stall_current

    @property
    def kp_per_unit(self) -> float:
        """Shaft N·m/rad of one unit of Position P Gain."""
        return self.stall_torque / FULL_PWM / 128 / RAD_PER_TICK

    @property
    def kd_per_unit(self) -> float:
        """Shaft N·m·s/rad of one unit of Position D Gain."""
        return self.stall_torque / FULL_PWM / 16 / RAD_PER_TICK * 1e-3


MODELS = {m.name: m for m in (
    XSeriesModel("XM430-W350", 1020, 4.1, 2.3, 46 * 2 * math.pi / 60, 1193),
    XSeriesModel("XM430-W210", 1030, 3.0, 2.3, 77 * 2 * math.pi / 60, 1193),
    XSeriesModel("XM540-W270", 1120, 10.6, 4.4, 30 * 2 * math.pi / 60, 2047),
    XSeriesModel("XM540-W150", 1130, 7.3, 4.4, 53 * 2 * math.pi / 60, 2047),
)}
"""Model name → figures; the models the driver and its emulator know."""
MODEL_NAMES = {m.model_number: m.name for m in MODELS.values()}


def gain_units(kp: np.ndarray, kd: np.ndarray, models: list[XSeriesModel]) -> tuple[np.ndarray, np.ndarray]:
    """Position P and D Gain values (ints in 0..16383) for shaft gains kp (N·m/rad) and kd (N·m·s/rad), (n,) each."""
    per_p = np.array([m.kp_per_unit for m in models])
    per_d = np.array([m.kd_per_unit for m in models])
    return (np.clip(np.rint(kp / per_p), 0, MAX_GAIN).astype(np.int64),
            np.clip(np.rint(kd / per_d), 0, MAX_GAIN).astype(np.int64))


@dataclass(frozen=True)
class DynamixelConfig:
    """How to reach the motors and run them."""

    address: BusAddress
    mode: Literal["position", "current_position", "current"] = "position"
    latency_timer_ms: float = 4.0
    """The USB adapter's latency allowance: a status packet is awaited its bytes' wire time plus twice this plus
    2 ms (the SDK's rule; its default is 16 ms: set the adapter's latency_timer to 1 and this to 1-4)."""
    return_delay_us: int = 0
    """Written to the motors' return delay time (the factory's 500 µs makes every reply late)."""
    profile_velocity: int = 0
    """Address 112 (0.229 rpm units; 0: none); the motor shapes position steps with it."""
    profile_acceleration: int = 0
    """Address 108 (214.577 rev/min² units; 0: none)."""
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"dynamixel: mode: {self.mode!r} (expected one of {', '.join(MODES)})")
        if self.baud not in BAUD_RATES:
            raise ValueError(f"--driver dynamixel:{self.address.port}@{self.baud}: baud rate {self.baud} is not one "
                             f"an X-series motor takes ({', '.join(map(str, BAUD_RATES))})")
        if not 0 <= self.return_delay_us <= 508:
            raise ValueError(f"dynamixel: return_delay_us: expected 0..508, got {self.return_delay_us}")

    @property
    def baud(self) -> int:
        return self.address.baud or 1_000_000


def load_dynamixel_config(where: str) -> DynamixelConfig:
    """WHERE of `--driver dynamixel:WHERE` as a DynamixelConfig (ValueError naming --driver otherwise)."""
    return DynamixelConfig(parse_bus_address(where, "dynamixel"))


class _Port(PortHandler):
    """The SDK's port, opened exclusively (a busy port is refused) and with a chosen latency allowance."""

    def __init__(self, name: str, latency_timer_ms: float) -> None:
        super().__init__(name)
        self.latency_timer_ms = latency_timer_ms
        self.expect_reply = True
        """False while a sync write is sent (see clearPort)."""

    def setupPort(self, cflag_baud: int) -> bool:  # noqa: N802 (the SDK's name)
        if self.is_open:
            self.closePort()
        self.ser = serial.Serial(port=self.port_name, baudrate=self.baudrate, bytesize=serial.EIGHTBITS, timeout=0,
                                 exclusive=True)
        self.is_open = True
        self.ser.reset_input_buffer()
        self.tx_time_per_byte = (1000.0 / self.baudrate) * 10.0
        return True

    def readPort(self, length: int) -> bytes:  # noqa: N802 (the SDK's name)
        """The SDK polls this in a loop until its packet timeout: wait in the kernel for the first byte instead of
        spinning (at most until the timeout), so the host's CPU is not taken from the bus's other work."""
        if not self.ser.in_waiting:
            remaining = (self.packet_timeout - self.getTimeSinceStart()) / 1000.0
            if remaining > 0:
                select.select([self.ser.fileno()], [], [], remaining)
        return self.ser.read(length)

    def clearPort(self) -> None:  # noqa: N802 (the SDK's name)
        """The SDK clears the receive buffer before every instruction; before one nobody answers (a sync write,
        `expect_reply` False) there is nothing to clear, and the tcflush would sit between the tick's read and its
        write. The next instruction that is answered clears what came late."""
        if self.expect_reply:
            super().clearPort()

    def setPacketTimeout(self, packet_length: int) -> None:  # noqa: N802 (the SDK's name)
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + self.latency_timer_ms * 2.0 + 2.0


class Dynamixel(BusRobot):
    """Dynamixel X-series motors, one per joint, on one protocol 2.0 bus (see the module)."""

    def __init__(self, spec: RobotSpec, config: DynamixelConfig | None) -> None:
        if config is None:
            raise ValueError("--driver dynamixel: needs the port: dynamixel:PORT[@BAUD][,calibration=FILE]")
        self.config = config
        self.where = f"dynamixel:{config.address.port}"
        if config.address.calibration is not None:
            calibration = read_motor_calibration(config.address.calibration, spec)
            self._calibrated_models = True
        else:
            calibration = default_calibration(spec, "unknown")
            self._calibrated_models = False
        super().__init__(spec, calibration, config.faults)
        self._port: _Port | None = None
        self._packets = PacketHandler(2.0)
        self._models: list[XSeriesModel] = []
        self._gains: tuple[np.ndarray, np.ndarray] | None = None
        self._shaft = np.zeros(len(calibration.motors))
        self._shaft_velocity = np.zeros(len(calibration.motors))

    # --- BusRobot ---------------------------------------------------------------------------------------------
    def _open(self) -> None:
        port = self.config.address.port
        if not os.path.exists(port):
            raise RobotError(f"{self.where}: no such port (expected a serial device such as /dev/ttyUSB0; is the "
                             f"USB adapter plugged in?)")
        self._port = _Port(port, self.config.latency_timer_ms)
        try:
            self._port.setBaudRate(self.config.baud)
        except serial.SerialException as error:
            self._port = None
            if "lock" in str(error).lower():
                raise RobotError(f"{self.where}: port is busy (another program holds it open)") from None
            raise RobotError(f"{self.where}: cannot open the port: {error}") from None
        try:
            self._find_motors()
            for motor in self.calibration.motors:
                self._write(motor, TORQUE_ENABLE, 0)
                self._write(motor, RETURN_DELAY_TIME, self.config.return_delay_us // 2)
                self._write(motor, OPERATING_MODE, MODES[self.config.mode])
                self._write(motor, PROFILE_ACCELERATION, self.config.profile_acceleration)
                self._write(motor, PROFILE_VELOCITY, self.config.profile_velocity)
            if self.config.mode == "current_position":
                limits = self._current_units(self.spec.joint_array("effort_limit") / self._gear_ratios())
                for motor, units in zip(self.calibration.motors, limits):
                    self._write(motor, GOAL_CURRENT, int(units))
        except Exception:
            self._close_bus()
            raise
        self._gains = None

    def _find_motors(self) -> None:
        """Ping every motor; check its model against the calibration (or adopt it: default calibration)."""
        answered, models = [], []
        for motor in self.calibration.motors:
            number = self._ping(motor.id)
            answered.append(number is not None)
            models.append(number)
        if not any(answered):
            hint = "" if self.config.baud == 57600 else "; X-series motors leave the factory at 57600: try @57600"
            raise RobotError(f"{self.where}: no motor answers at {self.config.baud} baud (expected ids "
                             f"{', '.join(map(str, self.calibration.ids))}; wrong baud rate, or bus power off?{hint})")
        motors = []
        for motor, ok, number in zip(self.calibration.motors, answered, models):
            if not ok:
                raise RobotError(f"{self.where}: motor id {motor.id} (joint {motor.joint}) does not answer (expected "
                                 f"a motor at id {motor.id} on {self.config.address.port})")
            name = MODEL_NAMES.get(number)
            if self._calibrated_models and (name != motor.model):
                raise RobotError(f"{self.where}: motor {motor.id} (joint {motor.joint}) is a "
                                 f"{name or 'model unknown to s2r'} (model number {number}), but "
                                 f"{self.calibration.where} says {motor.model}")
            if name is None:
                raise RobotError(f"{self.where}: motor {motor.id} (joint {motor.joint}) has model number {number}, "
                                 f"not an X-series motor s2r knows ({', '.join(MODELS)})")
            motors.append(motor if self._calibrated_models else MotorCalibration(
                motor.joint, motor.id, name, offset=motor.offset, direction=motor.direction,
                gear_ratio=motor.gear_ratio, range=motor.range))
        if not self._calibrated_models:
            self.calibration = RobotCalibration(self.calibration.robot, self.calibration.spec_hash, tuple(motors))
        self._models = [MODELS[m.model] for m in self.calibration.motors]

    def _ping(self, motor_id: int) -> int | None:
        """The motor's model number; None when it does not answer (PING_TRIES pings); RobotError when its replies come
        corrupted."""
        for _ in range(PING_TRIES):
            number, result, _ = self._packets.ping(self._port, motor_id)
            if result == COMM_SUCCESS:
                return number
        if result == COMM_RX_CORRUPT:
            joint = next(m.joint for m in self.calibration.motors if m.id == motor_id)
            raise RobotError(f"{self.where}: motor {motor_id} (joint {joint}) answers with corrupted status packets "
                             f"(bad CRC, {PING_TRIES} tries): check the cable and the "
                             f"bus's termination")
        return None

    def _write(self, motor: MotorCalibration, entry: tuple[int, int], value: int) -> None:
        address, size = entry
        write = {1: self._packets.write1ByteTxRx, 2: self._packets.write2ByteTxRx, 4: self._packets.write4ByteTxRx}
        for _ in range(1 + self.config.faults.retries):
            result, error = write[size](self._port, motor.id, address, value & ((1 << 8 * size) - 1))[:2]
            if result == COMM_SUCCESS and not error & ~ALERT:
                return
        raise RobotError(f"{self.where}: motor {motor.id} (joint {motor.joint}): writing address {address} failed: "
                         f"{self._packets.getTxRxResult(result)} {self._packets.getRxPacketError(error)}".rstrip())

    def _read_bus(self) -> BusReading:
        n = len(self.calibration.motors)
        data, corrupted, retries, alerts = self._sync_read(*STATE_BLOCK)
        good = np.array([i in data for i in range(n)])
        raw = np.zeros((n, 3), dtype=np.int64)
        for i, block in data.items():
            raw[i] = (int.from_bytes(block[0:2], "little", signed=True),
                      int.from_bytes(block[2:6], "little", signed=True),
                      int.from_bytes(block[6:10], "little", signed=True))
        self._shaft[good] = raw[good, 2] * RAD_PER_TICK
        self._shaft_velocity[good] = raw[good, 1] * RAD_S_PER_VELOCITY_UNIT
        kt = np.array([m.torque_per_ampere for m in self._models])
        flags = [self._hardware_errors(i) if i in alerts else () for i in range(n)]
        return BusReading(position=raw[:, 2] * RAD_PER_TICK, velocity=raw[:, 1] * RAD_S_PER_VELOCITY_UNIT,
                          torque=raw[:, 0] * AMPERE_PER_CURRENT_UNIT * kt, good=good,
                          corrupted=np.array([i in corrupted for i in range(n)]), error_flags=tuple(flags),
                          retries=retries)

    def _write_bus(self, command: Command) -> None:
        if self.config.mode == "current":
            tau = command.kp * (command.q - self._shaft) + command.kd * (command.dq - self._shaft_velocity) + command.tau_ff
            self._sync_write(GOAL_CURRENT, self._current_units(tau))
            return
        gains = gain_units(command.kp, command.kd, self._models)
        if self._gains is None or not all(np.array_equal(a, b) for a, b in zip(gains, self._gains)):
            p, d = gains
            self._sync_write(GAIN_BLOCK, np.stack([d, np.zeros_like(d), p], axis=1))
            self._gains = gains
        ticks = np.rint(command.q / RAD_PER_TICK).astype(np.int64)
        if self.config.mode in ("position", "current_position"):
            ticks = np.clip(ticks, 0, TICKS_PER_TURN - 1)
        self._sync_write(GOAL_POSITION, ticks)

    def _torque(self, on: bool) -> None:
        """Torque off, or on after setting the goal to where the motor is (a motor turned on goes to its goal)."""
        if on:
            if self.config.mode == "current":
                self._sync_write(GOAL_CURRENT, np.zeros(len(self.calibration.motors)))
            else:
                self._sync_write(GOAL_POSITION, np.rint(self._shaft / RAD_PER_TICK))
            self._gains = None
        self._sync_write(TORQUE_ENABLE, np.full(len(self.calibration.motors), int(on)))

    def _read_health(self) -> list[MotorHealth]:
        data, _, _, _ = self._sync_read(*HEALTH_BLOCK)
        return [MotorHealth(temperature=float(data[i][2]), voltage=int.from_bytes(data[i][0:2], "little")
                            * VOLT_PER_VOLTAGE_UNIT) if i in data else MotorHealth()
                for i in range(len(self.calibration.motors))]

    def _close_bus(self) -> None:
        if self._port is not None:
            self._port.closePort()
            self._port = None

    # --- transactions ---------------------------------------------------------------------------------------------
    def _sync_read(self, address: int, length: int) -> tuple[dict[int, bytes], set[int], np.ndarray, set[int]]:
        """One sync read of every motor, then retries of those that missed; (motor index → data bytes, indices whose
        last reply was corrupted, (n,) retries per motor, indices whose status carried the alert bit)."""
        ids = {m.id: i for i, m in enumerate(self.calibration.motors)}
        retries = np.zeros(len(ids), dtype=np.int64)
        data: dict[int, bytes] = {}
        corrupted: set[int] = set()
        alerts: set[int] = set()
        pending = list(ids)
        for attempt in range(1 + self.config.faults.retries):
            if attempt:
                retries[[ids[i] for i in pending]] += 1
            group = GroupSyncRead(self._port, self._packets, address, length)
            for motor_id in pending:
                group.addParam(motor_id)
            if group.txPacket() != COMM_SUCCESS:
                continue
            waiting = set(pending)
            while waiting:
                packet, result = self._packets.rxPacket(self._port, False)
                motor_id = packet[4] if len(packet) > 8 else None
                if result == COMM_SUCCESS and motor_id in waiting:
                    index = ids[motor_id]
                    data[index] = bytes(packet[9:9 + length])
                    corrupted.discard(index)
                    if packet[8] & ALERT:
                        alerts.add(index)
                    waiting.discard(motor_id)
                elif result == COMM_RX_CORRUPT and motor_id in waiting:
                    corrupted.add(ids[motor_id])
                    waiting.discard(motor_id)
                elif result != COMM_SUCCESS:
                    break  # timeout: the rest did not answer
            pending = [motor_id for motor_id in pending if ids[motor_id] not in data]
            if not pending:
                break
        self._port.is_using = False
        return data, corrupted, retries, alerts

    def _sync_write(self, entry: tuple[int, int], values: np.ndarray) -> None:
        """One sync write of `values` ((n,) or (n, k) ints of entry's size / k) to every motor."""
        address, size = entry
        group = GroupSyncWrite(self._port, self._packets, address, size)
        values = np.asarray(values, dtype=np.int64).reshape(len(self.calibration.motors), -1)
        width = size // values.shape[1]
        for motor, row in zip(self.calibration.motors, values):
            group.addParam(motor.id, [b for v in row for b in int(v & ((1 << 8 * width) - 1)).to_bytes(width, "little")])
        self._port.expect_reply = False
        try:
            group.txPacket()
        finally:
            self._port.expect_reply = True
            self._port.is_using = False

    def _hardware_errors(self, index: int) -> tuple[str, ...]:
        motor = self.calibration.motors[index]
        value, result, _ = self._packets.read1ByteTxRx(self._port, motor.id, HARDWARE_ERROR_STATUS[0])
        if result != COMM_SUCCESS:
            return ("hardware_error_unread",)
        return tuple(name for bit, name in HARDWARE_ERRORS.items() if value & bit) or ("alert",)

    def _current_units(self, tau: np.ndarray) -> np.ndarray:
        """Goal current values for shaft torques `tau` (N·m), clamped to each motor's current limit."""
        kt = np.array([m.torque_per_ampere for m in self._models])
        limit = np.array([m.current_limit for m in self._models])
        return np.clip(np.rint(tau / kt / AMPERE_PER_CURRENT_UNIT), -limit, limit).astype(np.int64)

    def _gear_ratios(self) -> np.ndarray:
        return np.array([m.gear_ratio for m in self.calibration.motors])
