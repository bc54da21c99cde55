"""The keyboard of a terminal as a teleop device: works over SSH and a pty, needs no X server.

The terminal is put in non-canonical mode without echo (signals stay on: Ctrl-C still stops
the program) and restored on `close()`. A terminal reports key presses, not key releases, so
a key drives its axis for `hold_s` after its last press; the terminal's auto-repeat (about
30 presses a second after a 250-600 ms delay) keeps a held key going. Space stops at once.

    w / s   +x / -x        up / down arrows    +x / -x
    a / d   +y / -y        left / right arrows +y / -y
    r / f   +z / -z
    q / e   +yaw / -yaw    (rotation about z)
    space   stop every axis
    Enter   button "save"      Backspace   button "discard"      Esc   button "quit"

    with KeyboardDevice() as keyboard:          # stdin; or KeyboardDevice(fd=slave_fd) for a pty
        command = keyboard.read()
"""

from __future__ import annotations

import errno
import os
import select
import sys
import termios
import time
from collections.abc import Callable

import numpy as np

from s2r.hardware.teleop.devices import DeviceUnavailable, TeleopCommand, TeleopDevice

AXES: dict[bytes, tuple[int, float]] = {
    b"w": (0, 1.0), b"s": (0, -1.0), b"a": (1, 1.0), b"d": (1, -1.0), b"r": (2, 1.0), b"f": (2, -1.0),
    b"q": (5, 1.0), b"e": (5, -1.0),
    b"\x1b[A": (0, 1.0), b"\x1b[B": (0, -1.0), b"\x1b[D": (1, 1.0), b"\x1b[C": (1, -1.0),
}
"""Key (bytes the terminal sends) → (axis 0..5: linear x, y, z, angular x, y, z; direction)."""
BUTTON_KEYS: dict[bytes, str] = {b"\r": "save", b"\n": "save", b"\x7f": "discard", b"\x08": "discard",
                                 b"\x1b": "quit"}
STOP_KEY = b" "
HOLD_S = 0.5
"""Seconds a key keeps driving its axis after its last press: longer than the auto-repeat delay."""


class KeyboardDevice(TeleopDevice):
    """Keys of the terminal on file descriptor `fd` (default: stdin) → velocity commands and buttons."""

    name = "keyboard"
    controls = ("w/s a/d r/f (or arrows): ±x ±y ±z, q/e: ±yaw, space: stop; "
                "Enter: save, Backspace: discard, Esc: quit")

    def __init__(self, fd: int | None = None, *, hold_s: float = HOLD_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self.fd):
            raise DeviceUnavailable("keyboard: standard input is not a terminal; run in a terminal (an SSH "
                                    "session works), not with input piped or redirected")
        self.hold_s = hold_s
        self._clock = clock
        self._saved = termios.tcgetattr(self.fd)
        mode = termios.tcgetattr(self.fd)
        mode[3] &= ~(termios.ICANON | termios.ECHO)  # lflags: key by key, no echo; ISIG stays (Ctrl-C)
        mode[6][termios.VMIN] = 0
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)
        self._until = np.full(6, -np.inf)
        """Per axis, the time its key stops driving it."""
        self._direction = np.zeros(6)
        self._pending = b""
        self._closed = False

    def read(self) -> TeleopCommand:
        if self._closed:
            raise DeviceUnavailable("keyboard: closed")
        now = self._clock()
        buttons = set()
        for key in self._keys(self._drain()):
            if key in AXES:
                axis, direction = AXES[key]
                self._direction[axis] = direction
                self._until[axis] = now + self.hold_s
            elif key == STOP_KEY:
                self._until[:] = -np.inf
            elif key in BUTTON_KEYS:
                buttons.add(BUTTON_KEYS[key])
        velocity = np.where(now < self._until, self._direction, 0.0)
        return TeleopCommand(velocity[:3], velocity[3:], frozenset(buttons))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        except termios.error:
            pass  # the terminal is gone: nothing to restore

    def _drain(self) -> bytes:
        """Every byte waiting on the terminal, without blocking."""
        data = self._pending
        self._pending = b""
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0)
                if not ready:
                    return data
                chunk = os.read(self.fd, 1024)
            except OSError as error:
                if error.errno in (errno.EAGAIN, errno.EINTR):
                    return data
                raise DeviceUnavailable(f"keyboard: the terminal went away ({os.strerror(error.errno)})") from None
            if not chunk:
                raise DeviceUnavailable("keyboard: the terminal was closed (end of input)")
            data += chunk

    def _keys(self, data: bytes) -> list[bytes]:
        """Split terminal input into keys: escape sequences (arrows, ESC [ X) whole, other bytes one by one.

        A sequence cut after ESC [ waits for the next read; a lone ESC is the Esc key.
        """
        keys = []
        i = 0
        while i < len(data):
            if data[i:i + 2] == b"\x1b[":
                if i + 2 == len(data):
                    self._pending = data[i:]
                    break
                keys.append(data[i:i + 3])
                i += 3
            else:
                keys.append(data[i:i + 1])
                i += 1
        return keys
