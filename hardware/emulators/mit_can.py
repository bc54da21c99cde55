"""MIT-protocol CAN motors on a python-can bus, moving a plant with their own PD law, frames paced at the bit rate.

`MitCanBus` opens a python-can bus (`virtual`: in this process; `udp_multicast`: across
processes on this machine, on a `port` apart from other buses) and answers as the
calibration's motors would: each motor takes
the frames to its id (enter / exit motor mode, set zero, clear error, MIT commands; Damiao
register reads on 0x7FF) and answers each with one reply frame in its model's layout
(`s2r.hardware.drivers.mit_can_protocol`), from its master id (Damiao: id + 0x10) or the host
id 0 (cheetah layout). In motor mode it runs, every plant step,

    tau_shaft = clip(kp (q* - q) + kd (dq* - dq) + tau_ff, -torque_max, torque_max)     (shaft units)

and the plant gets the joint torque through the calibration's gear ratio and direction.

Wire timing: there is no wire on a virtual bus, so the emulator keeps one: every frame
(the host's and the replies) occupies it for `frame_bits` / bitrate seconds (stuff bits
included), one after the other; a reply is delivered when its last bit would have crossed,
after the command it answers. A host that sends 12 commands at once gets the 12th reply
24 frame times later, as on a 1 Mbit/s bus.

    calibration = read_motor_calibration("hardware/configs/go2_mit_can.yaml", spec)
    with MitCanBus(MujocoPlant(spec, initial_q=lying), calibration, channel="go2") as bus:
        robot = MitCanRobot(spec, "virtual:go2,calibration=hardware/configs/go2_mit_can.yaml")
        bus.faults.overheating.add(4)        # motor 4 reports rotor over-temperature and stops

Fault switches (`CanFaults`: `BusFaults`' plus one): `drop` (replies lost, the motor still
obeys), `drop_next`, `drop_commands` (the host's frames to these ids are lost: the motor
neither obeys nor answers), `corrupt` (replies arrive one byte short, a layout the host must
refuse), `silent` (the motor lost power: no torque, no reply), `overload` and `overheating`
(a Damiao motor latches that fault state and stops; its rotor reads 120 °C when overheating),
`bus_down` (no frame crosses: the motors' own CAN timeout switches them off). A motor in motor
mode that hears no command for `can_timeout_s` leaves it (Damiao: the communication-lost state),
as Damiao's TIMEOUT register (which the motors report: `can_timeout_s` / 50 µs) makes it; 0: never.

An IMU on the same bus (`imu_id`, e.g. `can_imu.DEFAULT_IMU_ID`; the plant must have `imu()`,
as `MujocoPlant` of a spec with an `imu` does) streams one sample every `imu_rate_hz` (200):
after a plant step, its rate and angle frames (`s2r.hardware.drivers.can_imu`) go on the wire
like every other frame. `silent ID` with the IMU's id (or `bus_down`) stops them.

One thread does everything, in order (as `serial_bus.PtyBus`): the plant's steps at absolute
deadlines, frames as they come, replies when due. A reply that falls due within the last plant
step's duration is sent before the step (which then runs that much late, half a step at most,
its deadlines unchanged): real motors answer whatever their own loops do, and a reply held back behind a
MuJoCo step would be the emulator's lateness, not the bus's. `realtime_priority` runs the
thread under SCHED_FIFO where permitted (`s2r emulate`: 60, as the serial buses). numpy and
python-can only.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import can
import numpy as np

from s2r.hardware.drivers.mit_can_protocol import (
    DAMIAO_MIT_MODE,
    DAMIAO_TIMEOUT_S,
    FRAME_BYTES,
    READ_REGISTER,
    REGISTER_ID,
    DamiaoRegister,
    DamiaoState,
    FrameError,
    MitCommand,
    MitModel,
    MitReply,
    frame_bits,
    mit_model,
    pack_register_reply,
    pack_reply,
    special_frame,
    unpack_command,
)
from s2r.hardware.emulators.plant import Plant
from s2r.hardware.deadline import set_realtime_priority
from s2r.hardware.drivers.can_imu import pack_imu
from s2r.hardware.emulators.serial_bus import BusFaults
from s2r.hardware.motors import RobotCalibration

HOST_ID = 0x000
"""Arbitration id of cheetah-layout replies."""
IMU_RATE_HZ = 200.0
"""Samples per second the emulated IMU streams (WitMotion's return rate 0x0b)."""
DAMIAO_MASTER_OFFSET = 0x10
"""Damiao's advice: master (reply) id = the motor's id + 0x10."""
AMBIENT_C = 30.0
"""Temperature of a motor that is not overheating, °C."""
OVERHEATED_C = 120.0
"""Rotor temperature an overheating motor reports, °C (above Damiao's 100 °C advice for OT_Value)."""


@dataclass
class CanFaults(BusFaults):
    """`BusFaults` and `drop_commands`: ids whose incoming frames are lost on the wire."""

    drop_commands: set[int] = field(default_factory=set)

    SWITCHES = BusFaults.SWITCHES + ("drop_commands",)

    def clear(self) -> None:
        super().clear()
        self.drop_commands.clear()

    def apply(self, line: str) -> str:
        """`BusFaults.apply`, and `drop_commands ID` (`restore ID` and `clear` switch it off too)."""
        words = line.split()
        if words and words[0] == "drop_commands" and len(words) > 1:
            try:
                self.drop_commands.update(int(w) for w in words[1:])
            except ValueError:
                raise ValueError(f"fault {line!r}: motor ids must be integers") from None
            return line.strip()
        if words and words[0] == "restore":
            self.drop_commands.difference_update(int(w) for w in words[1:] if w.isdigit())
        return super().apply(line)


@dataclass
class EmulatedMitMotor:
    """One motor's firmware: motor mode, the last command, a latched fault, its zero."""

    id: int
    model: MitModel
    reply_id: int
    enabled: bool = False
    command: MitCommand | None = None
    fault: DamiaoState | None = None
    zero: float = 0.0
    """Shaft angle (of the plant's mapping) the motor reads as 0 (set-zero frames move it)."""
    last_command_at: float = -math.inf
    torque: float = 0.0
    """Shaft torque of the last step, N·m."""

    def pd_torque(self, q: float, dq: float) -> float:
        """The MIT PD law in shaft units, clipped to the model's torque; 0 out of motor mode."""
        c = self.command
        if not self.enabled or self.fault is not None or c is None:
            return 0.0
        tau = c.kp * (c.position - q) + c.kd * (c.velocity - dq) + c.torque
        return float(np.clip(tau, -self.model.torque_max, self.model.torque_max))

    @property
    def state(self) -> DamiaoState:
        if self.fault is not None:
            return self.fault
        return DamiaoState.ENABLED if self.enabled else DamiaoState.DISABLED


class MitCanBus:
    """Serve the calibration's MIT motors on a python-can bus, moving `plant` (see the module)."""

    def __init__(self, plant: Plant, calibration: RobotCalibration, *, interface: str = "virtual",
                 channel: str = "s2r", port: int | None = None, bitrate: int = 1_000_000,
                 faults: CanFaults | None = None,
                 can_timeout_s: float = 0.1, realtime_priority: int = 0, imu_id: int | None = None,
                 imu_rate_hz: float = IMU_RATE_HZ) -> None:
        if interface not in ("virtual", "udp_multicast"):
            raise ValueError(f"MitCanBus: interface: {interface!r} (expected virtual or udp_multicast)")
        if not (isinstance(bitrate, int) and bitrate > 0):
            raise ValueError(f"MitCanBus: bitrate: expected a positive integer, got {bitrate!r}")
        self.plant, self.calibration = plant, calibration
        self.interface, self.channel, self.udp_port, self.bitrate = interface, channel, port, bitrate
        self.faults = faults if faults is not None else CanFaults()
        self.can_timeout_s = can_timeout_s
        self.realtime_priority = realtime_priority
        """SCHED_FIFO priority of the bus's thread where permitted (0: normal scheduling; `s2r emulate`: 60)."""
        self.setup_note: str | None = None
        """Why the thread runs with normal scheduling after all (SCHED_FIFO refused), or None."""
        self.motors: list[EmulatedMitMotor] = []
        for m in calibration.motors:
            model = mit_model(m.model)
            reply_id = HOST_ID if model.reply == "cheetah" else m.id + DAMIAO_MASTER_OFFSET
            self.motors.append(EmulatedMitMotor(m.id, model, reply_id))
        self._by_id = {m.id: m for m in self.motors}
        taken = set(self._by_id) & ({m.reply_id for m in self.motors} | {REGISTER_ID} | {imu_id})
        if taken:
            raise ValueError(f"MitCanBus: motor ids {sorted(taken)} collide with reply ids (ids + 0x10, 0, 0x7FF) or "
                             f"the IMU's ({imu_id})")
        if imu_id is not None and (not callable(getattr(plant, "imu", None)) or imu_id in
                                   {m.reply_id for m in self.motors}):
            raise ValueError(f"MitCanBus: imu_id {imu_id}: the plant has no imu() or the id is a motor's reply id")
        self.imu_id = imu_id
        """Arbitration id of the emulated IMU's frames (`s2r.hardware.drivers.can_imu`); None: no IMU."""
        self.imu_every = max(1, round(1.0 / (imu_rate_hz * plant.timestep)))
        """Plant steps between IMU samples (the IMU samples the plant after its step)."""
        self._joints = plant_index(calibration, plant)
        self._plant_joints = len(plant.q)
        self._shaft_q = self._shaft_dq = np.zeros(len(self.motors))
        """Shaft angles and velocities of the plant's last step, (num_motors,): what the encoders read."""
        self._sample_plant()
        self._bus: can.BusABC | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outbox: list[tuple[float, int, bytes]] = []
        """(due time, arbitration id, data) of replies on the wire, in order."""
        self._wire_free = 0.0
        self._stats = {"frames_in": 0, "commands_lost": 0, "replies": 0, "replies_lost": 0, "replies_corrupted": 0,
                       "physics_steps": 0, "physics_overruns": 0, "wire_bits": 0, "imu_frames": 0}
        self._lateness: list[float] = []

    # --- lifetime -------------------------------------------------------------------------------------------
    def start(self) -> MitCanBus:
        """Open the bus and serve on the emulator's thread; returns the emulator."""
        if self._thread is None:
            options = {"port": self.udp_port} if self.udp_port is not None else {}
            self._bus = can.Bus(interface=self.interface, channel=self.channel, bitrate=self.bitrate, **options)
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"MitCanBus({self.channel})", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and close the bus. Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    @property
    def port(self) -> str:
        """The bus as `--driver mit_can:PORT,calibration=FILE` names it, e.g. `udp_multicast:239.0.0.1:43500`."""
        udp = f":{self.udp_port}" if self.udp_port is not None else ""
        return f"{self.interface}:{self.channel}{udp}"

    def __enter__(self) -> MitCanBus:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> dict[str, float]:
        """Counters (frames in, commands lost, replies sent/lost/corrupted, physics steps and overruns, bits on
        the wire) and `reply_late_p99_us`: how much later than their wire time replies were delivered."""
        late = np.percentile(self._lateness, 99) * 1e6 if self._lateness else 0.0
        return {**self._stats, "reply_late_p99_us": float(late)}

    # --- the thread ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        self.setup_note = set_realtime_priority(self.realtime_priority)
        timestep = self.plant.timestep
        next_step = time.monotonic()
        step_s = 0.0
        """Seconds the last plant step took: a reply due within that long is sent before the step, not after it."""
        while not self._stop.is_set():
            now = time.monotonic()
            self._flush(now)
            reply_due = self._outbox[0][0] if self._outbox else math.inf
            if now >= next_step and (reply_due > now + step_s or now >= next_step + timestep / 2):
                self._advance(now)
                step_s = time.monotonic() - now
                self._stats["physics_steps"] += 1
                if self.imu_id is not None and self._stats["physics_steps"] % self.imu_every == 0:
                    self._send_imu(time.monotonic())
                next_step += timestep
                if time.monotonic() > next_step:
                    self._stats["physics_overruns"] += 1
                    next_step = time.monotonic()
                continue
            wake = min(reply_due, next_step if now < next_step else reply_due)
            message = self._bus.recv(max(wake - time.monotonic(), 0.0))
            if message is not None:
                self._receive(message, time.monotonic())

    def _advance(self, now: float) -> None:
        """One plant step under every motor's PD law; motors in motor mode without commands time out."""
        shaft_q, shaft_dq = self._shaft_q, self._shaft_dq
        tau = np.zeros(len(self.motors))
        for i, motor in enumerate(self.motors):
            if motor.enabled and 0 < self.can_timeout_s < now - motor.last_command_at:
                motor.enabled = False
                if motor.model.reply == "damiao":
                    motor.fault = DamiaoState.COMMUNICATION_LOST
            self._check_faults(motor)
            powered = motor.id not in self.faults.silent
            motor.torque = motor.pd_torque(shaft_q[i] - motor.zero, shaft_dq[i]) if powered else 0.0
            tau[i] = motor.torque
        joint_tau = np.zeros(self._plant_joints)
        joint_tau[self._joints] = self.calibration.joint_torque(tau)
        self.plant.step(joint_tau)
        self._sample_plant()

    def _send_imu(self, now: float) -> None:
        """Put one IMU sample of the plant (rate, then angle frame) on the wire; none while silent or the bus down."""
        if self.faults.bus_down or self.imu_id in self.faults.silent:
            return
        quat, gyro = self.plant.imu()
        for data in pack_imu(quat, gyro):
            bits = frame_bits(self.imu_id, data)
            self._stats["wire_bits"] += bits
            self._stats["imu_frames"] += 1
            self._wire_free = max(self._wire_free, now) + bits / self.bitrate
            self._outbox.append((self._wire_free, self.imu_id, data))

    def _check_faults(self, motor: EmulatedMitMotor) -> None:
        if motor.id in self.faults.overheating:
            motor.fault, motor.enabled = DamiaoState.ROTOR_OVER_TEMPERATURE, False
        elif motor.id in self.faults.overload:
            motor.fault, motor.enabled = DamiaoState.OVERLOAD, False

    def _receive(self, message: can.Message, now: float) -> None:
        motor = self._by_id.get(message.arbitration_id)
        register = message.arbitration_id == REGISTER_ID
        if (motor is None and not register) or message.is_error_frame or message.is_remote_frame:
            return  # replies (ours echoed, on udp_multicast) and other nodes' traffic
        data = bytes(message.data)
        self._stats["frames_in"] += 1
        bits = frame_bits(message.arbitration_id, data)
        self._stats["wire_bits"] += bits
        arrived = max(self._wire_free, now) + bits / self.bitrate
        self._wire_free = arrived
        if self.faults.bus_down:
            return
        if register:
            if len(data) != FRAME_BYTES or data[2] != READ_REGISTER:
                return
            motor = self._by_id.get(data[0] | (data[1] << 8))
            if motor is None or motor.model.reply != "damiao":
                return  # AK firmware has no registers
        if motor.id in self.faults.silent or motor.id in self.faults.drop_commands:
            self._stats["commands_lost"] += motor.id in self.faults.drop_commands
            return
        reply = self._register_reply(motor, DamiaoRegister(data[3])) if register else self._obey(motor, data, now)
        if reply is None:
            return
        self._stats["replies"] += 1
        if self.faults.lost(motor.id):
            self._stats["replies_lost"] += 1
            return
        if motor.id in self.faults.corrupt:
            reply = reply[:-1]
            self._stats["replies_corrupted"] += 1
        reply_bits = frame_bits(motor.reply_id, reply)
        self._stats["wire_bits"] += reply_bits
        self._wire_free = max(self._wire_free, arrived) + reply_bits / self.bitrate
        self._outbox.append((self._wire_free, motor.reply_id, reply))

    def _obey(self, motor: EmulatedMitMotor, data: bytes, now: float) -> bytes | None:
        """Act on a frame to the motor's id; its reply frame."""
        self._check_faults(motor)
        kind = special_frame(data)
        if kind == "enter":
            if motor.fault is None:
                motor.enabled, motor.command, motor.last_command_at = True, None, now
        elif kind == "exit":
            motor.enabled, motor.command = False, None
        elif kind == "zero":
            motor.zero = float(self._shaft_q[self.motors.index(motor)])
        elif kind == "clear":
            if motor.fault is not None and motor.id not in self.faults.overheating | self.faults.overload:
                motor.fault = None
        else:
            try:
                command = unpack_command(motor.model, data)
            except FrameError:
                return None  # the firmware ignores a frame it cannot read
            motor.last_command_at = now
            if motor.enabled and motor.fault is None:
                motor.command = command
        return pack_reply(motor.model, self._measurement(motor))

    def _measurement(self, motor: EmulatedMitMotor) -> MitReply:
        i = self.motors.index(motor)
        hot = motor.fault == DamiaoState.ROTOR_OVER_TEMPERATURE
        return MitReply(motor_id=motor.id, position=float(self._shaft_q[i] - motor.zero),
                        velocity=float(self._shaft_dq[i]),
                        torque=motor.torque, state=motor.state, mos_temperature=AMBIENT_C,
                        rotor_temperature=OVERHEATED_C if hot else AMBIENT_C)

    def _register_reply(self, motor: EmulatedMitMotor, register: DamiaoRegister) -> bytes:
        values = {DamiaoRegister.MST_ID: motor.reply_id, DamiaoRegister.ESC_ID: motor.id,
                  DamiaoRegister.TIMEOUT: round(self.can_timeout_s / DAMIAO_TIMEOUT_S),
                  DamiaoRegister.CTRL_MODE: DAMIAO_MIT_MODE, DamiaoRegister.PMAX: motor.model.position_max,
                  DamiaoRegister.VMAX: motor.model.velocity_max, DamiaoRegister.TMAX: motor.model.torque_max}
        return pack_register_reply(motor.id, register, values[register])

    def _sample_plant(self) -> None:
        self._shaft_q = self.calibration.shaft_position(self.plant.q[self._joints])
        self._shaft_dq = self.calibration.shaft_velocity(self.plant.dq[self._joints])

    def _flush(self, now: float) -> None:
        """Send every reply whose last bit has crossed the wire by `now`."""
        while self._outbox and self._outbox[0][0] <= now:
            due, arbitration_id, data = self._outbox.pop(0)
            self._bus.send(can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=False))
            self._lateness.append(time.monotonic() - due)
            if len(self._lateness) > 100_000:
                del self._lateness[:50_000]


def plant_index(calibration: RobotCalibration, plant: Plant) -> np.ndarray:
    """The plant's joint index of each motor, (num_motors,): the spec's actuated joints, in order."""
    spec = getattr(plant, "spec", None)
    if spec is None:
        return np.arange(len(calibration.motors))
    names = list(spec.joint_names)
    return np.array([names.index(m.joint) for m in calibration.motors], dtype=np.int64)
