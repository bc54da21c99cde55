"""`s2r deploy` end to end: a trained policy through ROS 2 nodes, in separate processes, against SimRobot.

No timing figure is asserted on: the machine is shared. What is asserted is what a user
relies on: the pole comes up and stays up, the figures are all there, the recording holds
every topic and each command carries the stamp of the state it answered.
"""

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from s2r.geometry import wrap_to_pi  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HANGING = ROOT / "hardware" / "configs" / "cartpole_hanging.yaml"
FIGURES = ("control_hz_target", "control_hz_achieved", "period_p50_us", "period_p99_us", "period_max_us",
           "inference_p99_us", "state_to_command_p99_us", "overruns", "safety_events", "upright_fraction")


def s2r(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2r.apps.cli", *args], capture_output=True, text=True, timeout=300)


def test_the_cartpole_policy_swings_up_and_balances_under_ros2_control(cartpole_onnx, tmp_path):
    run = s2r("deploy", str(cartpole_onnx), "--driver", f"sim:{HANGING}", "--duration", "10",
              "--record", str(tmp_path / "run.mcap"), "--out", str(tmp_path / "run"), "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(FIGURES) <= set(result), sorted(result)
    assert result["control_hz_target"] == 50.0
    assert all(math.isfinite(result[key]) for key in FIGURES if key != "safety_events")
    assert result["commands_rejected"] == 0 and "watchdog" not in result["safety_events"]

    # The pole starts hanging; after the swing-up it stays upright: judge the last 5 s.
    with np.load(tmp_path / "run" / "trajectory.npz") as trajectory:
        stamp, hinge = trajectory["stamp"], trajectory["q"][:, 1]
    last = stamp >= stamp[-1] - 5.0
    assert np.mean(np.abs(wrap_to_pi(hinge[last])) < 0.25) >= 0.7

    # The recording: every topic, as many messages as the nodes sent, commands stamped with their state.
    from mcap_ros2.reader import read_ros2_messages

    robot_side = json.loads((tmp_path / "run" / "robot_node.json").read_text())
    messages = list(read_ros2_messages(tmp_path / "run.mcap"))
    counts = Counter(m.channel.topic for m in messages)
    assert counts == Counter(result["recording_messages"])
    assert 0.9 * robot_side["states_published"] <= counts["joint_states"] <= robot_side["states_published"]
    assert counts["joint_command"] >= 0.9 * robot_side["commands_applied"] and counts["/diagnostics"] >= 10
    measured = sorted(m.ros_msg.header.stamp.sec + 1e-9 * m.ros_msg.header.stamp.nanosec for m in messages
                      if m.channel.topic == "joint_states")
    assert np.diff(measured).max() < 0.1, "the recording lost states once it had started"
    stamps = {(m.ros_msg.header.stamp.sec, m.ros_msg.header.stamp.nanosec) for m in messages
              if m.channel.topic == "joint_states"}
    commands = [m.ros_msg for m in messages if m.channel.topic == "joint_command"]
    assert all(list(c.name) == ["slider"] and len(c.effort) == 1 and len(c.position) == 0 for c in commands)
    answered = sum((c.header.stamp.sec, c.header.stamp.nanosec) in stamps for c in commands)
    assert answered >= 0.9 * len(commands)


def test_deploy_refuses_a_policy_for_another_robot_naming_the_field(cartpole_onnx, tmp_path):
    run = s2r("deploy", str(cartpole_onnx), "--robot", "pendulum", "--duration", "1", "--out", str(tmp_path))
    assert run.returncode != 0
    assert "robot: policy expects 'cartpole', spec is 'pendulum'" in run.stderr
