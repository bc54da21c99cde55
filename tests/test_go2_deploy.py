"""The go2 deployed as a user meets it: stood up from lying, refused on its back, damped after a fall,
commanded over cmd_vel, refused with two legs swapped. Real MuJoCo (SimRobot) and real rclpy nodes."""

import math
import time

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import Twist  # noqa: E402
from sensor_msgs.msg import Imu  # noqa: E402
from test_ros_nodes import FAST, ROOT, Node, ros, summary  # noqa: E402, F401  (ros: the fixture)

from s2r.contract import ContractError  # noqa: E402
from s2r.geometry import tilt_from_quat  # noqa: E402
from s2r.hardware.robot_loop import TaskInputs  # noqa: E402
from s2r.hardware.safety import SafetyFilter  # noqa: E402
from s2r.ros.qos import TELEMETRY_QOS  # noqa: E402
from s2r.sim.sim_robot import SimRobot, SimRobotConfigError, load_sim_robot_config  # noqa: E402
from s2r.spec import robot_spec  # noqa: E402

CONFIGS = ROOT / "hardware" / "configs"


@pytest.fixture(scope="module")
def go2_onnx(tmp_path_factory):
    """A go2_flat policy after two iterations of training (it does not walk), exported."""
    from s2r.policies.export import export_onnx
    from s2r.policies.train import default_config, load_policy, train

    run = tmp_path_factory.mktemp("go2")
    train(default_config("go2_flat", num_envs=16, iterations=2), run, progress=False)
    policy, contract, _ = load_policy(run)
    return export_onnx(policy, contract, run / "go2.onnx")


def soft_start(config: str, ticks: int) -> tuple[SimRobot, SafetyFilter]:
    """The go2 on SimRobot (no thread) under the SafetyFilter with no policy, for `ticks` control periods."""
    spec = robot_spec("go2")
    cfg = load_sim_robot_config(CONFIGS / config)
    cfg.realtime = False
    robot, safety = SimRobot(spec, cfg), SafetyFilter(spec, spec.control_period)
    robot.connect()
    robot.step(200)  # motors off: it settles where it was put
    robot.enable()
    for _ in range(ticks):
        state = robot.read_state()
        robot.write_command(safety.filter(None, state, state.stamp))
        robot.step(4)
    return robot, safety


def test_a_go2_lying_on_its_belly_is_stood_up_by_the_soft_start():
    robot, safety = soft_start("go2_lying.yaml", 0)
    assert robot.read_state().base_pos_w[2] < 0.08
    robot, safety = soft_start("go2_lying.yaml", 100)
    state = robot.read_state()
    assert state.base_pos_w[2] > 0.18, "the base did not rise to standing height"
    assert tilt_from_quat(state.base_quat) < 0.5
    assert safety.events["orientation_limit"] == 0 and safety.fault is None
    robot.close()


def test_a_go2_on_its_back_is_not_stood_up_and_the_robot_node_says_so(ros):
    env, client, tmp = ros
    robot = Node("robot_node", {"robot": "go2", "driver": f"sim:{CONFIGS / 'go2_on_back.yaml'}",
                                "summary_path": tmp / "robot.json", **FAST}, env, tmp / "robot.log")
    try:
        client.wait_for(lambda: client.mode() == "damping" and int(client.robot_status.get("orientation_limit", 0)),
                        what="the soft start's refusal")
    finally:
        assert robot.stop() == 0, robot.output()
    report = summary(tmp / "robot.json")
    assert "soft_start" not in [mode for _, mode in report["mode_log"]]
    assert "refuses to stand up a robot lying on its back" in report["safety_fault"]
    assert "refuses to stand up a robot lying on its back" in robot.output()


