"""The ROS 2 nodes as a robot meets them: real rclpy, each node in its own process.

Every test runs on its own random ROS domain on loopback (`s2r.ros.environment()`). The test
process joins that domain with a client node of its own to call services, publish commands
and read /diagnostics. Nothing here asserts on timing figures.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from s2r.hardware.deadline import DeadlineLoop, TickTrigger  # noqa: E402
from s2r.ros import environment  # noqa: E402
from s2r.ros.messages import CommandReader, MessageError, StateReader, joint_state_from_state  # noqa: E402
from s2r.ros.qos import COMMAND_QOS, DIAGNOSTICS_QOS  # noqa: E402
from s2r.runtime.chunking import ChunkedPolicy  # noqa: E402
from s2r.spec import robot_spec  # noqa: E402
from s2r.state import RobotState  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HANGING = ROOT / "hardware" / "configs" / "cartpole_hanging.yaml"
FAST = {"diagnostics_period_s": 0.1, "realtime_priority": 0}
"""Node parameters for tests: diagnostics often enough to wait on, normal scheduling."""


# --- helpers ----------------------------------------------------------------------------------
class Node:
    """One node process; its output goes to a log file shown when an assertion fails."""

    def __init__(self, module: str, params: dict, env: dict, log: Path) -> None:
        args = [token for k, v in params.items() for token in ("-p", f"{k}:={v}")]
        self.log = log
        self.popen = subprocess.Popen([sys.executable, "-m", f"s2r.ros.{module}", "--ros-args", *args],
                                      env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def stop(self, signum: int = signal.SIGINT, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
        return self.popen.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Client:
    """The test's own node on the nodes' domain."""

    def __init__(self, domain_id: int) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("test_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.robot_status: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, DIAGNOSTICS_QOS)
        self.commands = self.node.create_publisher(JointState, "joint_command", COMMAND_QOS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("s2r robot_node"):
                self.robot_status = {"mode": status.message, **{kv.key: kv.value for kv in status.values}}

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; robot status: {self.robot_status}")

    def mode(self) -> str | None:
        return self.robot_status.get("mode")

    def call(self, service: str) -> str:
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, service)
        assert client.wait_for_service(timeout_sec=20.0), f"service {service} not offered"
        future = client.call_async(Trigger.Request())
        self.wait_for(future.done, what=f"the {service} response")
        response = future.result()
        assert response.success, response.message
        return response.message

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def ros(monkeypatch, tmp_path):
    """(env for node processes, a connected Client, tmp_path); all on a fresh random domain."""
    settings = environment()
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    client = Client(int(settings["ROS_DOMAIN_ID"]))
    yield dict(os.environ), client, tmp_path
    client.close()


def summary(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def diffusion_onnx(tmp_path_factory) -> Path:
    """A tiny push_t diffusion policy (MLP denoiser, a few epochs on 4 scripted demos), exported: seconds to make."""
    pytest.importorskip("torch")
    from s2r.policies.diffusion.config import DiffusionConfig
    from s2r.policies.diffusion.export import export_diffusion
    from s2r.policies.diffusion.train import train_diffusion
    from s2r.sim.demos import record_demos

    out = tmp_path_factory.mktemp("diffusion")
    record_demos("push_t", expert="scripted", episodes=4, out=out / "demos")
    config = DiffusionConfig(hidden_dim=64, num_layers=2, time_embed_dim=32, epochs=3, batch_size=64)
    train_diffusion(config, out / "demos", out / "run", progress=False)
    return export_diffusion(out / "run", out / "push_t.onnx")


# --- messages: pure conversions ---------------------------------------------------------------
def test_a_command_is_reordered_by_name_and_gains_follow_the_fields_present():
    spec = robot_spec("arm")  # yaw, shoulder, elbow; position-controlled
    read = CommandReader(spec)
    command = read(JointState(name=["elbow", "yaw", "shoulder"], position=[3.0, 1.0, 2.0], velocity=[0.0] * 3))
    assert command.q.tolist() == [1.0, 2.0, 3.0]
    assert command.kp.tolist() == spec.joint_array("kp").tolist() and command.tau_ff.tolist() == [0.0] * 3
    torque = read(JointState(name=["yaw", "shoulder", "elbow"], effort=[0.1, 0.2, 0.3]))
    assert torque.kp.tolist() == [0.0] * 3 and torque.kd.tolist() == [0.0] * 3
    assert torque.tau_ff.tolist() == [0.1, 0.2, 0.3]


@pytest.mark.parametrize("msg, problem", [
    (JointState(name=["yaw", "shoulder", "wrist"], position=[0.0] * 3), "name[2] 'wrist' is not an actuated joint"),
    (JointState(name=["yaw", "shoulder"], position=[0.0] * 2), "joint 'elbow' is missing"),
    (JointState(name=["yaw", "yaw", "elbow"], position=[0.0] * 3), "name[1] 'yaw' appears twice"),
    (JointState(name=["yaw", "shoulder", "elbow"], position=[0.0] * 2), "position has 2 values for 3 names"),
    (JointState(name=["yaw", "shoulder", "elbow"]), "all empty"),
])
def test_a_command_that_does_not_fit_the_robot_names_the_problem(msg, problem):
    with pytest.raises(MessageError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        CommandReader(robot_spec("arm"))(msg)


def test_joint_states_round_trip_in_spec_order_whatever_the_message_order():
    spec = robot_spec("cartpole")
    from s2r.state import RobotState

    state = RobotState(stamp=1795000000.123456, q=np.array([0.5, 3.0]), dq=np.array([0.1, -0.2]), tau=np.zeros(2))
    msg = joint_state_from_state(state, spec)
    msg.name, msg.position, msg.velocity = ["hinge", "slider"], [3.0, 0.5], [-0.2, 0.1]
    back = StateReader(spec)(msg)
    assert back.q.tolist() == [0.5, 3.0] and back.dq.tolist() == [0.1, -0.2]
    assert abs(back.stamp - state.stamp) < 1e-6


# --- the deadline loop ------------------------------------------------------------------------
def test_a_triggered_loop_ticks_on_each_arrival_and_at_its_deadline_when_one_is_lost():
    period = 0.2
    arrivals = TickTrigger()
    loop = DeadlineLoop(period, trigger=arrivals, trigger_wait_s=0.08)
    stop = threading.Event()
    woken_by = []

    def run():
        triggered = 0
        while loop.wait(stop):
            woken_by.append("arrival" if loop.triggered > triggered else "deadline")
            triggered = loop.triggered

    thread = threading.Thread(target=run)
    thread.start()
    start = time.monotonic()
    for k in range(6):
        time.sleep(max(start + k * period - time.monotonic(), 0.0))
        if k != 3:  # the fourth input is lost
            arrivals.fire()
    time.sleep(0.5 * period)
    stop.set()
    thread.join()
    assert woken_by == ["arrival"] * 3 + ["deadline"] + ["arrival"] * 2


# --- diffusion chunks -------------------------------------------------------------------------
def test_diffusion_chunks_run_time_aligned_while_the_next_samples_and_are_cross_faded_in(diffusion_onnx):
    from s2r.runtime.diffusion import DiffusionRuntime

    runtime = DiffusionRuntime(diffusion_onnx, spec=robot_spec("pusher"), warm_start=True)
    tokens = threading.Semaphore(0)  # one per chunk the test lets the planner finish
    chunks = []
    unnormalize = runtime.unnormalize

    def gated(sample):
        def wait_then_sample(*args):
            tokens.acquire()
            return sample(*args)
        return wait_then_sample

    def recorded(chunk, obs):
        actions = unnormalize(chunk, obs)
        chunks.append(actions[0])
        return actions

    runtime.sample, runtime.warm_sample, runtime.unnormalize = gated(runtime.sample), gated(runtime.warm_sample), recorded
    policy = ChunkedPolicy(runtime, blend_steps=3)
    state = RobotState(0.0, np.array([0.05, -0.02]), np.zeros(2), np.zeros(2))
    inputs = {"object_pose": np.array([0.1, 0.1, 0.0, 1.0])}
    executed = []

    def step() -> None:
        command = policy.step(state, inputs)
        executed.append(None if command is None else runtime.last_action[0].copy())

    try:
        step()                                 # tick 0: chunk 0 planned, sampling
        step()                                 # tick 1: still sampling: no command yet
        tokens.release()
        assert policy.ready.wait(30)
        for _ in range(8):                     # ticks 2-9; chunk 1 planned at tick 8 and held back
            step()
        tokens.release()
        assert policy.ready.wait(30)
        for _ in range(6):                     # ticks 10-15
            step()
    finally:
        tokens.release()
        policy.close()
    clip = lambda a: runtime.mapping.clip_action(a[None])[0]  # noqa: E731
    first, second = chunks
    assert executed[:2] == [None, None]
    # Chunk 0 (window of tick 0) from tick 2 on: index 1 + 2, past the tick it could not act on.
    assert np.allclose(executed[2:10], [clip(first[i]) for i in range(3, 11)])
    # Chunk 1 (window of tick 8) taken at tick 10, at index 1 + 2, faded in over three ticks.
    for tick, weight in zip(range(10, 13), (0.25, 0.5, 0.75)):
        blend = (1 - weight) * first[1 + tick] + weight * second[1 + tick - 8]
        assert np.allclose(executed[tick], clip(blend))
    assert np.allclose(executed[13:16], [clip(second[i]) for i in range(6, 9)])
    assert policy.stats()["chunks_planned"] == 2 and policy.stats()["blended_ticks"] == 3


# --- the nodes --------------------------------------------------------------------------------
def test_a_command_with_unknown_names_or_wrong_lengths_is_rejected_and_counted_and_nan_is_guarded(ros):
    env, client, tmp = ros
    robot = Node("robot_node", {"robot": "cartpole", "summary_path": tmp / "robot.json", **FAST}, env,
                 tmp / "robot.log")
    client.wait_for(lambda: client.mode() is not None and client.commands.get_subscription_count() > 0,
                    what="the robot node")
    bad = [
        JointState(name=["slider", "cart"], effort=[1.0, 1.0]),   # unknown joint
        JointState(name=["hinge"], effort=[1.0]),                 # the passive joint: not commandable
        JointState(name=["slider"], effort=[1.0, 2.0]),           # wrong length
        JointState(name=[], effort=[]),                           # the slider is missing
    ]
    for i, msg in enumerate(bad, start=1):
        client.commands.publish(msg)
        client.wait_for(lambda i=i: client.robot_status.get("commands_rejected") == str(i), what=f"rejection {i}")
    client.commands.publish(JointState(name=["slider"], effort=[math.nan]))
    client.wait_for(lambda: int(client.robot_status.get("nan_guard", 0)) >= 1, what="the NaN guard")
    assert robot.stop() == 0, robot.output()
    result = summary(tmp / "robot.json")
    assert result["commands_rejected"] == 4 and result["commands_applied"] == 1
    assert "joint 'slider' is missing" in result["last_rejection"]
    assert result["safety"]["nan_guard"] >= 1
    assert "rejected command #1: joint_command: name[1] 'cart' is not an actuated joint" in robot.output()


def test_estop_while_running_is_latched_until_reset_estop(ros, cartpole_onnx):
    env, client, tmp = ros
    robot = Node("robot_node", {"driver": f"sim:{HANGING}", "summary_path": tmp / "robot.json", **FAST}, env,
                 tmp / "robot.log")
    policy = Node("policy_node", {"policy": cartpole_onnx, "realtime_priority": 0}, env, tmp / "policy.log")
    try:
        client.wait_for(lambda: client.mode() == "running", what="the policy to take over")
        assert "latched" in client.call("estop")
        client.wait_for(lambda: client.mode() == "estop", what="e-stop")
        applied = int(client.robot_status["commands_applied"])
        client.wait_for(lambda: int(client.robot_status["commands_applied"]) > applied + 25,
                        what="more policy commands")
        assert client.mode() == "estop", "the e-stop let go while the policy kept commanding"
        client.call("reset_estop")
        client.wait_for(lambda: client.mode() == "running", what="the policy to take over again")
    finally:
        assert robot.stop() == 0, robot.output()
        policy.stop()
    modes = [mode for _, mode in summary(tmp / "robot.json")["mode_log"]]
    assert modes[modes.index("estop"):] == ["estop", "soft_start", "running", "disabled"]


def test_the_robot_goes_safe_when_the_policy_stalls_or_dies(ros, cartpole_onnx):
    env, client, tmp = ros
    robot = Node("robot_node", {"driver": f"sim:{HANGING}", "summary_path": tmp / "robot.json", **FAST}, env,
                 tmp / "robot.log")
    policy = Node("policy_node", {"policy": cartpole_onnx, "realtime_priority": 0}, env, tmp / "policy.log")
    try:
        client.wait_for(lambda: client.mode() == "running", what="the policy to take over")
        policy.popen.send_signal(signal.SIGSTOP)  # a stall
        client.wait_for(lambda: int(client.robot_status["watchdog"]) >= 1, what="the watchdog")
        policy.popen.send_signal(signal.SIGCONT)
        client.wait_for(lambda: client.mode() == "running", what="the policy to take over again")
        watchdog = int(client.robot_status["watchdog"])
        policy.popen.kill()  # a crash
        client.wait_for(lambda: int(client.robot_status["watchdog"]) > watchdog, what="the watchdog again")
    finally:
        assert robot.stop() == 0, robot.output()
        policy.stop()
    result = summary(tmp / "robot.json")
    log = [(t, mode) for t, mode in result["mode_log"] if mode == "damping"]
    assert len(log) == 2, result["mode_log"]
    # The last command before the crash, then damping within a few control periods.
    assert 0 < log[-1][0] - result["last_command_time"] < 0.5
    assert "→ damping (watchdog: no fresh state or policy command" in robot.output()


def test_a_policy_whose_contract_does_not_fit_the_robot_refuses_to_start_naming_the_field(ros, cartpole_onnx):
    env, _, tmp = ros
    spec = yaml.safe_load((ROOT / "sim" / "robots" / "cartpole" / "cartpole.yaml").read_text())
    spec["joints"].reverse()  # the robot reports hinge first
    spec["mjcf"] = str(ROOT / "sim" / "robots" / "cartpole" / "cartpole.xml")
    swapped = tmp / "cartpole_swapped.yaml"
    swapped.write_text(yaml.safe_dump(spec))
    policy = Node("policy_node", {"policy": cartpole_onnx, "robot": swapped}, env, tmp / "policy.log")
    assert policy.popen.wait(60) == 2
    assert "refusing to start" in policy.output()
    assert "joint_names[0]: policy expects 'slider', the robot has 'hinge'" in policy.output()


def test_a_robot_node_given_a_driver_kind_it_does_not_know_refuses_to_start_naming_the_parameter(ros):
    env, _, tmp = ros
    robot = Node("robot_node", {"driver": "ethercat:eth0", **FAST}, env, tmp / "robot.log")
    assert robot.popen.wait(60) == 2
    assert "refusing to start: parameter 'driver': unknown kind 'ethercat'" in robot.output()
    assert "kinds: sim" in robot.output()


def test_sigterm_damps_the_robot_and_closes_the_recording_readable(ros, cartpole_onnx):
    from mcap.reader import make_reader
    from mcap_ros2.reader import read_ros2_messages

    from s2r.ros.recorder import read_recording

    env, client, tmp = ros
    recorders = [Node("recorder", {"path": tmp / f"{name}.mcap"}, env, tmp / f"{name}.log")
                 for name in ("closed", "killed")]
    robot = Node("robot_node", {"driver": f"sim:{HANGING}", "summary_path": tmp / "robot.json", **FAST}, env,
                 tmp / "robot.log")
    policy = Node("policy_node", {"policy": cartpole_onnx, "summary_path": tmp / "policy.json",
                                  "realtime_priority": 0}, env, tmp / "policy.log")
    client.wait_for(lambda: client.mode() == "running", what="the policy to take over")
    time.sleep(3.0)
    recorders[1].popen.kill()
    assert robot.stop(signal.SIGTERM) == 0, robot.output()
    assert policy.stop(signal.SIGTERM) == 0, policy.output()
    assert recorders[0].stop(signal.SIGTERM) == 0, recorders[0].output()

    robot_side, policy_side = summary(tmp / "robot.json"), summary(tmp / "policy.json")
    assert robot_side["shutdown_damping_commands"] > 0 and robot_side["mode"] == "disabled"
    assert "shutdown: damping sent" in robot.output()

    with open(tmp / "closed.mcap", "rb") as stream:
        assert make_reader(stream).get_summary() is not None, "the recording was not closed with its index"
    counts = Counter(m.channel.topic for m in read_ros2_messages(tmp / "closed.mcap"))
    assert set(counts) == {"joint_states", "joint_command", "/diagnostics"}
    assert 0.9 * robot_side["states_published"] <= counts["joint_states"] <= robot_side["states_published"]
    assert 0.9 * policy_side["commands_published"] <= counts["joint_command"] <= policy_side["commands_published"]
    first = next(m.ros_msg for m in read_ros2_messages(tmp / "closed.mcap") if m.channel.topic == "joint_states")
    assert list(first.name) == ["slider", "hinge"]

    killed = Counter(topic for topic, _, _ in read_recording(tmp / "killed.mcap"))
    assert 0 < killed["joint_states"] <= counts["joint_states"], "a killed recorder's file lost its chunks"


def test_a_diffusion_policy_drives_the_pusher_in_blended_chunks_with_the_object_pose_from_a_topic(ros, diffusion_onnx):
    env, client, tmp = ros
    poses = client.node.create_publisher(PoseStamped, "object_pose", COMMAND_QOS)
    block = PoseStamped()
    block.pose.position.x, block.pose.position.y, block.pose.orientation.w = 0.1, 0.1, 1.0
    robot = Node("robot_node", {"robot": "pusher", "summary_path": tmp / "robot.json", **FAST}, env, tmp / "robot.log")
    policy = Node("policy_node", {"policy": diffusion_onnx, "summary_path": tmp / "policy.json", "blend_steps": 3,
                                  "realtime_priority": 0}, env, tmp / "policy.log")

    def tracking(predicate):  # a tracker publishing the block's pose
        poses.publish(block)
        return predicate()

    try:
        client.wait_for(lambda: tracking(lambda: client.mode() == "running"), timeout=60,
                        what="the diffusion policy to take over")
        applied = int(client.robot_status["commands_applied"])
        client.wait_for(lambda: tracking(lambda: int(client.robot_status["commands_applied"]) >= applied + 40),
                        what="four more chunks of commands")
    finally:
        assert robot.stop() == 0, robot.output()
        assert policy.stop() == 0, policy.output()
    result = summary(tmp / "policy.json")
    assert result["chunks_planned"] >= 6 and result["chunk_switches"] >= 5, result
    assert result["blended_ticks"] >= 3 * (result["chunk_switches"] - 1), result
    assert result["commands_published"] >= summary(tmp / "robot.json")["commands_applied"] >= 40
    assert "→ damping" not in robot.output()


def test_dds_traffic_needs_nothing_but_loopback(tmp_path):
    """Inside a network namespace that has only `lo`, the robot node's states reach a subscriber."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rn", "true"]).returncode != 0:
        pytest.skip("no unprivileged network namespaces here")
    env = {**os.environ, **environment()}
    script = textwrap.dedent(f"""
        import signal, subprocess, sys, time
        import rclpy
        from sensor_msgs.msg import JointState
        from s2r.ros.qos import SENSOR_QOS
        robot = subprocess.Popen([sys.executable, "-m", "s2r.ros.robot_node", "--ros-args",
                                  "-p", "realtime_priority:=0"], stdout=open({str(tmp_path / 'robot.log')!r}, "w"),
                                 stderr=subprocess.STDOUT)
        rclpy.init()
        node = rclpy.create_node("listener")
        got = []
        node.create_subscription(JointState, "joint_states", got.append, SENSOR_QOS)
        end = time.monotonic() + 30
        while len(got) < 20 and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        robot.send_signal(signal.SIGINT)
        robot.wait(20)
        print("received", len(got))
    """)
    result = subprocess.run(["unshare", "-rn", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" -c "$0"',
                             script], env=env, capture_output=True, text=True, timeout=120)
    assert "received 20" in result.stdout, result.stdout + result.stderr + (tmp_path / "robot.log").read_text()


