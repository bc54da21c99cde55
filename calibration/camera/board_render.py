"""Synthetic calibration images: a printed board rendered off-screen by MuJoCo at known poses.

The ground truth that camera calibration is checked against. A `BoardScene` holds a textured
board (the image `BoardSpec.image()` draws, so exactly the board the detector looks for) and a
pinhole camera mounted on a rig body (the gripper, or the robot base), both moved freely; it
renders with `mujoco.Renderer` (off-screen; `MUJOCO_GL=egl` unless already set). The only
module of `s2r.calibration.camera` that needs MuJoCo: import it by its own name; the package
itself imports OpenCV only.

    camera = PinholeCamera(width=640, height=480, fovy_deg=50.0)
    paths = render_board_views(Path("shots"), board, camera, count=15)     # intrinsics
    paths, poses_yaml = render_hand_eye_views(Path("he"), board, camera, mode="eye_in_hand", mount=camera_to_gripper, count=12)
    camera.camera_matrix                                                   # (3, 3) the true K

MuJoCo's camera looks down its -z axis with y up; OpenCV's optical frame looks down +z with y
down, so camera_opencv = camera_mujoco · diag(1, -1, -1). MuJoCo renders pixel (i, j) as the
square [j, j+1] × [i, i+1] of the image plane, whose centre OpenCV calls (j, i): the principal
point of a centred frustum is ((W - 1)/2, (H - 1)/2) in OpenCV's coordinates, and
fx = fy = (H/2) / tan(fovy/2).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import cv2  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from s2r.calibration.camera.board import BoardSpec  # noqa: E402
from s2r.calibration.camera.hand_eye import HandEyeMode, matrix_to_quaternion  # noqa: E402

OPENCV_FROM_MUJOCO = np.diag([1.0, -1.0, -1.0])
"""Rotation between MuJoCo's camera frame and OpenCV's optical frame (its own inverse)."""
BOARD_TO_GRIPPER = np.array([[1.0, 0, 0, -0.15], [0, 1, 0, -0.1], [0, 0, 1, 0.08], [0, 0, 0, 1]])
"""Where the gripper holds the board in eye-to-hand views (any fixed pose will do)."""
TEXTURE_PIXELS_PER_SQUARE = 96
MARGIN_SQUARES = 1.0
"""White border around the squares, in squares: the quiet zone detectors need."""


@dataclass(frozen=True)
class PinholeCamera:
    """A distortion-free camera given as MuJoCo sees it: resolution and vertical field of view."""

    width: int
    """Pixels."""
    height: int
    """Pixels."""
    fovy_deg: float
    """Vertical field of view, degrees (MJCF `camera fovy`)."""

    @property
    def focal_px(self) -> float:
        """fx = fy in pixels: (height/2) / tan(fovy/2)."""
        return self.height / 2 / math.tan(math.radians(self.fovy_deg) / 2)

    @property
    def camera_matrix(self) -> np.ndarray:
        """(3, 3) the true K in OpenCV's pixel convention (pixel centres at integers)."""
        f = self.focal_px
        return np.array([[f, 0.0, (self.width - 1) / 2], [0.0, f, (self.height - 1) / 2], [0.0, 0.0, 1.0]])

    def sees(self, points_in_camera: np.ndarray, border_px: float = 4.0) -> bool:
        """Whether every (N, 3) point (optical frame, metres) lies in front and inside the image."""
        if np.any(points_in_camera[:, 2] <= 0.05):
            return False
        uv = points_in_camera @ self.camera_matrix.T
        uv = uv[:, :2] / uv[:, 2:]
        return bool(np.all((uv >= border_px) & (uv <= [self.width - 1 - border_px, self.height - 1 - border_px])))


