"""A Feetech STS/SMS bus on a serial port: one instruction out, its status packets back, with timeouts.

The master side of the half-duplex protocol (`feetech_protocol`) over pyserial. Every transaction
clears what is left in the receive buffer (a late answer to an earlier instruction), writes one
instruction and, unless nobody answers it (a sync write), reads the status packets it expects
until they are all in or the reply deadline passes: the wire time of the answer at the port's
baud rate plus `reply_margin_s` (the adapter's latency and the servos' return delay). The wait
for bytes is in the kernel (`select`); nothing spins.

    with FeetechBus("/dev/ttyACM0", 1_000_000) as bus:
        bus.model_number(1)                                     # 777 for an STS3215
        replies = bus.sync_read(Register.PRESENT_POSITION, 8, [1, 2, 3, 4, 5, 6])
        replies[1].params                                       # 8 bytes: position, speed, load, V, °C
        bus.sync_write(Register.GOAL_POSITION, 2, {1: b"\\x00\\x08", 2: b"\\x00\\x08"})

A servo that does not answer in time is absent from `sync_read`'s result and raises NoReply from
the one-servo calls; what happened is counted in `counts` (timeouts, corrupt packets, replies).
Opening a port that does not exist or that another program holds raises BusOpenError, one line.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterable, Mapping

import serial

from s2r.hardware.drivers.feetech_protocol import (
    STATUS_OVERHEAD,
    Packet,
    PacketParser,
    Register,
    ping_packet,
    read_packet,
    register_value,
    sync_read_packet,
    sync_write_packet,
    write_packet,
)
from s2r.interface import RobotError

BITS_PER_BYTE = 10
"""A byte on a UART line: start bit, 8 data bits, stop bit."""


class BusOpenError(RobotError):
    """The serial port cannot be opened: missing, busy, or not a serial device."""


class NoReply(RobotError):
    """A servo did not answer an instruction in time (or answered with a corrupted packet)."""


class FeetechBus:
    """One serial port with Feetech servos on it; a context manager that opens and closes the port."""

    def __init__(self, port: str, baudrate: int = 1_000_000, *, reply_margin_s: float = 0.01) -> None:
        if baudrate <= 0:
            raise ValueError(f"baudrate: expected > 0, got {baudrate}")
        if reply_margin_s <= 0:
            raise ValueError(f"reply_margin_s: expected seconds > 0, got {reply_margin_s}")
        self.port = port
        self.baudrate = baudrate
        self.reply_margin_s = reply_margin_s
        self.byte_time_s = BITS_PER_BYTE / baudrate
        """Seconds one byte takes on the wire."""
        self.serial: serial.Serial | None = None
        self.parser = PacketParser()
        self.counts = {"transactions": 0, "replies": 0, "timeouts": 0, "corrupt": 0}

    def open(self) -> None:
        """Open the port exclusively at the bus's baud rate; BusOpenError in one line if it cannot be."""
        if self.serial is not None:
            return
        try:
            self.serial = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=1.0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as error:
            text = str(error)
            if "No such file" in text:
                reason = "does not exist"
            elif "exclusively lock" in text or "Errno 16" in text:  # held by another program
                reason = "is busy (another program holds it)"
            else:
                reason = f"cannot be opened ({text})"
            raise BusOpenError(f"{self.port}: port {reason}") from None

    def close(self) -> None:
        if self.serial is not None:
            self.serial.close()
            self.serial = None

    def __enter__(self) -> FeetechBus:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wire_time_s(self, num_bytes: int) -> float:
        """Seconds `num_bytes` take on the wire at this baud rate."""
        return num_bytes * self.byte_time_s

    # One servo.

    def ping(self, motor_id: int) -> Packet:
        """The servo's empty status; NoReply if nobody at `motor_id` answers."""
        return self._one(motor_id, ping_packet(motor_id), 0)

    def read(self, motor_id: int, address: int, length: int) -> Packet:
        """`length` bytes from `address` of one servo (in `params`, with its error bits in `code`)."""
        return self._one(motor_id, read_packet(motor_id, address, length), length)

    def write(self, motor_id: int, address: int, data: bytes) -> Packet:
        """Write `data` at `address` of one servo and wait for its status."""
        return self._one(motor_id, write_packet(motor_id, address, data), 0)

    def read_register(self, motor_id: int, register: Register, length: int) -> int:
        """One register's value (its size `length`, its sign convention from the table)."""
        return register_value(register, self.read(motor_id, register, length).params)

    def model_number(self, motor_id: int) -> int:
        """Register 3 of `motor_id`: 777 for an STS3215."""
        return self.read_register(motor_id, Register.MODEL_NUMBER, 2)

    # Several servos in one instruction.

    def sync_read(self, address: int, length: int, ids: Iterable[int]) -> dict[int, Packet]:
        """Status packets of the servos that answered one sync read of `length` bytes at `address`, by id.

        The ids whose answer came with a bad checksum are in `corrupt_ids` until the next transaction.
        """
        ids = list(ids)
        replies = self._transact(sync_read_packet(address, length, ids), ids, length)
        return {packet.id: packet for packet in replies}

    @property
    def corrupt_ids(self) -> set[int]:
        """Ids whose status packet in the last transaction failed its checksum."""
        return set(self.parser.corrupt_ids)

    def sync_write(self, address: int, length: int, data: Mapping[int, bytes]) -> None:
        """Write `length` bytes at `address` of every servo in `data` (id → bytes); nobody answers."""
        self._transact(sync_write_packet(address, length, data), [], 0)

    # The transaction.

    def _one(self, motor_id: int, packet: bytes, length: int) -> Packet:
        replies = self._transact(packet, [motor_id], length)
        if not replies:
            raise NoReply(f"{self.port}: id {motor_id} does not answer (at {self.baudrate} baud)")
        return replies[0]

    def _transact(self, packet: bytes, ids: list[int], length: int) -> list[Packet]:
        """Write `packet`, then read one status of `length` parameter bytes from each of `ids`, in order.

        Without replies to wait for (a sync write) nothing is cleared or drained: the next instruction queues
        behind it on the wire, and the one that reads clears what came late. Replies are parsed as their bytes
        come (the port is non-blocking; the wait is a `select` until the deadline), so that after the last
        byte only the last status is left to parse.
        """
        port = self._port()
        if not ids:
            port.write(packet)
            self.counts["transactions"] += 1
            return []
        port.reset_input_buffer()
        self.parser.clear()
        port.write(packet)
        self.counts["transactions"] += 1
        expected = len(ids) * (STATUS_OVERHEAD + length)
        deadline = time.monotonic() + self.wire_time_s(len(packet) + expected) + self.reply_margin_s
        wanted = set(ids)
        replies: list[Packet] = []
        corrupt_before = self.parser.corrupt
        fd = port.fileno()
        while wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                break
            data = port.read(4096)  # what has come (timeout 0: never blocks)
            if not data:
                break
            for reply in self.parser.feed(data):
                if reply.id in wanted and len(reply.params) == length:
                    wanted.discard(reply.id)
                    replies.append(reply)
        self.counts["replies"] += len(replies)
        self.counts["corrupt"] += self.parser.corrupt - corrupt_before
        self.counts["timeouts"] += len(wanted)
        return replies

    def _port(self) -> serial.Serial:
        if self.serial is None:
            raise RobotError(f"{self.port}: the bus is not open (call open() or use it as a context manager)")
        return self.serial
