"""Pictures of the simulation: off-screen MuJoCo images of worlds, tiled videos with an overlay.

`SceneRenderer` renders one MjData (a BatchEnv world copied out, or a live view's copy of a robot's
state) from a named camera or from a free camera that frames the model (and follows the base of a
floating-base robot). `CameraRenderer` renders worlds of a BatchEnv. `EpisodeVideo` tiles the first
K worlds of a BatchEnv into one MP4 (`s2r.dataset.video.VideoEncoder`, the datasets' encoder), each
tile with a small overlay: task, simulated time, the task's inputs (command or goal), its reward,
and whether it succeeds. Rendering is off-screen (`MUJOCO_GL=egl`, Mesa's software EGL on a
machine without a GPU): no display is needed.

    with EpisodeVideo(env, Path("eval.mp4"), worlds=4) as video:
        while ...:
            obs, reward, terminated, truncated, info = env.step(actions)
            video.add(reward.numpy(), ended=terminated | truncated, success=...)
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import math  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from s2r.dataset.video import VideoEncoder  # noqa: E402
from s2r.sim.env import BatchEnv, make_env  # noqa: E402
from s2r.spec import RobotSpec  # noqa: E402

TILE = (240, 320)
"""(height, width) pixels of one world's tile in a video."""
VIDEO_FPS = 25.0
"""Frames per simulated second of a video, at most (software rendering is the cost)."""
OVERLAY_INPUT_SIZE = 4
"""Task inputs of at most this many numbers (commands, goals, poses) are shown in the overlay; longer ones
(action histories) are not."""


class RenderError(RuntimeError):
    """Off-screen rendering is not available; the message says how to get it."""