class BoardScene:
    """A board and a camera on a rig in an otherwise empty world, rendered off-screen.

    mount: (4, 4) camera→rig, the camera's optical frame in the frame of the body that carries
    it (the gripper for eye-in-hand, the base for eye-to-hand; identity puts the camera at the
    rig origin, looking along its +z). Owns a `mujoco.Renderer`: use as a context manager or
    call `close()`.
    """

    def __init__(self, board: BoardSpec, camera: PinholeCamera, *, mount: np.ndarray | None = None):
        self.board = board
        self.camera = camera
        self.mount = np.eye(4) if mount is None else np.asarray(mount, np.float64)
        _require_offscreen_gl()
        texture = board.image(TEXTURE_PIXELS_PER_SQUARE, MARGIN_SQUARES)
        ok, png = cv2.imencode(".png", texture)
        assert ok, "OpenCV failed to encode the board texture"
        self.model = mujoco.MjModel.from_xml_string(self._mjcf(), assets={"board.png": png.tobytes()})
        self.data = mujoco.MjData(self.model)
        self._renderer = mujoco.Renderer(self.model, height=camera.height, width=camera.width)

    def _mjcf(self) -> str:
        width, height = self.board.size
        margin = MARGIN_SQUARES * self.board.square
        # The plane shows its texture on its +z side, the printed side: the board frame's -z.
        # Rotating 180° about x turns board (x, y, z) into plane (x, -y, -z); texture row 0 (the
        # top of the printed image) then lies at the plane's +y, i.e. at the board's y = -margin.
        mount_rotation = self.mount[:3, :3] @ OPENCV_FROM_MUJOCO
        pos = " ".join(f"{v:.9g}" for v in self.mount[:3, 3])
        quat = " ".join(f"{v:.9g}" for v in matrix_to_quaternion(mount_rotation))
        return f"""
<mujoco model="calibration_board">
  <visual>
    <global offwidth="{self.camera.width}" offheight="{self.camera.height}"/>
    <headlight ambient="0.75 0.75 0.75" diffuse="0.25 0.25 0.25" specular="0 0 0"/>
    <map znear="0.01"/>
  </visual>
  <asset>
    <texture name="board" type="2d" file="board.png"/>
    <material name="board" texture="board" texrepeat="1 1" texuniform="false" specular="0" shininess="0" reflectance="0"/>
  </asset>
  <worldbody>
    <body name="board" mocap="true">
      <geom type="plane" material="board" contype="0" conaffinity="0"
            size="{width / 2 + margin:.9g} {height / 2 + margin:.9g} 1" pos="{width / 2:.9g} {height / 2:.9g} 0" euler="180 0 0"/>
    </body>
    <body name="rig" mocap="true">
      <camera name="camera" pos="{pos}" quat="{quat}" fovy="{self.camera.fovy_deg:.9g}"/>
    </body>
  </worldbody>
</mujoco>"""

    def render(self, *, board_to_world: np.ndarray, rig_to_world: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB image with the board and the camera's rig at the given (4, 4) poses."""
        for body, pose in (("board", board_to_world), ("rig", rig_to_world)):
            mocap = self.model.body(body).mocapid[0]
            self.data.mocap_pos[mocap] = pose[:3, 3]
            self.data.mocap_quat[mocap] = matrix_to_quaternion(pose[:3, :3])
        mujoco.mj_forward(self.model, self.data)
        self._renderer.update_scene(self.data, camera="camera")
        return self._renderer.render()

    def render_in_camera(self, board_to_camera: np.ndarray) -> np.ndarray:
        """Render with the board at a (4, 4) pose in the camera's optical frame (rig at the origin)."""
        return self.render(board_to_world=self.mount @ board_to_camera, rig_to_world=np.eye(4))

    def board_outline(self) -> np.ndarray:
        """(4, 3) corners of the printed sheet (margin included) in the board frame, metres."""
        width, height = self.board.size
        m = MARGIN_SQUARES * self.board.square
        return np.array([[-m, -m, 0], [width + m, -m, 0], [width + m, height + m, 0], [-m, height + m, 0]])

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> BoardScene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _require_offscreen_gl() -> None:
    """Refuse, with the fix, a MuJoCo that picked another GL backend than MUJOCO_GL now asks for.

    MuJoCo reads MUJOCO_GL once, when first imported; a process that imported it before this
    module set the default gets GLFW, which aborts the whole process on a machine with no screen.
    """
    wanted, chosen = os.environ["MUJOCO_GL"], getattr(mujoco, "GLContext", None)
    chosen_name = chosen.__module__.rsplit(".", 1)[-1] if chosen is not None else "none"
    if wanted in ("egl", "osmesa") and chosen_name != wanted:
        raise RuntimeError(
            f"MuJoCo was imported with the {chosen_name} GL backend before MUJOCO_GL={wanted} was set; "
            f"set MUJOCO_GL={wanted} in the environment, or before the first `import mujoco` (tests/conftest.py)"
        )


def render_board_views(
    out_dir: Path,
    board: BoardSpec,
    camera: PinholeCamera,
    *,
    count: int,
    seed: int = 0,
    distance: tuple[float, float] = (0.3, 0.7),
    max_tilt_deg: float = 45.0,
) -> list[Path]:
    """Render `count` views of the board, tilted and placed at random but wholly in view; write PNGs.

    distance: range of the board centre's depth, metres. Returns the image paths (view_000.png, ...).
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with BoardScene(board, camera) as scene:
        for index in range(count):
            board_to_camera = _random_board_pose(scene, rng, distance, max_tilt_deg)
            paths.append(_write(out_dir / f"view_{index:03d}.png", scene.render_in_camera(board_to_camera)))
    return paths


def render_hand_eye_views(
    out_dir: Path,
    board: BoardSpec,
    camera: PinholeCamera,
    *,
    mode: HandEyeMode,
    mount: np.ndarray,
    count: int,
    seed: int = 0,
    distance: tuple[float, float] = (0.35, 0.6),
    max_tilt_deg: float = 35.0,
) -> tuple[list[Path], Path]:
    """Views for hand-eye calibration with the true gripper poses; writes view_NNN.png and POSES.yaml.

    eye_in_hand: `mount` is camera→gripper; the board lies printed side up centred on the base
    origin and each view looks at it from a random direction within `max_tilt_deg` of the
    vertical. eye_to_hand: `mount` is camera→base; the board is held by the gripper
    (`BOARD_TO_GRIPPER`) and shown to the camera at random poses. Returns (image paths,
    POSES.yaml path); POSES.yaml holds the gripper→base pose of each image.
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    width, height = board.size
    board_on_table = np.eye(4)
    board_on_table[:3, :3] = np.diag([1.0, -1.0, -1.0])  # printed side (board -z) faces world +z
    board_on_table[:3, 3] = [-width / 2, height / 2, 0.0]
    paths, poses = [], {}
    with BoardScene(board, camera, mount=mount) as scene:
        for index in range(count):
            if mode == "eye_in_hand":
                camera_to_world = _camera_over_board(scene, board_on_table, rng, distance, max_tilt_deg)
                gripper_to_world = rig_to_world = camera_to_world @ np.linalg.inv(mount)
                board_to_world = board_on_table
            else:
                rig_to_world = np.eye(4)
                board_to_world = mount @ _random_board_pose(scene, rng, distance, max_tilt_deg)
                gripper_to_world = board_to_world @ np.linalg.inv(BOARD_TO_GRIPPER)
            path = _write(out_dir / f"view_{index:03d}.png", scene.render(board_to_world=board_to_world, rig_to_world=rig_to_world))
            paths.append(path)
            poses[path.name] = {
                "position": [round(float(v), 9) for v in gripper_to_world[:3, 3]],
                "quaternion": [round(float(v), 9) for v in matrix_to_quaternion(gripper_to_world[:3, :3])],
            }
    poses_path = out_dir / "POSES.yaml"
    poses_path.write_text("# gripper pose in the robot base frame for each image: position [x, y, z] m, quaternion [w, x, y, z]\n"
                          + yaml.safe_dump({"poses": poses}, sort_keys=True, default_flow_style=None))
    return paths, poses_path


def _random_board_pose(scene: BoardScene, rng: np.random.Generator, distance: tuple[float, float], max_tilt_deg: float) -> np.ndarray:
    """(4, 4) board→camera: tilted up to max_tilt_deg about x and y, rolled ±30°, wholly in view."""
    width, height = scene.board.size
    centre = np.array([width / 2, height / 2, 0.0])
    while True:
        tilt_x, tilt_y = np.radians(rng.uniform(-max_tilt_deg, max_tilt_deg, size=2))
        roll = np.radians(rng.uniform(-30, 30))
        rotation = _rot_z(roll) @ _rot_y(tilt_y) @ _rot_x(tilt_x)
        depth = rng.uniform(*distance)
        half_view = depth * math.tan(math.radians(scene.camera.fovy_deg) / 2)
        target = np.array([rng.uniform(-0.6, 0.6) * half_view * scene.camera.width / scene.camera.height,
                           rng.uniform(-0.6, 0.6) * half_view, depth])
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rotation, target - rotation @ centre
        if scene.camera.sees(_apply(pose, scene.board_outline())):
            return pose


def _camera_over_board(scene: BoardScene, board_to_world: np.ndarray, rng: np.random.Generator,
                       distance: tuple[float, float], max_tilt_deg: float) -> np.ndarray:
    """(4, 4) camera→world looking down at the board (centred on the origin) with a random roll, wholly in view."""
    outline = _apply(board_to_world, scene.board_outline())
    while True:
        polar, azimuth = np.radians(rng.uniform(0, max_tilt_deg)), rng.uniform(0, 2 * math.pi)
        eye = rng.uniform(*distance) * np.array([math.sin(polar) * math.cos(azimuth), math.sin(polar) * math.sin(azimuth), math.cos(polar)])
        z = np.append(rng.uniform(-0.03, 0.03, size=2), 0.0) - eye
        z /= np.linalg.norm(z)
        heading = azimuth + rng.uniform(-1.0, 1.0)
        x = np.cross([math.cos(heading), math.sin(heading), 0.0], z)
        x /= np.linalg.norm(x)
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = np.stack([x, np.cross(z, x), z], axis=1), eye
        if scene.camera.sees(_apply(np.linalg.inv(pose), outline)):
            return pose


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:3, :3].T + transform[:3, 3]


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
