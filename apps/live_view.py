"""A live view of a running session for people: MuJoCo's interactive viewer, or a page on localhost.

The session's loop only hands over a copy of the robot's state (`LiveView.show`: positions, mocap
bodies and a status line, a few hundred bytes copied); whatever draws runs elsewhere, so a slow
renderer never delays the loop:

    viewer   MuJoCo's interactive viewer (`mujoco.viewer.launch_passive`) in a child process, for a
             machine with a display. If the display goes away (an X server that dies, a closed
             SSH forwarding) or the user closes the window, only the child dies: the session goes
             on headless and says so once.
    web      a page on http://127.0.0.1:PORT/ streams the scene as MJPEG (rendered off-screen,
             MUJOCO_GL=egl, in a thread of this process; the standard library's HTTP server), for
             a remote machine: forward the port (`ssh -L PORT:localhost:PORT`). Keyboard teleoperation
             keeps reading the terminal.

    with LiveView.open("web", model, spec=spec, port=8080) as view:
        view.show(qpos, mocap_pos, "t 1.20 s  coverage 35 %  episode 1/5")

`s2r deploy --view` feeds a LiveView from the robot's joint_states (`JointStateFollower`, a ROS node
in a thread of the deploy process): the robot's own processes do not draw anything.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import numpy as np

from s2r.ports import port_taken_message
from s2r.spec import RobotSpec

ViewMode = Literal["auto", "viewer", "web", "none"]
VIEW_MODES: tuple[str, ...] = ("auto", "viewer", "web", "none")
DEFAULT_WEB_PORT = 8080
VIEWER_HZ = 30.0
"""How often the viewer and the web page redraw, at most."""
STATUS_BYTES = 256


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class LiveView:
    """The state shared between a session's loop and its view; `show` is all the loop calls."""

    def __init__(self, model, *, nq: int, nmocap: int, say=None) -> None:
        self.model = model
        self.nq, self.nmocap = nq, nmocap
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.mode = "none"

    @staticmethod
    def open(mode: ViewMode, model, *, spec: RobotSpec | None = None, port: int = DEFAULT_WEB_PORT,
             say=None) -> LiveView:
        """The view `mode` asks for: "auto" is the viewer where there is a display, none elsewhere (saying how to
        get the web view). ValueError naming the port (and a free one) when the web view's port is taken."""
        if mode == "auto":
            mode = "viewer" if has_display() else "none"
            if mode == "none":
                (say or (lambda line: print(line, file=sys.stderr, flush=True)))(
                    "no display for the viewer: --view web serves the view on http://127.0.0.1:PORT/")
        if mode == "viewer":
            if not has_display():
                raise ValueError("--view viewer: no display ($DISPLAY is not set); use --view web")
            return ViewerWindow(model, spec, say=say)
        if mode == "web":
            return WebView(model, spec, port=port, say=say)
        return LiveView(model, nq=model.nq, nmocap=model.nmocap, say=say)

    def show(self, qpos: np.ndarray, mocap_pos: np.ndarray | None, status: str) -> None:
        """Hand over the state to draw: qpos (nq,), mocap_pos (nmocap, 3) or None, a status line. Never blocks."""

    def close(self) -> None:
        """Stop drawing; safe to call twice."""

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ViewerWindow(LiveView):
    """MuJoCo's interactive viewer in a child process, fed through shared memory."""

    def __init__(self, model, spec: RobotSpec | None, *, say=None) -> None:
        super().__init__(model, nq=model.nq, nmocap=model.nmocap, say=say)
        context = multiprocessing.get_context("spawn")
        self._qpos = context.Array("d", max(model.nq, 1), lock=False)
        self._mocap = context.Array("d", max(3 * model.nmocap, 1), lock=False)
        self._status = context.Array("c", STATUS_BYTES, lock=False)
        self._stop = context.Event()
        self._process = context.Process(target=_viewer_main, daemon=True, args=(
            _model_bytes(model), spec.floating_base if spec else False, self._qpos, self._mocap, self._status,
            self._stop))
        self._process.start()
        self.mode = "viewer"

    def show(self, qpos: np.ndarray, mocap_pos: np.ndarray | None, status: str) -> None:
        if self.mode != "viewer":
            return
        if not self._process.is_alive():
            code = self._process.exitcode
            why = "the viewer window was closed" if code == 0 else \
                f"the display went away (the viewer exited with status {code})"
            self.say(f"{why}; going on headless")
            self.mode = "none"
            return
        np.frombuffer(self._qpos, dtype=np.float64)[: self.nq] = qpos
        if mocap_pos is not None and self.nmocap:
            np.frombuffer(self._mocap, dtype=np.float64)[: 3 * self.nmocap] = np.ravel(mocap_pos)
        self._status.value = status.encode()[: STATUS_BYTES - 1]

    def close(self) -> None:
        self._stop.set()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
        self.mode = "none"


