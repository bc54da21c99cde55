"""Intrinsics and lens distortion from photos of a board: `calibrate_camera` and its result, `CameraCalibration`.

A pinhole camera with plumb-bob distortion fitted by `cv2.calibrateCameraExtended` to the
corners found in every usable photo; the photos where the board is not found are skipped and
listed.

    calib = calibrate_camera(Path("shots"), board="charuco", rows=7, cols=10, square=0.03)
    calib.camera_matrix         # (3, 3) K, pixels
    calib.reprojection_error    # RMS over all corners of all used images, pixels
    calib.rejected              # {"IMG_0042.jpg": "board not found", ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from s2r.calibration.camera.board import (
    BoardKind,
    BoardSpec,
    CalibrationError,
    describe_rejected,
    find_boards,
    image_paths,
)

if TYPE_CHECKING:  # hand_eye builds on this module; the result only names its type
    from s2r.calibration.camera.hand_eye import HandEyeResult

MIN_IMAGES = 6
"""Fewest usable images `calibrate_camera` accepts: a focal length needs several tilted views."""


@dataclass(frozen=True)
class CameraCalibration:
    """A calibrated pinhole camera with plumb-bob distortion, and how well it fits its images."""

    image_size: tuple[int, int]
    """(width, height) in pixels."""
    camera_matrix: np.ndarray
    """(3, 3) K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], pixels."""
    dist_coeffs: np.ndarray
    """(5,) k1, k2, p1, p2, k3 (OpenCV's and ROS's plumb_bob)."""
    reprojection_error: float
    """Pixels: RMS distance between detected corners and the fitted model's projections, over all images."""
    per_image_error: dict[str, float]
    """File name → RMS reprojection error of that image's corners, pixels."""
    board: BoardSpec
    rejected: dict[str, str] = field(default_factory=dict)
    """File name → why it was skipped (unreadable, board not found, other size)."""
    intrinsics_std: np.ndarray = field(default_factory=lambda: np.full(4, np.nan))
    """(4,) standard deviations of fx, fy, cx, cy from the fit, pixels."""
    hand_eye: HandEyeResult | None = None
    """Where the camera is mounted, once `calibrate_hand_eye` has solved it."""

    @property
    def fx(self) -> float:
        return float(self.camera_matrix[0, 0])

    @property
    def fy(self) -> float:
        return float(self.camera_matrix[1, 1])

    @property
    def cx(self) -> float:
        return float(self.camera_matrix[0, 2])

    @property
    def cy(self) -> float:
        return float(self.camera_matrix[1, 2])


def calibrate_camera(
    images: list[Path] | Path,
    *,
    board: BoardKind,
    rows: int,
    cols: int,
    square: float,
    marker: float | None = None,
    dictionary: str = "DICT_4X4_50",
    min_images: int = MIN_IMAGES,
) -> CameraCalibration:
    """Fit intrinsics and distortion to images of a board.

    images: a folder (every .png/.jpg/.jpeg/.bmp/.tif inside, sorted by name) or a list of files,
    all of one size. rows, cols: squares (not inner corners); square, marker: metres.
    Images where the board is not found are skipped and listed in `rejected`; fewer than
    `min_images` usable images raise CalibrationError naming the folder and the rejected files.
    """
    spec = BoardSpec(board, rows, cols, square, marker, dictionary)
    paths, source = image_paths(images)
    views, rejected, image_size = find_boards(paths, spec, image_size=None)
    if len(views) < min_images:
        raise CalibrationError(
            f"{source}: the {spec.kind} board ({spec.rows}×{spec.cols} squares of {spec.square} m) was found in "
            f"{len(views)} of {len(paths)} images; at least {min_images} are needed. Rejected: {describe_rejected(rejected)}"
        )
    object_points = [points for points, _ in views.values()]
    image_points = [points for _, points in views.values()]
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    rms, camera_matrix, dist_coeffs, _, _, std_intrinsics, _, per_view = cv2.calibrateCameraExtended(
        object_points, image_points, image_size, None, None, criteria=criteria
    )
    return CameraCalibration(
        image_size=image_size,
        camera_matrix=camera_matrix,
        dist_coeffs=dist_coeffs.ravel()[:5],
        reprojection_error=float(rms),
        per_image_error={name: float(error) for name, error in zip(views, per_view.ravel())},
        board=spec,
        rejected=rejected,
        intrinsics_std=std_intrinsics.ravel()[:4].copy(),
    )
