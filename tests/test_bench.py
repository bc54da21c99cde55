"""The benchmarks run end to end at tiny sizes and report what they document.

Timings are not asserted: on a shared machine they are notes, and the benchmarks
themselves report ratios measured in one run.
"""

from __future__ import annotations

import json

import bench.report
from bench import gpu_sim, inference, sim, train
from s2r.policies.export import ExportedActor, export_onnx
from s2r.policies.ppo import ActorCritic, ActorCriticConfig
from s2r.sim.env import make_env


def test_sim_benchmark_reports_s2r_ceiling_and_gymnasium_throughput():
    result = sim.run("cartpole", num_envs=8, steps=5, peer_envs=4, peer_steps=3)
    for key in ("s2r_steps_per_s", "ceiling_steps_per_s", "peer_steps_per_s", "ratio_vs_ceiling", "ratio_vs_peer"):
        assert result[key] > 0, key
    assert result["task"] == "cartpole" and result["num_envs"] == 8 and result["machine"]


def test_sim_benchmark_prints_its_json_last_and_writes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench.report, "RESULTS_DIR", tmp_path)
    sim.main(["--task", "pendulum", "--num-envs", "4", "--steps", "3"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads((tmp_path / "sim_pendulum.json").read_text())
    assert printed["s2r_steps_per_s"] > 0


def test_gpu_sim_benchmark_runs_on_warps_cpu_device_and_reports_every_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench.report, "RESULTS_DIR", tmp_path)
    gpu_sim.main(["--tasks", "cartpole", "--num-envs", "4", "8", "--steps", "3", "--cpu-steps", "2"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["num_envs"] for r in printed["sim"]] == [4, 8] and printed["device"] == "cpu"
    for r in printed["sim"]:
        for key in ("warp_env_steps_per_s", "bare_warp_steps_per_s", "cpu_env_steps_per_s", "ratio_vs_bare_warp"):
            assert r[key] > 0, key


def test_inference_benchmark_times_the_runtime_step_and_the_torch_forward_of_one_policy(tmp_path):
    env = make_env("cartpole", num_envs=1)
    obs_dim = env.obs_dims["policy"]
    policy = ActorCritic(ActorCriticConfig(actor_hidden=(16,), critic_hidden=(16,)), num_policy_obs=obs_dim,
                         num_critic_obs=env.obs_dims["critic"], num_actions=env.num_actions)
    path = export_onnx(policy, env.contract(), tmp_path / "tiny.onnx")

    result = inference.run(path, env.spec, actor=ExportedActor(policy), obs_dim=obs_dim, iterations=50)
    for key in ("runtime_step_p50_us", "runtime_step_p99_us", "torch_forward_p50_us", "torch_forward_p99_us",
                "ratio_p50"):
        assert result[key] > 0, key
    assert result["runtime_step_p99_us"] >= result["runtime_step_p50_us"]


def test_train_benchmark_runs_both_trainers_on_the_same_env_configuration():
    result = train.run("cartpole", num_envs=16, max_iterations=2, success_threshold=0.8)
    for key in ("s2r_wall_s", "peer_wall_s", "ratio", "s2r_iterations", "peer_iterations"):
        assert result[key] > 0, key
    assert result["s2r_iterations"] == result["peer_iterations"] == 2  # nothing learns cartpole in 2 iterations
    for key in ("s2r_success_rate", "peer_success_rate"):
        assert result[key] is None or 0.0 <= result[key] <= 1.0, key
    assert not result["s2r_reached"] and not result["peer_reached"]


def test_train_benchmark_stops_each_trainer_once_the_threshold_is_met():
    result = train.run("pendulum", num_envs=16, max_iterations=30, success_threshold=0.0)  # met at the first episode end
    assert result["s2r_reached"] and result["peer_reached"]
    assert result["s2r_iterations"] < 30 and result["peer_iterations"] < 30
    assert result["s2r_success_rate"] is not None and result["peer_success_rate"] is not None


def test_diffusion_benchmark_records_trains_times_and_evaluates_the_three_ways(tmp_path, monkeypatch, capsys):
    from bench import diffusion_latency

    monkeypatch.setattr(bench.report, "RESULTS_DIR", tmp_path)
    diffusion_latency.main(["--demos", "2", "--epochs", "1", "--episodes", "2", "--iterations", "2"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["ratio_full_p50"] > 0 and printed["ratio_warm_p50"] > 0 and printed["short_horizon"] == 2
    for name in ("full", "warm", "short"):
        assert 0.0 <= printed[f"success_rate_{name}"] <= printed[f"reached_rate_{name}"] <= 1.0
    assert printed["train"]["mirrored"] and printed["success_rate_expert"] > 0
