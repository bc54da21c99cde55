"""The benchmarks run end to end at tiny sizes and report exactly what they document.

Each result is checked against its schema below: every documented key and no other, each of
its type, the whole of it valid JSON (no NaN), and every ratio finite and positive. Timings
are not asserted: on a shared machine they are notes, and the benchmarks report ratios
measured in one run. What the benchmarks find (a threshold reached, parameters recovered) is.
"""

from __future__ import annotations

import json
import math
from types import ModuleType, UnionType
from typing import Any, get_args, get_origin

import pytest

import bench.report
from bench import deploy, gpu_sim, inference, loop, sim, sysid_cma, train

SIM = {
    "task": str, "num_envs": int, "steps": int, "decimation": int, "peer_envs": int, "peer_steps": int,
    "s2r_steps_per_s": float, "ceiling_steps_per_s": float, "peer_steps_per_s": float,
    "ratio_vs_ceiling": float, "ratio_vs_peer": float, "machine": str,
}
GPU_SIM_RUN = {
    "task": str, "num_envs": int, "steps": int, "cpu_steps": int, "decimation": int, "device": str, "gpu": str | None,
    "warp_env_steps_per_s": float, "bare_warp_steps_per_s": float, "cpu_env_steps_per_s": float,
    "ratio_vs_bare_warp": float, "ratio_vs_cpu": float, "machine": str,
}
GPU_SIM = {"sim": [GPU_SIM_RUN], "device": str, "gpu": str | None, "machine": str}
GPU_PPO = {"task": str, "num_envs": int, "success_threshold": float, "wall_s": float, "iterations": int,
           "success_rate": float | None, "reached": bool}
INFERENCE = {
    "task": str, "robot": str, "iterations": int, "runtime_step_p50_us": float, "runtime_step_p99_us": float,
    "torch_forward_p50_us": float, "torch_forward_p99_us": float, "ratio_p50": float, "machine": str,
}
TRAIN = {
    "task": str, "num_envs": int, "seed": int, "success_threshold": float, "torch_threads": int,
    "max_iterations": int, "s2r_wall_s": float, "peer_wall_s": float, "ratio": float,
    "s2r_iterations": int, "peer_iterations": int, "s2r_success_rate": float | None,
    "peer_success_rate": float | None, "s2r_reached": bool, "peer_reached": bool,
    "s2r_s_per_iteration": float, "peer_s_per_iteration": float, "machine": str,
}
DIFFUSION_TRAIN = {"task": str, "denoiser": str, "windows": int, "mirrored": bool, "gradient_steps": int,
                   "first_epoch_loss": float, "final_loss": float, "wall_s": float}
DIFFUSION = {
    "iterations": int, "denoiser": str, "ddim_steps": int, "warm_start_steps": int,
    **{f"{side}_{mode}_{q}_ms": float for side in ("s2r", "diffusers") for mode in ("full", "warm") for q in ("p50", "p99")},
    "ratio_full_p50": float, "ratio_warm_p50": float, "s2r_warm_over_full_p50": float,
    "task": str, "episodes": int, "short_horizon": int, "blend_steps": int, "success_rate_expert": float,
    "mean_coverage_expert": float,
    "train": DIFFUSION_TRAIN, "machine": str,
    **{f"{key}_{mode}": float for key in ("success_rate", "reached_rate", "mean_coverage")
       for mode in ("full", "warm", "short")},
}
LOOP_RATE = {
    "rate_hz": float, "ticks_each": int, "work_us": float, "rt_priority": int,
    **{f"{side}_period_{q}_error_us": float for side in ("s2r", "rclpy_timer") for q in ("p50", "p99", "max")},
    "ratio": float | None, "machine": str,
}
LOOP = {"rates": [LOOP_RATE], "machine": str}
DEPLOY_RUN = {
    "mode": str, "cpu_hog": bool, "load_before": float, "rt_priority": int,
    **{key: float | None for key in deploy.FIGURES + deploy.REHEARSAL + deploy.TRACE_FIGURES},
}
DEPLOY = {
    "policy": str, "driver": str, "duration_s": float, "runs": [DEPLOY_RUN], "synchronous_upright_fraction": float,
    **{f"{kind}_inference_{q}_us": float for kind in ("tight", "paced", "rehearsed") for q in ("p50", "p99")},
    "node_over_tight_inference_p99": float, "node_over_paced_inference_p99": float,
    "one_process_p99_under_1ms": bool, "one_process_stale_ticks": float, "machine": str,
}
SYSID_CMA = {
    "benchmark": str, "machine": str, "robot": str, "recording_s": float, "kinds": list[str], "parameters": int,
    "rmse_initial": float, "s2r_wall_s": float, "s2r_max_rel_error": float, "s2r_rmse": float,
    "cma_wall_s": float, "cma_max_rel_error": float, "cma_rmse": float, "cma_evaluations": int,
    "cma_within_10pct_s": float | None, "cma_stop": dict[str, str],
    "ratio_wall_cma_over_s2r": float, "ratio_error_cma_over_s2r": float,
    "s2r_params": dict[str, float], "cma_params": dict[str, float], "truth": dict[str, float],
}


