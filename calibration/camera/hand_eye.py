"""Hand-eye calibration: where the camera is mounted, from board views and the gripper pose recorded with each.

From the board's pose in each image (`cv2.solvePnP`) and the gripper's pose in the robot base
frame (POSES.yaml, read by `load_gripper_poses`), `calibrate_hand_eye` solves AX = XB
(`cv2.calibrateHandEye`) for camera→gripper (eye-in-hand) or camera→base (eye-to-hand), and
checks the result against the board pose that stands still. The rotation helpers it uses
(quaternions (w, x, y, z), URDF roll-pitch-yaw) are here too.

    calib = calibrate_camera(Path("shots"), board="charuco", rows=7, cols=10, square=0.03)
    result = calibrate_hand_eye(calib, Path("shots"), Path("shots/POSES.yaml"), mode="eye_in_hand")
    result.transform                          # (4, 4) camera→gripper
    result.residual_translation               # metres: how far the still board wanders across views
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from s2r.calibration.camera.board import CalibrationError, describe_rejected, find_boards, image_paths
from s2r.calibration.camera.intrinsics import CameraCalibration
from s2r.yaml_file import check_fields, read_yaml

HandEyeMode = Literal["eye_in_hand", "eye_to_hand"]
HandEyeMethod = Literal["tsai", "park", "horaud", "andreff", "daniilidis"]

MIN_HAND_EYE_IMAGES = 3
"""Fewest usable views `calibrate_hand_eye` accepts: AX = XB needs two motions about different axes."""
MIN_ROTATION_SPREAD_DEG = 5.0
"""The gripper must turn by at least this much about a second axis for hand-eye to be defined."""

_HAND_EYE_METHODS = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}


@dataclass(frozen=True)
class HandEyeResult:
    """Where the camera sits: on the gripper (eye-in-hand) or in the robot base frame (eye-to-hand)."""

    mode: HandEyeMode
    transform: np.ndarray
    """(4, 4) camera→gripper (eye_in_hand) or camera→base (eye_to_hand): the camera's optical
    frame expressed in the parent frame."""
    residual_translation: float
    """Metres: RMS spread of the board's pose across views, mapped through the result into the
    frame where it stands still (base for eye-in-hand, gripper for eye-to-hand)."""
    residual_rotation_deg: float
    """Degrees: RMS angular spread of that same board pose."""
    images_used: tuple[str, ...]
    rejected: dict[str, str] = field(default_factory=dict)
    """File name → why it was skipped."""
    method: HandEyeMethod = "park"

    @property
    def parent_frame(self) -> str:
        """The frame the camera pose is expressed in: 'gripper' or 'base'."""
        return "gripper" if self.mode == "eye_in_hand" else "base"

    @property
    def translation(self) -> np.ndarray:
        """(3,) camera origin in the parent frame, metres."""
        return self.transform[:3, 3].copy()

    @property
    def quaternion_wxyz(self) -> np.ndarray:
        """(4,) camera orientation in the parent frame, w ≥ 0."""
        return matrix_to_quaternion(self.transform[:3, :3])

    @property
    def rpy_deg(self) -> np.ndarray:
        """(3,) roll, pitch, yaw in degrees, URDF convention (R = Rz(yaw)·Ry(pitch)·Rx(roll))."""
        return np.degrees(matrix_to_rpy(self.transform[:3, :3]))


def load_gripper_poses(path: str | Path) -> dict[str, np.ndarray]:
    """Read POSES.yaml: image file name → (4, 4) gripper→base transform (the gripper's pose in the base frame).

        poses:
          img_000.png:
            position: [0.412, -0.031, 0.356]     # metres, in the robot base frame
            quaternion: [0.0, 1.0, 0.0, 0.0]     # w, x, y, z; the gripper's orientation in the base frame

    Raises CalibrationError naming the file and the field (`poses.img_000.png.quaternion`) on a
    missing entry field, a wrong count, a non-number or a quaternion whose norm is not 1 (±1 %).
    """
    path = Path(path)
    doc = read_yaml(path, "gripper poses", CalibrationError)
    check_fields(doc, path, CalibrationError, required={"poses": dict})
    poses = {}
    for name, entry in doc["poses"].items():
        key = f"poses.{name}"
        check_fields(entry, path, CalibrationError, required={"position": list, "quaternion": list}, where=f"{key}.")
        position = numbers_field(entry["position"], 3, path, f"{key}.position", "[x, y, z] in metres")
        quaternion = numbers_field(entry["quaternion"], 4, path, f"{key}.quaternion", "[w, x, y, z]")
        norm = float(np.linalg.norm(quaternion))
        if abs(norm - 1.0) > 0.01:
            raise CalibrationError(f"{path}: {key}.quaternion: not a unit quaternion [w, x, y, z] (norm {norm:.4g})")
        poses[str(name)] = _transform(quaternion_to_matrix(quaternion / norm), position)
    return poses


def calibrate_hand_eye(
    calibration: CameraCalibration,
    images: list[Path] | Path,
    poses_yaml: str | Path,
    *,
    mode: HandEyeMode,
    method: HandEyeMethod = "park",
) -> HandEyeResult:
    """Solve for the camera's mount from board views and the gripper pose recorded with each.

    eye_in_hand: the camera rides on the gripper and the board stands still in the base frame;
    the result is camera→gripper. eye_to_hand: the camera stands still and the board rides on
    the gripper; the result is camera→base. Every image needs an entry in POSES.yaml (see
    `load_gripper_poses`); images where the board is not found are skipped and listed.
    """
    if mode not in ("eye_in_hand", "eye_to_hand"):
        raise CalibrationError(f"hand-eye: mode must be eye_in_hand or eye_to_hand, got {mode!r}")
    if method not in _HAND_EYE_METHODS:
        raise CalibrationError(f"hand-eye: method must be one of {', '.join(_HAND_EYE_METHODS)}, got {method!r}")
    paths, source = image_paths(images)
    poses = load_gripper_poses(poses_yaml)
    missing = [path.name for path in paths if path.name not in poses]
    if missing:
        raise CalibrationError(f"{poses_yaml}: poses: no entry for {', '.join(missing)} (images in {source})")
    views, rejected, _ = find_boards(paths, calibration.board, image_size=calibration.image_size)
    board_to_camera, gripper_to_base = [], []
    for name, (object_points, image_points) in views.items():
        board_to_camera.append(_board_pose(object_points, image_points, calibration))
        gripper_to_base.append(poses[name])
    if len(views) < MIN_HAND_EYE_IMAGES:
        raise CalibrationError(
            f"{source}: the board was found in {len(views)} of {len(paths)} images; hand-eye needs at least "
            f"{MIN_HAND_EYE_IMAGES}. Rejected: {describe_rejected(rejected)}"
        )
    # AX = XB: A are the robot's motions, B the board's motions seen by the camera. For eye-to-hand,
    # OpenCV takes base→gripper in place of gripper→base and returns camera→base.
    robot = gripper_to_base if mode == "eye_in_hand" else [np.linalg.inv(t) for t in gripper_to_base]
    _check_rotation_spread(robot, poses_yaml)
    rotation, translation = cv2.calibrateHandEye(
        [t[:3, :3] for t in robot], [t[:3, 3] for t in robot],
        [t[:3, :3] for t in board_to_camera], [t[:3, 3] for t in board_to_camera],
        method=_HAND_EYE_METHODS[method],
    )
    camera_to_parent = _transform(rotation, translation.ravel())
    # The board is fixed in the base (eye-in-hand) or gripper (eye-to-hand) frame: its pose there,
    # robot · X · board_to_camera, is the same in every view up to noise.
    board_fixed = [a @ camera_to_parent @ b for a, b in zip(robot, board_to_camera)]
    residual_translation, residual_rotation = _pose_spread(board_fixed)
    return HandEyeResult(
        mode=mode,
        transform=camera_to_parent,
        residual_translation=residual_translation,
        residual_rotation_deg=residual_rotation,
        images_used=tuple(views),
        rejected=rejected,
        method=method,
    )


def numbers_field(value: Any, count: int, path: str | Path, key: str, expected: str) -> np.ndarray:
    """The list `value` of field `key` in the file at `path` as (count,) float64, or CalibrationError.

    `expected` says what the numbers are (`"[w, x, y, z]"`); booleans and non-finite values are refused.
    """
    numbers = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers or len(value) != count or not np.all(np.isfinite(value)):
        raise CalibrationError(f"{path}: {key}: expected {count} numbers {expected}, got {value!r}")
    return np.array(value, dtype=np.float64)


# --------------------------------------------------------------------------- rotations


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (w, x, y, z) → (3, 3) rotation matrix."""
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix → (4,) unit quaternion (w, x, y, z) with w ≥ 0."""
    rotvec = cv2.Rodrigues(np.asarray(rotation, np.float64))[0].ravel()
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    q = np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * rotvec / angle])
    return q if q[0] >= 0 else -q


def matrix_to_rpy(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation → (3,) roll, pitch, yaw in radians with R = Rz(yaw)·Ry(pitch)·Rx(roll) (URDF)."""
    r = rotation
    return np.array([math.atan2(r[2, 1], r[2, 2]), math.atan2(-r[2, 0], math.hypot(r[2, 1], r[2, 2])), math.atan2(r[1, 0], r[0, 0])])


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle of a (3, 3) rotation, degrees (0 for the identity)."""
    return float(np.degrees(np.linalg.norm(cv2.Rodrigues(np.asarray(rotation, np.float64))[0])))


# --------------------------------------------------------------------------- helpers


def _board_pose(object_points: np.ndarray, image_points: np.ndarray, calibration: CameraCalibration) -> np.ndarray:
    """(4, 4) board→camera from one view: IPPE for the planar board, then Levenberg-Marquardt."""
    k, d = calibration.camera_matrix, calibration.dist_coeffs
    _, rvec, tvec = cv2.solvePnP(object_points, image_points, k, d, flags=cv2.SOLVEPNP_IPPE)
    rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, k, d, rvec, tvec)
    return _transform(cv2.Rodrigues(rvec)[0], tvec.ravel())


def _check_rotation_spread(robot: list[np.ndarray], poses_yaml: str | Path) -> None:
    """Refuse motions that leave hand-eye undetermined: rotations about fewer than two axes."""
    rotvecs = np.array([cv2.Rodrigues(robot[0][:3, :3].T @ t[:3, :3])[0].ravel() for t in robot[1:]])
    spread = np.degrees(np.linalg.svd(rotvecs, compute_uv=False)) if len(rotvecs) >= 2 else np.zeros(2)
    if spread[1] < MIN_ROTATION_SPREAD_DEG:
        raise CalibrationError(
            f"{poses_yaml}: the gripper rotates about fewer than two axes between images (second spread "
            f"{spread[1]:.2g}° < {MIN_ROTATION_SPREAD_DEG}°); tilt it about different axes between shots"
        )


def _pose_spread(transforms: list[np.ndarray]) -> tuple[float, float]:
    """RMS deviation of poses from their mean: (metres, degrees)."""
    positions = np.array([t[:3, 3] for t in transforms])
    translation = float(np.sqrt(np.mean(np.sum((positions - positions.mean(axis=0)) ** 2, axis=1))))
    u, _, vt = np.linalg.svd(np.mean([t[:3, :3] for t in transforms], axis=0))
    mean_rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    angles = [rotation_angle_deg(mean_rotation.T @ t[:3, :3]) for t in transforms]
    return translation, float(np.sqrt(np.mean(np.square(angles))))


def _transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = rotation, translation
    return t
