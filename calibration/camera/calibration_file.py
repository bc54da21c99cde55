"""The calibration file: a ROS camera_info YAML with s2r's board, fit quality and hand-eye beside it; and `s2r calibrate-camera`.

`save_camera_calibration` writes the camera_info fields that `camera_info_manager` and
`camera_calibration_parsers` read (image_width, image_height, camera_name, camera_matrix,
distortion_model, distortion_coefficients, rectification_matrix, projection_matrix) and adds
reprojection_error, intrinsics_std, per_image_error, images_rejected, board and, once solved,
hand_eye. `load_camera_calibration` reads it back through `s2r.yaml_file`: a missing field, an
unknown one or a value of the wrong type is refused in one line naming the file and the field.

    save_camera_calibration(calib, "camera.yaml")
    calib = load_camera_calibration("camera.yaml")        # CalibrationError: camera.yaml: board.square: ...
    summary = run_calibrate_camera(Path("shots"), "charuco", 7, 10, 0.03, Path("camera.yaml"))
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import numpy as np
import yaml

from s2r.calibration.camera.board import BoardKind, BoardSpec, CalibrationError
from s2r.calibration.camera.hand_eye import HandEyeMethod, HandEyeMode, HandEyeResult, calibrate_hand_eye, numbers_field
from s2r.calibration.camera.intrinsics import CameraCalibration, calibrate_camera
from s2r.yaml_file import check_fields, read_yaml

_MATRIX = {"rows": int, "cols": int, "data": list}
_CAMERA_REQUIRED = {
    "image_width": int,
    "image_height": int,
    "camera_matrix": dict,
    "distortion_model": str,
    "distortion_coefficients": dict,
    "reprojection_error": float,
    "board": dict,
}
_CAMERA_OPTIONAL = {
    "camera_name": str,
    "rectification_matrix": dict,
    "projection_matrix": dict,
    "intrinsics_std": dict,
    "per_image_error": dict,
    "images_rejected": dict,
    "hand_eye": dict,
}
_BOARD_REQUIRED = {"type": str, "rows": int, "cols": int, "square": float}
_BOARD_OPTIONAL = {"marker": float, "dictionary": str}
_HAND_EYE_REQUIRED = {"mode": str, "transform": dict}
_HAND_EYE_OPTIONAL = {
    "parent_frame": str,
    "child_frame": str,
    "method": str,
    "translation": list,
    "quaternion_wxyz": list,
    "rpy_deg": list,
    "residual_translation": float,
    "residual_rotation_deg": float,
    "images_used": list,
    "images_rejected": dict,
}
_INTRINSICS_STD = ("fx", "fy", "cx", "cy")


def save_camera_calibration(calibration: CameraCalibration, path: str | Path) -> Path:
    """Write `calibration` as camera_info-style YAML (atomically: a partial file never stands at `path`); returns the path."""
    path = Path(path)
    width, height = calibration.image_size
    projection = np.hstack([calibration.camera_matrix, np.zeros((3, 1))])
    doc: dict[str, Any] = {
        "image_width": width,
        "image_height": height,
        "camera_name": "camera",
        "camera_matrix": _matrix_to_yaml(calibration.camera_matrix),
        "distortion_model": "plumb_bob",
        "distortion_coefficients": _matrix_to_yaml(calibration.dist_coeffs.reshape(1, -1)),
        "rectification_matrix": _matrix_to_yaml(np.eye(3)),
        "projection_matrix": _matrix_to_yaml(projection),
        "reprojection_error": float(calibration.reprojection_error),
        "intrinsics_std": dict(zip(_INTRINSICS_STD, _floats(calibration.intrinsics_std))),
        "per_image_error": {name: float(error) for name, error in calibration.per_image_error.items()},
        "images_rejected": dict(calibration.rejected),
        "board": _board_to_yaml(calibration.board),
    }
    if calibration.hand_eye is not None:
        doc["hand_eye"] = _hand_eye_to_yaml(calibration.hand_eye)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, allow_unicode=True))
    os.replace(partial, path)
    return path


def load_camera_calibration(path: str | Path) -> CameraCalibration:
    """Read a file written by `save_camera_calibration`; CalibrationError naming the file and the field."""
    path = Path(path)
    doc = read_yaml(path, "camera calibration", CalibrationError)
    check_fields(doc, path, CalibrationError, required=_CAMERA_REQUIRED, optional=_CAMERA_OPTIONAL)
    if doc["distortion_model"] != "plumb_bob":
        raise CalibrationError(f"{path}: distortion_model: only plumb_bob is supported, got {doc['distortion_model']!r}")
    std = doc.get("intrinsics_std", {})
    check_fields(std, path, CalibrationError, optional=dict.fromkeys(_INTRINSICS_STD, float), where="intrinsics_std.")
    return CameraCalibration(
        image_size=(doc["image_width"], doc["image_height"]),
        camera_matrix=_matrix_from_yaml(doc, "camera_matrix", (3, 3), path),
        dist_coeffs=_matrix_from_yaml(doc, "distortion_coefficients", (1, 5), path).ravel(),
        reprojection_error=float(doc["reprojection_error"]),
        per_image_error={str(k): float(v) for k, v in _mapping_of(doc, "per_image_error", float, path).items()},
        board=_board_from_yaml(doc["board"], path),
        rejected={str(k): v for k, v in _mapping_of(doc, "images_rejected", str, path).items()},
        intrinsics_std=np.array([float(std.get(key, math.nan)) for key in _INTRINSICS_STD]),
        hand_eye=_hand_eye_from_yaml(doc["hand_eye"], path) if "hand_eye" in doc else None,
    )


def run_calibrate_camera(
    images_dir: Path,
    board: BoardKind,
    rows: int,
    cols: int,
    square: float,
    out: Path,
    hand_eye: Path | None = None,
    mode: HandEyeMode = "eye_in_hand",
    marker: float | None = None,
    dictionary: str = "DICT_4X4_50",
) -> dict[str, Any]:
    """`s2r calibrate-camera`: calibrate, optionally add hand-eye, save to `out`; returns a JSON-able summary."""
    calibration = calibrate_camera(images_dir, board=board, rows=rows, cols=cols, square=square, marker=marker, dictionary=dictionary)
    if hand_eye is not None:
        calibration = replace(calibration, hand_eye=calibrate_hand_eye(calibration, images_dir, hand_eye, mode=mode))
    save_camera_calibration(calibration, out)
    summary: dict[str, Any] = {
        "out": str(out),
        "image_width": calibration.image_size[0],
        "image_height": calibration.image_size[1],
        "fx": calibration.fx,
        "fy": calibration.fy,
        "cx": calibration.cx,
        "cy": calibration.cy,
        "distortion": _floats(calibration.dist_coeffs, digits=8),
        "reprojection_error_px": calibration.reprojection_error,
        "images_used": len(calibration.per_image_error),
        "images_rejected": dict(calibration.rejected),
    }
    if calibration.hand_eye is not None:
        result = calibration.hand_eye
        summary |= {
            "hand_eye_mode": result.mode,
            "hand_eye_translation_m": _floats(result.translation, digits=6),
            "hand_eye_rotation_deg": _floats(result.rpy_deg, digits=4),
            "hand_eye_quaternion_wxyz": _floats(result.quaternion_wxyz, digits=8),
            "hand_eye_residual_mm": 1000.0 * result.residual_translation,
            "hand_eye_residual_deg": result.residual_rotation_deg,
            "hand_eye_images_used": len(result.images_used),
        }
    return summary


def _board_to_yaml(board: BoardSpec) -> dict[str, Any]:
    data = {"type": board.kind, "rows": board.rows, "cols": board.cols, "square": board.square}
    if board.kind == "charuco":
        data |= {"marker": board.marker, "dictionary": board.dictionary}
    return data


def _board_from_yaml(data: dict, path: Path) -> BoardSpec:
    check_fields(data, path, CalibrationError, required=_BOARD_REQUIRED, optional=_BOARD_OPTIONAL, where="board.")
    if data["type"] not in get_args(BoardKind):
        raise CalibrationError(f"{path}: board.type: expected one of {', '.join(get_args(BoardKind))}, got {data['type']!r}")
    try:
        return BoardSpec(data["type"], data["rows"], data["cols"], float(data["square"]),
                         data.get("marker"), data.get("dictionary", "DICT_4X4_50"))
    except CalibrationError as error:  # BoardSpec's messages start with "board: "
        raise CalibrationError(f"{path}: {error}") from None


def _hand_eye_to_yaml(result: HandEyeResult) -> dict[str, Any]:
    return {
        "mode": result.mode,
        "parent_frame": result.parent_frame,
        "child_frame": "camera_optical",
        "method": result.method,
        "transform": _matrix_to_yaml(result.transform),
        "translation": _floats(result.translation),
        "quaternion_wxyz": _floats(result.quaternion_wxyz),
        "rpy_deg": _floats(result.rpy_deg),
        "residual_translation": float(result.residual_translation),
        "residual_rotation_deg": float(result.residual_rotation_deg),
        "images_used": list(result.images_used),
        "images_rejected": dict(result.rejected),
    }


def _hand_eye_from_yaml(data: dict, path: Path) -> HandEyeResult:
    """The `hand_eye` block; translation, quaternion_wxyz and rpy_deg are derived from transform and not read."""
    check_fields(data, path, CalibrationError, required=_HAND_EYE_REQUIRED, optional=_HAND_EYE_OPTIONAL, where="hand_eye.")
    for key, kind in (("mode", HandEyeMode), ("method", HandEyeMethod)):
        if key in data and data[key] not in get_args(kind):
            raise CalibrationError(f"{path}: hand_eye.{key}: expected one of {', '.join(get_args(kind))}, got {data[key]!r}")
    return HandEyeResult(
        mode=data["mode"],
        transform=_matrix_from_yaml(data, "transform", (4, 4), path, where="hand_eye."),
        residual_translation=float(data.get("residual_translation", math.nan)),
        residual_rotation_deg=float(data.get("residual_rotation_deg", math.nan)),
        images_used=tuple(str(name) for name in data.get("images_used", ())),
        rejected={str(k): v for k, v in _mapping_of(data, "images_rejected", str, path, where="hand_eye.").items()},
        method=data.get("method", "park"),
    )


def _matrix_to_yaml(matrix: np.ndarray) -> dict[str, Any]:
    return {"rows": int(matrix.shape[0]), "cols": int(matrix.shape[1]), "data": _floats(matrix.ravel())}


def _matrix_from_yaml(doc: dict, key: str, shape: tuple[int, int], path: Path, where: str = "") -> np.ndarray:
    """The camera_info matrix {rows, cols, data (row-major)} at `doc[key]` as a `shape` float64 array."""
    value, rows, cols = doc[key], *shape
    check_fields(value, path, CalibrationError, required=_MATRIX, where=f"{where}{key}.")
    if (value["rows"], value["cols"]) != shape:
        raise CalibrationError(f"{path}: {where}{key}: expected rows: {rows}, cols: {cols}, got {value['rows']}×{value['cols']}")
    return numbers_field(value["data"], rows * cols, path, f"{where}{key}.data", "(row-major)").reshape(shape)


def _mapping_of(doc: dict, key: str, kind: type, path: Path, where: str = "") -> dict:
    """`doc[key]` (a mapping of image file name → `kind`, or absent: {}), each value checked."""
    mapping = doc.get(key, {})
    for name, value in mapping.items():
        if not isinstance(value, (int, float) if kind is float else kind) or isinstance(value, bool):
            raise CalibrationError(f"{path}: {where}{key}.{name}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return mapping


def _floats(values: np.ndarray, digits: int | None = None) -> list[float]:
    """Plain floats for YAML and JSON, rounded to `digits` decimals where given."""
    return [float(v) if digits is None else round(float(v), digits) for v in np.ravel(values)]
