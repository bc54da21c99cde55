"""The Feetech STS/SMS serial bus protocol (STS3215 and kin): packets, checksums, the control table.

Feetech's servos speak a half-duplex TTL protocol at up to 1 Mbaud. Every packet, from the
master (an instruction) or from a servo (a status), is

    0xFF 0xFF  id  length  code  params...  checksum        length = len(params) + 2
                                                             checksum = ~(id + length + code + Σ params) & 0xFF

where `code` is the instruction (master → servo) or the servo's error bits (servo → master).
Sync read (0x82) asks several servos for the same register span in one instruction; each
answers with its own status packet, in the order of the ids. Sync write (0x83) writes a span
on several servos in one instruction, which nobody answers. Multi-byte registers are little
endian; signed ones are sign-magnitude with the sign in a register-specific bit (15 for speeds,
11 for the homing offset, 10 for the load).

This module is the codec, written against Feetech's STS/SMS manual and checked against its
Python SDK (`ftservo-python-sdk`, `scservo_sdk`) in the tests: pure functions and a stream
parser, no I/O. The bus over pyserial is `s2r.hardware.drivers.feetech_bus`; the servo side is
`s2r.hardware.emulators.feetech`.

    packet = sync_read_packet(Register.PRESENT_POSITION, 6, [1, 2, 3])
    parser = PacketParser()
    for status in parser.feed(serial.read(24)):       # Packet(id=1, code=0, params=b"...")
        ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
"""The id every servo listens to; nobody answers a broadcast except in a sync read."""
MAX_PARAMS = 250 - 6
"""Parameters in one packet at most (the servos' 250-byte receive buffer, less framing)."""
STATUS_OVERHEAD = 6
"""Bytes of a status packet besides its parameters: header (2), id, length, error, checksum."""


class Instruction(IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class Register(IntEnum):
    """STS/SMS control table addresses (Feetech's STS manual; the SDK's `sms_sts.py` names them alike)."""

    MODEL_NUMBER = 3  # 2 bytes, read only (EPROM)
    ID = 5
    BAUD_RATE = 6
    MIN_POSITION_LIMIT = 9  # 2 bytes
    MAX_POSITION_LIMIT = 11  # 2 bytes
    HOMING_OFFSET = 31  # 2 bytes, sign bit 11: present position = encoder - offset
    OPERATING_MODE = 33  # 0 position, 1 speed, 2 PWM, 3 step
    TORQUE_ENABLE = 40  # SRAM from here on
    ACCELERATION = 41
    GOAL_POSITION = 42  # 2 bytes
    GOAL_TIME = 44  # 2 bytes
    GOAL_SPEED = 46  # 2 bytes, sign bit 15
    TORQUE_LIMIT = 48  # 2 bytes, 0.1 % of stall torque
    LOCK = 55  # 1: EPROM writes locked
    PRESENT_POSITION = 56  # 2 bytes, ticks 0..4095
    PRESENT_SPEED = 58  # 2 bytes, sign bit 15, ticks/s
    PRESENT_LOAD = 60  # 2 bytes, sign bit 10, 0.1 % of stall torque
    PRESENT_VOLTAGE = 62  # 0.1 V
    PRESENT_TEMPERATURE = 63  # °C
    STATUS = 65  # the error bits of the last status
    MOVING = 66
    PRESENT_CURRENT = 69  # 2 bytes, 6.5 mA


REGISTER_SIZE = {Register.MODEL_NUMBER: 2, Register.MIN_POSITION_LIMIT: 2, Register.MAX_POSITION_LIMIT: 2,
                 Register.HOMING_OFFSET: 2, Register.GOAL_POSITION: 2, Register.GOAL_TIME: 2,
                 Register.GOAL_SPEED: 2, Register.TORQUE_LIMIT: 2, Register.PRESENT_POSITION: 2,
                 Register.PRESENT_SPEED: 2, Register.PRESENT_LOAD: 2, Register.PRESENT_CURRENT: 2}
"""Registers wider than one byte; every other register is one byte."""
SIGN_BIT = {Register.HOMING_OFFSET: 11, Register.GOAL_SPEED: 15, Register.PRESENT_SPEED: 15,
            Register.PRESENT_LOAD: 10}
"""Sign-magnitude registers and the bit that holds their sign."""

MODELS = {777: "sts3215", 2825: "sts3250", 11272: "sm8512bl"}
"""Model numbers (register 3) of the STS/SMS servos this protocol drives."""
STS3215 = 777
TICKS_PER_TURN = 4096
"""Encoder resolution of the STS servos: 4096 ticks per turn."""


class ErrorBit(IntFlag):
    """The error byte of a status packet."""

    VOLTAGE = 0x01
    ANGLE_SENSOR = 0x02
    OVERHEAT = 0x04
    OVERCURRENT = 0x08
    OVERLOAD = 0x20


class ProtocolError(ValueError):
    """Bytes that are not a valid packet, or a value that does not fit its register."""


@dataclass(frozen=True)
class Packet:
    """One packet: the servo id, the instruction or error byte, and the parameters."""

    id: int
    code: int
    params: bytes = b""


def checksum(body: bytes | bytearray) -> int:
    """The checksum of `body` (id, length, code, params): the inverted low byte of their sum."""
    return ~sum(body) & 0xFF


def encode_packet(motor_id: int, code: int, params: bytes | bytearray = b"") -> bytes:
    """The bytes of one packet; ProtocolError for an id, code or parameter count out of range."""
    if not 0 <= motor_id <= BROADCAST_ID:
        raise ProtocolError(f"id: {motor_id} out of range [0, {BROADCAST_ID}]")
    if not 0 <= code <= 0xFF:
        raise ProtocolError(f"instruction/error byte: {code} out of range [0, 255]")
    if len(params) > MAX_PARAMS:
        raise ProtocolError(f"params: {len(params)} bytes, more than a packet holds ({MAX_PARAMS})")
    body = bytes((motor_id, len(params) + 2, code)) + bytes(params)
    return HEADER + body + bytes((checksum(body),))


def encode_value(value: int, size: int, sign_bit: int | None = None) -> bytes:
    """`value` as a little-endian register of `size` bytes, sign-magnitude when `sign_bit` is given."""
    magnitude_bits = 8 * size if sign_bit is None else sign_bit
    if sign_bit is None and value < 0:
        raise ProtocolError(f"value {value} is negative for an unsigned {size}-byte register")
    if abs(value) >= 1 << magnitude_bits:
        raise ProtocolError(f"value {value} does not fit in {magnitude_bits} bits of magnitude")
    raw = abs(value) | ((1 << sign_bit) if sign_bit is not None and value < 0 else 0)
    return raw.to_bytes(size, "little")


def decode_value(data: bytes | bytearray, sign_bit: int | None = None) -> int:
    """A little-endian register value, sign-magnitude when `sign_bit` is given."""
    raw = int.from_bytes(data, "little")
    if sign_bit is None:
        return raw
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


def register_bytes(register: Register, value: int) -> bytes:
    """`value` encoded for `register` (its size and sign convention)."""
    return encode_value(value, REGISTER_SIZE.get(register, 1), SIGN_BIT.get(register))


def register_value(register: Register, data: bytes | bytearray) -> int:
    """The value of `register` from its bytes."""
    return decode_value(data, SIGN_BIT.get(register))


def ping_packet(motor_id: int) -> bytes:
    return encode_packet(motor_id, Instruction.PING)


def read_packet(motor_id: int, address: int, length: int) -> bytes:
    """Read `length` bytes from `address` of one servo."""
    return encode_packet(motor_id, Instruction.READ, bytes((address, length)))


def write_packet(motor_id: int, address: int, data: bytes) -> bytes:
    """Write `data` at `address` of one servo (it answers with an empty status)."""
    return encode_packet(motor_id, Instruction.WRITE, bytes((address,)) + data)


def sync_read_packet(address: int, length: int, ids: Iterable[int]) -> bytes:
    """Ask servos `ids` for `length` bytes at `address`; each answers a status packet, in order."""
    return encode_packet(BROADCAST_ID, Instruction.SYNC_READ, bytes((address, length, *ids)))


def sync_write_packet(address: int, length: int, data: Mapping[int, bytes]) -> bytes:
    """Write `length` bytes at `address` on every servo of `data` (id → its bytes); nobody answers."""
    params = bytearray((address, length))
    for motor_id, values in data.items():
        if len(values) != length:
            raise ProtocolError(f"sync write: id {motor_id} has {len(values)} bytes, expected {length}")
        params.append(motor_id)
        params += values
    return encode_packet(BROADCAST_ID, Instruction.SYNC_WRITE, params)


def status_packet(motor_id: int, error: int = 0, params: bytes = b"") -> bytes:
    """A servo's answer: its error bits and the bytes asked for."""
    return encode_packet(motor_id, error, params)


def parse_sync_write(params: bytes) -> tuple[int, int, dict[int, bytes]]:
    """(address, length, id → bytes) of a sync write's parameters; ProtocolError if they do not tile."""
    if len(params) < 2:
        raise ProtocolError("sync write: fewer than 2 parameter bytes")
    address, length = params[0], params[1]
    entries = params[2:]
    if length == 0 or len(entries) % (length + 1):
        raise ProtocolError(f"sync write: {len(entries)} bytes do not split into (id + {length} bytes) entries")
    return address, length, {entries[i]: bytes(entries[i + 1:i + 1 + length])
                             for i in range(0, len(entries), length + 1)}


class PacketParser:
    """Packets out of a byte stream, however it is cut: feed bytes, get the complete packets.

    Bytes before a header are skipped (counted in `skipped`); a packet whose checksum is wrong is
    dropped, counted in `corrupt` and its id byte kept in `corrupt_ids` (until `clear`), and parsing
    goes on after its header.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.skipped = 0
        self.corrupt = 0
        self.corrupt_ids: list[int] = []

    def feed(self, data: bytes | bytearray) -> list[Packet]:
        """The packets completed by `data`, in order."""
        self.buffer += data
        packets = []
        while True:
            start = self.buffer.find(HEADER)
            if start < 0:
                keep = 1 if self.buffer.endswith(b"\xff") else 0
                self.skipped += len(self.buffer) - keep
                del self.buffer[:len(self.buffer) - keep]
                return packets
            # 0xFF 0xFF 0xFF: the header is the last two (an id is never 0xFF).
            while start + 2 < len(self.buffer) and self.buffer[start + 2] == 0xFF:
                start += 1
            self.skipped += start
            del self.buffer[:start]
            if len(self.buffer) < 4:
                return packets
            length = self.buffer[3]
            if length < 2:
                self.corrupt += 1
                del self.buffer[:2]
                continue
            end = 4 + length
            if len(self.buffer) < end:
                return packets
            body = bytes(self.buffer[2:end - 1])
            if checksum(body) != self.buffer[end - 1]:
                self.corrupt += 1
                self.corrupt_ids.append(body[0])
                del self.buffer[:2]
                continue
            packets.append(Packet(body[0], body[2], body[3:]))
            del self.buffer[:end]

    def clear(self) -> None:
        """Forget a partial packet (after a timeout: the rest of it will never come) and the corrupt ids."""
        self.buffer.clear()
        self.corrupt_ids.clear()


def decode_packet(data: bytes) -> Packet:
    """Exactly one packet from `data`; ProtocolError naming what is wrong otherwise."""
    if len(data) < 6 or data[:2] != HEADER:
        raise ProtocolError(f"not a packet: {data.hex(' ')}")
    if data[3] != len(data) - 4:
        raise ProtocolError(f"length byte {data[3]} but {len(data) - 4} bytes follow it")
    if checksum(data[2:-1]) != data[-1]:
        raise ProtocolError(f"checksum {data[-1]:#04x}, expected {checksum(data[2:-1]):#04x}")
    return Packet(data[2], data[4], bytes(data[5:-1]))
