"""Live views for people: MuJoCo's viewer under a real X server, the web view in a real headless browser,
and teleoperation that goes on when the display goes away."""

import io
import os
import shutil
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image, ImageGrab

from s2r.apps.live_view import LiveView, ViewerWindow, WebView
from s2r.sim.env import make_env

CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")


@pytest.fixture(scope="module")
def cartpole():
    env = make_env("cartpole", 1)
    yield env
    env.close()


def cart_at(env, x: float) -> np.ndarray:
    qpos = np.zeros(env.model.nq)
    qpos[0], qpos[1] = x, 0.5
    return qpos


@pytest.fixture
def xserver(monkeypatch):
    """A real X server (Xvfb, installed by `make venv`) on a display of its own; DISPLAY points at it."""
    # A display no other X server holds (a killed one leaves its lock and socket behind).
    number = next(n for n in range(90 + os.getpid() % 100, 1000)
                  if not os.path.exists(f"/tmp/.X{n}-lock") and not os.path.exists(f"/tmp/.X11-unix/X{n}"))
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(f"/tmp/.X11-unix/X{number}"):
            break
        time.sleep(0.05)
    monkeypatch.setenv("DISPLAY", f":{number}")
    yield server, f":{number}"
    server.kill()
    server.wait()


def screenshot(display: str) -> np.ndarray:
    return np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB")).astype(int)


def screenshot_when(display: str, ready, timeout: float = 60.0) -> np.ndarray:
    """The first screenshot for which `ready(image)` holds (the viewer draws at its own pace on a busy machine)."""
    end = time.monotonic() + timeout
    while True:
        image = screenshot(display)
        if ready(image) or time.monotonic() > end:
            return image
        time.sleep(0.2)


def moved_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a - b).sum(axis=2) > 60).mean())


def test_the_viewer_opens_under_an_x_server_shows_the_robot_where_it_is_and_a_lost_display_goes_headless(
        cartpole, xserver):
    server, display = xserver
    said: list[str] = []
    view = LiveView.open("auto", cartpole.model, spec=cartpole.spec, say=said.append)
    try:
        assert isinstance(view, ViewerWindow) and view.mode == "viewer"
        view.show(cart_at(cartpole, -1.0), None, "t 0.00 s")
        left = screenshot_when(display, lambda image: image.std() > 10)
        assert left.std() > 10, "the screen is blank"
        time.sleep(1.0)  # the viewer's first frames may still be settling its camera
        left = screenshot(display)
        view.show(cart_at(cartpole, 1.0), None, "t 0.00 s")  # the same status: only the robot moves
        # The cart moved from one end of its rail to the other: the picture changes where the robot is.
        right = screenshot_when(display, lambda image: moved_fraction(left, image) > 0.002, timeout=30)
        assert moved_fraction(left, right) > 0.002, f"only {moved_fraction(left, right):.4%} of the pixels changed"
        # The display goes away mid-session: the session is told once and goes on headless.
        server.kill()
        server.wait()
        deadline = time.monotonic() + 20
        while view.mode == "viewer" and time.monotonic() < deadline:
            view.show(cart_at(cartpole, 0.0), None, "t 2.00 s")
            time.sleep(0.1)
        assert view.mode == "none"
        assert len(said) == 1 and said[0].startswith("the display went away") and said[0].endswith("going on headless")
        view.show(cart_at(cartpole, 0.5), None, "t 3.00 s")  # and showing goes on, doing nothing
    finally:
        view.close()


def browser_screenshot(url: str, path) -> np.ndarray:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--timeout=4000", "--window-size=800,600",
                    f"--screenshot={path}", url], check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_the_web_view_streams_the_robot_to_a_headless_browser_and_follows_its_state(cartpole, tmp_path):
    said: list[str] = []
    with WebView(cartpole.model, cartpole.spec, port=0, say=said.append) as view:
        assert said == [f"live view on {view.url} (remote: ssh -L {view.url.split(':')[2].strip('/')}:localhost:"
                        f"{view.url.split(':')[2].strip('/')} HOST)"]
        view.show(cart_at(cartpole, -1.0), None, "t 0.00 s  episode 1/1")
        left = browser_screenshot(view.url, tmp_path / "left.png")
        view.show(cart_at(cartpole, 1.0), None, "t 0.00 s  episode 1/1")
        right = browser_screenshot(view.url, tmp_path / "right.png")
        frame = np.asarray(Image.open(io.BytesIO(urllib.request.urlopen(view.url + "frame.jpg", timeout=10).read())))
    assert frame.shape == (480, 640, 3) and frame.std() > 10
    # The page shows the rendered scene (not a broken image), and the cart where the session put it.
    assert left[50:400, 100:700].std() > 10
    moved = np.abs(left - right).sum(axis=2) > 60
    assert moved.mean() > 0.001, f"only {moved.mean():.4%} of the pixels changed"


