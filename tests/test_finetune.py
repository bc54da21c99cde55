"""Fine-tuning a behaviour-cloned diffusion policy with RL (DPPO, DSRL): exports that match torch, run on the robot's
runtime and in policy_node, and refuse bad input in one line."""

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from s2r.contract import ContractError, PolicyContract
from s2r.policies.diffusion.config import DiffusionConfig
from s2r.policies.diffusion.dppo import DPPOConfig
from s2r.policies.diffusion.dsrl import DSRLConfig, DSRLPolicy, export_dsrl
from s2r.policies.diffusion.export import export_diffusion_model
from s2r.policies.diffusion.model import FinetunedDiffusionModel
from s2r.policies.diffusion.sampler import NoiseSchedule, ddim_sample
from s2r.policies.diffusion.train import load_diffusion, train_diffusion
from s2r.policies.finetune import STATE, FinetuneConfig, FinetuneError, finetune
from s2r.policies.offpolicy.sac import SACConfig
from s2r.policies.runner import TrainingDivergedError
from s2r.runtime import load_runtime
from s2r.runtime.diffusion import DiffusionRuntime
from s2r.sim.demos import record_demos
from s2r.spec import robot_spec

TINY = DiffusionConfig(hidden_dim=64, num_layers=2, time_embed_dim=32, epochs=8, batch_size=64, mirror=False)
QUICK_DPPO = DPPOConfig(num_steps_per_env=6, critic_warmup_iterations=1, critic_hidden=(32, 32), freeze_base=True)
QUICK_DSRL = DSRLConfig(sac=SACConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), learning_starts=64,
                                      batch_size=64, updates_per_step=1))


def quick(method: str, **overrides) -> FinetuneConfig:
    settings = dict(task="push_t", num_envs=4, control_ticks=400, eval_episodes=0, checkpoint_every_s=0.0,
                    dppo=QUICK_DPPO, dsrl=QUICK_DSRL)
    return FinetuneConfig(method=method, **{**settings, **overrides})


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory) -> Path:
    """A tiny push_t diffusion policy from 4 scripted demonstrations: seconds to make."""
    out = tmp_path_factory.mktemp("finetune")
    record_demos("push_t", expert="scripted", episodes=4, out=out / "demos")
    train_diffusion(TINY, out / "demos", out / "bc", progress=False)
    return out / "bc"


