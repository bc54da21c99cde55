"""The Go2 on MIT CAN motors deployed through ROS 2 as a user meets it: robot_node drives the emulated motors and
publishes the CAN IMU's orientation on `imu`; an IMU that goes silent ends in damping. Real rclpy nodes, the emulator
in its own process (udp_multicast)."""

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import Imu  # noqa: E402
from test_ros_nodes import FAST, ROOT, Node, ros, summary  # noqa: E402, F401  (ros: the fixture)

from s2r.geometry import tilt_from_quat  # noqa: E402
from s2r.hardware.drivers.can_imu import DEFAULT_IMU_ID  # noqa: E402
from s2r.ros.qos import TELEMETRY_QOS  # noqa: E402
from s2r.sim.emulate import EmulatorProcess  # noqa: E402

CALIBRATION = ROOT / "hardware" / "configs" / "go2_mit_can.yaml"


def test_robot_node_on_the_can_go2_publishes_the_can_imu_and_damps_when_the_imu_goes_silent(ros):
    env, client, tmp = ros
    imu: list[Imu] = []
    client.node.create_subscription(Imu, "imu", imu.append, TELEMETRY_QOS)
    with EmulatorProcess("mit_can", "go2") as emulator:  # s2r emulate mit_can --robot go2: 12 motors and the IMU
        robot = Node("robot_node", {"robot": "go2", "driver": f"mit_can:{emulator.port},calibration={CALIBRATION}",
                                    "summary_path": tmp / "robot.json", **FAST}, env, tmp / "robot.log")
        try:
            client.wait_for(lambda: len(imu) > 25 and client.mode() in ("soft_start", "running"),
                            what="the CAN IMU on imu")
            seen = len(imu)
            emulator.fault(f"silent {DEFAULT_IMU_ID}")
            client.wait_for(lambda: client.mode() == "damping", what="damping once the IMU is silent")
        finally:
            assert robot.stop() == 0, robot.output()
    tilts = [float(tilt_from_quat(np.array([m.orientation.w, m.orientation.x, m.orientation.y, m.orientation.z])))
             for m in imu[:seen]]
    assert max(tilts) < 0.3, "standing upright, as the emulated IMU reports"
    assert "damping" in [mode for _, mode in summary(tmp / "robot.json")["mode_log"]]
