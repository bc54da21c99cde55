"""Teleoperation as an operator meets it: devices, differential IK, recording a dataset, the ROS node.

No real device is needed: the keyboard is driven through a pseudo-terminal, and a scripted
device (a TeleopDevice that plays back a list of commands) stands in for the operator's hand
against the real simulator.
"""

import os
import subprocess
import sys
import time

import mujoco
import numpy as np
import pytest

from s2r.hardware.teleop import DeviceUnavailable, DifferentialIK, TeleopCommand, TeleopDevice, open_device
from s2r.hardware.teleop.keyboard import HOLD_S, KeyboardDevice
from s2r.spec import robot_spec


class ScriptedDevice(TeleopDevice):
    """Plays back `commands`, one per read, then rests; with `unplug_after`, is unplugged after that many reads."""

    name = "scripted"

    def __init__(self, commands, *, unplug_after=None):
        self.commands = list(commands)
        self.unplug_after = unplug_after
        self.reads = 0

    def read(self):
        if self.unplug_after is not None and self.reads >= self.unplug_after:
            raise DeviceUnavailable(f"scripted: unplugged after {self.unplug_after} reads")
        command = self.commands[self.reads] if self.reads < len(self.commands) else TeleopCommand()
        self.reads += 1
        return command


def command(x=0.0, y=0.0, z=0.0, buttons=()):
    return TeleopCommand([x, y, z], [0.0, 0.0, 0.0], frozenset(buttons))


# --- differential IK on the arm's MuJoCo model --------------------------------------------------
@pytest.fixture(scope="module")
def arm():
    spec = robot_spec("arm")
    model = mujoco.MjModel.from_xml_path(str(spec.source.parent / spec.mjcf))
    limits = np.array([joint.limits for joint in spec.joints])
    return model, limits


def ee_jacobian(model, data):
    mujoco.mj_kinematics(model, data)
    mujoco.mj_comPos(model, data)
    jacp = np.zeros((3, model.nv))
    mujoco.mj_jacSite(model, data, jacp, None, model.site("ee").id)
    return jacp


def test_dls_ik_moves_the_end_effector_at_the_commanded_velocity(arm):
    model, limits = arm
    data = mujoco.MjData(model)
    data.qpos[:] = [0.3, -0.5, 1.0]
    mujoco.mj_kinematics(model, data)
    ik = DifferentialIK(limits[:, 0], limits[:, 1])
    dt = 0.01
    for velocity in ([0.1, 0.0, 0.0], [0.0, -0.1, 0.05], [0.0, 0.0, -0.15]):
        start = data.site("ee").xpos.copy()
        for _ in range(50):
            dq = ik.solve(ee_jacobian(model, data), np.array(velocity), data.qpos.copy(), dt)
            data.qpos[:] += dq * dt
            mujoco.mj_kinematics(model, data)
        achieved = (data.site("ee").xpos - start) / (50 * dt)
        np.testing.assert_allclose(achieved, velocity, atol=0.005)


def test_dls_ik_keeps_joint_limits_and_stays_bounded_at_a_singularity(arm):
    model, limits = arm
    data = mujoco.MjData(model)
    data.qpos[:] = [0.0, 0.0, 0.0]  # stretched out: moving further out along the arm is singular
    mujoco.mj_kinematics(model, data)
    ik = DifferentialIK(limits[:, 0], limits[:, 1], max_joint_speed=2.0)
    jacobian = ee_jacobian(model, data)
    dq = ik.solve(jacobian, np.array([0.5, 0.0, 0.0]), data.qpos.copy(), 0.01)
    assert np.all(np.isfinite(dq)) and np.max(np.abs(dq)) <= 2.0 + 1e-9
    # Plain least squares would answer a near-singular Jacobian with a huge dq; DLS does not.
    near = data.qpos.copy()
    near[2] = 1e-4
    data.qpos[:] = near
    mujoco.mj_kinematics(model, data)
    dq = ik.solve(ee_jacobian(model, data), np.array([0.5, 0.0, 0.0]), near, 0.01)
    assert np.max(np.abs(dq)) <= 2.0 + 1e-9
    # Reaching ever further out straightens the elbow onto its (here tightened) limit, never past it.
    lower = limits[:, 0].copy()
    lower[2] = 0.5
    ik = DifferentialIK(lower, limits[:, 1], max_joint_speed=2.0)
    data.qpos[:] = [0.0, -0.5, 1.0]
    for _ in range(200):
        dq = ik.solve(ee_jacobian(model, data), np.array([0.3, 0.0, 0.0]), data.qpos.copy(), 0.02)
        data.qpos[:] += dq * 0.02
        assert np.all(data.qpos >= lower - 1e-9) and np.all(data.qpos <= limits[:, 1] + 1e-9)
    assert data.qpos[2] == pytest.approx(0.5)


