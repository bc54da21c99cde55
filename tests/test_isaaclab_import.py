"""`s2r import isaaclab`: an Isaac Lab rsl_rl run (built here in Isaac Lab's format, exported by rsl-rl-lib)
becomes an s2r policy that acts as the original does in s2r's joint order, or is refused naming the term."""

import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

pytest.importorskip("rsl_rl")

from bench.isaaclab_run import ISAAC_JOINT_ORDER, build_isaaclab_run  # noqa: E402

from s2r.contract import ContractError  # noqa: E402
from s2r.policies.import_isaaclab import import_isaaclab  # noqa: E402
from s2r.runtime.load import load_runtime  # noqa: E402
from s2r.sim.env import make_env  # noqa: E402
from s2r.spec import robot_spec  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(s2r export, Isaac Lab-format run) of a go2_flat policy after two iterations of training."""
    from s2r.policies.export import export_onnx
    from s2r.policies.train import default_config, load_policy, train

    root = tmp_path_factory.mktemp("isaaclab")
    train(default_config("go2_flat", num_envs=16, iterations=2), root / "s2r", progress=False)
    policy, contract, _ = load_policy(root / "s2r")
    return export_onnx(policy, contract, root / "go2.onnx"), build_isaaclab_run(root / "s2r", root / "isaaclab")


def test_an_imported_isaaclab_policy_acts_as_the_original_in_s2r_joint_order(runs, tmp_path):
    original, isaac_run = runs
    spec = robot_spec("go2")
    contract = import_isaaclab(isaac_run, spec, ISAAC_JOINT_ORDER, tmp_path / "imported.onnx")
    assert contract.joint_names == spec.joint_names and [t.name for t in contract.observation] == [
        "base_ang_vel", "projected_gravity", "cmd_vel", "joint_pos", "joint_vel", "last_action"]
    assert contract.observation[0].scale == 0.25 and contract.action.scale[0] == 0.25
    load_runtime(tmp_path / "imported.onnx", spec)   # the robot side takes it, contract checked
    env = make_env("go2_flat", 32, seed=0)
    obs = env.reset(seed=0)
    ours, theirs = (ort.InferenceSession(str(p)) for p in (original, tmp_path / "imported.onnx"))
    for _ in range(10):
        x = obs["policy"].numpy().astype(np.float32)
        a, b = ours.run(None, {"obs": x})[0], theirs.run(None, {"obs": x})[0]
        np.testing.assert_allclose(b, a, atol=1e-4)
        obs = env.step(torch.as_tensor(a))[0]
    env.close()


def edited_run(isaac_run, tmp_path, edit):
    run = tmp_path / "run"
    shutil.copytree(isaac_run, run)
    path = run / "params" / "env.yaml"
    env = yaml.unsafe_load(path.read_text())
    edit(env)
    path.write_text(yaml.dump(env))
    return run


@pytest.mark.parametrize("edit, problem", [
    (lambda env: env["observations"]["policy"].update(base_lin_vel={"func": "isaaclab.envs.mdp.observations:base_lin_vel",
                                                                    "scale": None}),
     r"env.yaml: observations.policy.base_lin_vel: func 'isaaclab.envs.mdp.observations:base_lin_vel' has no s2r term"),
    (lambda env: env["scene"]["robot"]["init_state"]["joint_pos"].update({".*_calf_joint": -1.8}),
     r"env.yaml: scene.robot.init_state.joint_pos: FL_calf_joint is -1.8, the go2 spec's default_position is -1.5"),
    (lambda env: env["observations"]["policy"]["joint_vel"].update(clip=(-100.0, 100.0)),
     r"env.yaml: observations.policy.joint_vel.clip: .*s2r terms take no clip"),
    (lambda env: env.update(decimation=2), r"env.yaml: sim.dt × decimation: 0.01 s, the go2 spec controls every 0.02 s"),
])
def test_an_isaaclab_run_that_s2r_cannot_map_is_refused_naming_the_term(runs, tmp_path, edit, problem):
    run = edited_run(runs[1], tmp_path, edit)
    with pytest.raises(ContractError, match=problem):
        import_isaaclab(run, robot_spec("go2"), ISAAC_JOINT_ORDER, tmp_path / "out.onnx")


def test_a_joint_order_that_is_not_the_robots_joints_is_refused(runs, tmp_path):
    order = [n for n in ISAAC_JOINT_ORDER if n != "RR_calf_joint"] + ["RR_knee_joint"]
    with pytest.raises(ContractError, match=r"--joint-order: expected each joint of go2 once"):
        import_isaaclab(runs[1], robot_spec("go2"), order, tmp_path / "out.onnx")
    with pytest.raises(ContractError, match=r"params/env.yaml: missing \(an Isaac Lab rsl_rl run holds it\)"):
        import_isaaclab(tmp_path, robot_spec("go2"), ISAAC_JOINT_ORDER, tmp_path / "out.onnx")


def test_s2r_import_refuses_a_run_it_cannot_read_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    s2r = Path(sys.executable).with_name("s2r")
    result = subprocess.run([str(s2r), "import", "isaaclab", str(tmp_path), "--robot", "go2",
                             "--joint-order", ",".join(ISAAC_JOINT_ORDER), "--out", str(tmp_path / "x.onnx")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "s2r import: error: " in result.stderr and "params/env.yaml: missing" in result.stderr
