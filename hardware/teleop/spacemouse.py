"""A 3Dconnexion SpaceMouse read through hidapi: six axes of velocity from one puck.

The SpaceMouse reports HID input reports: id 1 translation (x, y, z), id 2 rotation (rx, ry,
rz), each three little-endian int16 of about ±350 at full deflection; newer models (Compact,
Wireless) send all six in report 1. Id 3 carries the buttons: the left one is "save", the
right one "discard". Axes follow 3Dconnexion's frame (y pushed away from the user, z down),
turned here into the teleop frame: push forward → +x, left → +y, lift → +z.

On Linux, reading hidraw needs a udev rule (3Dconnexion's vendor ids 046d and 256f, mode
0666) or root; spacenavd, if running, holds the device.

    with SpaceMouseDevice() as mouse:
        command = mouse.read()
"""

from __future__ import annotations

import numpy as np

from s2r.hardware.teleop.devices import DeviceUnavailable, TeleopCommand, TeleopDevice

VENDOR_IDS = (0x046D, 0x256F)
"""Logitech (older SpaceMice) and 3Dconnexion."""
FULL_SCALE = 350.0
"""Counts at full deflection."""
DEAD_ZONE = 0.05


def _hid():
    try:
        import hid
    except ImportError:
        raise DeviceUnavailable("spacemouse: needs the hidapi package (pip install 's2r[teleop]' or "
                                "pip install hidapi)") from None
    return hid


def _int16(report: bytes, offset: int) -> float:
    return float(int.from_bytes(report[offset:offset + 2], "little", signed=True))


class SpaceMouseDevice(TeleopDevice):
    """A SpaceMouse on hidapi: translation → linear, rotation → angular, side buttons → buttons."""

    name = "spacemouse"
    controls = "push/pull/lift the puck: x/y/z, twist it: rotation; left button: save, right button: discard"

    def __init__(self, path: bytes | None = None, *, dead_zone: float = DEAD_ZONE) -> None:
        hid = _hid()
        self.dead_zone = dead_zone
        if path is None:
            found = [d for d in hid.enumerate() if d["vendor_id"] in VENDOR_IDS
                     and "space" in (d.get("product_string") or "").lower()]
            if not found:
                raise DeviceUnavailable("spacemouse: no 3Dconnexion SpaceMouse among the HID devices "
                                        "(is it plugged in? on Linux, is there a udev rule for hidraw?)")
            path = found[0]["path"]
        self.path = path
        self.device = hid.device()
        try:
            self.device.open_path(path)
        except OSError as error:
            raise DeviceUnavailable(f"spacemouse: cannot open {path!r} ({error}); on Linux it needs a udev rule "
                                    f"for hidraw, and spacenavd must not hold it") from None
        self.device.set_nonblocking(True)
        self._raw = np.zeros(6)
        self._buttons = 0

    def read(self) -> TeleopCommand:
        pressed = set()
        try:
            while report := bytes(self.device.read(64)):
                pressed |= self._apply(report)
        except (OSError, ValueError) as error:
            raise DeviceUnavailable(f"spacemouse: {self.path!r} went away ({error}); was it unplugged?") from None
        scaled = np.clip(self._raw / FULL_SCALE, -1.0, 1.0)
        scaled[np.abs(scaled) < self.dead_zone] = 0.0
        # 3Dconnexion frame (x right, y away, z down) → teleop frame (x forward, y left, z up).
        linear = np.array([scaled[1], -scaled[0], -scaled[2]])
        angular = np.array([scaled[4], -scaled[3], -scaled[5]])
        return TeleopCommand(linear, angular, frozenset(pressed))

    def _apply(self, report: bytes) -> set[str]:
        """Fold one HID report into the axes; the buttons newly pressed."""
        kind = report[0]
        if kind == 1 and len(report) >= 7:
            self._raw[:3] = [_int16(report, 1), _int16(report, 3), _int16(report, 5)]
            if len(report) >= 13:
                self._raw[3:] = [_int16(report, 7), _int16(report, 9), _int16(report, 11)]
        elif kind == 2 and len(report) >= 7:
            self._raw[3:] = [_int16(report, 1), _int16(report, 3), _int16(report, 5)]
        elif kind == 3 and len(report) >= 2:
            buttons = report[1]
            new = buttons & ~self._buttons
            self._buttons = buttons
            return {name for bit, name in ((1, "save"), (2, "discard")) if new & bit}
        return set()

    def close(self) -> None:
        self.device.close()
