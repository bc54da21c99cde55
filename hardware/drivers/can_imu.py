"""An IMU on the CAN bus: WitMotion's angle and angular-velocity packets, one per 8-byte CAN frame.

A quadruped on MIT CAN motors needs its base orientation and angular velocity beside the
joints. The IMU shares the motors' bus and streams at its own rate (WitMotion's return rate,
200 Hz here), from one arbitration id (`DEFAULT_IMU_ID`, 0x50); each sample is two frames, the
packets of WitMotion's standard protocol cut to CAN's 8 data bytes (the frame's CRC stands in
for the packet's checksum, without the temperature):

    0x55 0x52 wxL wxH wyL wyH wzL wzH      angular velocity, int16 / 32768 × 2000 °/s, sensor axes
    0x55 0x53 rollL rollH pitchL pitchH yawL yawH    angles, int16 / 32768 × 180°, Z-Y-X (yaw, pitch, roll)

The orientation is the sensor's in the world (its z axis up when level); `imu_quat` turns the
angles into the (w, x, y, z) quaternion `RobotState.base_quat` carries. One angle step is
0.0055° (9.6e-5 rad), one rate step 0.061 °/s (1.07e-3 rad/s, range ±34.9 rad/s).

    frames = pack_imu(quat, gyro)                      # what the IMU sends: [(kind, 8 bytes), ...]
    reader = ImuReader()
    reader.feed(data, time.time())                     # each frame from the IMU's id
    reader.quat, reader.gyro, reader.stamp             # the last complete sample
"""

from __future__ import annotations

import math
import struct

import numpy as np

HEADER = 0x55
GYRO = 0x52
ANGLES = 0x53
DEFAULT_IMU_ID = 0x50
"""Arbitration id the IMU streams from when the driver's address names no other."""
GYRO_RANGE_RAD_S = math.radians(2000.0)
ANGLE_RANGE_RAD = math.pi
STEP = 32768


def _int16(values: np.ndarray, full_scale: float) -> tuple[int, int, int]:
    counts = np.clip(np.round(np.asarray(values, dtype=np.float64) / full_scale * STEP), -STEP, STEP - 1)
    return tuple(int(c) for c in counts)


def euler_from_quat(quat: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw (Z-Y-X), rad, of a unit (w, x, y, z) quaternion: what the IMU's angle packet reports."""
    w, x, y, z = np.asarray(quat, dtype=np.float64)
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2.0 * (w * y - z * x))))
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return np.array([roll, pitch, yaw])


def imu_quat(angles: np.ndarray) -> np.ndarray:
    """The (w, x, y, z) quaternion of roll, pitch, yaw (rad, Z-Y-X): yaw about z, then pitch about y, then roll."""
    roll, pitch, yaw = (float(a) / 2 for a in angles)
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), \
        math.sin(yaw)
    return np.array([cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy,
                     cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy])


def pack_imu(quat: np.ndarray, gyro: np.ndarray) -> list[bytes]:
    """The two frames of one sample: angular velocity (rad/s, sensor axes), then the angles of `quat`."""
    return [struct.pack("<BB3h", HEADER, GYRO, *_int16(gyro, GYRO_RANGE_RAD_S)),
            struct.pack("<BB3h", HEADER, ANGLES, *_int16(euler_from_quat(quat), ANGLE_RANGE_RAD))]


class ImuReader:
    """The last complete sample of a streaming CAN IMU: a rate frame, then an angle frame, completes one."""

    def __init__(self) -> None:
        self.quat: np.ndarray | None = None
        """Orientation of the last sample, (4,) w, x, y, z; None before the first."""
        self.gyro: np.ndarray | None = None
        """Angular velocity of the last sample, (3,) rad/s in the sensor's axes."""
        self.stamp = -math.inf
        """time.time() when the last sample's angle frame came."""
        self.samples = 0
        self.malformed = 0
        """Frames from the IMU's id that are not an 8-byte rate or angle packet."""
        self._gyro: np.ndarray | None = None

    def feed(self, data: bytes, now: float) -> None:
        """Take one frame from the IMU's arbitration id, received at `now`."""
        if len(data) != 8 or data[0] != HEADER or data[1] not in (GYRO, ANGLES):
            self.malformed += 1
            return
        values = np.array(struct.unpack_from("<3h", data, 2), dtype=np.float64) / STEP
        if data[1] == GYRO:
            self._gyro = values * GYRO_RANGE_RAD_S
        elif self._gyro is not None:
            self.quat, self.gyro, self.stamp = imu_quat(values * ANGLE_RANGE_RAD), self._gyro, now
            self._gyro = None
            self.samples += 1
