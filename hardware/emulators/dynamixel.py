"""Dynamixel X-series motors on an emulated protocol 2.0 bus, moving a plant with the motors' own control law.

Each motor holds an X-series control table (model number at 0, torque enable 64, hardware error
status 70, position gains 80..85, goal current 102, goal position 116, present current 126,
velocity 128, position 132, input voltage 144, temperature 146; `s2r.hardware.drivers.dynamixel`).
Instruction packets (ping, read, write, reboot, sync read, sync write; header FF FF FD 00, byte
stuffing, CRC-16 as the SDK computes it) are answered as the firmware does: a status packet per
addressed motor, in id order for a broadcast ping and in list order for a sync read, none for a
sync write or a broadcast write; a packet with a bad CRC gets a CRC-error status; an instruction
the firmware lacks gets an instruction error. Between packets, each motor with torque on drives
its joint (`MotorCalibration` says how it is mounted: offset, direction, gear ratio) with the
X-series law of the driver's docstring,

    tau_shaft = stall/885 · (P/128 · e + D/16 · ė · 1e-3 + I/65536 · ∫e)    position modes (e in pulses)
    tau_shaft = goal current · 2.69 mA · kt                                  current mode

clamped to the current limit (and, in current-based position mode, to the goal current) and to
the motor's torque-speed line, tau ∈ [-stall (1 + ω/ω0), stall (1 - ω/ω0)] (back-EMF at 12 V).
Overload and overheating (switched on through `BusFaults`) latch bits of the hardware error
status and, as the Shutdown register (63) says by default, turn the motor's torque off until a
reboot; its status packets carry the alert bit meanwhile.

    motors = DynamixelMotors(plant, calibration, faults)      # plant: s2r.hardware.emulators.plant.Plant
    with PtyBus(motors, baud=1_000_000, faults=faults) as bus:
        Dynamixel(spec, load_dynamixel_config(f"{bus.port}@1000000"))   # the driver, through dynamixel-sdk
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dynamixel_sdk import PacketHandler

from s2r.hardware.drivers.dynamixel import (
    ALERT,
    AMPERE_PER_CURRENT_UNIT,
    BAUD_RATE,
    BAUD_RATES,
    CURRENT_LIMIT,
    FIRMWARE_VERSION,
    FULL_PWM,
    GOAL_CURRENT,
    GOAL_POSITION,
    HARDWARE_ERROR_STATUS,
    ID,
    MAX_POSITION_LIMIT,
    MIN_POSITION_LIMIT,
    MODEL_NUMBER,
    MODELS,
    OPERATING_MODE,
    POSITION_D_GAIN,
    POSITION_I_GAIN,
    POSITION_P_GAIN,
    PRESENT_CURRENT,
    PRESENT_INPUT_VOLTAGE,
    PRESENT_POSITION,
    PRESENT_TEMPERATURE,
    PRESENT_VELOCITY,
    RAD_PER_TICK,
    RAD_S_PER_VELOCITY_UNIT,
    RETURN_DELAY_TIME,
    SHUTDOWN,
    TEMPERATURE_LIMIT,
    TICKS_PER_TURN,
    TORQUE_ENABLE,
    XSeriesModel,
)
from s2r.hardware.emulators.plant import Plant
from s2r.hardware.emulators.serial_bus import BusFaults, Reply
from s2r.hardware.motors import RobotCalibration

BROADCAST = 0xFE
PING, READ, WRITE, REBOOT, SYNC_READ, SYNC_WRITE, STATUS = 0x01, 0x02, 0x03, 0x08, 0x82, 0x83, 0x55
ERROR_INSTRUCTION, ERROR_CRC, ERROR_DATA_LENGTH, ERROR_ACCESS = 0x02, 0x03, 0x05, 0x07
OVERLOAD, OVERHEATING = 0x20, 0x04
TABLE_SIZE = 256
READ_ONLY = set(range(0, 7)) | set(range(122, 147)) | {HARDWARE_ERROR_STATUS[0]}
EEPROM_END = 64
"""Addresses below 64 are EEPROM: writable only with torque off."""
_CRC = PacketHandler(2.0)
"""The SDK's CRC-16 (polynomial 0x8005), so that the emulator checks packets as the SDK makes them."""