# --- the keyboard, through a pseudo-terminal ----------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_keyboard_keys_in_a_pseudo_terminal_become_velocities_and_buttons():
    master, slave = os.openpty()
    clock = Clock()
    try:
        keyboard = KeyboardDevice(slave, clock=clock)
        assert keyboard.read().linear.tolist() == [0, 0, 0]
        os.write(master, b"w")
        assert keyboard.read().linear.tolist() == [1, 0, 0]
        os.write(master, b"d\x1b[A")  # d: -y; the up arrow: +x
        got = keyboard.read()
        assert got.linear.tolist() == [1, -1, 0] and got.angular.tolist() == [0, 0, 0]
        os.write(master, b"q")
        assert keyboard.read().angular.tolist() == [0, 0, 1]
        os.write(master, b" ")  # space stops every axis
        assert keyboard.read().linear.tolist() == [0, 0, 0]
        os.write(master, b"s")
        clock.now += HOLD_S / 2
        assert keyboard.read().linear.tolist() == [-1, 0, 0]  # still held
        clock.now += HOLD_S
        assert keyboard.read().linear.tolist() == [0, 0, 0]  # released: no auto-repeat came
        os.write(master, b"\r")
        assert keyboard.read().buttons == {"save"}
        assert keyboard.read().buttons == set()
        os.write(master, b"\x7f\x1b")
        assert keyboard.read().buttons == {"discard", "quit"}
        keyboard.close()
        assert KeyboardDevice(slave).read().linear.tolist() == [0, 0, 0]
    finally:
        os.close(master)
        os.close(slave)


def test_keyboard_reports_a_closed_terminal_and_a_pipe_clearly():
    master, slave = os.openpty()
    keyboard = KeyboardDevice(slave)
    os.close(master)
    with pytest.raises(DeviceUnavailable, match="keyboard: the terminal"):
        keyboard.read()
    keyboard.close()
    os.close(slave)
    read, write = os.pipe()
    with pytest.raises(DeviceUnavailable, match="not a terminal"):
        KeyboardDevice(read)
    os.close(read)
    os.close(write)


@pytest.mark.parametrize("name", ["gamepad", "spacemouse"])
def test_a_missing_device_is_a_clear_message_not_a_traceback(name):
    with pytest.raises(DeviceUnavailable, match=rf"^{name}: .*(plugged in|pip install)"):
        open_device(name)
    with pytest.raises(ValueError, match="known: keyboard, gamepad, spacemouse"):
        open_device("joystick")


# --- sessions against the simulator -------------------------------------------------------------
def test_a_scripted_operator_pushes_the_t_and_records_a_dataset_that_checks(tmp_path):
    from s2r.apps.teleop import run_teleop
    from s2r.dataset import check_dataset, load_dataset
    from s2r.sim.task_dataset import task_expectation

    out = tmp_path / "push_t"
    sweep = [command(x=1.0)] * 20 + [command(y=1.0)] * 10 + [command(buttons={"save"})]
    summary = run_teleop("push_t", ScriptedDevice(sweep * 2), out=out, episodes=2, realtime=False)
    assert summary["episodes"] == 2 and summary["frames"] == 60 and summary["discarded"] == 0
    report = check_dataset(out, expect=task_expectation("push_t"))
    assert report.episodes == 2 and report.frames == 60 and report.fps == 10
    episode = load_dataset(out).episodes[0]
    pusher = episode["observation.state"][:, :2]
    # Full deflection is 0.15 m/s: 20 frames at 10 Hz move the pusher's target 0.3 m along x (within the workspace).
    assert pusher[20, 0] - pusher[0, 0] > 0.1
    np.testing.assert_allclose(np.diff(episode["timestamp"]), 0.1, atol=1e-5)


