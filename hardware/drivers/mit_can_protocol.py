"""The mini-cheetah ("MIT") CAN protocol of CubeMars AK and Damiao DM motors: frames as bytes.

One standard 8-byte CAN frame commands one motor's own PD loop, and the motor answers each
command with one reply frame. The motor computes, every cycle of its current loop,

    tau = kp (q* - q) + kd (dq* - dq) + tau_ff,   clipped to the model's torque range

in its own units (rad, rad/s, N·m at the motor's output shaft). Every value is a fixed-point
unsigned integer over the model's range, mapped the way the reference firmware (Ben Katz's
mini-cheetah motor controller, which AK and DM firmwares follow) maps it: clamp to the range,
scale to 0 … 2^bits - 1, truncate.

Command frame, to arbitration id = the motor's id (8 bytes, big-endian fields):

    byte   0     1     2     3           4     5     6           7
           p[15:8] p[7:0] v[11:4] v[3:0]|kp[11:8] kp[7:0] kd[11:4] kd[3:0]|t[11:8] t[7:0]
           position 16 bits, velocity 12, kp 12 (0–500), kd 12 (0–5), feed-forward torque 12

Reply frame:

    cheetah layout (AK, mini cheetah), 6 bytes, to the host's id:  id | p 16 | v 12 | t 12
    damiao layout (DM), 8 bytes, to the motor's master id:          state<<4 | id&0xF | p 16 | v 12 | t 12 |
                                                                     MOS temperature °C | rotor temperature °C

Special frames (7 bytes 0xFF, then one code): enter motor mode FC, exit motor mode FD, set the
current position as zero FE; Damiao also clears a latched error with FB. Damiao motors also
answer register reads, to arbitration id 0x7FF: [id low, id high, 0x33, register, 0, 0, 0, 0],
replied from the master id as [id low, id high, 0x33, register, value (4 bytes little-endian:
float32, or uint32 for ids, modes and versions)]; the driver reads the control mode and the
PMAX/VMAX/TMAX ranges to check a motor against its calibrated model.

On the wire a frame takes `frame_bits` bits (CAN 2.0A: 47 + 8 per data byte, plus the stuff bits
its content needs, computed from the bytes and their CRC-15): 111 to 135 bits for 8 bytes.

    model = MIT_MODELS["DM-J8009P"]
    data = pack_command(model, MitCommand(position=0.3, velocity=0.0, kp=20.0, kd=0.5, torque=0.0))
    reply = unpack_reply(model, frame_bytes)       # MitReply(motor_id, position, velocity, torque, ...)

Figures of the model table were checked against public drivers: AK80-6 is CubeMars' V1.1
firmware (DFKI's mini-cheetah-motor-driver-socketcan; firmware 2.0 widens velocity to ±38.2 or
±76 rad/s), DM-J4310-2EC and DM-J8009P-2EC are Damiao's default PMAX/VMAX/TMAX, AK70-10 is
CubeMars' published ranges as a public Python CAN driver's motor
table lists them.
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

FRAME_BYTES = 8
"""Every MIT command and special frame carries 8 data bytes."""
KP_MAX = 500.0
"""Upper end of the kp range, N·m/rad (lower end 0); the same for every model here."""
KD_MAX = 5.0
"""Upper end of the kd range, N·m·s/rad (lower end 0)."""

ENTER_MOTOR_MODE = bytes([0xFF] * 7 + [0xFC])
"""Power the motor's PD loop; the motor answers with a reply frame."""
EXIT_MOTOR_MODE = bytes([0xFF] * 7 + [0xFD])
"""Motor off (zero torque); the motor answers with a reply frame."""
SET_ZERO = bytes([0xFF] * 7 + [0xFE])
"""Make the present position the motor's zero (written to its flash on DM motors)."""
CLEAR_ERROR = bytes([0xFF] * 7 + [0xFB])
"""Damiao: clear a latched fault (over-temperature, over-current …) so that the motor can be entered again."""
SPECIAL_FRAMES = {ENTER_MOTOR_MODE: "enter", EXIT_MOTOR_MODE: "exit", SET_ZERO: "zero", CLEAR_ERROR: "clear"}
"""Special frame bytes → what they ask."""

ReplyLayout = Literal["cheetah", "damiao"]


class FrameError(ValueError):
    """A frame that is not what the protocol allows (length, id, special code); the message says which."""