def _model_bytes(model) -> bytes:
    import mujoco

    buffer = np.empty(mujoco.mj_sizeModel(model), dtype=np.uint8)
    mujoco.mj_saveModel(model, None, buffer)
    return buffer.tobytes()


def _viewer_main(model_bytes: bytes, floating_base: bool, qpos, mocap, status, stop) -> None:
    """The viewer process: copy the shared state into its MjData and redraw, until told to stop or closed."""
    import tempfile

    import mujoco
    import mujoco.viewer

    with tempfile.NamedTemporaryFile(suffix=".mjb") as file:
        file.write(model_bytes)
        file.flush()
        model = mujoco.MjModel.from_binary_path(file.name)
    data = mujoco.MjData(model)
    q = np.frombuffer(qpos, dtype=np.float64)
    m = np.frombuffer(mocap, dtype=np.float64)
    with mujoco.viewer.launch_passive(model, data, show_left_ui=False, show_right_ui=False) as viewer:
        mujoco.mjv_defaultFreeCamera(model, viewer.cam)
        viewer.cam.elevation, viewer.cam.azimuth = -20.0, 90.0
        if floating_base:
            viewer.cam.type, viewer.cam.trackbodyid = mujoco.mjtCamera.mjCAMERA_TRACKING, 1
        while viewer.is_running() and not stop.is_set():
            with viewer.lock():
                data.qpos[:] = q[: model.nq]
                if model.nmocap:
                    data.mocap_pos[:] = m[: 3 * model.nmocap].reshape(-1, 3)
                mujoco.mj_kinematics(model, data)
            viewer.set_texts((None, mujoco.mjtGridPos.mjGRID_TOPLEFT, status.value.decode(errors="replace"), ""))
            viewer.sync()
            time.sleep(1.0 / VIEWER_HZ)


PAGE = b"""<!doctype html><html><head><title>s2r live view</title>
<style>body{background:#111;color:#ddd;font-family:sans-serif;margin:0}img{display:block;margin:auto;max-width:100%}
p{text-align:center}</style></head><body><img id="view" src="/stream.mjpg" alt="live view">
<p>s2r live view: the teleoperation keys are read in the terminal that runs the session.</p></body></html>"""