def test_a_device_unplugged_mid_episode_leaves_no_half_written_episode(tmp_path):
    from s2r.apps.teleop import run_teleop
    from s2r.dataset import check_dataset, load_dataset
    from s2r.sim.task_dataset import task_expectation

    out = tmp_path / "push_t"
    first = [command(x=1.0)] * 10 + [command(buttons={"save"})]
    device = ScriptedDevice(first + [command(y=-1.0)] * 30, unplug_after=len(first) + 25)
    with pytest.raises(DeviceUnavailable, match="unplugged.*episode in progress was discarded, 1 finished"):
        run_teleop("push_t", device, out=out, episodes=3, realtime=False)
    report = check_dataset(out, expect=task_expectation("push_t"))
    assert report.episodes == 1 and report.frames == 10
    assert load_dataset(out).episodes[0]["action"].shape == (10, 2)
    assert not any((out / ".staging").glob("*"))


def test_a_discard_press_drops_the_take_and_the_episode_starts_again(tmp_path):
    from s2r.apps.teleop import run_teleop
    from s2r.dataset import check_dataset
    from s2r.sim.task_dataset import task_expectation

    out = tmp_path / "push_t"
    script = [command(x=1.0)] * 5 + [command(buttons={"discard"})] + [command(y=1.0)] * 7 + [command(buttons={"save"})]
    summary = run_teleop("push_t", ScriptedDevice(script), out=out, episodes=1, realtime=False)
    assert summary["discarded"] == 1 and summary["frames"] == 7
    assert check_dataset(out, expect=task_expectation("push_t")).frames == 7


def test_reach_moves_the_simulated_arm_s_end_effector_as_commanded():
    import torch

    from s2r.apps.teleop import ReachMapping
    from s2r.sim.env import BatchEnv
    from s2r.sim.tasks import make_task

    env = BatchEnv(make_task("reach"), 1, seed=0, nthread=1)
    env.reset()
    mapping = ReachMapping(env)
    mapping.reset()
    ee = env.site_id("ee")
    for _ in range(10):  # settle at the start pose
        env.step(torch.from_numpy(mapping(command())[None]))
    start = env.site_pos(ee)[0].copy()
    steps = 40  # 0.8 s at 50 Hz
    for _ in range(steps):
        action = mapping(command(z=0.1))  # already m/s here
        assert np.all(mapping.target >= mapping.ik.lower) and np.all(mapping.target <= mapping.ik.upper)
        env.step(torch.from_numpy(action[None]))
    moved = env.site_pos(ee)[0] - start
    assert abs(moved[2] - 0.1 * steps * env.spec.control_period) < 0.02  # PD tracking lags a little
    assert np.linalg.norm(moved[:2]) < 0.02
    env.close()