def test_the_robot_side_imports_and_runs_without_torch_or_mujoco(cartpole_onnx):
    script = textwrap.dedent(f"""
        import sys
        class Blocked:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "mujoco"):
                    raise ImportError(f"{{name}} is blocked on the robot")
        sys.meta_path.insert(0, Blocked())
        import numpy as np
        import s2r, s2r.runtime.mlp, s2r.hardware, s2r.interface, s2r.hardware.safety
        import s2r.ros, s2r.ros.messages, s2r.ros.robot_node, s2r.ros.policy_node, s2r.ros.recorder
        import s2r.hardware.drivers, s2r.calibration.excitation
        import s2r.runtime.diffusion, s2r.runtime.chunking
        from s2r.runtime.mlp import PolicyRuntime
        from s2r.spec import robot_spec
        from s2r.state import RobotState
        runtime = PolicyRuntime({str(cartpole_onnx)!r}, spec=robot_spec("cartpole"))
        command = runtime.step(RobotState(0.0, np.zeros(2), np.zeros(2), np.zeros(2)))
        assert command.tau_ff.shape == (1,)
        try:
            import s2r.sim.sim_robot
        except ImportError:
            pass
        else:
            raise AssertionError("the blocker let mujoco through")
        assert not any(m.split(".")[0] in ("torch", "mujoco") for m in sys.modules)
        print("robot side ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "robot side ok" in result.stdout, result.stderr
