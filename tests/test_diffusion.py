"""Diffusion policies: trained on push_t demonstrations, exported to ONNX, sampled in numpy on the robot side."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from s2r.contract import ContractError
from s2r.dataset import ACTION, ACTION_PLAN, OBS_STATE, DatasetError, DatasetWriter
from s2r.policies.diffusion.config import DiffusionConfig
from s2r.policies.diffusion.export import export_diffusion
from s2r.policies.diffusion.processing import RangeNormalizer
from s2r.policies.diffusion.sampler import NoiseSchedule, ddim_sample
from s2r.policies.diffusion.train import load_diffusion, make_windows, train_diffusion
from s2r.runtime.chunking import ChunkedPolicy
from s2r.runtime.diffusion import DiffusionRuntime
from s2r.runtime.mlp import PolicyRuntime
from s2r.sim.demos import record_demos
from s2r.spec import robot_spec
from s2r.state import RobotState

TINY = DiffusionConfig(hidden_dim=64, num_layers=2, time_embed_dim=32, epochs=10, batch_size=64, torch_threads=1,
                       mirror=False)


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demos") / "push_t"
    record_demos("push_t", expert="scripted", episodes=8, out=out)
    return out


@pytest.fixture(scope="module")
def tiny_run(demos, tmp_path_factory) -> tuple[Path, Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    metrics = train_diffusion(TINY, demos, run, progress=False)
    return run, export_diffusion(run, run / "policy.onnx"), metrics


def _pusher_runtime(path: Path, **kwargs) -> DiffusionRuntime:
    return DiffusionRuntime(path, spec=robot_spec("pusher"), **kwargs)


def test_normalization_maps_the_demonstrations_range_to_minus_one_one_and_back():
    rng = np.random.default_rng(0)
    values = rng.uniform([-0.2, 3.0, 5.0], [0.2, 4.0, 5.0], size=(500, 3))   # the last dimension never moves
    norm = RangeNormalizer.fit(values)
    x = norm.normalize(values)
    assert x[:, :2].min() == pytest.approx(-1.0) and x[:, :2].max() == pytest.approx(1.0)
    assert np.all(x[:, 2] == 0.0)
    assert np.allclose(norm.unnormalize(x), values, atol=1e-12)
    assert np.allclose(RangeNormalizer.from_dict(norm.to_dict()).normalize(values), x)
    torch_x = norm.module()(torch.as_tensor(values, dtype=torch.float32)).numpy()
    assert np.allclose(torch_x, x, atol=1e-5)


def test_a_tiny_training_run_reduces_the_denoising_loss(tiny_run):
    run, _, metrics = tiny_run
    assert metrics["final_loss"] < 0.8 * metrics["first_epoch_loss"]
    assert (run / "diffusion.pt").is_file() and (run / "config.yaml").is_file()


@pytest.mark.parametrize(("denoiser", "prediction"), [("mlp", "epsilon"), ("mlp", "sample"), ("unet", "epsilon")])
def test_onnx_with_numpy_ddim_matches_the_torch_sampler_given_the_same_noise(demos, tmp_path, denoiser, prediction):
    cfg = replace(TINY, denoiser=denoiser, prediction=prediction, unet_dims=(16, 32), epochs=1)
    train_diffusion(cfg, demos, tmp_path, progress=False)
    path = export_diffusion(tmp_path, tmp_path / "policy.onnx")
    model, cfg, _, _ = load_diffusion(tmp_path)
    runtime = _pusher_runtime(path, num_envs=5)
    rng = np.random.default_rng(1)
    obs = rng.normal(0.0, 0.1, (5, 16)).astype(np.float32)
    noise = rng.standard_normal((5, 16, 2)).astype(np.float32)
    schedule = NoiseSchedule(cfg.num_train_timesteps)
    expected = ddim_sample(model, torch.from_numpy(obs), torch.from_numpy(noise), schedule.ddim_timesteps(10), schedule,
                           prediction)
    assert np.abs(runtime.sample(obs, noise) - expected.numpy()).max() < 1e-4


def test_mirrored_training_learns_each_demonstration_window_and_its_mirror_image(demos, tiny_run, tmp_path):
    _, _, plain = tiny_run
    metrics = train_diffusion(replace(TINY, mirror=True, epochs=1), demos, tmp_path, progress=False)
    assert metrics["windows"] == 2 * plain["windows"] and metrics["mirrored"] and not plain["mirrored"]


def test_diffusers_ddim_scheduler_takes_the_same_steps_as_the_s2r_sampler(tiny_run):
    diffusers = pytest.importorskip("diffusers")
    run, _, _ = tiny_run
    model, cfg, _, _ = load_diffusion(run)
    schedule = NoiseSchedule(cfg.num_train_timesteps)
    scheduler = diffusers.DDIMScheduler(**schedule.diffusers_config(cfg.prediction))
    scheduler.set_timesteps(cfg.num_inference_steps)
    assert scheduler.timesteps.tolist() == schedule.ddim_timesteps(cfg.num_inference_steps)
    generator = torch.Generator().manual_seed(0)
    obs, noise = torch.randn(3, 16, generator=generator) * 0.1, torch.randn(3, 16, 2, generator=generator)
    sample = noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            sample = scheduler.step(model(obs, sample, t.expand(3)), t, sample).prev_sample
    expected = ddim_sample(model, obs, noise, schedule.ddim_timesteps(10), schedule, cfg.prediction)
    assert torch.allclose(sample, expected, atol=1e-5)


class _CountingSession:
    """Wraps an onnxruntime session and counts denoiser runs."""

    def __init__(self, session) -> None:
        self.session, self.calls = session, 0

    def run(self, *args, **kwargs):
        self.calls += 1
        return self.session.run(*args, **kwargs)


def test_warm_start_replans_from_the_shifted_chunk_with_only_the_last_denoising_steps(tiny_run):
    _, path, _ = tiny_run
    runtime = _pusher_runtime(path, num_envs=3, warm_start=True, warm_start_steps=3)
    counter = runtime.session = _CountingSession(runtime.session)
    policy = ChunkedPolicy(runtime, synchronous=True)
    state = RobotState(0.0, np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)))
    pose = {"object_pose": np.tile([0.1, 0.1, 0.0, 1.0], (3, 1))}
    first = policy.action(state, pose)
    assert first.shape == (3, 2) and counter.calls == 10          # no chunk yet: full DDIM-10
    for _ in range(7):
        policy.action(state, pose)
    assert counter.calls == 10                                    # 8 actions of one chunk executed
    previous = policy.chunk.copy()
    policy.action(state, pose)
    assert counter.calls == 13                                    # warm start: the last 3 steps only
    assert not np.allclose(policy.chunk, previous)
    policy.reset(np.array([1]))
    for _ in range(8):
        policy.action(state, pose)
    assert counter.calls == 13 + 10 + 3                           # world 1 restarts with full sampling
    chunk = runtime.warm_sample(np.zeros((3, 16), np.float32), policy.chunk)
    assert chunk.shape == (3, 16, 2) and np.all(np.abs(chunk) <= 1.0)


def test_a_warm_start_begins_from_the_previous_chunk_shifted_by_the_executed_actions(tiny_run):
    _, path, _ = tiny_run
    runtime = _pusher_runtime(path, warm_start=True, warm_start_steps=3)
    seen = {}

    def denoise(obs, start, steps):
        seen.update(start=start, steps=steps)
        return start

    runtime.denoise = denoise
    previous = np.linspace(-0.5, 0.5, 32).reshape(1, 16, 2)           # raw actions of the last chunk
    obs = np.full((1, 16), 0.05, np.float32)                           # the pusher at (0.05, 0.05) m, ...
    runtime.warm_sample(obs, previous, noise=np.zeros((1, 16, 2), np.float32))
    assert seen["steps"] == [20, 10, 0]
    shifted = np.concatenate([previous[:, 8:], np.repeat(previous[:, -1:], 8, axis=1)], axis=1)
    assert np.allclose(seen["start"], np.sqrt(runtime.alphas_cumprod[20]) * runtime.normalize(shifted, obs), atol=1e-6)
    # Relative actions: the chunk is expressed from the newest joint positions, 0.05 m = 0.2 raw action.
    assert np.allclose(runtime.reference_action(obs), [[0.2, 0.2]])
    assert np.allclose(runtime.unnormalize(runtime.normalize(previous, obs), obs), previous)


def test_a_diffusion_policy_is_refused_by_the_mlp_runtime_and_run_by_the_diffusion_runtime(tiny_run, tmp_path):
    _, path, _ = tiny_run
    with pytest.raises(ContractError, match="kind 'diffusion'"):
        PolicyRuntime(path, spec=robot_spec("pusher"))
    runtime = _pusher_runtime(path)
    assert runtime.contract.kind == "diffusion" and runtime.contract.history_length == 2
    from s2r.policies.export import export_onnx
    from s2r.policies.ppo import ActorCritic, ActorCriticConfig
    from s2r.sim.env import make_env

    env = make_env("push_t", 1)
    mlp = export_onnx(ActorCritic(ActorCriticConfig(), num_policy_obs=8, num_critic_obs=8, num_actions=2),
                      env.contract({"task": "push_t"}), tmp_path / "mlp.onnx")
    with pytest.raises(ContractError, match="kind 'mlp'"):
        _pusher_runtime(mlp)
    with pytest.raises(ContractError, match="robot"):
        DiffusionRuntime(path, spec=robot_spec("cartpole"))


def test_training_on_a_dataset_whose_action_size_differs_from_the_task_names_the_dataset_and_field(tmp_path):
    root = tmp_path / "three_actions"
    features = {OBS_STATE: {"dtype": "float32", "shape": [8]}, ACTION: {"dtype": "float32", "shape": [3]}}
    with DatasetWriter(root, fps=10, features=features, robot="pusher", task="push_t") as writer:
        for k in range(5):
            writer.add_frame({OBS_STATE: np.zeros(8, np.float32), ACTION: np.zeros(3, np.float32)}, timestamp=0.1 * k)
        writer.end_episode(success=True)
    with pytest.raises(DatasetError, match=r"three_actions.*features\.action\.shape.*\[3\].*\[2\]"):
        train_diffusion(TINY, root, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "diffusion.pt").exists()


def test_windows_take_the_actions_from_t_on_from_the_experts_plan_at_t():
    steps = 6
    actions = np.arange(steps * 2, dtype=np.float32).reshape(steps, 2)
    plans = 100.0 * (1 + np.arange(steps))[:, None, None] + np.arange(5 * 2).reshape(1, 5, 2)   # 5 actions ahead
    episode = {OBS_STATE: np.arange(steps, dtype=np.float32)[:, None], ACTION: actions}
    _, recorded = make_windows([episode], obs_horizon=2, pred_horizon=4)
    _, planned = make_windows([{**episode, ACTION_PLAN: plans.reshape(steps, 10)}], obs_horizon=2, pred_horizon=4)
    assert np.array_equal(recorded[3], actions[[2, 3, 4, 5]])
    assert np.array_equal(planned[3, 0], actions[2])        # the action before t: as recorded
    assert np.array_equal(planned[3, 1:], plans[3, :3])     # from t on: the plan made at t
    assert np.array_equal(planned[0, 0], actions[0])        # clamped to the episode's first action


def test_training_on_plans_shorter_than_the_chunk_names_the_dataset_and_field(tmp_path):
    root = tmp_path / "short_plans"
    features = {OBS_STATE: {"dtype": "float32", "shape": [8]}, ACTION: {"dtype": "float32", "shape": [2]},
                ACTION_PLAN: {"dtype": "float32", "shape": [8]}}
    with DatasetWriter(root, fps=10, features=features, robot="pusher", task="push_t") as writer:
        for k in range(5):
            writer.add_frame({OBS_STATE: np.zeros(8, np.float32), ACTION: np.zeros(2, np.float32),
                              ACTION_PLAN: np.zeros(8, np.float32)}, timestamp=0.1 * k)
        writer.end_episode(success=True)
    with pytest.raises(DatasetError, match=r"short_plans.*features\.action\.plan\.shape.*\[8\].*15 × 2"):
        train_diffusion(TINY, root, tmp_path / "run", progress=False)


def test_a_config_whose_executed_actions_overrun_the_chunk_is_refused():
    with pytest.raises(ValueError, match="action_horizon"):
        DiffusionConfig(pred_horizon=8, action_horizon=8)


def test_s2r_eval_runs_a_diffusion_onnx_file_and_a_run_directory_through_the_numpy_runtime(tiny_run):
    from s2r.policies.evaluate import evaluate

    _, path, _ = tiny_run
    result = evaluate(path, episodes=3)
    assert result["episodes"] == 3 and 0.0 <= result["success_rate"] <= 1.0
    assert 0.0 <= result["mean_final_reward"] <= 1.0                  # push_t's reward: the goal coverage
    # Placed and left there (the task's rule) implies reached at some step (Diffusion Policy's and LeRobot's rule).
    assert result["success_rate"] <= result["reached_rate"] and result["mean_final_reward"] <= result["mean_max_reward"]
    assert result["action_horizon"] == 8
    assert evaluate(path, episodes=2, action_horizon=2)["action_horizon"] == 2
    run, _, _ = tiny_run                                                    # a run directory: exported first
    from_run, from_file = evaluate(run, episodes=2), evaluate(path, episodes=2)
    for key in ("mean_return", "blended_ticks"):
        assert from_run[key] == from_file[key]


def test_chunks_are_planned_every_action_horizon_steps_and_one_past_the_chunk_is_refused(tiny_run):
    _, path, _ = tiny_run
    state = RobotState(0.0, np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)))
    pose = {"object_pose": np.array([[0.1, 0.1, 0.0, 1.0]])}
    for horizon in (8, 3):
        policy = ChunkedPolicy(_pusher_runtime(path, action_horizon=horizon), synchronous=True)
        for _ in range(12):
            policy.step(state, pose)
        assert policy.stats()["chunks_planned"] == -(-12 // horizon)
    with pytest.raises(ValueError, match="action_horizon: 16"):
        _pusher_runtime(path, action_horizon=16)
    with pytest.raises(ValueError, match="blend_steps: expected 0..6"):
        ChunkedPolicy(_pusher_runtime(path), blend_steps=7)               # the robot: a chunk arrives a tick late
    assert ChunkedPolicy(_pusher_runtime(path), blend_steps=7, synchronous=True).blend_steps == 7


@pytest.mark.slow
def test_a_policy_from_100_scripted_demos_succeeds_at_least_80_percent_as_often_as_the_expert(tmp_path):
    # The documented recipe (about 30 min on one CPU core): DART demonstrations with the expert's plans,
    # the default config, the trained action horizon of 8, chunks not cross-faded (as docs/diffusion.md measured).
    from s2r.policies.evaluate import evaluate
    from s2r.sim.demos import evaluate_expert

    record_demos("push_t", expert="scripted", episodes=100, out=tmp_path / "demos", action_noise=0.03,
                 successful_only=True, plan_horizon=16)
    train_diffusion(DiffusionConfig(), tmp_path / "demos", tmp_path / "run", progress=False)
    result = evaluate(export_diffusion(tmp_path / "run", tmp_path / "dp.onnx"), episodes=50, blend_steps=0)
    assert result["success_rate"] >= 0.8 * evaluate_expert("push_t", episodes=50)["success_rate"]
