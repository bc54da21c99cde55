"""Camera calibration, checked against MuJoCo renders of a board at known poses with a known field of view."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from s2r.calibration.camera import (
    BoardSpec,
    CalibrationError,
    CameraCalibration,
    HandEyeResult,
    calibrate_camera,
    calibrate_hand_eye,
    load_camera_calibration,
    quaternion_to_matrix,
    rotation_angle_deg,
    run_calibrate_camera,
    save_camera_calibration,
)
from s2r.calibration.camera.board_render import BoardScene, PinholeCamera, render_board_views, render_hand_eye_views

CAMERA = PinholeCamera(width=640, height=480, fovy_deg=50.0)
ROWS, COLS, SQUARE = 7, 10, 0.03
BOARD = {"rows": ROWS, "cols": COLS, "square": SQUARE}


def _pose(rpy_deg: tuple[float, float, float], translation: tuple[float, float, float]) -> np.ndarray:
    roll, pitch, yaw = np.radians(rpy_deg)
    rx = cv2.Rodrigues(np.array([roll, 0.0, 0.0]))[0]
    ry = cv2.Rodrigues(np.array([0.0, pitch, 0.0]))[0]
    rz = cv2.Rodrigues(np.array([0.0, 0.0, yaw]))[0]
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rz @ ry @ rx, translation
    return pose


CAMERA_TO_GRIPPER = _pose((-10.0, 5.0, 90.0), (0.05, -0.03, 0.10))
"""The true eye-in-hand mount: 11.7 cm off the flange, tilted, turned a quarter."""
CAMERA_TO_BASE = _pose((-150.0, 0.0, -90.0), (0.6, 0.0, 0.5))
"""The true eye-to-hand mount: a camera on a stand looking down at the workspace."""


@pytest.fixture(scope="module", params=["charuco", "checkerboard"])
def board_views(request, tmp_path_factory) -> tuple[str, Path]:
    """15 views of a 7×10-square board at random tilts (up to 45°) and distances (0.3–0.7 m)."""
    kind = request.param
    folder = tmp_path_factory.mktemp(kind)
    render_board_views(folder, BoardSpec(kind, ROWS, COLS, SQUARE), CAMERA, count=15, seed=0)
    return kind, folder


@pytest.fixture(scope="module")
def eye_in_hand_views(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eye_in_hand")
    render_hand_eye_views(folder, BoardSpec("charuco", ROWS, COLS, SQUARE), CAMERA, mode="eye_in_hand",
                          mount=CAMERA_TO_GRIPPER, count=12, seed=1)
    return folder


def _copy_images(source: Path, target: Path, count: int) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(path, target)) for path in sorted(source.glob("*.png"))[:count]]


def test_rendered_board_corners_land_where_the_pinhole_model_puts_them():
    """The renderer's conventions (texture orientation, pixel centres, camera axes) agree with OpenCV's."""
    board = BoardSpec("charuco", ROWS, COLS, SQUARE)
    board_to_camera = _pose((20.0, -15.0, 10.0), (-0.15, -0.1, 0.5))
    with BoardScene(board, CAMERA) as scene:
        gray = cv2.cvtColor(scene.render_in_camera(board_to_camera), cv2.COLOR_RGB2GRAY)
    object_points, image_points = board.detect(gray)
    assert len(object_points) == board.num_corners
    in_camera = object_points @ board_to_camera[:3, :3].T + board_to_camera[:3, 3]
    projected = in_camera @ CAMERA.camera_matrix.T
    error = image_points - projected[:, :2] / projected[:, 2:]
    assert np.abs(error.mean(axis=0)).max() < 0.05  # no bias: pixel centres at integers
    assert np.abs(error).max() < 0.5


def test_focal_length_is_recovered_within_one_percent(board_views, tmp_path):
    kind, folder = board_views
    summary = run_calibrate_camera(folder, kind, ROWS, COLS, SQUARE, tmp_path / "camera.yaml")
    json.dumps(summary)  # what the CLI prints with --json
    f = CAMERA.focal_px
    assert abs(summary["fx"] / f - 1) < 0.01 and abs(summary["fy"] / f - 1) < 0.01, (summary["fx"], summary["fy"], f)
    assert abs(summary["cx"] - (CAMERA.width - 1) / 2) < 3 and abs(summary["cy"] - (CAMERA.height - 1) / 2) < 3
    assert summary["reprojection_error_px"] < 0.5
    assert summary["images_used"] + len(summary["images_rejected"]) == 15 and summary["images_used"] >= 12


def test_calibration_saves_as_camera_info_yaml_and_loads_back(board_views, tmp_path):
    kind, folder = board_views
    calibration = calibrate_camera(folder, board=kind, **BOARD)
    path = save_camera_calibration(calibration, tmp_path / "camera.yaml")
    doc = yaml.safe_load(path.read_text())
    assert (doc["image_width"], doc["image_height"]) == (640, 480)
    assert doc["distortion_model"] == "plumb_bob" and len(doc["distortion_coefficients"]["data"]) == 5
    assert doc["camera_matrix"]["rows"] == 3 and len(doc["projection_matrix"]["data"]) == 12
    assert doc["board"]["type"] == kind and doc["board"]["rows"] == ROWS
    loaded = load_camera_calibration(path)
    np.testing.assert_allclose(loaded.camera_matrix, calibration.camera_matrix)
    np.testing.assert_allclose(loaded.dist_coeffs, calibration.dist_coeffs)
    assert loaded.board == calibration.board and loaded.per_image_error == calibration.per_image_error


def test_images_without_the_board_are_listed_and_skipped(board_views, tmp_path):
    kind, folder = board_views
    _copy_images(folder, tmp_path, count=15)
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((480, 640), 128, np.uint8))
    with BoardScene(BoardSpec(kind, ROWS, COLS, SQUARE), CAMERA) as scene:
        behind_the_camera = _pose((0.0, 0.0, 0.0), (0.0, 0.0, -0.5))
        cv2.imwrite(str(tmp_path / "out_of_view.png"), scene.render_in_camera(behind_the_camera))
    (tmp_path / "corrupt.png").write_bytes(b"not a PNG")
    small = cv2.resize(cv2.imread(str(tmp_path / "view_000.png")), (320, 240))
    cv2.imwrite(str(tmp_path / "thumbnail.png"), small)
    (tmp_path / "notes.txt").write_text("not an image: ignored")
    calibration = calibrate_camera(tmp_path, board=kind, **BOARD)
    assert calibration.rejected == {
        "blank.png": "board not found",
        "corrupt.png": "unreadable image",
        "out_of_view.png": "board not found",
        "thumbnail.png": "size 320×240 differs from 640×480",
    }
    assert "blank.png" not in calibration.per_image_error
    assert abs(calibration.fx / CAMERA.focal_px - 1) < 0.01


def test_too_few_usable_images_raise_an_error_naming_the_folder_and_the_rejected_files(board_views, tmp_path):
    kind, folder = board_views
    _copy_images(folder, tmp_path, count=4)
    for name in ("blank_a.png", "blank_b.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((480, 640), np.uint8))
    with pytest.raises(CalibrationError) as error:
        calibrate_camera(tmp_path, board=kind, **BOARD)
    message = str(error.value)
    assert str(tmp_path) in message and "blank_a.png (board not found)" in message and "blank_b.png" in message
    assert "at least 6" in message


def test_eye_in_hand_mount_is_recovered_within_5_mm_and_1_degree(eye_in_hand_views, tmp_path):
    """The CLI's path: intrinsics and hand-eye from the same 12 views and their POSES.yaml."""
    out = tmp_path / "camera.yaml"
    summary = run_calibrate_camera(eye_in_hand_views, "charuco", ROWS, COLS, SQUARE, out,
                                   hand_eye=eye_in_hand_views / "POSES.yaml", mode="eye_in_hand")
    result = load_camera_calibration(out).hand_eye
    translation_error = np.linalg.norm(result.translation - CAMERA_TO_GRIPPER[:3, 3])
    rotation_error = rotation_angle_deg(result.transform[:3, :3].T @ CAMERA_TO_GRIPPER[:3, :3])
    assert translation_error < 0.005, f"{translation_error * 1000:.2f} mm"
    assert rotation_error < 1.0, f"{rotation_error:.3f}°"
    np.testing.assert_allclose(summary["hand_eye_translation_m"], result.translation, atol=1e-6)
    np.testing.assert_allclose(summary["hand_eye_rotation_deg"], [-10.0, 5.0, 90.0], atol=1.0)  # URDF roll, pitch, yaw
    assert summary["hand_eye_residual_mm"] < 5 and summary["hand_eye_images_used"] == 12
    assert abs(summary["fx"] / CAMERA.focal_px - 1) < 0.01


