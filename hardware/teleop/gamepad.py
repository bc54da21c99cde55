"""A gamepad (Xbox, PlayStation, Logitech F310 layouts) read through Linux evdev.

The first input device with a gamepad's south button and a left stick is used, or the one
at `path` (/dev/input/eventN). Sticks are normalized to [-1, 1] by the ranges the driver
reports, with a dead zone around their centre:

    left stick   up/down → +x/-x, left/right → +y/-y
    right stick  up/down → +z/-z, left/right → +yaw/-yaw
    A (south)    button "save"     B (east)   button "discard"     Start   button "quit"

Reading /dev/input needs the user in the `input` group (or a udev rule). A gamepad that is
unplugged raises DeviceUnavailable at the next read.

    with GamepadDevice() as pad:
        command = pad.read()
"""

from __future__ import annotations

import errno

import numpy as np

from s2r.hardware.teleop.devices import DeviceUnavailable, TeleopCommand, TeleopDevice

DEAD_ZONE = 0.1
"""Stick deflections below this fraction of full scale read as zero (sticks rarely rest at centre)."""


def _evdev():
    try:
        import evdev
    except ImportError:
        raise DeviceUnavailable("gamepad: needs the evdev package (pip install 's2r[teleop]' or pip install evdev; "
                                "Linux only)") from None
    return evdev


class GamepadDevice(TeleopDevice):
    """A gamepad on evdev: sticks → velocity command, face buttons → buttons."""

    name = "gamepad"
    controls = "left stick: x/y, right stick: z/yaw; A: save, B: discard, Start: quit"

    def __init__(self, path: str | None = None, *, dead_zone: float = DEAD_ZONE) -> None:
        evdev = _evdev()
        ecodes = evdev.ecodes
        self._ecodes = ecodes
        self.dead_zone = dead_zone
        self.device = self._open(evdev, path)
        self.axes = {ecodes.ABS_Y: (0, -1.0), ecodes.ABS_X: (1, -1.0), ecodes.ABS_RY: (2, -1.0),
                     ecodes.ABS_RX: (5, -1.0)}
        """evdev axis code → (command axis 0..5, sign): screen-down and right are positive in evdev."""
        self.buttons = {ecodes.BTN_SOUTH: "save", ecodes.BTN_EAST: "discard", ecodes.BTN_START: "quit"}
        self._range = {}
        for code in self.axes:
            try:
                info = self.device.absinfo(code)
            except (KeyError, OSError):
                continue
            self._range[code] = ((info.max + info.min) / 2, max((info.max - info.min) / 2, 1))
        self._velocity = np.zeros(6)

    def _open(self, evdev, path: str | None):
        if path is not None:
            try:
                return evdev.InputDevice(path)
            except OSError as error:
                raise DeviceUnavailable(f"gamepad: cannot open {path}: {error.strerror}") from None
        paths = evdev.list_devices()
        denied = 0
        for candidate in paths:
            try:
                device = evdev.InputDevice(candidate)
            except PermissionError:
                denied += 1
                continue
            except OSError:
                continue
            caps = device.capabilities()
            if (self._ecodes.BTN_SOUTH in caps.get(self._ecodes.EV_KEY, [])
                    and self._ecodes.ABS_X in [c if isinstance(c, int) else c[0]
                                               for c in caps.get(self._ecodes.EV_ABS, [])]):
                return device
            device.close()
        hint = (f"; {denied} of {len(paths)} input devices could not be read: add the user to the 'input' group"
                if denied else "")
        raise DeviceUnavailable(f"gamepad: none found among {len(paths)} input devices in /dev/input "
                                f"(is it plugged in?){hint}")

    def read(self) -> TeleopCommand:
        pressed = set()
        try:
            while (event := self.device.read_one()) is not None:
                self._apply(event.type, event.code, event.value, pressed)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EINTR):
                pass
            else:
                raise DeviceUnavailable(f"gamepad: {self.device.path} went away ({error.strerror}); "
                                        f"was it unplugged?") from None
        return TeleopCommand(self._velocity[:3].copy(), self._velocity[3:].copy(), frozenset(pressed))

    def _apply(self, kind: int, code: int, value: int, pressed: set[str]) -> None:
        """Fold one evdev event into the current velocity and the buttons pressed since the last read."""
        if kind == self._ecodes.EV_ABS and code in self.axes and code in self._range:
            axis, sign = self.axes[code]
            centre, half = self._range[code]
            deflection = float(np.clip((value - centre) / half, -1.0, 1.0))
            self._velocity[axis] = 0.0 if abs(deflection) < self.dead_zone else sign * deflection
        elif kind == self._ecodes.EV_KEY and value == 1 and code in self.buttons:
            pressed.add(self.buttons[code])

    def close(self) -> None:
        try:
            self.device.close()
        except OSError:
            pass
