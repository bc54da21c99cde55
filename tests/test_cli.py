"""The `s2r` command line end to end, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def s2r(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "s2r.apps.cli", *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"s2r {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "pendulum"
    metrics = last_json(s2r("train", "pendulum", "--num-envs", "32", "--iterations", "2", "--seed", "1",
                            "--out", str(run), "--json"))
    assert metrics["env_steps"] == 2 * 32 * 24
    assert {"mean_return", "success_rate", "env_steps", "wall_s", "env_steps_per_s"} <= set(metrics)
    return run


def test_train_writes_checkpoint_config_and_metrics(trained):
    for name in ("checkpoint.pt", "config.yaml", "metrics.json", "training_curve.png"):
        assert (trained / name).is_file(), name
    assert "task: pendulum" in (trained / "config.yaml").read_text()


def test_export_info_and_eval(trained, tmp_path):
    onnx_path = tmp_path / "pendulum.onnx"
    s2r("export", str(trained), "--out", str(onnx_path))
    info = last_json(s2r("info", str(onnx_path), "--json"))
    assert info["robot"] == "pendulum" and info["action"]["joint_names"] == ["hinge"]
    assert [t["name"] for t in info["observation"]] == ["joint_pos_sincos", "joint_vel", "last_action"]
    for source in (onnx_path, trained):
        result = last_json(s2r("eval", str(source), "--episodes", "4", "--json"))
        assert result["task"] == "pendulum" and result["episodes"] == 4
        assert 0.0 <= result["success_rate"] <= 1.0 and "mean_return" in result


def test_eval_on_the_wrong_robot_is_refused_naming_the_field(trained, tmp_path):
    onnx_path = tmp_path / "pendulum.onnx"
    s2r("export", str(trained), "--out", str(onnx_path))
    result = s2r("eval", str(onnx_path), "--task", "cartpole", "--json", check=False)
    assert result.returncode == 2 and "robot: policy expects 'pendulum', spec is 'cartpole'" in result.stderr


def test_unknown_task_and_missing_run_are_clear_errors(tmp_path):
    result = s2r("train", "walker", "--iterations", "1", check=False)
    assert result.returncode == 2 and "unknown task 'walker'" in result.stderr
    result = s2r("export", str(tmp_path), "--out", str(tmp_path / "x.onnx"), check=False)
    assert result.returncode == 2 and "no checkpoint.pt" in result.stderr


def test_bench_sim_reports_ratios_as_json():
    result = last_json(s2r("bench", "sim", "--task", "pendulum", "--num-envs", "64", "--json"))
    for key in ("s2r_steps_per_s", "ceiling_steps_per_s", "peer_steps_per_s", "ratio_vs_ceiling", "ratio_vs_peer"):
        assert result[key] > 0, key