# --- the ROS 2 node -----------------------------------------------------------------------------
def test_the_teleop_node_publishes_the_keyboard_s_twist_on_cmd_vel(monkeypatch):
    rclpy = pytest.importorskip("rclpy")
    from geometry_msgs.msg import Twist
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from s2r.ros import environment
    from s2r.ros.qos import SENSOR_QOS

    for key, value in environment().items():  # loopback, fastrtps, a random domain: for this process and the node
        monkeypatch.setenv(key, value)
    env = dict(os.environ)
    master, slave = os.openpty()
    node = subprocess.Popen([sys.executable, "-m", "s2r.ros.teleop_node", "--ros-args", "-p", "device:=keyboard",
                             "-p", "linear_speed:=0.3", "-p", "rate_hz:=50.0"],
                            env=env, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(slave)
    context = Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    client = rclpy.create_node("teleop_test", context=context)
    try:
        received = []
        # Best effort, as the policy node listens: it hears the node's reliable publisher.
        client.create_subscription(Twist, "cmd_vel", received.append, SENSOR_QOS)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(client)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not any(m.linear.x > 0 for m in received):
            os.write(master, b"w")  # as a held key's auto-repeat would
            executor.spin_once(timeout_sec=0.05)
        assert any(m.linear.x == pytest.approx(0.3) and m.linear.y == 0 for m in received), \
            node.stdout.read1().decode(errors="replace") if node.poll() is not None else "no Twist received"
        count = len(received)
        os.close(master)  # the terminal goes away: the node stops the robot and exits with failure
        master = None
        assert node.wait(20) == 1
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not any(m.linear.x == 0.0 for m in received[count:]):
            executor.spin_once(timeout_sec=0.1)
        assert any(m.linear.x == 0.0 for m in received[count:]), "no zero Twist after the device was lost"
        assert "keyboard: the terminal" in node.stdout.read().decode(errors="replace")
    finally:
        if master is not None:
            os.close(master)
        if node.poll() is None:
            node.kill()
            node.wait()
        client.destroy_node()
        rclpy.try_shutdown(context=context)


def test_the_teleop_node_refuses_to_start_without_its_device():
    pytest.importorskip("rclpy")
    from s2r.ros import environment

    env = {**os.environ, **environment()}
    node = subprocess.run([sys.executable, "-m", "s2r.ros.teleop_node", "--ros-args", "-p", "device:=gamepad"],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert node.returncode == 2
    assert "refusing to start: gamepad: none found" in node.stderr and "Traceback" not in node.stderr


def test_s2r_teleop_cmd_vel_drives_a_subscriber_from_the_keyboard_and_stops_it_on_esc():
    rclpy = pytest.importorskip("rclpy")
    from geometry_msgs.msg import Twist
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from s2r.ros import resolve_domain_id
    from s2r.ros.qos import SENSOR_QOS

    domain = resolve_domain_id("random")
    master, slave = os.openpty()
    teleop = subprocess.Popen([sys.executable, "-m", "s2r.apps.cli", "teleop", "--cmd-vel", "--device", "keyboard",
                               "--linear-speed", "0.8", "--angular-speed", "1.2", "--rate-hz", "50",
                               "--domain-id", str(domain)],
                              stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(slave)
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    client = rclpy.create_node("teleop_cmd_vel_test", context=context)
    try:
        received = []
        client.create_subscription(Twist, "cmd_vel", received.append, SENSOR_QOS)  # as the go2 policy listens
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(client)

        def press_until(key: bytes, heard) -> None:
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline and not any(heard(m) for m in received):
                assert teleop.poll() is None, teleop.stdout.read().decode(errors="replace")
                os.write(master, key)  # as a held key's auto-repeat would
                executor.spin_once(timeout_sec=0.05)
            assert any(heard(m) for m in received), f"no Twist after pressing {key!r}"

        press_until(b"w", lambda m: m.linear.x == pytest.approx(0.8) and m.angular.z == 0)   # forward
        press_until(b"q", lambda m: m.angular.z == pytest.approx(1.2))                       # turn left
        count = len(received)
        os.write(master, b"\x1b")  # Esc: quit
        assert teleop.wait(20) == 0, teleop.stdout.read().decode(errors="replace")
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not received[count:]:
            executor.spin_once(timeout_sec=0.1)
        last = received[-1]
        assert (last.linear.x, last.linear.y, last.angular.z) == (0.0, 0.0, 0.0), "the last Twist did not stop"
    finally:
        os.close(master)
        if teleop.poll() is None:
            teleop.kill()
            teleop.wait()
        client.destroy_node()
        rclpy.try_shutdown(context=context)


def test_s2r_teleop_cmd_vel_without_a_gamepad_refuses_in_one_line():
    pytest.importorskip("rclpy")
    run = subprocess.run([sys.executable, "-m", "s2r.apps.cli", "teleop", "--cmd-vel", "--device", "gamepad",
                          "--domain-id", "random"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "gamepad: none found" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "s2r.apps.cli", "teleop", "--cmd-vel", "--device", "spacemouse"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "--cmd-vel needs --device keyboard or --device gamepad" in run.stderr