def is_ratio(key: str) -> bool:
    return key.startswith("ratio") or "_over_" in key


def matches(value: Any, kind: Any) -> bool:
    """Whether a JSON value is of `kind`: a type, `X | None`, `list[X]` or `dict[str, X]` (an int is a float too)."""
    origin, args = get_origin(kind), get_args(kind)
    if origin is UnionType:
        return any(matches(value, k) for k in args)
    if origin is list:
        return isinstance(value, list) and all(matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
    if kind is type(None):
        return value is None
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def assert_conforms(value: Any, schema: Any, where: str) -> None:
    """`value` has exactly the keys of `schema` (a dict; [dict]: a non-empty list of them), each of its kind."""
    if isinstance(schema, list):
        assert isinstance(value, list) and value, f"{where}: expected a non-empty list, got {value!r}"
        for i, item in enumerate(value):
            assert_conforms(item, schema[0], f"{where}[{i}]")
        return
    if not isinstance(schema, dict):
        assert matches(value, schema), f"{where}: expected {schema}, got {value!r}"
        return
    assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
    missing, extra = sorted(set(schema) - set(value)), sorted(set(value) - set(schema))
    assert not missing and not extra, f"{where}: missing {missing}, not documented {extra}"
    for key, kind in schema.items():
        assert_conforms(value[key], kind, f"{where}.{key}")
        if is_ratio(key) and value[key] is not None:
            assert math.isfinite(value[key]) and value[key] > 0, f"{where}.{key} = {value[key]}: not a finite ratio > 0"


def assert_reports(result: dict[str, Any], schema: dict[str, Any], name: str) -> dict[str, Any]:
    """`result` as JSON (NaN and infinity refused), checked against `schema`; returns the parsed JSON."""
    data = json.loads(json.dumps(result, allow_nan=False))
    assert_conforms(data, schema, name)
    return data


@pytest.fixture
def run_main(tmp_path, monkeypatch, capfd):
    """Runs a benchmark's `main(args)`; returns its JSON, checked to be the last stdout line and the file it wrote."""
    monkeypatch.setattr(bench.report, "RESULTS_DIR", tmp_path)

    def run(module: ModuleType, args: list[str], file_name: str) -> dict[str, Any]:
        module.main(args)
        printed = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
        assert printed == json.loads((tmp_path / file_name).read_text())
        return printed

    return run


def test_the_sim_benchmark_reports_s2r_the_ceiling_and_gymnasium_on_the_same_worlds(run_main):
    result = run_main(sim, ["--task", "pendulum", "--num-envs", "8", "--steps", "5"], "sim_pendulum.json")
    assert_reports(result, SIM, "sim")
    assert (result["task"], result["num_envs"], result["steps"]) == ("pendulum", 8, 5)
    assert (result["peer_envs"], result["peer_steps"]) == (8, 5)  # fewer than the peer's caps: the same sizes
    assert result["ratio_vs_ceiling"] == pytest.approx(result["s2r_steps_per_s"] / result["ceiling_steps_per_s"])
    assert result["ratio_vs_peer"] == pytest.approx(result["s2r_steps_per_s"] / result["peer_steps_per_s"])


def test_the_gpu_sim_benchmark_runs_on_warps_cpu_device_and_reports_every_size(run_main):
    result = run_main(gpu_sim, ["--tasks", "cartpole", "--num-envs", "4", "8", "--steps", "3", "--cpu-steps", "2"],
                      "gpu_sim.json")
    assert_reports(result, GPU_SIM, "gpu_sim")
    assert [r["num_envs"] for r in result["sim"]] == [4, 8] and result["device"] == "cpu" and result["gpu"] is None
    for r in result["sim"]:
        assert r["ratio_vs_bare_warp"] == pytest.approx(r["warp_env_steps_per_s"] / r["bare_warp_steps_per_s"])


def test_ppo_on_warp_reports_no_success_rate_before_any_episode_ended():
    result = assert_reports(gpu_sim.ppo_to_threshold("cartpole", num_envs=4, max_iterations=1), GPU_PPO, "gpu_sim.ppo")
    assert result["iterations"] == 1 and not result["reached"]
    assert result["success_rate"] is None  # 24 steps end no cartpole episode; JSON has no NaN


def test_the_inference_benchmark_times_the_runtime_step_against_the_torch_forward(run_main):
    result = run_main(inference, ["--task", "cartpole", "--iterations", "50"], "inference_cartpole.json")
    assert_reports(result, INFERENCE, "inference")
    assert (result["robot"], result["iterations"]) == ("cartpole", 50)
    assert result["runtime_step_p99_us"] >= result["runtime_step_p50_us"]
    assert result["torch_forward_p99_us"] >= result["torch_forward_p50_us"]
    assert result["ratio_p50"] == pytest.approx(result["runtime_step_p50_us"] / result["torch_forward_p50_us"])


def test_the_train_benchmark_runs_both_trainers_for_the_same_iterations_when_neither_reaches():
    result = assert_reports(train.run("cartpole", num_envs=16, max_iterations=2, success_threshold=0.8), TRAIN, "train")
    assert result["s2r_iterations"] == result["peer_iterations"] == 2  # nothing learns cartpole in 2 iterations
    assert not result["s2r_reached"] and not result["peer_reached"]
    assert result["ratio"] == pytest.approx(result["peer_wall_s"] / result["s2r_wall_s"])
    assert result["s2r_s_per_iteration"] == pytest.approx(result["s2r_wall_s"] / 2)


def test_the_train_benchmark_stops_each_trainer_once_the_threshold_is_met():
    result = train.run("pendulum", num_envs=16, max_iterations=30, success_threshold=0.0)  # met at the first episode end
    assert_reports(result, TRAIN, "train")
    assert result["s2r_reached"] and result["peer_reached"]
    assert result["s2r_iterations"] < 30 and result["peer_iterations"] < 30
    assert result["s2r_success_rate"] is not None and result["peer_success_rate"] is not None


def test_the_loop_benchmark_reports_both_loops_period_errors_at_every_rate(run_main):
    result = run_main(loop, ["--rate", "1000", "--seconds", "0.1", "--rt-priority", "0"],
                      "loop_normal_scheduling.json")
    assert_reports(result, LOOP, "loop")
    (r,) = result["rates"]
    assert (r["rate_hz"], r["ticks_each"], r["rt_priority"]) == (1000.0, 1000, 0)  # 1000 ticks at least, 5 rounds
    for side in ("s2r", "rclpy_timer"):
        assert r[f"{side}_period_p50_error_us"] <= r[f"{side}_period_p99_error_us"] <= r[f"{side}_period_max_error_us"]
    assert r["ratio"] == pytest.approx(r["s2r_period_p99_error_us"] / r["rclpy_timer_period_p99_error_us"])


@pytest.mark.slow
def test_the_deploy_benchmark_runs_both_modes_idle_and_under_its_hog_and_keeps_the_pole_as_the_reference(
        run_main, cartpole_onnx):
    result = run_main(deploy, [str(cartpole_onnx), "--duration", "3"], "deploy.json")
    assert_reports(result, DEPLOY, "deploy")
    assert [(r["mode"], r["cpu_hog"]) for r in result["runs"]] == [
        ("one-process", False), ("one-process", True), ("split", False), ("split", True)]
    for r in result["runs"]:
        assert r["state_to_command_p50_us"] <= r["state_to_command_p99_us"] <= r["state_to_command_max_us"]
        assert abs(r["upright_fraction"] - result["synchronous_upright_fraction"]) <= 0.05, r


def test_the_sysid_benchmark_recovers_the_perturbed_arm_by_least_squares(run_main):
    result = run_main(sysid_cma, ["--duration", "2", "--max-evals", "60"], "sysid_cma.json")
    assert_reports(result, SYSID_CMA, "sysid_cma")
    assert set(result["s2r_params"]) == set(result["cma_params"]) == set(result["truth"])
    assert result["parameters"] == len(result["truth"]) == 16
    assert result["s2r_max_rel_error"] < 0.01 and result["s2r_rmse"] < 1e-3 * result["rmse_initial"]
    assert result["cma_evaluations"] >= 60 and result["cma_stop"] == {"maxfevals": "60"}  # CMA-ES spent its budget


def test_the_diffusion_benchmark_records_trains_times_and_evaluates_the_three_ways(run_main):
    from bench import diffusion_latency

    result = run_main(diffusion_latency, ["--demos", "2", "--epochs", "1", "--episodes", "2", "--iterations", "2"],
                      "diffusion_latency_push_t.json")
    assert_reports(result, DIFFUSION, "diffusion_latency")
    assert (result["episodes"], result["short_horizon"], result["iterations"], result["blend_steps"]) == (2, 2, 2, 0)
    for name in ("full", "warm", "short"):
        assert 0.0 <= result[f"success_rate_{name}"] <= result[f"reached_rate_{name}"] <= 1.0
    assert result["train"]["mirrored"] and result["train"]["gradient_steps"] > 0
    assert result["success_rate_expert"] == 1.0  # the scripted expert places the T in both episodes


def test_a_benchmark_result_holding_nan_is_refused_rather_than_written_as_invalid_json(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.report, "RESULTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="bench broken: the result holds NaN or infinity"):
        bench.report.report("broken", "a broken benchmark", [], {"ratio": float("nan")})
    assert not (tmp_path / "broken.json").exists()
