"""MitCanRobot: a robot of MIT-protocol CAN motors (CubeMars AK, Damiao DM) through python-can.

`--driver mit_can:INTERFACE:CHANNEL[@BITRATE],calibration=FILE[,imu=ID|none]` names the bus as
python-can does (INTERFACE one of `socketcan`, `slcan`, `virtual`, `udp_multicast`; BITRATE in
bit/s, default 1000000) and the motor calibration YAML (`s2r.hardware.motors`: ids, models,
offsets, directions, gear ratios, ranges). The calibration is required: a CAN motor's model
cannot be guessed from the spec. A robot whose spec has an `imu` (a legged robot's base) gets
its orientation and angular velocity from an IMU streaming on the same bus
(`s2r.hardware.drivers.can_imu`: WitMotion's angle and rate packets, from CAN id 0x50 unless
`imu=ID` names another; `imu=none`: no IMU, the state without base orientation).

    mit_can:socketcan:can0,calibration=go2_can.yaml          # a kernel CAN interface
    mit_can:slcan:/dev/ttyACM0@1000000,calibration=...       # a serial-line CAN adapter
    mit_can:virtual:go2,calibration=...                      # python-can's in-process bus (the emulator's)
    mit_can:udp_multicast:239.0.0.1,calibration=...          # python-can over UDP multicast, across processes
    mit_can:udp_multicast:239.0.0.1:43200,calibration=...    # ... on another UDP port than python-can's 43113

One tick is one transaction: `write_command` sends one command frame to every motor (all of
them first), then collects their replies until a deadline (twice the frames' longest wire time
plus `reply_slack_s`, 5 ms: a USB adapter's latency and a loaded host's); the replies are the
measurement the next `read_state` returns, stamped when they came. The kp and kd of each
command go to the motor's own PD loop (`Command` gains divided by gear_ratio²), which runs it
at its current-loop rate between ticks. A `read_state` without a command since the last one
asks the motors again: with the last command sent once they run one, else with the
exit-motor-mode frame (they stay off). `enable()` checks and arms: the motors enter motor mode
with the first command (they give no torque until then either way), so a control loop that
starts ticking a second after enable() does not trip their CAN timeout.

    with MitCanRobot(robot_spec("go2"), "virtual:go2,calibration=hardware/configs/go2_mit_can.yaml") as robot:
        robot.enable()                    # enter motor mode (refuses a joint outside its range, naming it)
        robot.write_command(command)      # (12,) arrays in joint units → 12 frames out, 12 replies in
        state = robot.read_state()        # the replies, in joint units

The IMU's frames are taken whenever the driver reads the bus (its replies, and at each
`read_state`), so a state carries the latest sample, stamped the older of the motors' and the
IMU's; connect and enable refuse an IMU that sends nothing for `imu_timeout_s` (0.2 s), and
`FaultConfig.lost_after` reads without a new sample latch the robot's fault (damping), as a
lost motor does.

On connect, every motor must answer: Damiao motors their control mode (MIT), PMAX/VMAX/TMAX
registers, which must be their calibrated model's, and a CAN timeout other than 0 (so that a
motor whose bus stops leaves motor mode instead of holding its last command); AK motors the
exit-motor-mode frame, in the cheetah reply layout. Missing or corrupted replies, Damiao fault
states (over-temperature, over-current, lost communication, ...) and lost motors follow
`BusRobot`'s rules: stale state, damping, counted per motor.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import can
import numpy as np

from s2r.hardware.drivers.can_imu import DEFAULT_IMU_ID, ImuReader
from s2r.hardware.drivers.mit_can_protocol import (
    CLEAR_ERROR,
    DAMIAO_MIT_MODE,
    ENTER_MOTOR_MODE,
    EXIT_MOTOR_MODE,
    REGISTER_ID,
    DamiaoRegister,
    DamiaoState,
    FrameError,
    MitCommand,
    MitModel,
    frame_bits,
    max_frame_bits,
    mit_model,
    pack_command,
    pack_register_read,
    unpack_register_reply,
    unpack_reply,
)
from s2r.hardware.motors import (
    BusReading,
    BusRobot,
    FaultConfig,
    MotorHealth,
    parse_bus_address,
    read_motor_calibration,
)
from s2r.interface import RobotError
from s2r.spec import RobotSpec
from s2r.state import Command, RobotState

INTERFACES = ("socketcan", "slcan", "virtual", "udp_multicast")
"""python-can interfaces the driver is documented and tested with (a real adapter: socketcan or slcan)."""
DEFAULT_BITRATE = 1_000_000
HOST_ID = 0x000
"""Arbitration id of cheetah-layout replies (the mini-cheetah firmware's CAN master id)."""
DAMIAO_FLAGS = {
    DamiaoState.OVER_VOLTAGE: "over-voltage",
    DamiaoState.UNDER_VOLTAGE: "under-voltage",
    DamiaoState.OVER_CURRENT: "over-current",
    DamiaoState.MOS_OVER_TEMPERATURE: "overheating (driver)",
    DamiaoState.ROTOR_OVER_TEMPERATURE: "overheating (rotor)",
    DamiaoState.COMMUNICATION_LOST: "communication lost",
    DamiaoState.OVERLOAD: "overload",
}
"""Damiao fault states → the error flag the driver reports."""


@dataclass(frozen=True)
class CanAddress:
    """A parsed `INTERFACE:CHANNEL[@BITRATE],calibration=FILE`."""

    interface: str
    channel: str
    bitrate: int
    calibration: Path
    port: int | None = None
    imu: str | None = None
    """The `imu=` option as given: an arbitration id (`0x50`, `80`), `none`, or None (not given: the IMU at
    `DEFAULT_IMU_ID` for a spec with an imu, none otherwise)."""
    """udp_multicast only: the UDP port (None: python-can's 43113). Groups on one port are not kept apart
    (the sockets bind the port on every address), so separate buses need separate ports."""

    def __str__(self) -> str:
        return f"{self.interface}:{self.channel}" + (f":{self.port}" if self.port is not None else "")

    def bus_options(self) -> dict:
        """Keyword arguments of `can.Bus` for this address."""
        options = {"interface": self.interface, "channel": self.channel, "bitrate": self.bitrate}
        return options | ({"port": self.port} if self.port is not None else {})


def parse_can_address(where: str) -> CanAddress:
    """`INTERFACE:CHANNEL[@BITRATE],calibration=FILE[,imu=ID|none]` as a CanAddress; ValueError naming `--driver`
    otherwise."""
    usage = "expected mit_can:INTERFACE:CHANNEL[@BITRATE],calibration=FILE[,imu=ID|none] (e.g. " \
            "mit_can:socketcan:can0,calibration=hardware/configs/go2_mit_can.yaml)"
    imu = None
    if (found := re.search(r",imu=([^,]*)", where or "")) is not None:
        imu, where_given, where = found[1], where, where[:found.start()] + where[found.end():]
        if imu != "none" and _imu_id(imu) is None:
            raise ValueError(f"--driver mit_can:{where_given}: imu={imu}: expected a CAN id (0x50, 0..0x7FF) or none")
    address = parse_bus_address(where, "mit_can")
    interface, _, channel = address.port.partition(":")
    if interface not in INTERFACES or not channel:
        raise ValueError(f"--driver mit_can:{where}: {usage}; INTERFACE one of {', '.join(INTERFACES)}")
    if address.calibration is None:
        raise ValueError(f"--driver mit_can:{where}: no calibration (the motors' ids, models and gear ratios); {usage}")
    port = None
    if interface == "udp_multicast" and channel.count(":") == 1:
        channel, _, text = channel.partition(":")
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError(f"--driver mit_can:{where}: UDP port {text!r} is not a number in 1..65535")
        port = int(text)
    return CanAddress(interface, channel, address.baud or DEFAULT_BITRATE, address.calibration, port, imu)


def _imu_id(text: str) -> int | None:
    """A standard CAN id written in decimal or 0x hex; None otherwise."""
    try:
        value = int(text, 0)
    except ValueError:
        return None
    return value if 0 <= value <= 0x7FF else None


@dataclass
class _Motor:
    """One motor as the driver addresses it."""

    index: int
    id: int
    joint: str
    model: MitModel
    reply_id: int
    """Arbitration id its replies come from: the Damiao master id, or HOST_ID (cheetah layout)."""


class MitCanRobot(BusRobot):
    """MIT-protocol CAN motors, one per joint, on one CAN bus (see the module docstring)."""

    health_period_s = 0.0
    """Temperatures come with every Damiao reply, so diagnostics are as fresh as the last tick (no extra traffic)."""

    def __init__(self, spec: RobotSpec, address: CanAddress | str, *, faults: FaultConfig = FaultConfig(),
                 reply_slack_s: float = 0.005, register_timeout_s: float = 0.02, imu_timeout_s: float = 0.2) -> None:
        self.address = parse_can_address(address) if isinstance(address, str) else address
        calibration = read_motor_calibration(self.address.calibration, spec)
        super().__init__(spec, calibration, faults)
        self.reply_slack_s = reply_slack_s
        """Seconds a transaction waits for replies beyond twice their frames' wire time."""
        self.register_timeout_s = register_timeout_s
        self._motors: list[_Motor] = []
        for i, m in enumerate(calibration.motors):
            try:
                model = mit_model(m.model)
            except KeyError as error:
                raise RobotError(f"{calibration.where}: motors[{i}].model: {error.args[0]}") from None
            self._motors.append(_Motor(i, m.id, m.joint, model, HOST_ID if model.reply == "cheetah" else -1))
        self._bus: can.BusABC | None = None
        self._pending: BusReading | None = None
        self._measured_at = 0.0
        """time.time() when the replies of the last transaction had been collected: the stamp of what they measured."""
        self._last_frames: list[bytes] | None = None
        self._temperatures = [None] * len(self._motors)
        given = self.address.imu
        self.imu_id: int | None = (None if given == "none" else _imu_id(given) if given is not None
                                   else DEFAULT_IMU_ID if spec.imu is not None else None)
        """Arbitration id of the IMU streaming on this bus (`s2r.hardware.drivers.can_imu`), or None: no IMU."""
        if self.imu_id is not None and self.imu_id in {m.id for m in self._motors} | {HOST_ID, REGISTER_ID}:
            raise RobotError(f"--driver mit_can:{self.address}: imu={self.imu_id:#x} is a motor's id or "
                             f"the host's")
        self.imu_timeout_s = imu_timeout_s
        """Seconds the IMU may send nothing before connect or enable refuses it."""
        self.imu = ImuReader()
        self._imu_samples_seen = 0
        self.imu_stale_ticks = 0
        """Consecutive read_states without a new IMU sample; `FaultConfig.lost_after` of them latch the fault."""

    # --- BusRobot ------------------------------------------------------------------------------------------
    def _open(self) -> None:
        a = self.address
        try:
            self._bus = can.Bus(**a.bus_options())
        except (OSError, can.CanError, ValueError) as error:
            raise RobotError(f"--driver mit_can:{a}: cannot open {a.interface} channel {a.channel!r}: "
                             f"{error}") from None
        try:
            for motor in self._motors:
                if motor.model.reply == "damiao":
                    self._check_damiao(motor)
            clear = [CLEAR_ERROR if m.model.reply == "damiao" else EXIT_MOTOR_MODE for m in self._motors]
            reading = self._transact(clear, retries=self.fault_config.retries, slack_s=self.register_timeout_s)
            for motor, good, corrupted in zip(self._motors, reading.good, reading.corrupted):
                if corrupted:
                    raise RobotError(f"{self.calibration.where}: motors[{motor.index}].model: {motor.model.name}, but "
                                     f"motor {motor.id} (joint {motor.joint}) answers with malformed replies "
                                     f"(expected the {motor.model.reply} layout of {motor.model.reply_bytes} bytes)")
                if not good:
                    raise self._silent(motor)
            if self.imu_id is not None:
                self._wait_for_imu("connect")
        except BaseException:
            self._close_bus()
            raise

    def _read_bus(self) -> BusReading:
        if self._pending is not None:
            self._drain()  # the IMU's frames since the transaction: the state carries its latest sample
            reading, self._pending = self._pending, None
            return reading
        frames = self._last_frames if self._enabled and self._last_frames else [EXIT_MOTOR_MODE] * len(self._motors)
        return self._transact(frames, retries=self.fault_config.retries)

    def _write_bus(self, command: Command) -> None:
        frames = [pack_command(m.model, MitCommand(float(command.q[i]), float(command.dq[i]), float(command.kp[i]),
                                                   float(command.kd[i]), float(command.tau_ff[i])))
                  for i, m in enumerate(self._motors)]
        if self._last_frames is None:  # the first command since enable(): into motor mode first
            self._transact([ENTER_MOTOR_MODE] * len(self._motors), retries=0, slack_s=self.register_timeout_s)
        self._last_frames = frames
        self._pending = self._transact(frames, retries=self.fault_config.retries)

    def _torque(self, on: bool) -> None:
        """Off: the exit-motor-mode frame now. On: armed; the motors enter motor mode with the first command (no
        torque until then either way), so that a loop that starts ticking late does not trip their CAN timeout."""
        self._pending, self._last_frames = None, None
        self.imu_stale_ticks = 0
        if not on:
            self._transact([EXIT_MOTOR_MODE] * len(self._motors), retries=0, slack_s=self.register_timeout_s)

    def _read_health(self) -> list[MotorHealth]:
        return [MotorHealth(temperature=t) for t in self._temperatures]

    def _accept(self, reading: BusReading, stamp: float) -> None:
        """`BusRobot._accept`, stamped when the replies came (a write's replies are read a tick later); a read
        without a new IMU sample counts towards the IMU's loss."""
        super()._accept(reading, self._measured_at)
        if self.imu_id is None:
            return
        if self.imu.samples == self._imu_samples_seen:
            self.imu_stale_ticks += 1
            if self.imu_stale_ticks >= self.fault_config.lost_after and self._faulted is None and self._enabled:
                self._faulted = f"imu (CAN id {self.imu_id:#x}): lost: {self.imu_stale_ticks} reads without a sample"
        else:
            self.imu_stale_ticks, self._imu_samples_seen = 0, self.imu.samples

    def read_state(self) -> RobotState:
        """`BusRobot.read_state`, with the IMU's last sample as base orientation and angular velocity; the stamp is
        the older of the motors' and the IMU's, and `FaultConfig.lost_after` reads without a new IMU sample latch
        the robot's fault (damping), as a lost motor does."""
        state = super().read_state()
        if self.imu_id is None:
            return state
        with self._lock:
            if self.imu.quat is not None:
                state.base_quat, state.base_ang_vel = self.imu.quat.copy(), self.imu.gyro.copy()
                state.stamp = min(state.stamp, self.imu.stamp)
            return state

    def check_enable(self) -> None:
        """`BusRobot.check_enable`, and the IMU (if any) streams: RobotError naming it otherwise."""
        super().check_enable()
        if self.imu_id is not None:
            with self._lock:
                self._wait_for_imu("enable")

    def _close_bus(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.shutdown()

    # --- the bus ------------------------------------------------------------------------------------------------
    def wire_time_s(self, frames: list[bytes]) -> float:
        """Seconds `frames` (one per motor, in motor order) and their replies take on the wire at the bitrate."""
        bits = sum(frame_bits(m.id, data) + frame_bits(max(m.reply_id, 0), bytes(m.model.reply_bytes))
                   for m, data in zip(self._motors, frames))
        return bits / self.address.bitrate

    def _transact(self, frames: list[bytes], *, retries: int, slack_s: float | None = None) -> BusReading:
        """Send one frame per motor (all first), collect the replies; resend to the silent ones up to `retries` times.

        Each try waits twice the longest wire time of the frames and their replies (every stuff bit) plus `slack_s`
        (default `reply_slack_s`) for the replies.
        """
        slack_s = self.reply_slack_s if slack_s is None else slack_s
        n = len(self._motors)
        reading = BusReading(position=np.zeros(n), velocity=np.zeros(n), torque=np.zeros(n),
                             good=np.zeros(n, dtype=bool), corrupted=np.zeros(n, dtype=bool),
                             error_flags=tuple(() for _ in range(n)), retries=np.zeros(n, dtype=np.int64))
        flags = [()] * n
        waiting = list(range(n))
        for attempt in range(retries + 1):
            if attempt:
                reading.retries[waiting] += 1
            self._drain()
            for i in waiting:
                self._send(self._motors[i].id, frames[i])
            worst_bits = sum(max_frame_bits(len(frames[i])) + max_frame_bits(self._motors[i].model.reply_bytes)
                             for i in waiting)
            deadline = time.monotonic() + 2 * worst_bits / self.address.bitrate + slack_s
            self._collect(set(waiting), reading, flags, deadline)
            waiting = [i for i in range(n) if not reading.good[i]]
            if not waiting:
                break
        self._measured_at = time.time()
        return BusReading(reading.position, reading.velocity, reading.torque, reading.good, reading.corrupted,
                          tuple(flags), reading.retries)

    def _collect(self, expected: set[int], reading: BusReading, flags: list, deadline: float) -> None:
        by_reply = {}
        for i in expected:
            motor = self._motors[i]
            by_reply.setdefault(motor.reply_id, []).append(motor)
        while expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            message = self._bus.recv(remaining)
            if message is None:
                return
            if self._take_imu(message):
                continue
            candidates = by_reply.get(message.arbitration_id)
            if not candidates or message.is_error_frame or message.is_remote_frame:
                continue  # our own frames echoed, other nodes' traffic
            data = bytes(message.data)
            motor = self._match(candidates, data)
            if motor is None or motor.index not in expected:
                continue
            try:
                reply = unpack_reply(motor.model, data)
                if reply.motor_id != motor.id & (0xF if motor.model.reply == "damiao" else 0xFF):
                    raise FrameError(f"reply of motor {motor.id} names motor {reply.motor_id}")
            except FrameError:
                reading.corrupted[motor.index] = True
                continue
            i = motor.index
            expected.discard(i)
            reading.good[i], reading.corrupted[i] = True, False
            reading.position[i], reading.velocity[i], reading.torque[i] = reply.position, reply.velocity, reply.torque
            if reply.rotor_temperature is not None:
                self._temperatures[i] = reply.rotor_temperature
            state = DamiaoState(reply.state)
            if state in DAMIAO_FLAGS:
                flags[i] = (DAMIAO_FLAGS[state],)
            elif self._enabled and state == DamiaoState.DISABLED and self._last_frames is not None:
                flags[i] = ("left motor mode",)

    @staticmethod
    def _match(candidates: list[_Motor], data: bytes) -> _Motor | None:
        """The motor a reply on one arbitration id is from: a Damiao master id is one motor's; cheetah replies
        share HOST_ID and name their motor in byte 0."""
        if candidates[0].model.reply == "damiao":
            return candidates[0]
        return next((m for m in candidates if data and data[0] == m.id), None)

    def _check_damiao(self, motor: _Motor) -> None:
        """Read the motor's control mode and ranges; refuse a motor that is not its calibrated model in MIT mode."""
        values = {}
        for register in (DamiaoRegister.CTRL_MODE, DamiaoRegister.PMAX, DamiaoRegister.VMAX, DamiaoRegister.TMAX,
                         DamiaoRegister.TIMEOUT):
            values[register], reply_id = self._read_register(motor, register)
        motor.reply_id = reply_id
        where = f"{self.calibration.where}: motors[{motor.index}]"
        if int(values[DamiaoRegister.CTRL_MODE]) != DAMIAO_MIT_MODE:
            raise RobotError(f"{where}: motor {motor.id} (joint {motor.joint}) is in control mode "
                             f"{int(values[DamiaoRegister.CTRL_MODE])} (expected {DAMIAO_MIT_MODE}, MIT); set it with "
                             f"Damiao's tool")
        if values[DamiaoRegister.TIMEOUT] == 0:
            raise RobotError(f"{where}: motor {motor.id} (joint {motor.joint}) has no CAN timeout (TIMEOUT register 0, "
                             f"Damiao's default): if the bus stopped it would hold its last command for ever; set "
                             f"TIMEOUT (50 µs counts, e.g. 2000 for 0.1 s) with Damiao's tool")
        ranges = (values[DamiaoRegister.PMAX], values[DamiaoRegister.VMAX], values[DamiaoRegister.TMAX])
        model = motor.model
        if not np.allclose(ranges, (model.position_max, model.velocity_max, model.torque_max), rtol=1e-4):
            raise RobotError(f"{where}.model: {model.name} (±{model.position_max:g} rad, "
                             f"±{model.velocity_max:g} rad/s, ±{model.torque_max:g} N·m), but motor {motor.id} "
                             f"(joint {motor.joint}) maps "
                             f"±{ranges[0]:g} rad, ±{ranges[1]:g} rad/s, ±{ranges[2]:g} N·m")

    def _read_register(self, motor: _Motor, register: DamiaoRegister) -> tuple[float, int]:
        """A register's value and the arbitration id it came from; RobotError when the motor does not answer."""
        request = pack_register_read(motor.id, register)
        malformed = False
        for _ in range(self.fault_config.retries + 1):
            self._drain()
            self._send(REGISTER_ID, request)
            deadline = time.monotonic() + self.register_timeout_s
            while (remaining := deadline - time.monotonic()) > 0:
                message = self._bus.recv(remaining)
                if message is None:
                    break
                if message.arbitration_id == REGISTER_ID or self._take_imu(message):
                    continue  # a request echoed, the IMU's stream
                data = bytes(message.data)
                try:
                    return unpack_register_reply(data, motor.id, register), message.arbitration_id
                except FrameError:
                    malformed |= len(data) >= 4 and data[:4] == request[:4]  # its answer, of the wrong length
        if malformed:
            raise RobotError(f"{self.calibration.where}: motors[{motor.index}].model: {motor.model.name}, but motor "
                             f"{motor.id} (joint {motor.joint}) answers with malformed replies (expected 8-byte "
                             f"Damiao register replies)")
        raise self._silent(motor)

    def _silent(self, motor: _Motor) -> RobotError:
        return RobotError(f"{self.calibration.where}: motors[{motor.index}].id: {motor.id} does not answer (expected "
                          f"a {motor.model.name} for joint {motor.joint} on {self.address})")

    def _send(self, arbitration_id: int, data: bytes) -> None:
        try:
            self._bus.send(can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=False))
        except can.CanError:
            pass  # a full transmit queue or a bus-off adapter: the missing reply counts it

    def _drain(self) -> None:
        """Take the IMU's frames that have come; drop the others (replies late for an earlier transaction)."""
        while (message := self._bus.recv(0.0)) is not None:
            self._take_imu(message)

    def _take_imu(self, message: can.Message) -> bool:
        """Feed a frame from the IMU's id to the IMU reader; whether it was one."""
        if self.imu_id is None or message.arbitration_id != self.imu_id or message.is_error_frame:
            return False
        self.imu.feed(bytes(message.data), time.time())
        return True

    def _wait_for_imu(self, when: str) -> None:
        """Wait up to `imu_timeout_s` for a fresh IMU sample; RobotError naming the IMU otherwise."""
        deadline = time.monotonic() + self.imu_timeout_s
        samples = self.imu.samples
        while self.imu.samples == samples and (remaining := deadline - time.monotonic()) > 0:
            message = self._bus.recv(remaining)
            if message is not None:
                self._take_imu(message)
        if self.imu.samples == samples:
            malformed = f" ({self.imu.malformed} malformed frames from it)" if self.imu.malformed else ""
            raise RobotError(f"--driver mit_can:{self.address}: cannot {when}: the IMU (CAN id {self.imu_id:#x}) sent "
                             f"no rate and angle frames in {self.imu_timeout_s:g} s{malformed} (imu=ID names another "
                             f"id, imu=none runs without one)")