def check_video_path(path: Path) -> Path:
    """`path` if an MP4 can be written there; ValueError naming the folder and why not (before any work)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"--video {path}: expected a .mp4 file")
    if not folder.is_dir():
        raise ValueError(f"--video {path}: folder {folder} does not exist (create it first)")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise ValueError(f"--video {path}: folder {folder} cannot be written ({error.strerror})") from None
    return path


def framing_camera(model: mujoco.MjModel, spec: RobotSpec | None = None) -> mujoco.MjvCamera:
    """A free camera, 20° from above, that frames the model's geoms but its planes (the floor would make the robot
    small), in their default pose; it tracks the base of a floating-base robot."""
    camera = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, camera)
    camera.elevation, camera.azimuth = -20.0, 90.0
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    solid = model.geom_type != mujoco.mjtGeom.mjGEOM_PLANE
    if solid.any():
        points, radii = data.geom_xpos[solid], model.geom_rbound[solid]
        low, high = (points - radii[:, None]).min(0), (points + radii[:, None]).max(0)
        camera.lookat[:] = (low + high) / 2
        camera.distance = max(0.5, 2.2 * float((high - low).max()))
    if spec is not None and spec.floating_base:
        camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        camera.trackbodyid = 1
    return camera


class SceneRenderer:
    """Off-screen images (H, W, 3) uint8 of an MjData of `model`. Owns a mujoco.Renderer (one GL context,
    bound to the thread that builds it: build and use it in one thread)."""

    def __init__(self, model: mujoco.MjModel, *, camera: str | None = None, spec: RobotSpec | None = None,
                 height: int = TILE[0], width: int = TILE[1]) -> None:
        """`camera`: a camera of the model by name; None: `framing_camera(model, spec)`."""
        self.model = model
        self.shape = (height, width, 3)
        self.camera: str | mujoco.MjvCamera = camera if camera is not None else framing_camera(model, spec)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        try:
            self._renderer = mujoco.Renderer(model, height=height, width=width)
        except Exception as error:  # GL backends fail with several types
            raise RenderError(f"off-screen rendering failed ({error}); it needs MUJOCO_GL=egl (or osmesa) set "
                              f"before MuJoCo is first imported, and Mesa's EGL (make venv installs it)") from None
        # Software rendering: shadows and reflections would double the cost of every image.
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """The image of `data` (its positions; kinematics are recomputed here), (H, W, 3) uint8."""
        mujoco.mj_kinematics(self.model, data)
        mujoco.mj_camlight(self.model, data)
        self._renderer.update_scene(data, camera=self.camera)
        return self._renderer.render()

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> SceneRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CameraRenderer:
    """Renders worlds of a BatchEnv off-screen: (n, H, W, 3) uint8, from a named camera or a framing one."""

    def __init__(self, env: BatchEnv, camera: str | None = None, *, height: int = TILE[0],
                 width: int = TILE[1]) -> None:
        self.env = env
        self.shape = (height, width, 3)
        self._data = mujoco.MjData(env.model)
        self._scene = SceneRenderer(env.model, camera=camera, spec=env.spec, height=height, width=width)

    def render(self, ids: np.ndarray) -> np.ndarray:
        """Images of worlds `ids`, (n, H, W, 3) uint8."""
        images = np.empty((len(ids), *self.shape), dtype=np.uint8)
        for k, i in enumerate(ids):
            self.env.batch.get_data(int(i), self._data)
            images[k] = self._scene.render(self._data)
        return images

    def close(self) -> None:
        self._scene.close()

    def __enter__(self) -> CameraRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def draw_lines(image: np.ndarray, lines: list[str], *, color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """`lines` of text on `image` (H, W, 3) uint8, top left, over a dark band so that they read on any scene."""
    scale, step = 0.42, 15
    band = image[: step * len(lines) + 6]
    band[:] = (band * 0.45).astype(np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(image, line, (5, 14 + step * k), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return image


def mark_end(image: np.ndarray, success: bool) -> np.ndarray:
    """Mark a world's last image (H, W, 3) uint8 with how its episode ended: a green or red frame and word."""
    color = (60, 220, 60) if success else (230, 60, 60)
    height, width, _ = image.shape
    cv2.rectangle(image, (0, 0), (width - 1, height - 1), color, 4)
    cv2.putText(image, "success" if success else "failure", (8, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.8, color, 2,
                cv2.LINE_AA)
    return image


def tile(images: np.ndarray) -> np.ndarray:
    """Images (K, H, W, 3) as one grid image (rows·H, cols·W, 3), cols = ceil(sqrt(K)), black where unused."""
    count, height, width, _ = images.shape
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.zeros((rows * height, cols * width, 3), dtype=np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    return grid


def overlay_lines(env: BatchEnv, world: int, reward: float, status: str) -> list[str]:
    """The overlay of one world: task and time, the task's short inputs (command or goal), reward and status."""
    t = float(env.episode_length[world]) * env.spec.control_period
    lines = [f"{env.task.config.name}  world {world}  t {t:5.2f} s"]
    for name, values in env.inputs.items():
        if name in env.task.config.inputs and values.shape[1] <= OVERLAY_INPUT_SIZE:
            lines.append(f"{name} " + " ".join(f"{v:+.2f}" for v in values[world]))
    lines.append(f"reward {reward:+.3f}  {status}")
    return lines


class EpisodeVideo:
    """The first `worlds` worlds of a BatchEnv as one tiled MP4 with an overlay, one frame per `add`.

    A world whose episode ended keeps its last image, marked "success" (green) or "failure" (red),
    so that a video of an evaluation shows each world's first episode to its end; the last frame is
    also written as a still beside the video (`NAME.png`).
    """

    def __init__(self, env: BatchEnv, path: Path, *, worlds: int = 4, tile_size: tuple[int, int] = TILE,
                 fps: float = VIDEO_FPS) -> None:
        """`fps`: at most this many frames per simulated second (one every round(1 / (fps · period)) steps,
        at least every step)."""
        if not 1 <= worlds <= env.num_envs:
            raise ValueError(f"--worlds: expected 1 to {env.num_envs} (the worlds evaluated), got {worlds}")
        self.env, self.path = env, Path(path)
        self.every = max(1, round(1.0 / (fps * env.spec.control_period)))
        self.fps = 1.0 / (env.spec.control_period * self.every)
        """Frames per simulated second."""
        self.ids = np.arange(worlds)
        self._renderer = CameraRenderer(env, height=tile_size[0], width=tile_size[1])
        self._last = np.zeros((worlds, *self._renderer.shape), dtype=np.uint8)
        self._ended = np.zeros(worlds, dtype=bool)
        self._steps = 0
        grid = tile(self._last)
        self.size = grid.shape[:2]
        """(height, width) pixels of the video."""
        self._encoder = VideoEncoder(self.path, grid.shape[0], grid.shape[1], fps=self.fps)

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return self._encoder.frames

    @property
    def finished(self) -> bool:
        """Whether every filmed world has ended its first episode."""
        return bool(self._ended.all())

    def add(self, reward: np.ndarray, *, ended: np.ndarray | None = None, success: np.ndarray | None = None) -> None:
        """Film the worlds after a step: `reward` (num_envs,); `ended` (num_envs,) bool, the worlds whose episode
        ended at this step (their state is already the next episode's: the image before is kept and marked);
        `success` (k,), how the k ended worlds' episodes ended, in world order (`info["episode"]["success"]`)."""
        running = ~self._ended
        if ended is not None:
            succeeded = np.zeros(len(ended), dtype=bool)
            if success is not None:
                succeeded[np.flatnonzero(ended)] = success > 0
            now = running & ended[self.ids]
            for k in np.flatnonzero(now):
                mark_end(self._last[k], bool(succeeded[self.ids[k]]))
            self._ended |= now
            running &= ~now
        if self._steps % self.every == 0:
            live = np.flatnonzero(running)
            if len(live):
                images = self._renderer.render(self.ids[live])
                for k, image in zip(live, images):
                    world = int(self.ids[k])
                    status = "succeeding" if self.env.success_held[world] > 0 else ""
                    self._last[k] = draw_lines(image, overlay_lines(self.env, world, float(reward[world]), status))
            self._encoder.add(tile(self._last))
        self._steps += 1

    def close(self) -> None:
        """Write the last images (with the ends marked), also as a still beside the video (NAME.png), finish the
        file (its index) and release the renderer."""
        last = tile(self._last)
        self._encoder.add(last)
        cv2.imwrite(str(self.path.with_suffix(".png")), cv2.cvtColor(last, cv2.COLOR_RGB2BGR))
        self._renderer.close()
        self._encoder.close()

    def __enter__(self) -> EpisodeVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def film_clip(task: str, act: Callable[[dict[str, torch.Tensor]], torch.Tensor], path: Path, *, worlds: int = 4,
              seconds: float = 5.0, seed: int = 1) -> EpisodeVideo:
    """Film `worlds` fresh worlds of `task` for `seconds` of simulated time (or until every one's first episode
    ends), `act` choosing the actions (worlds, A) from the observations; the closed video (frames, size). Training
    clips (`s2r train --video-every N`) are made this way."""
    env = make_env(task, worlds, seed=seed)
    obs = env.reset()
    video = EpisodeVideo(env, path, worlds=worlds)
    try:
        video.add(np.zeros(worlds))
        for _ in range(round(seconds / env.spec.control_period)):
            obs, reward, terminated, truncated, info = env.step(act(obs))
            video.add(reward.numpy(), ended=(terminated | truncated).numpy(), success=info["episode"]["success"].numpy())
            if video.finished:
                break
    finally:
        video.close()
        env.close()
    return video
