"""Feetech STS servos on an emulated bus: the control table, instruction and status packets, sync read
and sync write, the servo's position law moving a plant, and fault injection.

Each emulated servo holds an STS3215's control table (model number 777 at address 3, present
position at 56, ...). An instruction packet addressed to it (or a broadcast sync read/write that
lists it) is answered as the firmware does: a status packet with the error bits and the bytes
asked for, nothing for a sync write or a broadcast. Between packets the servos' position law
drives the plant, as the firmware's does the motor: with torque enabled,

    tau = clip(kp (q_goal - q) - kd dq, ±effort_limit · torque_limit / 1000)

and zero torque with it disabled (the arm is free: a leader arm moved by hand). Ticks and joint
angles are related by how each servo is mounted, given as a motor calibration
(`s2r.hardware.motors.RobotCalibration`: its encoder angle at the joint's zero, its direction, -1
for a servo mounted the other way round; default: the spec's ids, zero at tick 2048), and the
firmware's homing offset (register 31: present position = encoder - offset).

They are a `BusDevice` of `s2r.hardware.emulators.serial_bus.PtyBus`, which serves them on a
pseudo-terminal that `FeetechBus` (or Feetech's SDK) opens as its serial port, times the bytes at
the baud rate and flips the fault switches (`BusFaults`: lost, corrupted and silent replies, a bus
that stops answering are the wire's; overload and overheating are error bits the servos report,
and an overheating servo's temperature register reads above its limit):

    servos = FeetechServos(spec, MujocoPlant(spec))      # ids from the spec's bus_id
    with PtyBus(servos, baud=1_000_000, faults=servos.faults) as bus:
        robot = FeetechRobot(spec, bus.port)
        servos.faults.overload.add(3)                    # servo 3 reports an overload from now on

The servos answer without a return delay (register 7 at 0, as LeRobot configures its arms; the
factory setting is 500 µs per servo).
"""

from __future__ import annotations

import math
import threading

import numpy as np

from s2r.hardware.drivers.feetech_protocol import (
    BROADCAST_ID,
    STS3215,
    TICKS_PER_TURN,
    ErrorBit,
    Instruction,
    Packet,
    PacketParser,
    ProtocolError,
    Register,
    parse_sync_write,
    register_bytes,
    register_value,
    status_packet,
)
from s2r.hardware.emulators.plant import Plant
from s2r.hardware.emulators.serial_bus import BusFaults, Reply
from s2r.hardware.motors import RobotCalibration, check_calibration, default_calibration
from s2r.spec import RobotSpec

TICKS_PER_RAD = TICKS_PER_TURN / (2 * math.pi)
EPROM_END = 40
"""Addresses below 40 are EPROM: written only while the lock register (55) is 0."""
READ_ONLY = set(range(0, 5)) | set(range(56, 71))
"""Firmware version, model number and the present-value registers."""


