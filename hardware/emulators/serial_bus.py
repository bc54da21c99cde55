"""A serial bus of emulated motors on a pseudo-terminal: what a vendor SDK opens as its port, bytes timed at the baud rate.

`PtyBus` opens a pty pair (`os.openpty`): the slave's path (`bus.port`, e.g. `/dev/pts/7`) is
the serial port the driver or the vendor's SDK opens; the bus reads the host's bytes on the
master, hands them to a `BusDevice` (the motors: a Dynamixel or Feetech control table and
packet codec) and writes the replies back on the wire's schedule. One thread does everything,
in order: the motors' physics at absolute deadlines (`device.timestep`), bytes as they come; a
reply due while a physics step would run (the longest recent step) is written first and the step
follows it (motors answer whatever their physics; `stats()` counts how late replies went out).

Byte timing: one byte takes 10 / baud s on the wire (8N1: start, 8 data, stop bits). The host's
bytes reach the motors when the last of them would have crossed; each reply starts after the
motor's return delay, once the wire is free, and is delivered when its last byte has crossed.
A host whose port is set to another baud rate than the bus's (read from the pty's termios) is
heard as noise: its bytes are dropped (`stats()["garbled_bytes"]`), as framing errors would be.

    with PtyBus(DynamixelMotors(...), baud=1_000_000) as bus:
        port = bus.port                  # "/dev/pts/7": dynamixel_sdk.PortHandler(port)
        bus.faults.drop.add(2)           # motor 2's replies are lost on the wire from now on
        bus.faults.clear()

Fault switches (`BusFaults`, flipped from any thread or, for an emulator process, from its
stdin: see `s2r.sim.emulate`):

    drop         ids whose replies are lost (the motor still obeys: a marginal cable)
    drop_next    id → how many of its next replies are lost, then it answers again
    corrupt      ids whose replies arrive with a wrong checksum (last byte flipped)
    silent       ids that disappeared (power lost): no reply, instructions ignored
    overload     ids whose hardware error status reports an overload (the device decides what follows)
    overheating  ids whose hardware error status reports overheating
    bus_down     nothing answers at all (adapter unplugged, bus power off)
    power_cycle  the motors' power off and on: latched hardware errors cleared, torque off (`power_cycles` counts)

numpy only (no MuJoCo): the plant is the device's business (`s2r.hardware.emulators.plant`).
"""

from __future__ import annotations

import math
import os
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from s2r.hardware.deadline import set_realtime_priority


SPIN_S = 100e-6
"""The last reply of an answer (the one the host waits for) is awaited spinning for its final 100 µs: a timer
wakes tens of µs late, and the host would see that lateness as the bus's."""


class Reply(NamedTuple):
    """One status packet a motor puts on the wire."""

    motor_id: int
    data: bytes
    delay_s: float = 0.0
    """The motor's return delay: seconds from the end of the instruction (or the previous reply) to its first byte."""


class BusDevice(Protocol):
    """The motors on a bus: they frame and answer the host's bytes and move their plant."""

    timestep: float
    """Seconds of physics per `advance`."""

    def receive(self, data: bytes) -> list[Reply]:
        """Take bytes from the host (any split); the replies to the instructions they complete, in wire order."""

    def advance(self) -> None:
        """Run the motors' control laws on the plant for one timestep."""


@dataclass
class BusFaults:
    """Fault switches of an emulated bus (see the module); sets of motor ids, safe to change while it runs."""

    drop: set[int] = field(default_factory=set)
    drop_next: dict[int, int] = field(default_factory=dict)
    corrupt: set[int] = field(default_factory=set)
    silent: set[int] = field(default_factory=set)
    overload: set[int] = field(default_factory=set)
    overheating: set[int] = field(default_factory=set)
    bus_down: bool = False
    power_cycles: int = 0

    SWITCHES = ("drop", "drop_next", "corrupt", "silent", "overload", "overheating", "bus_down")

    def clear(self) -> None:
        """Every switch off."""
        for name in ("drop", "drop_next", "corrupt", "silent", "overload", "overheating"):
            getattr(self, name).clear()
        self.bus_down = False

    def apply(self, line: str) -> str:
        """Flip a switch from a text command: `drop 2`, `drop_next 2 3`, `corrupt 1`, `silent 3`, `overload 2`,
        `overheating 1`, `bus_down`, `up`, `restore 2` (every switch of motor 2 off), `clear`, `power_cycle`; what it did."""
        words = line.split()
        if not words:
            return ""
        name, args = words[0], words[1:]
        try:
            ids = [int(a) for a in args]
        except ValueError:
            raise ValueError(f"fault {line!r}: motor ids must be integers") from None
        if name == "clear":
            self.clear()
        elif name == "power_cycle":
            self.power_cycles += 1
        elif name == "bus_down":
            self.bus_down = True
        elif name == "up":
            self.bus_down = False
        elif name == "restore" and ids:
            for switch in ("drop", "corrupt", "silent", "overload", "overheating"):
                getattr(self, switch).difference_update(ids)
            for i in ids:
                self.drop_next.pop(i, None)
        elif name == "drop_next" and len(ids) == 2:
            self.drop_next[ids[0]] = ids[1]
        elif name in ("drop", "corrupt", "silent", "overload", "overheating") and ids:
            getattr(self, name).update(ids)
        else:
            raise ValueError(f"fault {line!r}: expected one of drop ID, drop_next ID COUNT, corrupt ID, silent ID, "
                             f"overload ID, overheating ID, bus_down, up, restore ID, clear, power_cycle")
        return line.strip()

    def lost(self, motor_id: int) -> bool:
        """Whether this reply of `motor_id` is lost on the wire (counting down drop_next)."""
        if self.bus_down or motor_id in self.silent or motor_id in self.drop:
            return True
        left = self.drop_next.get(motor_id, 0)
        if left > 0:
            self.drop_next[motor_id] = left - 1
            return True
        return False