class DamiaoState(IntEnum):
    """The state nibble of a Damiao reply (byte 0, high 4 bits)."""

    DISABLED = 0x0
    ENABLED = 0x1
    OVER_VOLTAGE = 0x8
    UNDER_VOLTAGE = 0x9
    OVER_CURRENT = 0xA
    MOS_OVER_TEMPERATURE = 0xB
    ROTOR_OVER_TEMPERATURE = 0xC
    COMMUNICATION_LOST = 0xD
    OVERLOAD = 0xE

    @property
    def is_fault(self) -> bool:
        return self not in (DamiaoState.DISABLED, DamiaoState.ENABLED)


@dataclass(frozen=True)
class MitModel:
    """One motor model: the ranges its frames encode and its reply layout."""

    name: str
    position_max: float
    """Position range ±position_max, rad at the motor's output shaft."""
    velocity_max: float
    """Velocity range ±velocity_max, rad/s."""
    torque_max: float
    """Torque range ±torque_max, N·m; the motor clips its PD law's torque to it."""
    reply: ReplyLayout
    """Which reply frame the motor sends (see the module docstring)."""

    def __post_init__(self) -> None:
        for field in ("position_max", "velocity_max", "torque_max"):
            if not getattr(self, field) > 0:
                raise ValueError(f"MitModel {self.name}: {field} {getattr(self, field)} must be positive")

    @property
    def reply_bytes(self) -> int:
        return 6 if self.reply == "cheetah" else 8


MIT_MODELS: dict[str, MitModel] = {
    model.name: model
    for model in (
        MitModel("AK80-6", position_max=12.5, velocity_max=22.5, torque_max=12.0, reply="cheetah"),
        MitModel("AK70-10", position_max=12.5, velocity_max=50.0, torque_max=24.8, reply="cheetah"),
        MitModel("DM-J4310", position_max=12.5, velocity_max=30.0, torque_max=10.0, reply="damiao"),
        MitModel("DM-J8009P", position_max=12.5, velocity_max=45.0, torque_max=54.0, reply="damiao"),
    )
}
"""Model name (as a calibration file writes it) → its ranges."""


def mit_model(name: str) -> MitModel:
    """The model called `name`; KeyError naming the known models."""
    try:
        return MIT_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown MIT motor model {name!r} (known: {', '.join(MIT_MODELS)})") from None


def float_to_uint(x: float, x_min: float, x_max: float, bits: int) -> int:
    """x clamped to [x_min, x_max] as an unsigned `bits`-bit integer, truncated as the firmware does."""
    x = min(max(x, x_min), x_max)
    return int((x - x_min) * ((1 << bits) - 1) / (x_max - x_min))


def uint_to_float(x_int: int, x_min: float, x_max: float, bits: int) -> float:
    """The value an unsigned `bits`-bit integer stands for over [x_min, x_max]."""
    return x_int * (x_max - x_min) / ((1 << bits) - 1) + x_min


def resolution(x_min: float, x_max: float, bits: int) -> float:
    """One step of a `bits`-bit field over [x_min, x_max]: the largest round-trip error inside the range."""
    return (x_max - x_min) / ((1 << bits) - 1)


@dataclass(frozen=True)
class MitCommand:
    """One command frame's content, in the motor's units."""

    position: float
    """Position target q*, rad."""
    velocity: float
    """Velocity target dq*, rad/s."""
    kp: float
    """Position gain, N·m/rad, in [0, 500]."""
    kd: float
    """Damping gain, N·m·s/rad, in [0, 5]."""
    torque: float
    """Feed-forward torque tau_ff, N·m."""


@dataclass(frozen=True)
class MitReply:
    """One reply frame's content, in the motor's units."""

    motor_id: int
    """The id the motor reports (Damiao: its low 4 bits)."""
    position: float
    """Measured position, rad."""
    velocity: float
    """Measured velocity, rad/s."""
    torque: float
    """Measured torque, N·m."""
    state: int = DamiaoState.ENABLED
    """Damiao state nibble (`DamiaoState`); a cheetah-layout reply carries none and reads ENABLED."""
    mos_temperature: float | None = None
    """Driver (MOSFET) temperature, °C; None in the cheetah layout."""
    rotor_temperature: float | None = None
    """Rotor (coil) temperature, °C; None in the cheetah layout."""


def pack_command(model: MitModel, command: MitCommand) -> bytes:
    """The 8 data bytes of a command frame; each value clamped to the model's range first."""
    p = float_to_uint(command.position, -model.position_max, model.position_max, 16)
    v = float_to_uint(command.velocity, -model.velocity_max, model.velocity_max, 12)
    kp = float_to_uint(command.kp, 0.0, KP_MAX, 12)
    kd = float_to_uint(command.kd, 0.0, KD_MAX, 12)
    t = float_to_uint(command.torque, -model.torque_max, model.torque_max, 12)
    return bytes((p >> 8, p & 0xFF, v >> 4, ((v & 0xF) << 4) | (kp >> 8), kp & 0xFF,
                  kd >> 4, ((kd & 0xF) << 4) | (t >> 8), t & 0xFF))