def crc16(data: bytes) -> int:
    """CRC-16 of `data` as protocol 2.0 (and the SDK) computes it."""
    return _CRC.updateCRC(0, list(data), len(data))


def stuff(body: bytes) -> bytes:
    """Byte stuffing after the length field: an FD after every FF FF FD."""
    out = bytearray()
    for byte in body:
        out.append(byte)
        if byte == 0xFD and len(out) >= 3 and out[-3:-1] == b"\xff\xff":
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        out.append(body[i])
        if body[i] == 0xFD and len(out) >= 3 and out[-3:-1] == b"\xff\xff" and i + 1 < len(body) and body[i + 1] == 0xFD:
            i += 1
        i += 1
    return bytes(out)


def packet(motor_id: int, instruction: int, params: bytes) -> bytes:
    """A protocol 2.0 packet: header, id, length, instruction, stuffed params, CRC-16 (little-endian)."""
    body = stuff(bytes([instruction]) + params)
    head = bytes([0xFF, 0xFF, 0xFD, 0x00, motor_id]) + (len(body) + 2).to_bytes(2, "little") + body
    return head + crc16(head).to_bytes(2, "little")


@dataclass
class _Motor:
    """One emulated motor: its control table and the state of its controller."""

    model: XSeriesModel
    table: bytearray
    integral: float = 0.0
    current: float = 0.0
    """Shaft torque it makes now, N·m."""
    temperature: float = 30.0

    def get(self, entry: tuple[int, int], signed: bool = False) -> int:
        address, size = entry
        return int.from_bytes(self.table[address:address + size], "little", signed=signed)

    def set(self, entry: tuple[int, int], value: int) -> None:
        address, size = entry
        self.table[address:address + size] = (int(value) & ((1 << 8 * size) - 1)).to_bytes(size, "little")