def test_the_orientation_limit_trips_on_a_fall_and_damps_until_reset_estop(ros):
    env, client, tmp = ros
    imu: list[Imu] = []
    client.node.create_subscription(Imu, "imu", imu.append, TELEMETRY_QOS)
    robot = Node("robot_node", {"robot": "go2", "driver": f"sim:{CONFIGS / 'go2_falling.yaml'}",
                                "summary_path": tmp / "robot.json", **FAST}, env, tmp / "robot.log")
    try:
        client.wait_for(lambda: client.mode() == "damping", what="the fall to trip the limit")
        tripped = int(client.robot_status["orientation_limit"])
        client.wait_for(lambda: int(client.robot_status["orientation_limit"]) > tripped + 20, what="more ticks")
        assert client.mode() == "damping", "the orientation limit let go by itself"
        client.call("reset_estop")   # it has rolled back onto its feet: the operator restarts it
        client.wait_for(lambda: client.mode() == "soft_start", what="the soft start after reset_estop")
    finally:
        assert robot.stop() == 0, robot.output()
    report = summary(tmp / "robot.json")
    modes = [mode for _, mode in report["mode_log"]]
    assert modes[:3] == ["soft_start", "damping", "soft_start"]
    assert "(a fall)" in robot.output()
    tilts = [float(tilt_from_quat(np.array([m.orientation.w, m.orientation.x, m.orientation.y, m.orientation.z])))
             for m in imu]
    assert tilts and max(tilts) > 1.0, "the IMU topic did not show the fall"


def test_a_stale_cmd_vel_falls_back_to_zero_and_a_nan_one_is_zero_and_counted(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("s2r.hardware.robot_loop.time.monotonic", lambda: clock[0])
    inputs = TaskInputs({"cmd_vel": 3}, timeout_s=0.5)
    inputs.set("cmd_vel", np.array([0.5, 0.0, 0.2]))
    assert inputs.read()["cmd_vel"].tolist() == [0.5, 0.0, 0.2]
    clock[0] += 0.6
    assert inputs.read()["cmd_vel"].tolist() == [0.0, 0.0, 0.0] and inputs.fallbacks["cmd_vel"] == 1
    inputs.set("cmd_vel", np.array([math.nan, 0.3, 0.0]))
    assert inputs.read()["cmd_vel"].tolist() == [0.0, 0.0, 0.0] and inputs.rejected["cmd_vel"] == 1


def test_the_robot_node_hosting_a_go2_policy_takes_cmd_vel_and_counts_stale_and_nan_ones(ros, go2_onnx):
    env, client, tmp = ros
    cmd_vel = client.node.create_publisher(Twist, "cmd_vel", TELEMETRY_QOS)
    robot = Node("robot_node", {"robot": "go2", "driver": "sim", "policy": go2_onnx, "input_timeout_s": 0.3,
                                "summary_path": tmp / "robot.json", **FAST}, env, tmp / "robot.log")
    try:
        client.wait_for(lambda: client.mode() == "running", timeout=60, what="the policy to take over")
        forward = Twist()
        forward.linear.x = 0.5
        nan = Twist()
        nan.linear.x = math.nan
        for twist in (forward, forward, nan):
            cmd_vel.publish(twist)
            time.sleep(0.1)
        time.sleep(0.6)   # no more cmd_vel: stale
    finally:
        assert robot.stop() == 0, robot.output()
    report = summary(tmp / "robot.json")
    assert report["input_rejected"]["cmd_vel"] == 1
    assert report["input_fallbacks"]["cmd_vel"] > 0


def test_s2r_deploy_refuses_a_go2_whose_front_legs_are_swapped(tmp_path, go2_onnx):
    from s2r.apps.deploy import deploy

    spec = yaml.safe_load((ROOT / "sim" / "robots" / "go2" / "go2.yaml").read_text())
    spec["joints"][0:3], spec["joints"][3:6] = spec["joints"][3:6], spec["joints"][0:3]
    spec["mjcf"] = str(ROOT / "sim" / "robots" / "go2" / "go2.xml")
    swapped = tmp_path / "go2_swapped.yaml"
    swapped.write_text(yaml.safe_dump(spec))
    with pytest.raises(ContractError, match=r"joint_names\[0\]: policy expects 'FL_hip_joint', the robot has "
                                            r"'FR_hip_joint'"):
        deploy(go2_onnx, robot=str(swapped), duration=1.0, out_dir=tmp_path / "run")


def test_a_sim_robot_config_that_places_the_base_wrongly_is_refused_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("initial_base: {position: [0, 0], rpy: [0, 0, 0]}\n")
    with pytest.raises(SimRobotConfigError, match=r"bad.yaml: initial_base.position: expected a list of 3 numbers"):
        load_sim_robot_config(bad)
    bad.write_text("initial_base: {position: [0, 0, 0.3]}\n")
    with pytest.raises(SimRobotConfigError, match=r"bad.yaml: initial_base: cartpole has no floating base"):
        SimRobot(robot_spec("cartpole"), load_sim_robot_config(bad))
