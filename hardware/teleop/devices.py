"""What every teleoperation device gives: a velocity command and buttons, or a clear `DeviceUnavailable`.

A device reports, each time it is read, the velocity the operator asks for, normalized: each of
the six axes in [-1, 1] (full deflection of a stick, a held key), in the device's own frame:
x forward, y left, z up, and rotations about them. Whoever drives a robot scales it to m/s and
rad/s (`TeleopCommand.scaled`). Buttons are named, not numbered, so that every device means the
same thing by them:

    "save"     end the episode now and keep it
    "discard"  drop the episode and start it again
    "quit"     end the session after this episode is dealt with

A device that is missing, unreadable or unplugged raises `DeviceUnavailable` whose message
names the device and what to do; it never returns a stale command.

    with KeyboardDevice() as device:
        command = device.read()          # TeleopCommand(linear=(1, 0, 0), angular=(0, 0, 0), buttons={"save"})
        velocity = command.scaled(linear=0.1, angular=0.5).linear     # m/s
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BUTTONS = ("save", "discard", "quit")
"""The button names a device may report."""


class DeviceUnavailable(RuntimeError):
    """A teleop device is missing, cannot be opened, or was unplugged; the message says which and why."""


@dataclass(frozen=True)
class TeleopCommand:
    """One reading of a device: velocities (Twist-like) and the buttons pressed since the last reading."""

    linear: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """(3,) x, y, z; normalized to [-1, 1] as a device reports it, m/s once scaled."""
    angular: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """(3,) about x, y, z; normalized to [-1, 1] as a device reports it, rad/s once scaled."""
    buttons: frozenset[str] = frozenset()
    """Names from BUTTONS."""

    def __post_init__(self) -> None:
        for name in ("linear", "angular"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != (3,):
                raise ValueError(f"TeleopCommand.{name}: expected shape (3,), got {value.shape}")
            object.__setattr__(self, name, value)
        unknown = set(self.buttons) - set(BUTTONS)
        if unknown:
            raise ValueError(f"TeleopCommand.buttons: unknown {sorted(unknown)}; known: {', '.join(BUTTONS)}")
        object.__setattr__(self, "buttons", frozenset(self.buttons))

    def scaled(self, *, linear: float, angular: float) -> TeleopCommand:
        """The command with its axes multiplied: `linear` m/s and `angular` rad/s at full deflection."""
        return TeleopCommand(self.linear * linear, self.angular * angular, self.buttons)


class TeleopDevice:
    """Base class of teleop devices: `read()` the newest command without blocking, `close()` when done."""

    name = "device"
    controls = ""
    """One line telling the operator which input does what, printed when a session starts."""

    def read(self) -> TeleopCommand:
        """The operator's command now; raises DeviceUnavailable when the device is gone."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the device (restore the terminal, close the file); safe to call twice."""

    def __enter__(self) -> TeleopDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