class FeetechServos:
    """The servos of one robot's bus, moving `plant` (joint order of `spec`): a `BusDevice`."""

    def __init__(self, spec: RobotSpec, plant: Plant, *, mounting: RobotCalibration | None = None,
                 model_number: int = STS3215, voltage_v: float = 12.0, faults: BusFaults | None = None) -> None:
        self.spec = spec
        self.plant = plant
        self.timestep = plant.timestep
        """Seconds of physics per `advance` (the plant's)."""
        self.parser = PacketParser()
        ids = [joint.bus_id for joint in spec.joints]
        if any(i < 0 for i in ids):
            raise ValueError(f"{spec.name}: every joint needs a bus_id for a Feetech bus, got {ids}")
        self.ids = ids
        self.index = {motor_id: i for i, motor_id in enumerate(ids)}
        mounting = mounting or default_calibration(spec, "STS3215")
        check_calibration(mounting, spec)
        self.zero_ticks = np.array([m.offset for m in mounting.motors]) * TICKS_PER_RAD
        """(num_joints,) encoder ticks at each joint's zero."""
        self.direction = np.array([m.direction for m in mounting.motors])
        self.kp = spec.joint_array("kp")
        self.kd = spec.joint_array("kd")
        self.effort_limit = spec.joint_array("effort_limit")
        self.faults = faults if faults is not None else BusFaults()
        """The switches; give the same object to the PtyBus."""
        self.lock = threading.Lock()
        self._tau = np.zeros(len(ids))
        self._now: tuple[np.ndarray, np.ndarray] | None = None
        self.tables = [self._table(motor_id, model_number, voltage_v) for motor_id in ids]
        self.counts = {"instructions": 0, "statuses": 0, "sync_reads": 0, "sync_writes": 0, "bad_packets": 0}

    @staticmethod
    def _table(motor_id: int, model_number: int, voltage_v: float) -> bytearray:
        table = bytearray(128)
        defaults = {Register.MODEL_NUMBER: model_number, Register.ID: motor_id, Register.MAX_POSITION_LIMIT: 4095,
                    Register.TORQUE_LIMIT: 1000, Register.PRESENT_VOLTAGE: round(voltage_v * 10),
                    Register.PRESENT_TEMPERATURE: 30}
        for register, value in defaults.items():
            data = register_bytes(register, value)
            table[register:register + len(data)] = data
        table[8] = 1  # status return level: answer every instruction but broadcasts
        table[7] = 0  # return delay, 2 µs units
        table[13] = 70  # max temperature, °C
        return table

    # --- units ------------------------------------------------------------------------------------
    def _get(self, i: int, register: Register, size: int = 2) -> int:
        return register_value(register, self.tables[i][register:register + size])

    def _set(self, i: int, register: Register, value: int) -> None:
        data = register_bytes(register, value)
        self.tables[i][register:register + len(data)] = data

    def encoder_ticks(self, i: int, q: float) -> float:
        """The encoder reading of servo i at joint angle q (rad), before the homing offset."""
        return self.zero_ticks[i] + self.direction[i] * q * TICKS_PER_RAD

    def joint_angle(self, i: int, present_ticks: float) -> float:
        """The joint angle (rad) at which servo i reads `present_ticks` (after its homing offset)."""
        encoder = present_ticks + self._get(i, Register.HOMING_OFFSET)
        return (encoder - self.zero_ticks[i]) / (self.direction[i] * TICKS_PER_RAD)

    # --- the position law -------------------------------------------------------------------------
    def torques(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """Each servo's output torque (N·m), (num_joints,), for joint positions q and velocities dq."""
        tau = np.zeros(len(self.ids))
        for i in range(len(self.ids)):
            if not self.tables[i][Register.TORQUE_ENABLE]:
                continue
            goal = self.joint_angle(i, self._get(i, Register.GOAL_POSITION))
            limit = self.effort_limit[i] * self._get(i, Register.TORQUE_LIMIT) / 1000
            tau[i] = np.clip(self.kp[i] * (goal - q[i]) - self.kd[i] * dq[i], -limit, limit)
        return tau

    def advance(self) -> None:
        """One plant timestep with the servos' torques (computed at its start)."""
        with self.lock:
            self._tau = self.torques(self.plant.q, self.plant.dq)
            self.plant.step(self._tau)

    def _plant_state(self) -> tuple[np.ndarray, np.ndarray]:
        """The plant's (q, dq), read once per instruction packet."""
        if self._now is None:
            self._now = (self.plant.q, self.plant.dq)
        return self._now

    def _refresh(self, i: int) -> None:
        """The present-value registers of servo i from the plant's newest state."""
        q, dq = self._plant_state()
        present = round(self.encoder_ticks(i, float(q[i])) - self._get(i, Register.HOMING_OFFSET)) % TICKS_PER_TURN
        self._set(i, Register.PRESENT_POSITION, present)
        speed = round(float(self.direction[i] * dq[i]) * TICKS_PER_RAD)
        self._set(i, Register.PRESENT_SPEED, min(max(speed, -32767), 32767))
        load = round(float(self.direction[i] * self._tau[i] / self.effort_limit[i]) * 1000)
        self._set(i, Register.PRESENT_LOAD, min(max(load, -1000), 1000))
        moving = abs(speed) > 5
        self.tables[i][Register.MOVING] = int(moving)
        if self.ids[i] in self.faults.overheating:
            self.tables[i][Register.PRESENT_TEMPERATURE] = max(self.tables[i][13] + 5,
                                                              self.tables[i][Register.PRESENT_TEMPERATURE])

    # --- packets ----------------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Reply]:
        """The replies to the instruction packets `data` completes (any split of the stream), in wire order."""
        replies = []
        for packet in self.parser.feed(data):
            replies += self.handle(packet)
        return replies

    def handle(self, packet: Packet) -> list[Reply]:
        """The status packets the servos put on the wire in answer to one instruction packet (none for some)."""
        with self.lock:
            self.counts["instructions"] += 1
            self._now = None
            if self.faults.bus_down:  # the adapter is gone: nothing reaches the servos
                return []
            try:
                if packet.id == BROADCAST_ID:
                    return self._broadcast(packet)
                if packet.id not in self.index or packet.id in self.faults.silent:
                    return []
                return self._one(self.index[packet.id], packet)
            except (ProtocolError, IndexError):
                self.counts["bad_packets"] += 1
                return []

    def _status(self, i: int, params: bytes = b"") -> list[Reply]:
        motor_id = self.ids[i]
        error = (ErrorBit.OVERLOAD if motor_id in self.faults.overload else 0) | \
                (ErrorBit.OVERHEAT if motor_id in self.faults.overheating else 0)
        self.tables[i][Register.STATUS] = error
        self.counts["statuses"] += 1
        return [Reply(motor_id, status_packet(motor_id, error, params), self.tables[i][7] * 2e-6)]

    def _read(self, i: int, address: int, length: int) -> bytes:
        if address + length > len(self.tables[i]) or length == 0:
            raise ProtocolError(f"read of {length} bytes at {address}")
        if address + length > Register.PRESENT_POSITION and address <= Register.PRESENT_CURRENT + 1:
            self._refresh(i)
        return bytes(self.tables[i][address:address + length])

    def _write(self, i: int, address: int, data: bytes) -> None:
        table = self.tables[i]
        if address + len(data) > len(table):
            raise ProtocolError(f"write of {len(data)} bytes at {address}")
        locked = table[Register.LOCK] == 1
        for offset, value in enumerate(data):
            at = address + offset
            if at in READ_ONLY or (at < EPROM_END and locked) or at == Register.ID:
                continue
            table[at] = value
        if address <= Register.TORQUE_ENABLE < address + len(data) and table[Register.TORQUE_ENABLE]:
            table[Register.TORQUE_ENABLE] = 1

    def _one(self, i: int, packet: Packet) -> list[Reply]:
        if packet.code == Instruction.PING:
            return self._status(i)
        if packet.code == Instruction.READ:
            return self._status(i, self._read(i, packet.params[0], packet.params[1]))
        if packet.code == Instruction.WRITE:
            self._write(i, packet.params[0], packet.params[1:])
            return self._status(i)
        self.counts["bad_packets"] += 1
        return []

    def _broadcast(self, packet: Packet) -> list[Reply]:
        if packet.code == Instruction.SYNC_READ:
            self.counts["sync_reads"] += 1
            address, length = packet.params[0], packet.params[1]
            return [reply for motor_id in packet.params[2:] if self._answers(motor_id)
                    for reply in self._status(self.index[motor_id], self._read(self.index[motor_id], address, length))]
        if packet.code == Instruction.SYNC_WRITE:
            self.counts["sync_writes"] += 1
            address, _, entries = parse_sync_write(packet.params)
            for motor_id, data in entries.items():
                if self._answers(motor_id):
                    self._write(self.index[motor_id], address, data)
            return []
        if packet.code == Instruction.WRITE:
            for i, motor_id in enumerate(self.ids):
                if self._answers(motor_id):
                    self._write(i, packet.params[0], packet.params[1:])
            return []
        self.counts["bad_packets"] += 1
        return []

    def _answers(self, motor_id: int) -> bool:
        """A servo of this bus that is there (not silent)."""
        return motor_id in self.index and motor_id not in self.faults.silent

    # --- what a test or the bench reads back --------------------------------------------------------
    def torque_enabled(self) -> np.ndarray:
        """(num_joints,) bool: which servos have torque on."""
        with self.lock:
            return np.array([bool(t[Register.TORQUE_ENABLE]) for t in self.tables])

    def goal_angles(self) -> np.ndarray:
        """(num_joints,) rad: the joint angle each servo's goal position register means."""
        with self.lock:
            return np.array([self.joint_angle(i, self._get(i, Register.GOAL_POSITION)) for i in range(len(self.ids))])




class HandPlant:
    """An arm moved by hand (a `Plant`): its joints follow a path in time, whatever torque the servos apply.

    What a torque-free leader arm or an arm being calibrated does: the operator's hand is the
    physics. `follow(path)` makes q follow `path(t)` (t in seconds from the call); `move_to(q, s)`
    goes there in a straight line (smoothstep in time) over s seconds and stays. Time advances by
    `timestep` each `step`, as for any plant (the PtyBus steps it in real time).

        plant = HandPlant(spec.default_q)
        plant.move_to(np.array([0.5, 0, 0, 0, 0, 0]), 0.4)
        plant.follow(lambda t: 0.3 * np.sin(t) * np.ones(6))
    """

    def __init__(self, q0: np.ndarray, *, timestep: float = 0.002) -> None:
        self.timestep = timestep
        self.time = 0.0
        self._lock = threading.Lock()
        start = np.array(q0, dtype=np.float64)
        self._path = lambda t: start
        self._start = 0.0
        self._q = start.copy()
        self._dq = np.zeros_like(start)

    @property
    def q(self) -> np.ndarray:
        """(num_joints,) rad, now."""
        return self._q.copy()

    @property
    def dq(self) -> np.ndarray:
        """(num_joints,) rad/s, now (the path's finite difference over one timestep)."""
        return self._dq.copy()

    def follow(self, path) -> None:
        """q(t) = path(t), t seconds from now; path returns (num_joints,) rad."""
        with self._lock:
            self._path, self._start = path, self.time

    def move_to(self, q: np.ndarray, seconds: float) -> None:
        """Go to q (num_joints,) rad in `seconds` and hold there."""
        begin, end = self.q, np.asarray(q, dtype=np.float64)

        def path(t: float) -> np.ndarray:
            s = min(max(t / seconds, 0.0), 1.0) if seconds > 0 else 1.0
            return begin + (end - begin) * (3 * s**2 - 2 * s**3)

        self.follow(path)

    def step(self, tau: np.ndarray) -> None:
        """One timestep along the path (tau is ignored: the hand wins)."""
        with self._lock:
            self.time += self.timestep
            q = np.asarray(self._path(self.time - self._start), dtype=np.float64)
            self._dq = (q - self._q) / self.timestep
            self._q = q