def unpack_command(model: MitModel, data: bytes) -> MitCommand:
    """A command frame's 8 data bytes as values (what the motor's firmware reads)."""
    if len(data) != FRAME_BYTES:
        raise FrameError(f"MIT command: {len(data)} data bytes (expected {FRAME_BYTES})")
    if bytes(data) in SPECIAL_FRAMES:
        raise FrameError(f"MIT command: {bytes(data).hex()} is a special frame, not a command")
    p = (data[0] << 8) | data[1]
    v = (data[2] << 4) | (data[3] >> 4)
    kp = ((data[3] & 0xF) << 8) | data[4]
    kd = (data[5] << 4) | (data[6] >> 4)
    t = ((data[6] & 0xF) << 8) | data[7]
    return MitCommand(
        position=uint_to_float(p, -model.position_max, model.position_max, 16),
        velocity=uint_to_float(v, -model.velocity_max, model.velocity_max, 12),
        kp=uint_to_float(kp, 0.0, KP_MAX, 12),
        kd=uint_to_float(kd, 0.0, KD_MAX, 12),
        torque=uint_to_float(t, -model.torque_max, model.torque_max, 12),
    )


def pack_reply(model: MitModel, reply: MitReply) -> bytes:
    """The data bytes of a reply frame in the model's layout (what a motor sends)."""
    p = float_to_uint(reply.position, -model.position_max, model.position_max, 16)
    v = float_to_uint(reply.velocity, -model.velocity_max, model.velocity_max, 12)
    t = float_to_uint(reply.torque, -model.torque_max, model.torque_max, 12)
    body = (p >> 8, p & 0xFF, v >> 4, ((v & 0xF) << 4) | (t >> 8), t & 0xFF)
    if model.reply == "cheetah":
        return bytes((reply.motor_id & 0xFF, *body))
    temperatures = tuple(min(max(round(c if c is not None else 0.0), 0), 255)
                         for c in (reply.mos_temperature, reply.rotor_temperature))
    return bytes((((int(reply.state) & 0xF) << 4) | (reply.motor_id & 0xF), *body, *temperatures))


def unpack_reply(model: MitModel, data: bytes) -> MitReply:
    """A reply frame's data bytes as values; FrameError for a length the model's layout does not have."""
    if len(data) != model.reply_bytes:
        raise FrameError(f"MIT reply ({model.name}, {model.reply} layout): {len(data)} data bytes "
                         f"(expected {model.reply_bytes})")
    p = (data[1] << 8) | data[2]
    v = (data[3] << 4) | (data[4] >> 4)
    t = ((data[4] & 0xF) << 8) | data[5]
    values = dict(
        position=uint_to_float(p, -model.position_max, model.position_max, 16),
        velocity=uint_to_float(v, -model.velocity_max, model.velocity_max, 12),
        torque=uint_to_float(t, -model.torque_max, model.torque_max, 12),
    )
    if model.reply == "cheetah":
        return MitReply(motor_id=data[0], **values)
    state = data[0] >> 4
    if state not in DamiaoState._value2member_map_:
        raise FrameError(f"MIT reply ({model.name}): state nibble {state:#x} is not a Damiao state")
    return MitReply(motor_id=data[0] & 0xF, state=DamiaoState(state), mos_temperature=float(data[6]),
                    rotor_temperature=float(data[7]), **values)


def special_frame(data: bytes) -> str | None:
    """'enter', 'exit', 'zero' or 'clear' for a special frame's bytes; None for any other frame."""
    return SPECIAL_FRAMES.get(bytes(data))


REGISTER_ID = 0x7FF
"""Arbitration id of Damiao register requests."""
READ_REGISTER = 0x33
"""Register request code: read."""


class DamiaoRegister(IntEnum):
    """The Damiao registers the driver reads (Damiao's register table, RID)."""

    MST_ID = 7
    """Master (reply) id, uint32."""
    ESC_ID = 8
    """The motor's own (command) id, uint32."""
    TIMEOUT = 9
    """CAN timeout, uint32 in 50 µs counts: a motor in motor mode that hears no frame for that long leaves it
    (the communication-lost state); 0: never (Damiao's default)."""
    CTRL_MODE = 10
    """Control mode, uint32: 1 MIT, 2 position-velocity, 3 velocity, 4 torque-position."""
    PMAX = 21
    """Position mapping range, rad, float32."""
    VMAX = 22
    """Velocity mapping range, rad/s, float32."""
    TMAX = 23
    """Torque mapping range, N·m, float32."""


