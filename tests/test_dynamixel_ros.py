"""`s2r deploy` of the reach policy on the emulated Dynamixel arm, through ROS 2: a user's node sends targets on
`target` and hears `joint_states` and the per-motor `/diagnostics`; the arm's end effector reaches each target.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest

pytest.importorskip("rclpy")

from s2r.ros import environment  # noqa: E402
from s2r.sim.emulate import EmulatorProcess  # noqa: E402
from s2r.sim.model import compile_model  # noqa: E402
from s2r.spec import robot_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "runs" / "reach_dxl" / "reach.onnx"
TARGETS = [[0.35, 0.1, 0.3], [0.3, -0.2, 0.35]]

USER_NODE = """
import json, sys, time
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import JointState
targets, hold = json.loads(sys.argv[1]), float(sys.argv[2])
rclpy.init()
node = rclpy.create_node("user")
publisher = node.create_publisher(PointStamped, "target", 10)
seen = {"q": None, "motors": set()}
node.create_subscription(JointState, "joint_states", lambda m: seen.__setitem__("q", list(m.position)), 10)
node.create_subscription(DiagnosticArray, "/diagnostics",
                         lambda m: seen["motors"].update(s.name for s in m.status if "motor" in s.name), 10)
reached = []
for target in targets:
    end = time.monotonic() + hold
    while time.monotonic() < end:
        msg = PointStamped()
        msg.point.x, msg.point.y, msg.point.z = target
        publisher.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.05)
    reached.append(seen["q"])
print(json.dumps({"q": reached, "motors": sorted(seen["motors"])}))
"""


@pytest.mark.slow
def test_a_reach_policy_deployed_through_ros_moves_the_emulated_dynamixel_arm_to_its_targets(tmp_path):
    if not POLICY.is_file():
        pytest.skip("no reach policy: s2r train reach --out runs/reach_dxl; s2r export runs/reach_dxl --out "
                    "runs/reach_dxl/reach.onnx")
    env = {**os.environ, **environment("random")}
    hold = 5.0
    with EmulatorProcess("dynamixel", "arm") as emulator:
        deploy = subprocess.Popen([sys.executable, "-m", "s2r.apps.cli", "deploy", str(POLICY), "--driver",
                                   f"dynamixel:{emulator.port}", "--duration", str(hold * len(TARGETS) + 6),
                                   "--domain-id", env["ROS_DOMAIN_ID"], "--out", str(tmp_path), "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        user = subprocess.run([sys.executable, "-c", USER_NODE, json.dumps(TARGETS), str(hold)], capture_output=True,
                              text=True, env=env, timeout=120)
        stdout, stderr = deploy.communicate(timeout=180)
    assert deploy.returncode == 0, stdout + stderr
    assert user.returncode == 0, user.stderr
    seen = json.loads(user.stdout.strip().splitlines()[-1])
    spec = robot_spec("arm")
    model = compile_model(spec, "position")
    data = mujoco.MjData(model)
    for q, target in zip(seen["q"], TARGETS):
        data.qpos[:3] = q
        mujoco.mj_kinematics(model, data)
        assert np.linalg.norm(data.site("ee").xpos - target) < 0.05, (q, target)
    assert len(seen["motors"]) == 3  # one diagnostic status per motor
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["driver"].startswith("dynamixel:")
