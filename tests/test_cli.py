"""The `s2r` command line end to end, as a user runs it."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PERTURBED = ROOT / "hardware" / "configs" / "arm_perturbed.yaml"


def s2r(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "s2r.apps.cli", *args], capture_output=True, text=True,
                            timeout=600, **kwargs)
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


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    onnx_path = tmp_path_factory.mktemp("export") / "pendulum.onnx"
    return onnx_path, s2r("export", str(trained), "--out", str(onnx_path))


def test_train_writes_checkpoint_config_and_metrics(trained):
    for name in ("checkpoint.pt", "config.yaml", "metrics.json", "training_curve.png"):
        assert (trained / name).is_file(), name
    assert "task: pendulum" in (trained / "config.yaml").read_text()


def test_export_prints_its_own_line_only_and_info_reads_the_contract_back(exported):
    onnx_path, run = exported
    assert run.stdout.splitlines() == [f"wrote {onnx_path} (robot pendulum, obs 4×1, 1 torque actions)"]
    assert run.stderr == "", "torch's exporter noise reached the user"
    info = last_json(s2r("info", str(onnx_path), "--json"))
    assert info["robot"] == "pendulum" and info["action"]["joint_names"] == ["hinge"]
    assert [t["name"] for t in info["observation"]] == ["joint_pos_sincos", "joint_vel", "last_action"]


def test_a_run_directory_and_its_export_evaluate_alike(trained, exported):
    onnx_path, _ = exported
    results = [last_json(s2r("eval", str(source), "--episodes", "4", "--json")) for source in (onnx_path, trained)]
    for result in results:
        assert result["task"] == "pendulum" and result["episodes"] == 4
    assert results[0]["mean_return"] == pytest.approx(results[1]["mean_return"], rel=1e-3)


def test_the_trained_cartpole_policy_succeeds_in_s2r_eval(cartpole_onnx):
    result = last_json(s2r("eval", str(cartpole_onnx), "--episodes", "16", "--json"))
    assert result["task"] == "cartpole" and result["episodes"] == 16
    assert result["success_rate"] >= 0.9, result


def test_info_piped_into_head_ends_quietly(exported):
    onnx_path, _ = exported
    run = subprocess.run(f"'{sys.executable}' -m s2r.apps.cli info '{onnx_path}' | head -1", shell=True,
                         capture_output=True, text=True, timeout=120)
    assert run.stdout == "{\n" and run.stderr == ""
    # A reader that is gone before the first byte: the write itself fails, every time.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        run = subprocess.run([sys.executable, "-m", "s2r.apps.cli", "info", str(onnx_path)], stdout=write_end,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert run.stderr == "" and run.returncode == 1  # 1: Python's status for a closed pipe


@pytest.mark.parametrize("args, line", [
    (("train", "push_t", "--policy", "diffusion", "--num-envs", "8"),
     "s2r train: --num-envs does not apply to --policy diffusion"),
    (("train", "push_t", "--policy", "diffusion", "--dataset", "data/x", "--backend", "warp"),
     "s2r train: --backend does not apply to --policy diffusion"),
    (("train", "push_t", "--policy", "diffusion", "--iterations", "3"),
     "s2r train: --iterations does not apply to --policy diffusion"),
    (("train", "push_t", "--policy", "diffusion", "--randomize"),
     "s2r train: --randomize does not apply to --policy diffusion"),
    (("train", "cartpole", "--epochs", "3"), "s2r train: --epochs does not apply to --policy ppo"),
    (("bench", "loop", "--backend", "warp"), "s2r bench: --backend does not apply to bench loop"),
    (("bench", "train", "--rate", "100"), "s2r bench: --rate does not apply to bench train"),
])
def test_an_option_the_mode_would_ignore_is_refused_in_one_line(args, line):
    run = s2r(*args, check=False)
    assert run.returncode == 2 and run.stderr.strip() == line and run.stdout == ""


def test_excite_takes_the_robot_spec_from_robot_and_the_sim_robot_from_driver(tmp_path):
    out = tmp_path / "arm.mcap"
    result = last_json(s2r("excite", "--robot", "arm", "--driver", f"sim:{PERTURBED}", "--duration", "1",
                           "--out", str(out), "--json"))
    assert result["robot"] == "arm" and result["driver"] == f"sim:{PERTURBED}" and out.is_file()
    assert result["commands"] == 50 + 51  # the soft start, then the signal at 50 Hz
    assert max(result["excursion"].values()) > 0.05


@pytest.mark.parametrize("args", [("deploy", "policy.onnx"), ("excite", "--robot", "arm", "--out", "x.mcap")])
def test_a_driver_kind_that_is_not_in_the_registry_is_refused_naming_the_kinds(args, tmp_path):
    run = s2r(*args, "--driver", "ethercat:eth0", check=False, cwd=tmp_path)
    assert run.returncode == 2
    assert "argument --driver: unknown kind 'ethercat' in 'ethercat:eth0'" in run.stderr
    assert "kinds: sim, dynamixel" in run.stderr and not list(tmp_path.iterdir())


def test_eval_on_the_wrong_robot_is_refused_naming_the_field(exported):
    onnx_path, _ = exported
    result = s2r("eval", str(onnx_path), "--task", "cartpole", "--json", check=False)
    assert result.returncode == 2 and "robot: policy expects 'pendulum', spec is 'cartpole'" in result.stderr


def test_unknown_task_and_missing_run_are_clear_errors(tmp_path):
    result = s2r("train", "walker", "--iterations", "1", check=False)
    assert result.returncode == 2 and "unknown task 'walker'" in result.stderr
    result = s2r("export", str(tmp_path), "--out", str(tmp_path / "x.onnx"), check=False)
    assert result.returncode == 2 and "no checkpoint.pt" in result.stderr


def test_bench_sim_runs_from_the_source_checkout_and_its_ratios_follow_its_rates(tmp_path):
    result = last_json(s2r("bench", "sim", "--task", "pendulum", "--num-envs", "64", "--json", cwd=tmp_path))
    assert result["task"] == "pendulum" and result["num_envs"] == 64
    rates = {k: result[f"{k}_steps_per_s"] for k in ("s2r", "ceiling", "peer")}
    assert all(math.isfinite(rate) and rate > 0 for rate in rates.values()), rates
    assert result["ratio_vs_ceiling"] == pytest.approx(rates["s2r"] / rates["ceiling"])
    assert result["ratio_vs_peer"] == pytest.approx(rates["s2r"] / rates["peer"])