DAMIAO_MIT_MODE = 1
"""CTRL_MODE of a motor that takes MIT frames."""
DAMIAO_TIMEOUT_S = 50e-6
"""Seconds per count of the TIMEOUT register."""
_UINT_REGISTERS = {DamiaoRegister.MST_ID, DamiaoRegister.ESC_ID, DamiaoRegister.TIMEOUT, DamiaoRegister.CTRL_MODE}


def pack_register_read(motor_id: int, register: DamiaoRegister) -> bytes:
    """The 8 data bytes (to REGISTER_ID) asking motor `motor_id` for `register`."""
    return bytes((motor_id & 0xFF, (motor_id >> 8) & 0x7, READ_REGISTER, int(register), 0, 0, 0, 0))


def pack_register_reply(motor_id: int, register: DamiaoRegister, value: float) -> bytes:
    """The 8 data bytes a Damiao motor answers a register read with."""
    raw = struct.pack("<I", int(value)) if register in _UINT_REGISTERS else struct.pack("<f", value)
    return bytes((motor_id & 0xFF, (motor_id >> 8) & 0x7, READ_REGISTER, int(register))) + raw


def unpack_register_reply(data: bytes, motor_id: int, register: DamiaoRegister) -> float:
    """The value of a register reply of motor `motor_id`; FrameError for a frame that is not that reply."""
    if len(data) != FRAME_BYTES or data[2] != READ_REGISTER or data[3] != int(register) \
            or (data[0] | (data[1] << 8)) != motor_id:
        raise FrameError(f"Damiao register reply: {bytes(data).hex()} is not motor {motor_id}'s "
                         f"{DamiaoRegister(register).name} (expected {motor_id & 0xFF:02x}{motor_id >> 8:02x}33"
                         f"{int(register):02x} and 4 value bytes)")
    fmt = "<I" if register in _UINT_REGISTERS else "<f"
    return float(struct.unpack(fmt, bytes(data[4:8]))[0])


_CRC15_POLY = 0x4599
_RUNS = re.compile("0+|1+")


def _crc15_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 7
        for _ in range(8):
            crc = ((crc << 1) ^ _CRC15_POLY) if crc & 0x4000 else crc << 1
        table.append(crc & 0x7FFF)
    return tuple(table)


_CRC15_TABLE = _crc15_table()


def _crc15(bits: str) -> int:
    """CAN's CRC-15 of a string of '0'/'1' (MSB first): bit by bit up to a multiple of 8, then a byte at a time."""
    crc = 0
    head = len(bits) % 8
    for bit in bits[:head]:
        crc = ((crc << 1) ^ _CRC15_POLY) & 0x7FFF if (bit == "1") != bool(crc & 0x4000) else (crc << 1) & 0x7FFF
    for i in range(head, len(bits), 8):
        crc = ((crc << 8) & 0x7FFF) ^ _CRC15_TABLE[((crc >> 7) ^ int(bits[i:i + 8], 2)) & 0xFF]
    return crc


@functools.lru_cache(maxsize=4096)
def frame_bits(arbitration_id: int, data: bytes) -> int:
    """Bits a CAN 2.0A data frame occupies on the wire, interframe space included.

    SOF, 11-bit id, RTR, IDE, r0, DLC, data, CRC-15 (the stuffed part: a complementary bit after
    every 5 equal bits), then CRC delimiter, ACK slot and delimiter, 7 bits end of frame and
    3 bits intermission: 47 + 8 len(data) + stuff bits.
    """
    bits = f"0{arbitration_id & 0x7FF:011b}000{len(data):04b}" + "".join(f"{byte:08b}" for byte in data)
    bits += f"{_crc15(bits):015b}"
    stuffed, start = 0, 0  # start: bits of this run's value already on the wire (a stuff bit of that value)
    for run in _RUNS.finditer(bits):
        length, first = run.end() - run.start(), 5 - start
        if length >= first:
            stuffed += 1 + (length - first) // 5
            start = 1 if (length - first) % 5 == 0 else 0
        else:
            start = 0
    return len(bits) + 13 + stuffed


def max_frame_bits(num_bytes: int) -> int:
    """The most bits a CAN 2.0A frame of `num_bytes` data bytes can take (every stuff bit it may need): 135 for 8."""
    return 47 + 8 * num_bytes + (34 + 8 * num_bytes - 1) // 4
