"""Camera calibration: intrinsics, distortion and hand-eye extrinsics from images of a printed board.

`calibrate_camera` finds a ChArUco or checkerboard board in each image, skips (and lists) the
images where it is not found, and fits a pinhole camera with plumb-bob distortion
(`cv2.calibrateCamera`). `calibrate_hand_eye` adds where the camera sits on the robot: from the
board's pose in each image (`cv2.solvePnP`) and the gripper pose recorded with it (POSES.yaml)
it solves AX = XB (`cv2.calibrateHandEye`). The result is saved as a ROS camera_info-style YAML
that `camera_info_manager` reads, with the board and the hand-eye transform beside it.

    calib = calibrate_camera(Path("shots"), board="charuco", rows=7, cols=10, square=0.03)
    calib.camera_matrix         # (3, 3) K, pixels
    calib.reprojection_error    # RMS over all corners of all used images, pixels
    calib.rejected              # {"IMG_0042.jpg": "board not found", ...}
    calib = replace(calib, hand_eye=calibrate_hand_eye(calib, Path("shots"), Path("POSES.yaml"), mode="eye_in_hand"))
    save_camera_calibration(calib, "camera.yaml")

The modules: `board` (BoardSpec, finding it in photos), `intrinsics` (calibrate_camera,
CameraCalibration), `hand_eye` (calibrate_hand_eye, POSES.yaml, rotation helpers),
`calibration_file` (the YAML file, `s2r calibrate-camera`), and `board_render` (synthetic
views rendered by MuJoCo, the tests' ground truth; imported on its own, never from here).

Conventions. Pixel coordinates are OpenCV's: the centre of the top-left pixel is (0, 0). The
camera frame is the optical frame (x right, y down, z forward; ROS's `*_optical_frame`). The
board frame has its origin at the top-left corner of the squares, x along the columns, y along
the rows (down the printed page) and z into the board. `rows` and `cols` count squares, not
inner corners. Transforms are 4×4 homogeneous matrices named `a_to_b`: they map points
expressed in frame a into frame b (so `camera_to_gripper` is the camera's pose in the gripper
frame). Quaternions are (w, x, y, z).
"""

from s2r.calibration.camera.board import IMAGE_SUFFIXES, MIN_CORNERS, BoardKind, BoardSpec, CalibrationError
from s2r.calibration.camera.calibration_file import (
    load_camera_calibration,
    run_calibrate_camera,
    save_camera_calibration,
)
from s2r.calibration.camera.hand_eye import (
    MIN_HAND_EYE_IMAGES,
    MIN_ROTATION_SPREAD_DEG,
    HandEyeMethod,
    HandEyeMode,
    HandEyeResult,
    calibrate_hand_eye,
    load_gripper_poses,
    matrix_to_quaternion,
    matrix_to_rpy,
    quaternion_to_matrix,
    rotation_angle_deg,
)
from s2r.calibration.camera.intrinsics import MIN_IMAGES, CameraCalibration, calibrate_camera

__all__ = [
    "IMAGE_SUFFIXES",
    "MIN_CORNERS",
    "MIN_HAND_EYE_IMAGES",
    "MIN_IMAGES",
    "MIN_ROTATION_SPREAD_DEG",
    "BoardKind",
    "BoardSpec",
    "CalibrationError",
    "CameraCalibration",
    "HandEyeMethod",
    "HandEyeMode",
    "HandEyeResult",
    "calibrate_camera",
    "calibrate_hand_eye",
    "load_camera_calibration",
    "load_gripper_poses",
    "matrix_to_quaternion",
    "matrix_to_rpy",
    "quaternion_to_matrix",
    "rotation_angle_deg",
    "run_calibrate_camera",
    "save_camera_calibration",
]