class WebView(LiveView):
    """An MJPEG stream of the scene on http://HOST:PORT/ (page), /stream.mjpg (stream), /frame.jpg (one frame)."""

    def __init__(self, model, spec: RobotSpec | None, *, port: int = DEFAULT_WEB_PORT, host: str = "127.0.0.1",
                 size: tuple[int, int] = (480, 640), say=None) -> None:
        super().__init__(model, nq=model.nq, nmocap=model.nmocap, say=say)
        self._lock = threading.Lock()
        self._fresh = threading.Condition()
        self._state = (np.zeros(model.nq), np.zeros((model.nmocap, 3)), "")
        self._seq = 0
        self._jpeg: bytes | None = None
        self._frame_seq = 0
        self._stop = threading.Event()
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(self))
        except OSError:
            raise ValueError(port_taken_message("--port", host, port)) from None
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/"
        self._threads = [threading.Thread(target=self._server.serve_forever, name="web view server", daemon=True),
                         threading.Thread(target=self._render, args=(spec, size), name="web view render", daemon=True)]
        for thread in self._threads:
            thread.start()
        self.mode = "web"
        self.say(f"live view on {self.url} (remote: ssh -L {self._server.server_address[1]}:localhost:"
                 f"{self._server.server_address[1]} HOST)")

    def show(self, qpos: np.ndarray, mocap_pos: np.ndarray | None, status: str) -> None:
        state = (np.array(qpos, dtype=np.float64), None if mocap_pos is None else np.array(mocap_pos), status)
        with self._lock:
            self._state = state
            self._seq += 1

    def _render(self, spec: RobotSpec | None, size: tuple[int, int]) -> None:
        """The render thread: the latest state → an image (its own GL context) → JPEG, at most VIEWER_HZ."""
        import cv2
        import mujoco

        from s2r.sim.render import SceneRenderer, draw_lines

        data = mujoco.MjData(self.model)
        drawn = -1
        with SceneRenderer(self.model, spec=spec, height=size[0], width=size[1]) as renderer:
            while not self._stop.is_set():
                with self._lock:
                    qpos, mocap, status = self._state
                    seq = self._seq
                if seq != drawn:
                    drawn = seq
                    data.qpos[:] = qpos
                    if mocap is not None and self.model.nmocap:
                        data.mocap_pos[:] = mocap
                    image = draw_lines(renderer.render(data), [status] if status else [])
                    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
                    with self._fresh:
                        self._jpeg, self._frame_seq = jpeg.tobytes(), self._frame_seq + 1
                        self._fresh.notify_all()
                self._stop.wait(1.0 / VIEWER_HZ)

    def next_frame(self, after: int, timeout: float = 5.0) -> tuple[int, bytes | None]:
        """The first JPEG newer than frame number `after` (waiting up to `timeout` s): (its number, bytes)."""
        with self._fresh:
            self._fresh.wait_for(lambda: self._frame_seq > after or self._stop.is_set(), timeout=timeout)
            return self._frame_seq, self._jpeg

    def close(self) -> None:
        if self.mode == "web":
            self._stop.set()
            with self._fresh:
                self._fresh.notify_all()
            self._server.shutdown()
            self._server.server_close()
            for thread in self._threads:
                thread.join(timeout=5)
            self.mode = "none"


def _handler(view: WebView) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # the terminal belongs to the operator
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page (or the client) went away

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/":
                self._send(200, "text/html", PAGE)
            elif self.path == "/frame.jpg":
                _, jpeg = view.next_frame(0)
                self._send(200, "image/jpeg", jpeg) if jpeg else self._send(503, "text/plain", b"no frame yet")
            elif self.path == "/stream.mjpg":
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                seen = 0
                # Each part is followed by the next boundary at once: a browser shows a part when it
                # sees the boundary that ends it, not when the next frame comes.
                self.wfile.write(b"--frame\r\n")
                while view.mode == "web":
                    seen, jpeg = view.next_frame(seen, timeout=1.0)
                    if jpeg is None:
                        continue
                    self.wfile.write(b"Content-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                                     + b"\r\n\r\n" + jpeg + b"\r\n--frame\r\n")
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class JointStateFollower:
    """Feeds a LiveView from a robot's `joint_states` (a ROS node spinning in a thread of its own): what
    `s2r deploy --view` shows. The model is the spec's MJCF; joints are placed by name (a floating base
    stays where the MJCF puts it: joint_states carries no base pose)."""

    def __init__(self, view: LiveView, spec: RobotSpec, domain_id: int) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState

        from s2r.ros.qos import TELEMETRY_QOS
        from s2r.sim.robot_view import RobotView

        self.view = view
        index = dict(zip(spec.joint_names, RobotView(view.model, spec).qpos_index.tolist()))
        self._qpos = view.model.qpos0.copy()
        self._first: float | None = None
        self._context = Context()
        rclpy.init(context=self._context, domain_id=domain_id)
        self._node = rclpy.create_node("s2r_live_view", context=self._context)

        def on_state(msg: JointState) -> None:
            for name, position in zip(msg.name, msg.position):
                if name in index:
                    self._qpos[index[name]] = position
            stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
            self._first = stamp if self._first is None else self._first
            self.view.show(self._qpos, None, f"{spec.name}  t {stamp - self._first:.2f} s")

        self._node.create_subscription(JointState, "joint_states", on_state, TELEMETRY_QOS)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="live view follower", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=5)
        self._node.destroy_node()
        rclpy.shutdown(context=self._context)