def test_eye_to_hand_camera_pose_in_the_base_is_recovered(tmp_path):
    board = BoardSpec("charuco", ROWS, COLS, SQUARE)
    _, poses = render_hand_eye_views(tmp_path, board, CAMERA, mode="eye_to_hand", mount=CAMERA_TO_BASE, count=12, seed=2)
    calibration = calibrate_camera(tmp_path, board="charuco", **BOARD)
    result = calibrate_hand_eye(calibration, tmp_path, poses, mode="eye_to_hand")
    assert result.parent_frame == "base"
    assert np.linalg.norm(result.translation - CAMERA_TO_BASE[:3, 3]) < 0.005
    assert rotation_angle_deg(result.transform[:3, :3].T @ CAMERA_TO_BASE[:3, :3]) < 1.0


def _poses_doc(folder: Path) -> dict:
    return yaml.safe_load((folder / "POSES.yaml").read_text())


@pytest.mark.parametrize(
    ("damage", "key"),
    [
        (lambda poses: poses.pop("view_003.png"), "poses: no entry for view_003.png"),
        (lambda poses: poses["view_004.png"].update(quaternion=[1.0, 0.0, 0.0]), "poses.view_004.png.quaternion: expected 4 numbers"),
        (lambda poses: poses["view_005.png"].update(quaternion=[0.5, 0.0, 0.0, 0.0]), "poses.view_005.png.quaternion: not a unit quaternion"),
        (lambda poses: poses["view_006.png"].pop("position"), "poses.view_006.png.position: missing"),
        (lambda poses: poses["view_007.png"].update(position=[0.1, "a", 0.2]), "poses.view_007.png.position: expected 3 numbers"),
    ],
    ids=["missing-image", "short-quaternion", "non-unit-quaternion", "missing-position", "not-a-number"],
)
def test_a_malformed_poses_yaml_is_refused_naming_the_file_and_key(eye_in_hand_views, tmp_path, damage, key):
    doc = _poses_doc(eye_in_hand_views)
    damage(doc["poses"])
    poses = tmp_path / "POSES.yaml"
    poses.write_text(yaml.safe_dump(doc))
    calibration = calibrate_camera(eye_in_hand_views, board="charuco", **BOARD)
    with pytest.raises(CalibrationError) as error:
        calibrate_hand_eye(calibration, eye_in_hand_views, poses, mode="eye_in_hand")
    assert str(poses) in str(error.value) and key in str(error.value), str(error.value)


