"""Feetech STS/SMS servos (STS3215: the SO-100/SO-101 arms) as a RobotInterface: `--driver feetech:PORT`.

One sync read and one sync write per tick, over `FeetechBus`:

    read   0x82 at 56, 8 bytes from every servo: position, speed, load, voltage, temperature
    write  0x83 at 42, 2 bytes to every servo: goal position

so temperatures and voltages come with every read, at no extra transaction. The servos run
their own position loop (their P/D coefficients, the spec's kp/kd in joint units); a joint
commanded with kp = 0 (the safety filter's damping, a latched fault) gets its goal set to where
it is measured, which is the nearest a position servo comes to damping (the STS has no torque
mode). The motor rules of `BusRobot` hold: a missing or corrupted reply is a stale state and is
read again once within the tick (`FaultConfig.retries`), a motor lost or reporting an error
latches damping, enabling refuses a joint outside its calibrated range, naming it.

WHERE is `PORT[@BAUD][,calibration=FILE]` (`s2r.hardware.motors.parse_bus_address`; baud rate
1 000 000 by default, the servos' factory setting). Without a calibration file the motors are
the spec's `bus_id`s, joint zero at tick 2048, direction +1 (`default_calibration`).

Ticks and the shaft angle of `s2r.hardware.motors`: the shaft angle is the servo's encoder
reading in rad (0 at encoder tick 0), and the encoder reading is the present position plus the
servo's homing offset (register 31, read at connect: LeRobot's calibration writes one). A joint
lies within half a turn of its offset, so the angle is unwrapped around the offset.

    with FeetechRobot(robot_spec("so101"), parse_bus_address("/dev/ttyACM0", "feetech")) as arm:
        arm.enable()
        state = arm.read_state()
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from s2r.hardware.drivers.feetech_bus import FeetechBus, NoReply
from s2r.hardware.drivers.feetech_protocol import (
    MODELS,
    TICKS_PER_TURN,
    ErrorBit,
    Register,
    encode_value,
)
from s2r.hardware.motors import (
    BusAddress,
    BusReading,
    BusRobot,
    FaultConfig,
    MotorHealth,
    default_calibration,
    parse_bus_address,
    read_motor_calibration,
)
from s2r.interface import RobotError
from s2r.spec import RobotSpec
from s2r.state import Command

T = TypeVar("T")

DEFAULT_BAUD = 1_000_000
RAD_PER_TICK = 2 * math.pi / TICKS_PER_TURN
STALL_TORQUE = {"STS3215": 2.94, "STS3250": 4.9, "SM8512BL": 11.8}
"""N·m at full load (present load 1000 = 100 %), per model at 12 V (Feetech's data sheets)."""
READ_SPAN = (Register.PRESENT_POSITION, 8)
"""Address and length of the one sync read: position, speed, load (2 bytes each), voltage, temperature."""
ERROR_NAMES = {int(ErrorBit.VOLTAGE): "voltage", int(ErrorBit.ANGLE_SENSOR): "encoder",
               int(ErrorBit.OVERHEAT): "overheating", int(ErrorBit.OVERCURRENT): "overcurrent",
               int(ErrorBit.OVERLOAD): "overload"}


def _decode_state(data: bytes) -> tuple[int, int, int]:
    """Position, speed and load from the 8 bytes of READ_SPAN (little-endian; speed and load sign-magnitude, their
    sign in bits 15 and 10), in plain integer arithmetic: a tick decodes six of these."""
    speed, load = data[2] | data[3] << 8, data[4] | data[5] << 8
    return (data[0] | data[1] << 8, -(speed & 0x7FFF) if speed & 0x8000 else speed,
            -(load & 0x3FF) if load & 0x400 else load)


def load_feetech_address(where: str) -> BusAddress:
    """The driver's config from WHERE (`PORT[@BAUD][,calibration=FILE]`)."""
    return parse_bus_address(where, "feetech")


class FeetechRobot(BusRobot):
    """A robot of Feetech STS/SMS servos on one serial bus, one per joint, in spec order."""

    health_period_s = 0.0
    """Temperatures and voltages come with every tick's sync read: `diagnostics()` is always the newest."""

    def __init__(self, spec: RobotSpec, address: BusAddress | str | None, *, faults: FaultConfig = FaultConfig(),
                 reply_margin_s: float = 0.01) -> None:
        if address is None or address == "":
            raise RobotError("--driver feetech: expected feetech:PORT[@BAUD][,calibration=FILE] "
                             "(e.g. feetech:/dev/ttyACM0)")
        if isinstance(address, str):
            address = load_feetech_address(address)
        calibration = (read_motor_calibration(address.calibration, spec) if address.calibration
                       else default_calibration(spec, "STS3215"))
        super().__init__(spec, calibration, faults)
        self.address = address
        self.bus = FeetechBus(address.port, address.baud or DEFAULT_BAUD, reply_margin_s=reply_margin_s)
        self.ids = list(calibration.ids)
        self.models = [m.model.upper() for m in calibration.motors]
        for motor, model in zip(calibration.motors, self.models):
            if model not in STALL_TORQUE:
                raise RobotError(f"{calibration.where}: motor {motor.id} (joint {motor.joint}): model {motor.model!r} "
                                 f"is not a Feetech STS/SMS servo this driver knows ({', '.join(STALL_TORQUE)})")
        self.stall_torque = np.array([STALL_TORQUE[m] for m in self.models])
        self.homing = np.zeros(len(self.ids))
        """Each servo's homing offset register, ticks (present position = encoder - homing)."""
        self._offset_ticks = np.array([m.offset for m in calibration.motors]) / RAD_PER_TICK
        self._health_now = [MotorHealth() for _ in self.ids]
        self._present = np.zeros(len(self.ids))

    # --- BusRobot ---------------------------------------------------------------------------------------
    def _open(self) -> None:
        self.bus.open()
        try:
            self._check_motors()
            self._torque(False)
        except Exception:
            self.bus.close()
            raise

    def _check_motors(self) -> None:
        where = f"{self.bus.port} at {self.bus.baudrate} baud"
        answered = [motor_id for motor_id in self.ids if self._tried(lambda: self.bus.ping(motor_id)) is not None]
        if not answered:
            raise RobotError(f"{where}: no motor answers (expected ids {', '.join(map(str, self.ids))}; wrong baud "
                             f"rate? Feetech servos ship at {DEFAULT_BAUD})")
        for i, motor in enumerate(self.calibration.motors):
            if motor.id not in answered:
                raise RobotError(f"{self.calibration.where}: motors[{i}].id: {motor.id} does not answer (expected "
                                 f"the {motor.model} of joint {motor.joint} at id {motor.id} on {where})")
            number = self._read_one(motor.id, Register.MODEL_NUMBER, 2)
            model = MODELS.get(number, "").upper()
            if model != self.models[i]:
                found = model or f"servo of model number {number}"
                raise RobotError(f"{self.calibration.where}: motors[{i}].model: {motor.model}, but id {motor.id} "
                                 f"on {self.bus.port} is a {found} (joint {motor.joint})")
            self.homing[i] = self._read_one(motor.id, Register.HOMING_OFFSET, 2)

    def _tried(self, call: Callable[[], T]) -> T | None:
        """`call`'s result from the first of 1 + retries tries that a servo answers (a reply can miss its deadline
        on a busy computer); None when none is answered."""
        for _ in range(1 + self.fault_config.retries):
            try:
                return call()
            except NoReply:
                pass
        return None

    def _read_one(self, motor_id: int, register: Register, length: int) -> int:
        """One register of one servo, tried 1 + retries times; RobotError naming the servo and register otherwise."""
        value = self._tried(lambda: self.bus.read_register(motor_id, register, length))
        if value is None:
            raise RobotError(f"{self.bus.port}: id {motor_id} does not answer a read of register "
                             f"{register.name.lower()} ({1 + self.fault_config.retries} tries)")
        return value

    def _read_bus(self) -> BusReading:
        n = len(self.ids)
        address, length = READ_SPAN
        replies = self.bus.sync_read(address, length, self.ids)
        corrupted = np.array([motor_id in self.bus.corrupt_ids for motor_id in self.ids])
        retries = np.zeros(n, dtype=int)
        for _ in range(self.fault_config.retries):
            missing = [motor_id for motor_id in self.ids if motor_id not in replies]
            if not missing:
                break
            for motor_id in missing:
                retries[self.ids.index(motor_id)] += 1
            replies.update(self.bus.sync_read(address, length, missing))
        good = np.array([motor_id in replies for motor_id in self.ids])
        values = [(0, 0, 0)] * n
        flags: list[tuple[str, ...]] = [()] * n
        for i, motor_id in enumerate(self.ids):
            reply = replies.get(motor_id)
            if reply is None:
                continue
            values[i] = _decode_state(reply.params)
            self._health_now[i] = MotorHealth(temperature=float(reply.params[7]), voltage=reply.params[6] / 10)
            if reply.code:
                flags[i] = tuple(name for bit, name in ERROR_NAMES.items() if reply.code & bit)
        present, speed, load = np.array(values, dtype=np.float64).T
        self._present[good] = present[good]
        encoder = present + self.homing
        # Unwrapped around the offset: the joint lies within half a turn of it.
        shaft_ticks = self._offset_ticks + (encoder - self._offset_ticks + TICKS_PER_TURN / 2) % TICKS_PER_TURN \
            - TICKS_PER_TURN / 2
        return BusReading(position=shaft_ticks * RAD_PER_TICK, velocity=speed * RAD_PER_TICK,
                          torque=load / 1000 * self.stall_torque, good=good, corrupted=corrupted & ~good,
                          error_flags=tuple(flags), retries=retries)

    def _write_bus(self, command: Command) -> None:
        goal_ticks = command.q / RAD_PER_TICK - self.homing
        hold = command.kp <= 0
        goal_ticks[hold] = self._present[hold]
        goals = np.clip(np.round(goal_ticks), 0, TICKS_PER_TURN - 1).astype(int)
        self.bus.sync_write(Register.GOAL_POSITION, 2,
                            {motor_id: encode_value(int(goal), 2) for motor_id, goal in zip(self.ids, goals)})

    def _torque(self, on: bool) -> None:
        if on:  # the goal registers first: a servo enabled on a stale goal would jump to it
            self.bus.sync_write(Register.GOAL_POSITION, 2, {motor_id: encode_value(int(p), 2)
                                                            for motor_id, p in zip(self.ids, self._present)})
        self.bus.sync_write(Register.TORQUE_ENABLE, 1, {motor_id: bytes((int(on),)) for motor_id in self.ids})

    def _read_health(self) -> list[MotorHealth]:
        return list(self._health_now)

    def _close_bus(self) -> None:
        self.bus.close()

    # --- figures ------------------------------------------------------------------------------------------
    def bus_counts(self) -> dict[str, int]:
        """Transactions, replies, timeouts and corrupt packets on the wire since the port opened."""
        return dict(self.bus.counts)
