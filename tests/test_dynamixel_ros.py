"""`s2r deploy` of a reach policy on the emulated Dynamixel arm, through ROS 2: a user's node sends targets on
`target` and hears `joint_states` and the per-motor `/diagnostics`; the arm's end effector reaches each target.

The policy is built here in seconds (`reach_ik_onnx`): the reach task's actor (its contract, its network) fitted by
regression to the arm's inverse kinematics, then exported as `s2r export` does. PPO's reach policy
(`runs/reach_dxl`, 6 minutes of training) is what bench/bus.py deploys.
"""

import dataclasses
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
from s2r.sim.tasks import ArmReach  # noqa: E402
from s2r.spec import robot_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
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


def _fit_inverse_kinematics(policy, contract, *, samples: int = 20000, steps: int = 1500, seed: int = 0) -> float:
    """Fit the actor so that its action puts the joints where the end effector is at the observed target, whatever
    the other observations (one IK branch: elbow bent down, the shoulder in front; targets of the task's shell); the
    median distance, m, between the target and where the fitted joint positions put the end effector."""
    import torch

    spec = robot_spec(contract.robot)
    model = compile_model(spec, "position")
    data = mujoco.MjData(model)
    rng = np.random.default_rng(seed)
    q = rng.uniform([-1.6, -1.5, 0.05], [1.6, 1.0, 2.4], size=(2 * samples, 3))
    target = np.empty_like(q)
    for i in range(len(q)):
        data.qpos[:3] = q[i]
        mujoco.mj_kinematics(model, data)
        target[i] = data.site("ee").xpos
    in_shell = np.linalg.norm(target - ArmReach.shoulder, axis=1) >= 0.2  # the task's targets: 0.2-0.5 m from it
    q, target = q[in_shell][:samples], target[in_shell][:samples]
    obs = np.concatenate([rng.uniform(spec.lower, spec.upper, (samples, 3)), rng.normal(0, 0.3, (samples, 3)),
                          target, rng.uniform(-2, 2, (samples, 3))], axis=1)
    action = q - np.asarray(contract.action.offset)
    obs_t, action_t = torch.tensor(obs, dtype=torch.float32), torch.tensor(action, dtype=torch.float32)
    policy.actor_normalizer.mean.copy_(obs_t.mean(0))
    policy.actor_normalizer.var.copy_(obs_t.var(0))
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(policy.actor.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        batch = torch.randint(0, samples, (1024,))
        loss = torch.mean((policy.act_inference(obs_t[batch]) - action_t[batch]) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        reached = policy.act_inference(obs_t[:500]).numpy() + np.asarray(contract.action.offset)
    errors = []
    for i, q_i in enumerate(reached):
        data.qpos[:3] = q_i
        mujoco.mj_kinematics(model, data)
        errors.append(np.linalg.norm(data.site("ee").xpos - target[i]))
    return float(np.median(errors))


@pytest.fixture(scope="module")
def reach_ik_onnx() -> Path:
    """The reach task's actor and contract (test_dynamixel's one PPO iteration on 8 worlds) fitted to the arm's inverse
    kinematics and exported; seconds, cached by source hash as conftest's cartpole."""
    from conftest import CACHE, _source_hash
    from test_dynamixel import one_iteration_reach

    from s2r.policies.export import export_onnx
    from s2r.policies.train import load_policy

    path = CACHE / f"reach-ik-{_source_hash()}" / "reach.onnx"
    if not path.is_file():
        policy, contract, _ = load_policy(one_iteration_reach())
        policy.train()
        error = _fit_inverse_kinematics(policy, contract)
        assert error < 0.03, f"the inverse-kinematics fit: the end effector {error:.3f} m from the target (median)"
        contract = dataclasses.replace(contract, provenance={**contract.provenance,
                                                             "fitted": "inverse kinematics (tests/test_dynamixel_ros.py)"})
        export_onnx(policy.eval(), contract, path)
    return path


def test_a_reach_policy_deployed_through_ros_moves_the_emulated_dynamixel_arm_to_its_targets(reach_ik_onnx, tmp_path):
    env = {**os.environ, **environment("random")}
    hold = 4.0
    with EmulatorProcess("dynamixel", "arm") as emulator:
        deploy = subprocess.Popen([sys.executable, "-m", "s2r.apps.cli", "deploy", str(reach_ik_onnx), "--driver",
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