def test_a_web_view_port_in_use_is_refused_naming_it_and_offering_a_free_one(cartpole):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=rf"^--port {port}: port {port} on 127.0.0.1 is already in use; "
                                             r"try --port \d+$"):
            WebView(cartpole.model, cartpole.spec, port=port)


class OperatorUntil:
    """An operator pushing right until `done` is set (at most `limit` s), then pressing save."""

    name = "scripted"
    controls = ""

    def __init__(self, done: threading.Event, limit: float = 90.0) -> None:
        self.done, self.end = done, time.monotonic() + limit

    def read(self):
        from s2r.hardware.teleop.devices import TeleopCommand

        time.sleep(0.02)
        if self.done.is_set() or time.monotonic() > self.end:
            return TeleopCommand([0, 0, 0], [0, 0, 0], frozenset({"save"}))
        return TeleopCommand([1.0, 0, 0], [0, 0, 0], frozenset())


def test_teleop_shows_its_status_line_and_serves_the_scene_it_is_driving_on_the_web_view(capsys):
    from s2r.apps.teleop import run_teleop
    from s2r.ports import free_port

    port = free_port()
    frames: list[np.ndarray] = []
    done = threading.Event()

    def fetch() -> np.ndarray | None:
        try:
            data = urllib.request.urlopen(f"http://127.0.0.1:{port}/frame.jpg", timeout=5).read()
        except OSError:  # not serving yet, or no frame yet (503)
            return None
        return np.asarray(Image.open(io.BytesIO(data))).astype(int)

    def watch() -> None:
        end = time.monotonic() + 80
        while time.monotonic() < end and not done.is_set():
            frame = fetch()
            if frame is not None and (not frames or (np.abs(frames[0] - frame).sum(axis=2) > 60).mean() > 0.0005):
                frames.append(frame)
                done.set() if len(frames) == 2 else None
            time.sleep(0.2)
        done.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    summary = run_teleop("push_t", OperatorUntil(done), episodes=1, progress=True, view="web", port=port,
                         realtime=False)
    done.set()
    watcher.join()
    assert summary["episodes"] == 1
    err = capsys.readouterr().err
    status = [line for line in err.splitlines() if "coverage" in line]
    assert status and all("episode 1/1" in line for line in status), err
    # The page served the scene, and then the scene with the pusher moved.
    assert len(frames) == 2


def test_a_deploy_view_follows_the_robots_joint_states_over_ros(cartpole, monkeypatch):
    import rclpy
    from rclpy.context import Context
    from sensor_msgs.msg import JointState

    from s2r.apps.live_view import JointStateFollower
    from s2r.ros import environment
    from s2r.ros.qos import TELEMETRY_QOS

    settings = environment()
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    domain = int(settings["ROS_DOMAIN_ID"])
    with WebView(cartpole.model, cartpole.spec, port=0, say=lambda line: None) as view:
        follower = JointStateFollower(view, cartpole.spec, domain)
        context = Context()
        rclpy.init(context=context, domain_id=domain)
        node = rclpy.create_node("test_robot", context=context)
        publisher = node.create_publisher(JointState, "joint_states", TELEMETRY_QOS)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and view._state[2] == "":
                # The message's order is not the spec's: joints are placed by name.
                publisher.publish(JointState(name=["hinge", "slider"], position=[0.5, -0.75], velocity=[0.0, 0.0]))
                time.sleep(0.05)
        finally:
            follower.close()
            node.destroy_node()
            rclpy.shutdown(context=context)
        qpos, _, status = view._state
    assert status.startswith(f"{cartpole.spec.name}  t ")
    np.testing.assert_allclose(qpos[:2], [-0.75, 0.5])