class PtyBus:
    """Serve a `BusDevice` on a pseudo-terminal at `baud` bits per second (see the module)."""

    def __init__(self, device: BusDevice, *, baud: int, faults: BusFaults | None = None,
                 realtime_priority: int = 0) -> None:
        if not (isinstance(baud, int) and baud > 0):
            raise ValueError(f"PtyBus: baud: expected a positive integer, got {baud!r}")
        self.device, self.baud = device, baud
        self.faults = faults if faults is not None else BusFaults()
        self.realtime_priority = realtime_priority
        """SCHED_FIFO priority of the bus's thread where permitted (0: normal scheduling); motors answer in
        microseconds whatever the host does, and the emulator stands in for them."""
        self.setup_note: str | None = None
        """Why the priority could not be had, or None."""
        self.byte_time = 10.0 / baud
        """Seconds one byte takes on the wire."""
        self._speed = getattr(termios, f"B{baud}", None)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline until the host sets its own
        self.port = os.ttyname(self._slave)
        """The slave's path: the serial port to open."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outbox: list[tuple[float, bytes]] = []
        """(due time, bytes) of replies on the wire, in order."""
        self._wire_free = 0.0
        self._stats = {"bytes_in": 0, "bytes_out": 0, "replies": 0, "replies_lost": 0, "replies_corrupted": 0,
                       "garbled_bytes": 0, "physics_steps": 0, "physics_overruns": 0, "replies_written": 0,
                       "reply_late_us_total": 0, "reply_late_us_max": 0, "replies_late_100us": 0,
                       "physics_step_us_max": 0}
        self._step_s = 0.0
        """How long one physics step took (the longest of the last few): a reply due sooner is written first."""

    def start(self) -> PtyBus:
        """Start serving on the bus's thread; returns the bus."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"PtyBus({self.port})", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and close the pty. Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def __enter__(self) -> PtyBus:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Counters: bytes in and out, replies sent, lost and corrupted, garbled bytes, physics steps and overruns;
        how late the replies were written after their last byte's wire time (µs: total, max, how many > 100), and
        the longest physics step (µs)."""
        return dict(self._stats)

    # --- the thread ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        self.setup_note = set_realtime_priority(self.realtime_priority)
        timestep = self.device.timestep
        next_step = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            reply_due = self._outbox[0][0] if self._outbox else math.inf
            if now >= next_step and reply_due - now > self._step_s:  # a reply due during the step goes out first
                self.device.advance()
                done = time.monotonic()
                took = done - now
                self._step_s = max(took, 0.9 * self._step_s)
                self._stats["physics_steps"] += 1
                self._stats["physics_step_us_max"] = max(self._stats["physics_step_us_max"], round(took * 1e6))
                next_step += timestep
                if done > next_step:
                    self._stats["physics_overruns"] += 1
                    next_step = done
                continue
            self._flush(now)
            reply_due = self._outbox[0][0] if self._outbox else math.inf
            wake = min(next_step, reply_due)
            if len(self._outbox) == 1 and wake == reply_due and reply_due - time.monotonic() < SPIN_S:
                while time.monotonic() < reply_due:  # the answer's last reply: on its wire time, not the timer's
                    pass
                continue
            ready, _, _ = select.select([self._master], [], [], max(wake - time.monotonic(), 0.0))
            if ready:
                self._read(time.monotonic())

    def _read(self, now: float) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:  # no slave open right now (EIO): nothing to read
            time.sleep(0.001)
            return
        self._stats["bytes_in"] += len(data)
        arrived = max(self._wire_free, now) + len(data) * self.byte_time
        self._wire_free = arrived
        if self._speed is not None and termios.tcgetattr(self._slave)[4] != self._speed:
            self._stats["garbled_bytes"] += len(data)
            return
        for reply in self.device.receive(data):
            self._stats["replies"] += 1
            if self.faults.lost(reply.motor_id):
                self._stats["replies_lost"] += 1
                continue
            payload = reply.data
            if reply.motor_id in self.faults.corrupt:
                payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])
                self._stats["replies_corrupted"] += 1
            start = max(self._wire_free, arrived) + reply.delay_s
            self._wire_free = start + len(payload) * self.byte_time
            self._outbox.append((self._wire_free, payload))

    def _flush(self, now: float) -> None:
        """Write every reply whose last byte has crossed the wire by `now`."""
        while self._outbox and self._outbox[0][0] <= now:
            due, payload = self._outbox.pop(0)
            os.write(self._master, payload)
            late_us = round((time.monotonic() - due) * 1e6)
            stats = self._stats
            stats["bytes_out"] += len(payload)
            stats["replies_written"] += 1
            stats["reply_late_us_total"] += late_us
            stats["reply_late_us_max"] = max(stats["reply_late_us_max"], late_us)
            stats["replies_late_100us"] += late_us > 100