@pytest.fixture(scope="module")
def dppo_run(bc_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dppo") / "run"
    finetune(quick("dppo"), bc_run, out, progress=False)
    return out


@pytest.fixture(scope="module")
def dsrl_run(bc_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dsrl") / "run"
    finetune(quick("dsrl"), bc_run, out, progress=False)
    return out


def _windows(n: int, seed: int = 0) -> np.ndarray:
    """Observation windows (n, 2 × 8) of pushers and blocks on the table."""
    rng = np.random.default_rng(seed)
    frame = np.column_stack([rng.uniform(-0.2, 0.2, (n, 2)), rng.normal(0, 0.05, (n, 2)),
                             rng.uniform(-0.15, 0.15, (n, 2)), rng.uniform(-1, 1, (n, 2))])
    return np.concatenate([frame, frame], axis=-1).astype(np.float32)


def test_fine_tuning_starts_where_behaviour_cloning_is_the_chunk_env_plays_the_bc_policy_as_s2r_eval(dppo_run):
    """Iteration 0 of a fine-tuning is the BC policy as `s2r eval` measures it: the chunk env, its chunks
    sampled by the BC runtime with eval's seed, gives the same episodes (return and success, world by world)."""
    from s2r.policies.diffusion.chunk_env import ChunkEnv
    from s2r.policies.evaluate import evaluate
    from s2r.policies.finetune import BC_POLICY
    from s2r.sim.env import make_env

    bc = dppo_run / BC_POLICY                                   # the BC run as the fine-tuning exported it
    expected = evaluate(bc, episodes=4, seed=1, blend_steps=0)
    env = make_env("push_t", 4, seed=1)
    chunk_env = ChunkEnv(env, DiffusionRuntime(bc, spec=env.spec, num_envs=4, seed=1), reward="success")
    chunk_env.reset()
    held, ended = torch.zeros(4), torch.zeros(4, dtype=torch.bool)
    while not ended.all():
        _, reward, ended, _, info = chunk_env.step(torch.from_numpy(chunk_env.runtime.sample(chunk_env.window)))
        held += reward
    chunk_env.close()
    assert ended.all() and chunk_env.control_ticks == 4 * 300
    assert info["episode"]["return"].mean().item() == pytest.approx(expected["mean_return"], abs=1e-4)
    assert info["episode"]["success"].mean().item() == expected["success_rate"]
    assert (held <= 300 / 8 + 1e-6).all() and (held[info["episode"]["success"] > 0] > 0).all()


def test_a_dppo_fine_tuned_policy_exports_to_the_same_kind_and_the_runtime_matches_torch_within_1e_5(bc_run, dppo_run):
    model, cfg, contract, _ = load_diffusion(dppo_run)
    bc_model = load_diffusion(bc_run)[0]
    assert contract.kind == "diffusion" and contract.initial_noise == "gaussian"
    assert contract.provenance["trainer"] == "s2r.dppo" and contract.provenance["control_ticks"] >= 400
    # freeze_base: the last K = 3 DDIM steps (timesteps 20, 10, 0) run the fine-tuned network, those before BC's.
    assert isinstance(model, FinetunedDiffusionModel) and model.finetuned_timestep == 20
    bc_weights = bc_model.state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(model.base.state_dict().values(), bc_weights))
    assert any(not torch.equal(a, b) for a, b in zip(model.finetuned.state_dict().values(), bc_weights))
    runtime = DiffusionRuntime(dppo_run / "policy.onnx", spec=robot_spec("pusher"), num_envs=5)
    obs = _windows(5)
    noise = np.random.default_rng(1).standard_normal((5, cfg.pred_horizon, 2)).astype(np.float32)
    timesteps = NoiseSchedule(cfg.num_train_timesteps).ddim_timesteps(cfg.num_inference_steps)
    torch_chunk = ddim_sample(model, torch.from_numpy(obs), torch.from_numpy(noise), timesteps,
                              prediction=cfg.prediction).numpy()
    assert np.abs(runtime.sample(obs, noise) - torch_chunk).max() < 1e-5
    metrics = (dppo_run / "metrics.json").read_text()
    assert '"control_ticks"' in metrics and '"cpu_s"' in metrics


def test_a_dsrl_policy_is_one_onnx_file_whose_noise_policy_starts_the_robots_sampler(dsrl_run, bc_run):
    path = dsrl_run / "policy.onnx"
    runtime = load_runtime(path, robot_spec("pusher"), num_envs=5, synchronous=True, blend_steps=0)
    sampler = runtime.runtime
    assert sampler.contract.initial_noise == "policy" and sampler.noise_policy
    model, cfg, _, _ = load_diffusion(bc_run)                     # the denoiser is the frozen BC one
    obs = _windows(5)
    noise = sampler.policy_noise(obs)
    assert noise.shape == (5, cfg.pred_horizon, 2) and np.abs(noise).max() <= QUICK_DSRL.noise_scale
    timesteps = NoiseSchedule(cfg.num_train_timesteps).ddim_timesteps(cfg.num_inference_steps)
    torch_chunk = ddim_sample(model, torch.from_numpy(obs), torch.from_numpy(noise), timesteps,
                              prediction=cfg.prediction).numpy()
    chunk = sampler.sample(obs)                                    # the noise comes from the graph
    assert np.abs(chunk - torch_chunk).max() < 1e-5
    assert np.array_equal(chunk, sampler.sample(obs))            # deterministic: the noise policy's mean
    with pytest.raises(ValueError, match="warm_start: a DSRL policy"):
        DiffusionRuntime(path, spec=robot_spec("pusher"), warm_start=True)


def test_the_dsrl_noise_policy_matches_torch_within_1e_5(dsrl_run, bc_run):
    from s2r.policies.offpolicy.runner import OffPolicyRunner
    from s2r.policies.finetune import BC_POLICY
    from s2r.policies.diffusion.chunk_env import ChunkEnv
    from s2r.policies.diffusion.dsrl import NoiseEnv
    from s2r.sim.env import make_env

    env = make_env("push_t", 2)
    noise_env = NoiseEnv(ChunkEnv(env, DiffusionRuntime(dsrl_run / BC_POLICY, spec=env.spec, num_envs=2)),
                         noise_scale=QUICK_DSRL.noise_scale)
    runner = OffPolicyRunner(noise_env, algo=QUICK_DSRL.sac, log_dir=None, seed=0, progress=False)
    runner.load(dsrl_run / STATE)
    model, cfg, _, _ = load_diffusion(bc_run)
    composite = DSRLPolicy(model, runner.agent, pred_horizon=cfg.pred_horizon, noise_scale=QUICK_DSRL.noise_scale)
    obs = _windows(6, seed=3)
    with torch.no_grad():
        expected = composite.eval()(torch.from_numpy(obs), torch.zeros(6, 16, 2), torch.zeros(6, dtype=torch.int64))[1]
    sampler = DiffusionRuntime(dsrl_run / "policy.onnx", spec=robot_spec("pusher"), num_envs=6)
    assert np.abs(sampler.policy_noise(obs) - expected.numpy()).max() < 1e-5
    noise_env.close()


def test_a_noise_policy_whose_output_differs_from_the_denoisers_noise_is_refused_at_export_and_at_load(
        dsrl_run, bc_run, tmp_path):
    from s2r.policies.offpolicy.networks import OffPolicyAgent, SquashedGaussianActor

    model, cfg, contract, action_norm = load_diffusion(bc_run)
    agent = OffPolicyAgent(SquashedGaussianActor(16, (8,), 16), num_policy_obs=16, num_critic_obs=9,
                           num_actions=16, critic_hidden=(8,))
    with pytest.raises(ValueError, match="noise policy outputs 16 values, the denoiser's noise has pred_horizon 16 "
                                         "× 2 actions = 32"):
        export_dsrl(model, cfg, contract, action_norm, agent, noise_scale=1.5, path=tmp_path / "bad.onnx")
    # The same mistake written without the check: the file is refused at load, naming the tensor.
    short = DSRLPolicy(model, agent, pred_horizon=8, noise_scale=1.5)
    bad = export_diffusion_model(short, cfg, replace(contract, initial_noise="policy"), action_norm,
                                 tmp_path / "bad.onnx")
    with pytest.raises(ContractError, match=r"graph output 'noise': shape \[batch, 8, 2\], the contract expects "
                                            r"\[batch, 16, 2\]"):
        load_runtime(bad, robot_spec("pusher"))


def test_a_contract_without_a_noise_policy_reads_and_writes_as_before(bc_run):
    contract = load_diffusion(bc_run)[2]
    data = contract.to_dict()
    assert contract.initial_noise == "gaussian" and "initial_noise" not in data
    assert PolicyContract.from_dict(data) == contract
    assert PolicyContract.from_dict(replace(contract, initial_noise="policy").to_dict()).initial_noise == "policy"
    with pytest.raises(ContractError, match="initial_noise: 'uniform'"):
        PolicyContract.from_dict({**data, "initial_noise": "uniform"})


def test_s2r_finetune_refuses_a_run_that_is_not_a_diffusion_policy_or_of_another_task_in_one_line(
        bc_run, tmp_path, capsys):
    from s2r.apps.cli import main

    (tmp_path / "ppo").mkdir()
    (tmp_path / "ppo" / "checkpoint.pt").write_bytes(b"")
    for argv, message in (
            (["push_t", "--method", "dppo", "--from", str(tmp_path / "ppo")],
             "not a diffusion policy run (no diffusion.pt; it holds checkpoint.pt)"),
            (["reach", "--method", "dsrl", "--from", str(bc_run)],
             "task: the policy was trained for 'push_t', asked to fine-tune 'reach'")):
        assert main(["finetune", *argv, "--out", str(tmp_path / "out")]) == 2
        stderr = capsys.readouterr().err
        assert stderr.startswith("s2r finetune: error: ") and stderr.count("\n") == 1, stderr
        assert message in stderr
    assert not (tmp_path / "out").exists()


def test_fine_tuning_that_turns_non_finite_stops_with_the_iteration_and_the_worlds(bc_run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    checkpoint = torch.load(bc_run / "diffusion.pt", weights_only=True)
    name = next(k for k in checkpoint["model"] if k.endswith("out.2.bias"))
    checkpoint["model"][name] = torch.full_like(checkpoint["model"][name], float("nan"))
    torch.save(checkpoint, broken / "diffusion.pt")
    with pytest.raises(TrainingDivergedError, match=r"non-finite action chunk at iteration 0: env ids \[0, 1, 2, 3\]"):
        finetune(quick("dppo"), broken, tmp_path / "out", progress=False)


def test_a_fine_tuning_resumes_from_its_checkpoint_and_refuses_another_methods(bc_run, dppo_run, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(dppo_run, out)                              # a finished 400-tick run, continued to 800
    first = json.loads((dppo_run / "metrics.json").read_text())
    resumed = finetune(quick("dppo", control_ticks=800), bc_run, out, resume=True, progress=False)
    assert resumed["control_ticks"] >= 800 > first["control_ticks"] >= 400
    assert resumed["iterations"] > first["iterations"]
    with pytest.raises(FinetuneError, match="method: the checkpoint is 'dppo', asked for 'dsrl'"):
        finetune(quick("dsrl"), bc_run, out, resume=True, progress=False)


def test_the_dsrl_composite_drives_the_pusher_from_policy_node_through_real_rclpy(dsrl_run, monkeypatch, tmp_path):
    pytest.importorskip("rclpy")
    from geometry_msgs.msg import PoseStamped
    from test_ros_nodes import FAST, Client, Node, summary

    from s2r.ros import environment
    from s2r.ros.qos import COMMAND_QOS

    settings = environment()
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    env, client = dict(os.environ), Client(int(settings["ROS_DOMAIN_ID"]))
    poses = client.node.create_publisher(PoseStamped, "object_pose", COMMAND_QOS)
    block = PoseStamped()
    block.pose.position.x, block.pose.position.y, block.pose.orientation.w = 0.1, 0.1, 1.0
    robot = Node("robot_node", {"robot": "pusher", "summary_path": tmp_path / "robot.json", **FAST}, env,
                 tmp_path / "robot.log")
    policy = Node("policy_node", {"policy": dsrl_run / "policy.onnx", "summary_path": tmp_path / "policy.json",
                                  "blend_steps": 3, "realtime_priority": 0}, env, tmp_path / "policy.log")

    def tracking(predicate):  # a tracker publishing the block's pose
        poses.publish(block)
        return predicate()

    try:
        client.wait_for(lambda: tracking(lambda: client.mode() == "running"), timeout=60,
                        what="the DSRL policy to take over")
        applied = int(client.robot_status["commands_applied"])
        client.wait_for(lambda: tracking(lambda: int(client.robot_status["commands_applied"]) >= applied + 24),
                        what="three more chunks of commands")
    finally:
        assert robot.stop() == 0, robot.output()
        assert policy.stop() == 0, policy.output()
        client.close()
    result = summary(tmp_path / "policy.json")
    assert result["chunks_planned"] >= 4 and result["chunk_switches"] >= 3, result
    assert result["commands_published"] >= 24
    assert "→ damping" not in robot.output()


def test_the_reach_scripted_expert_places_the_end_effector_on_every_target():
    from s2r.sim.demos import evaluate_expert

    assert evaluate_expert("reach", episodes=20, num_envs=20)["success_rate"] == 1.0