def test_a_gripper_that_never_turns_leaves_hand_eye_undetermined_and_is_refused(eye_in_hand_views, tmp_path):
    doc = _poses_doc(eye_in_hand_views)
    for entry in doc["poses"].values():
        entry["quaternion"] = [1.0, 0.0, 0.0, 0.0]
    poses = tmp_path / "POSES.yaml"
    poses.write_text(yaml.safe_dump(doc))
    calibration = calibrate_camera(eye_in_hand_views, board="charuco", **BOARD)
    with pytest.raises(CalibrationError, match="rotates about fewer than two axes"):
        calibrate_hand_eye(calibration, eye_in_hand_views, poses, mode="eye_in_hand")


def test_poses_quaternions_are_wxyz():
    np.testing.assert_allclose(quaternion_to_matrix(np.array([np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)])),
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "charuco", "rows": 12, "cols": 12, "square": 0.03}, "has 72 markers; DICT_4X4_50 has only 50"),
        ({"kind": "charuco", "rows": 7, "cols": 10, "square": 0.03, "dictionary": "DICT_9X9_1"}, "unknown ArUco dictionary"),
        ({"kind": "charuco", "rows": 7, "cols": 10, "square": 0.03, "marker": 0.04}, "marker must be between 0 and square"),
        ({"kind": "circles", "rows": 7, "cols": 10, "square": 0.03}, "kind must be 'charuco' or 'checkerboard'"),
    ],
)
def test_an_impossible_board_is_refused_with_the_reason(kwargs, message):
    with pytest.raises(CalibrationError, match=message):
        BoardSpec(**kwargs)


def _saved_calibration(path: Path) -> Path:
    """A calibration with a hand-eye block, as `s2r calibrate-camera` writes it."""
    hand_eye = HandEyeResult(mode="eye_in_hand", transform=CAMERA_TO_GRIPPER, residual_translation=0.001,
                             residual_rotation_deg=0.05, images_used=("view_000.png",))
    calibration = CameraCalibration(image_size=(CAMERA.width, CAMERA.height), camera_matrix=CAMERA.camera_matrix,
                                    dist_coeffs=np.zeros(5), reprojection_error=0.1, per_image_error={"view_000.png": 0.1},
                                    board=BoardSpec("charuco", ROWS, COLS, SQUARE), hand_eye=hand_eye)
    return save_camera_calibration(calibration, path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda doc: doc.pop("camera_matrix"), "camera_matrix: missing"),
        (lambda doc: doc.update(image_width="640"), "image_width: expected int, got str '640'"),
        (lambda doc: doc["board"].update(square="3 cm"), "board.square: expected float, got str '3 cm'"),
        (lambda doc: doc["camera_matrix"].update(data=[1.0] * 8), "camera_matrix.data: expected 9 numbers"),
        (lambda doc: doc["hand_eye"].update(mode="eye_on_hand"), "hand_eye.mode: expected one of eye_in_hand, eye_to_hand"),
        (lambda doc: doc.update(reprojection_eror=0.1), "reprojection_eror: unknown field"),
    ],
    ids=["missing-field", "wrong-type", "wrong-type-in-board", "short-matrix", "unknown-mode", "misspelt-field"],
)
def test_a_malformed_calibration_yaml_is_refused_in_one_line_naming_the_file_and_field(tmp_path, damage, message):
    path = _saved_calibration(tmp_path / "camera.yaml")
    assert load_camera_calibration(path).hand_eye.mode == "eye_in_hand"
    doc = yaml.safe_load(path.read_text())
    damage(doc)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CalibrationError) as error:
        load_camera_calibration(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value), str(error.value)
    assert "\n" not in str(error.value)