class DynamixelMotors:
    """X-series motors on one bus, driving `plant` (a `BusDevice` for `PtyBus`; see the module).

    calibration: how each motor is mounted on its joint (the truth the driver's calibration
    should find), in the spec's order; its `model`s pick the motors' figures.
    """

    def __init__(self, plant: Plant, calibration: RobotCalibration, faults: BusFaults | None = None, *,
                 baud: int = 1_000_000, voltage: float = 12.0) -> None:
        self.plant, self.calibration = plant, calibration
        self.faults = faults if faults is not None else BusFaults()
        self.timestep = plant.timestep
        self.voltage = voltage
        self.motors: dict[int, _Motor] = {}
        for mount in calibration.motors:
            if mount.model not in MODELS:
                raise ValueError(f"{calibration.where}: motor {mount.id}: model {mount.model!r} is not an X-series "
                                 f"model the emulator knows ({', '.join(MODELS)})")
            motor = _Motor(MODELS[mount.model], bytearray(TABLE_SIZE))
            motor.set(MODEL_NUMBER, motor.model.model_number)
            motor.set(FIRMWARE_VERSION, 48)
            motor.set(ID, mount.id)
            motor.set(BAUD_RATE, BAUD_RATES[baud])
            motor.set(RETURN_DELAY_TIME, 250)
            motor.set(OPERATING_MODE, 3)
            motor.set(TEMPERATURE_LIMIT, 80)
            motor.set(CURRENT_LIMIT, motor.model.current_limit)
            motor.set(MAX_POSITION_LIMIT, TICKS_PER_TURN - 1)
            motor.set(MIN_POSITION_LIMIT, 0)
            motor.set(SHUTDOWN, 0x34)  # overheating, electrical shock, overload
            motor.set(POSITION_P_GAIN, 800)
            self.motors[mount.id] = motor
        self._index = {m.id: i for i, m in enumerate(calibration.motors)}
        self._buffer = bytearray()
        self._power_cycles = self.faults.power_cycles
        self._sense()
        for mount in calibration.motors:
            motor = self.motors[mount.id]
            motor.set(GOAL_POSITION, motor.get(PRESENT_POSITION, signed=True))

    # --- BusDevice ---------------------------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Reply]:
        """Frame the host's bytes into instruction packets and answer the complete ones."""
        self._buffer.extend(data)
        replies: list[Reply] = []
        while True:
            start = self._buffer.find(b"\xff\xff\xfd\x00")
            if start < 0:
                del self._buffer[:max(len(self._buffer) - 3, 0)]
                return replies
            del self._buffer[:start]
            if len(self._buffer) < 7:
                return replies
            length = int.from_bytes(self._buffer[5:7], "little")
            if len(self._buffer) < 7 + length:
                return replies
            raw = bytes(self._buffer[:7 + length])
            del self._buffer[:7 + length]
            replies.extend(self._answer(raw))

    def advance(self) -> None:
        """The motors' control laws on the plant for one timestep; present values updated."""
        if self.faults.power_cycles != self._power_cycles:
            self._power_cycles = self.faults.power_cycles
            for motor in self.motors.values():
                motor.set(HARDWARE_ERROR_STATUS, 0)
                motor.set(TORQUE_ENABLE, 0)
        tau = np.zeros(len(self.calibration.motors))
        shaft = self.calibration.shaft_position(self.plant.q)
        omega = self.calibration.shaft_velocity(self.plant.dq)
        for i, mount in enumerate(self.calibration.motors):
            motor = self.motors[mount.id]
            self._hardware_faults(mount.id, motor)
            motor.current = self._law(motor, shaft[i], omega[i]) if motor.get(TORQUE_ENABLE) else 0.0
            tau[i] = motor.current
        self.plant.step(self.calibration.joint_torque(tau))
        self._sense()

    # --- the firmware ------------------------------------------------------------------------------------------
    def _answer(self, raw: bytes) -> list[Reply]:
        motor_id, instruction = raw[4], raw[7]
        if self.faults.bus_down:
            return []
        if crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
            return [self._status(motor_id, ERROR_CRC)] if motor_id in self._live() else []
        params = unstuff(raw[8:-2])
        if instruction == PING:
            ids = sorted(self._live()) if motor_id == BROADCAST else [motor_id] if motor_id in self._live() else []
            return [self._status(i, 0, self.motors[i].table[0:2] + self.motors[i].table[6:7]) for i in ids]
        if instruction == SYNC_READ and motor_id == BROADCAST and len(params) >= 4:
            address, length = int.from_bytes(params[0:2], "little"), int.from_bytes(params[2:4], "little")
            return [self._status(i, 0, self.motors[i].table[address:address + length]) for i in params[4:]
                    if i in self._live()]
        if instruction == SYNC_WRITE and motor_id == BROADCAST and len(params) >= 4:
            address, length = int.from_bytes(params[0:2], "little"), int.from_bytes(params[2:4], "little")
            for k in range(4, len(params) - length, length + 1):
                if params[k] in self._live():
                    self._store(self.motors[params[k]], address, params[k + 1:k + 1 + length])
            return []
        targets = sorted(self._live()) if motor_id == BROADCAST else [motor_id] if motor_id in self._live() else []
        replies = []
        for i in targets:
            motor = self.motors[i]
            if instruction == READ and len(params) == 4:
                address, length = int.from_bytes(params[0:2], "little"), int.from_bytes(params[2:4], "little")
                reply = self._status(i, 0, motor.table[address:address + length])
            elif instruction == WRITE and len(params) >= 3:
                error = self._store(motor, int.from_bytes(params[0:2], "little"), params[2:])
                reply = self._status(i, error)
            elif instruction == REBOOT:
                motor.set(HARDWARE_ERROR_STATUS, 0)
                motor.set(TORQUE_ENABLE, 0)
                reply = self._status(i, 0)
            else:
                reply = self._status(i, ERROR_INSTRUCTION)
            if motor_id != BROADCAST:
                replies.append(reply)
        return replies

    def _store(self, motor: _Motor, address: int, data: bytes) -> int:
        """Write `data` at `address` as the firmware does; the status error (0: done)."""
        end = address + len(data)
        if end > TABLE_SIZE or any(a in READ_ONLY for a in range(address, end)):
            return ERROR_ACCESS
        if address < EEPROM_END and motor.get(TORQUE_ENABLE):
            return ERROR_ACCESS
        if address <= TORQUE_ENABLE[0] < end and data[TORQUE_ENABLE[0] - address] and motor.get(HARDWARE_ERROR_STATUS):
            return ERROR_ACCESS  # torque stays off until a reboot clears the error
        motor.table[address:end] = data
        if address <= GOAL_POSITION[0] < end and motor.get(OPERATING_MODE) in (3, 5):
            low, high = motor.get(MIN_POSITION_LIMIT), motor.get(MAX_POSITION_LIMIT)
            motor.set(GOAL_POSITION, min(max(motor.get(GOAL_POSITION, signed=True), low), high))
        if address <= TORQUE_ENABLE[0] < end:
            motor.integral = 0.0
        return 0

    def _status(self, motor_id: int, error: int, params: bytes = b"") -> Reply:
        motor = self.motors[motor_id]
        if motor.get(HARDWARE_ERROR_STATUS):
            error |= ALERT
        delay = 2e-6 * motor.get(RETURN_DELAY_TIME)
        return Reply(motor_id, packet(motor_id, STATUS, bytes([error]) + bytes(params)), delay)

    def _live(self) -> set[int]:
        return set(self.motors) - self.faults.silent

    def _law(self, motor: _Motor, shaft: float, omega: float) -> float:
        """Shaft torque (N·m) of the motor's controller now."""
        model = motor.model
        mode = motor.get(OPERATING_MODE)
        limit = min(model.stall_torque, motor.get(CURRENT_LIMIT) * AMPERE_PER_CURRENT_UNIT * model.torque_per_ampere)
        if mode == 0:
            tau = motor.get(GOAL_CURRENT, signed=True) * AMPERE_PER_CURRENT_UNIT * model.torque_per_ampere
        else:
            error = motor.get(GOAL_POSITION, signed=True) - shaft / RAD_PER_TICK
            motor.integral += error * self.timestep * 1e3  # pulse·ms
            rate = -omega / RAD_PER_TICK * 1e-3  # pulses per ms
            pwm = (motor.get(POSITION_P_GAIN) / 128 * error + motor.get(POSITION_D_GAIN) / 16 * rate
                   + motor.get(POSITION_I_GAIN) / 65536 * motor.integral)
            tau = model.stall_torque / FULL_PWM * pwm
            if mode == 5:
                limit = min(limit, abs(motor.get(GOAL_CURRENT, signed=True)) * AMPERE_PER_CURRENT_UNIT
                            * model.torque_per_ampere)
        tau = min(max(tau, -limit), limit)
        back_emf = omega / model.no_load_speed * model.stall_torque * self.voltage / 12.0
        return min(max(tau, -model.stall_torque - back_emf), model.stall_torque - back_emf)

    def _hardware_faults(self, motor_id: int, motor: _Motor) -> None:
        bits = (OVERLOAD if motor_id in self.faults.overload else 0) | (
            OVERHEATING if motor_id in self.faults.overheating else 0)
        if bits:
            motor.set(HARDWARE_ERROR_STATUS, motor.get(HARDWARE_ERROR_STATUS) | bits)
            if bits & motor.get(SHUTDOWN):
                motor.set(TORQUE_ENABLE, 0)

    def _sense(self) -> None:
        """Present position, velocity, current, voltage and temperature from the plant."""
        shaft = self.calibration.shaft_position(self.plant.q)
        omega = self.calibration.shaft_velocity(self.plant.dq)
        for i, mount in enumerate(self.calibration.motors):
            motor = self.motors[mount.id]
            model = motor.model
            motor.set(PRESENT_POSITION, round(shaft[i] / RAD_PER_TICK))
            motor.set(PRESENT_VELOCITY, round(omega[i] / RAD_S_PER_VELOCITY_UNIT))
            motor.set(PRESENT_CURRENT, round(motor.current / model.torque_per_ampere / AMPERE_PER_CURRENT_UNIT))
            heat = 30.0 + 45.0 * (motor.current / model.stall_torque) ** 2
            motor.temperature += (heat - motor.temperature) * min(self.timestep / 60.0, 1.0)
            hot = mount.id in self.faults.overheating
            motor.set(PRESENT_TEMPERATURE, round(max(motor.temperature, 81.0) if hot else motor.temperature))
            motor.set(PRESENT_INPUT_VOLTAGE, round(self.voltage * 10))
