"""The robot-side runtimes as the loops that drive them meet them: one `load_runtime`, one `Runtime` protocol,
and diffusion chunks executed by the same `ChunkedPolicy` on the robot (planner thread) and in `s2r eval`."""

import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from s2r.contract import METADATA_KEY, ContractError
from s2r.policies.diffusion.config import DiffusionConfig
from s2r.policies.diffusion.export import export_diffusion
from s2r.policies.diffusion.train import train_diffusion
from s2r.policies.evaluate import evaluate
from s2r.policies.export import export_onnx
from s2r.policies.ppo import ActorCritic, ActorCriticConfig
from s2r.runtime import Runtime, load_runtime, read_contract
from s2r.runtime.chunking import ChunkedPolicy
from s2r.runtime.diffusion import DiffusionRuntime
from s2r.runtime.mlp import PolicyRuntime
from s2r.sim.demos import record_demos
from s2r.sim.env import make_env
from s2r.spec import robot_spec
from s2r.state import RobotState

TINY = DiffusionConfig(hidden_dim=64, num_layers=2, time_embed_dim=32, epochs=3, batch_size=64, torch_threads=1,
                       mirror=False)
POSE = {"object_pose": np.array([0.1, 0.1, 0.0, 1.0])}


@pytest.fixture(scope="module")
def diffusion_onnx(tmp_path_factory) -> Path:
    """A tiny push_t diffusion policy (MLP denoiser, 3 epochs on 4 scripted demos), exported: seconds to make."""
    out = tmp_path_factory.mktemp("diffusion")
    record_demos("push_t", expert="scripted", episodes=4, out=out / "demos")
    train_diffusion(TINY, out / "demos", out / "run", progress=False)
    return export_diffusion(out / "run", out / "push_t.onnx")


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory) -> Path:
    """An untrained pendulum mlp policy, exported."""
    env = make_env("pendulum", 1)
    policy = ActorCritic(ActorCriticConfig(), num_policy_obs=env.obs_dims["policy"],
                         num_critic_obs=env.obs_dims["critic"], num_actions=env.num_actions).eval()
    return export_onnx(policy, env.contract({"task": "pendulum"}), tmp_path_factory.mktemp("mlp") / "pendulum.onnx")


@pytest.fixture(scope="module")
def foo_onnx(mlp_onnx, tmp_path_factory) -> Path:
    """The pendulum policy with its contract's kind rewritten to 'foo'."""
    model = onnx.load(str(mlp_onnx))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    entry.value = replace(read_contract(mlp_onnx), kind="foo").to_json()
    path = tmp_path_factory.mktemp("foo") / "policy.onnx"
    onnx.save(model, str(path))
    return path


def _pusher_state(k: int) -> RobotState:
    """The pusher at a position that moves with tick k, so that each tick's observation differs."""
    return RobotState(0.01 * k, np.array([0.05 + 0.002 * k, -0.02]), np.zeros(2), np.zeros(2))


# --- load_runtime -----------------------------------------------------------------------------
def test_load_runtime_runs_an_mlp_file_in_the_policy_runtime_and_a_diffusion_file_in_chunks(mlp_onnx, diffusion_onnx):
    mlp = load_runtime(mlp_onnx, robot_spec("pendulum"))
    assert isinstance(mlp, PolicyRuntime) and isinstance(mlp, Runtime)
    command = mlp.step(RobotState(0.0, np.zeros(1), np.zeros(1), np.zeros(1)))
    assert command.q.shape == (1,)
    robot = load_runtime(diffusion_onnx, robot_spec("pusher"), warm_start=True, blend_steps=2)
    try:
        assert isinstance(robot, ChunkedPolicy) and isinstance(robot, Runtime)
        assert not robot.synchronous and robot.runtime.warm_start and robot.blend_steps == 2
    finally:
        robot.close()
    worlds = load_runtime(diffusion_onnx, robot_spec("pusher"), num_envs=5, synchronous=True)
    states = RobotState(0.0, np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((5, 2)))
    assert worlds.action(states, {"object_pose": np.tile(POSE["object_pose"], (5, 1))}).shape == (5, 2)


@pytest.fixture(scope="module")
def history_onnx(tmp_path_factory) -> Path:
    """An untrained pendulum mlp policy on the last 3 observations (its last action among them), exported."""
    env = make_env("pendulum", 1)
    contract = replace(env.contract({"task": "pendulum"}), history_length=3)
    policy = ActorCritic(ActorCriticConfig(), num_policy_obs=3 * env.obs_dims["policy"],
                         num_critic_obs=env.obs_dims["critic"], num_actions=env.num_actions).eval()
    return export_onnx(policy, contract, tmp_path_factory.mktemp("history") / "pendulum.onnx")


def _swinging(k: int) -> RobotState:
    """The pendulum at an angle and rate that change with tick k."""
    return RobotState(0.02 * k, np.array([0.3 * np.sin(k)]), np.array([np.cos(k)]), np.zeros(1))


def test_a_rehearsal_changes_nothing_the_policy_remembers_or_commands(history_onnx):
    spec = robot_spec("pendulum")
    plain, rehearsed = load_runtime(history_onnx, spec), load_runtime(history_onnx, spec)
    assert rehearsed.contract.history_length == 3
    for k in range(12):
        before = rehearsed.history.buffer.copy(), rehearsed.history.fresh.copy(), rehearsed.last_action.copy()
        rehearsed.rehearse(_swinging(k - 1 + 5 * (k % 2)))   # the previous state, or one the robot never was in
        after = rehearsed.history.buffer, rehearsed.history.fresh, rehearsed.last_action
        assert all(np.array_equal(a, b) for a, b in zip(before, after)), f"tick {k}: the rehearsal left a trace"
        expected, command = plain.step(_swinging(k)), rehearsed.step(_swinging(k))
        for key in ("q", "dq", "kp", "kd", "tau_ff"):
            assert np.array_equal(getattr(command, key), getattr(expected, key)), f"tick {k}: {key}"
    assert not np.array_equal(plain.history.buffer[0, 0], plain.history.buffer[0, -1]), "the history moved on"


def test_a_rehearsal_of_a_diffusion_policy_leaves_its_chunks_as_they_were(diffusion_onnx):
    policy = load_runtime(diffusion_onnx, robot_spec("pusher"), synchronous=True)
    policy.step(_pusher_state(0), POSE)
    kept = policy.ticks.copy(), policy.chunk.copy(), dict(policy.counters), policy.runtime.last_action.copy()
    policy.rehearse(_pusher_state(1), POSE)
    assert policy.ticks.tolist() == kept[0].tolist() and np.array_equal(policy.chunk, kept[1])
    assert policy.counters == kept[2] and np.array_equal(policy.runtime.last_action, kept[3])


def test_a_policy_of_an_unknown_kind_is_refused_naming_the_file_and_the_field(foo_onnx):
    with pytest.raises(ContractError, match=r"policy\.onnx: contract\.kind: 'foo' \(expected mlp or diffusion\)"):
        load_runtime(foo_onnx, robot_spec("pendulum"))


def test_diffusion_options_are_refused_for_an_mlp_policy_unless_a_node_sets_them_for_every_kind(mlp_onnx):
    with pytest.raises(ValueError, match="blend_steps: options of diffusion policies; this one is an mlp"):
        load_runtime(mlp_onnx, robot_spec("pendulum"), blend_steps=0)
    assert isinstance(load_runtime(mlp_onnx, robot_spec("pendulum"), blend_steps=0, refuse_unused=False),
                      PolicyRuntime)
    with pytest.raises(TypeError, match="unknown option 'blend_step'"):
        load_runtime(mlp_onnx, robot_spec("pendulum"), blend_step=0)


def test_s2r_eval_and_policy_node_refuse_an_unknown_kind_in_the_same_words(foo_onnx, tmp_path):
    # One dispatch: the evaluation and the robot's node both load the file through load_runtime.
    rclpy = pytest.importorskip("rclpy")  # noqa: F841
    from s2r.ros import environment

    expected = f"{foo_onnx}: contract.kind: 'foo' (expected mlp or diffusion)"
    with pytest.raises(ContractError) as refused:
        evaluate(foo_onnx, episodes=1)
    assert str(refused.value) == expected
    node = subprocess.run([sys.executable, "-m", "s2r.ros.policy_node", "--ros-args", "-p", f"policy:={foo_onnx}",
                           "-p", "realtime_priority:=0"], env={**os.environ, **environment()}, capture_output=True,
                          text=True, timeout=60, check=False)
    assert node.returncode == 2 and expected in node.stdout + node.stderr


# --- ChunkedPolicy: the robot's execution, synchronous in simulation --------------------------
class _Chunks:
    """Replaces a runtime's sampling with preset normalized chunks, in order; `gate` holds each until released."""

    def __init__(self, runtime: DiffusionRuntime, count: int, gate: threading.Semaphore | None = None) -> None:
        rng = np.random.default_rng(7)
        self.chunks = list(rng.uniform(-0.8, 0.8, (count, 1, runtime.pred_horizon, 2)).astype(np.float32))
        self.gate, self.warm = gate, []
        runtime.sample = self.sample
        runtime.warm_sample = self.warm_sample

    def sample(self, obs, noise=None):
        if self.gate is not None:
            self.gate.acquire()
        return self.chunks.pop(0)

    def warm_sample(self, obs, previous, noise=None):
        self.warm.append(previous.copy())
        return self.sample(obs)


def test_the_synchronous_mode_executes_what_the_planner_thread_executes_given_the_same_chunks(diffusion_onnx):
    spec, ticks = robot_spec("pusher"), 30
    threaded_runtime = DiffusionRuntime(diffusion_onnx, spec=spec, warm_start=True)
    gate = threading.Semaphore(0)
    threaded_chunks = _Chunks(threaded_runtime, 4, gate)
    threaded = ChunkedPolicy(threaded_runtime, blend_steps=3)
    executed_threaded = []
    try:
        for k in range(ticks):
            command = threaded.step(_pusher_state(k), POSE)
            executed_threaded.append(None if command is None else command.q.copy())
            if threaded.planning and not threaded.ready.is_set():
                gate.release()                        # the chunk is ready before the next tick
                assert threaded.ready.wait(30)
    finally:
        gate.release()
        threaded.close()
    synchronous_runtime = DiffusionRuntime(diffusion_onnx, spec=spec, warm_start=True)
    synchronous_chunks = _Chunks(synchronous_runtime, 4)
    synchronous = ChunkedPolicy(synchronous_runtime, blend_steps=3, synchronous=True, sampling_ticks=1)
    executed_synchronous = [synchronous.step(_pusher_state(k), POSE).q.copy() for k in range(ticks)]

    assert executed_threaded[0] is None                # the robot waits for its first chunk ...
    assert np.array_equal(executed_threaded[1:], executed_synchronous[1:])   # ... then the same actions, tick by tick
    assert len(threaded_chunks.warm) == len(synchronous_chunks.warm) == 3
    for a, b in zip(threaded_chunks.warm, synchronous_chunks.warm, strict=True):
        assert np.array_equal(a, b)                   # warm starts from the same chunks
    assert threaded.stats()["blended_ticks"] == synchronous.stats()["blended_ticks"] == 9


def _sampler_of_the_observation(runtime: DiffusionRuntime) -> None:
    """Sampling replaced by a function of each world's observation window alone, so that worlds can be compared."""
    ramp = np.linspace(-1.0, 1.0, runtime.pred_horizon)[None, :, None]
    runtime.sample = lambda obs, noise=None: np.tanh(3.0 * obs[:, -8:-6, None].transpose(0, 2, 1) + ramp)
    runtime.warm_sample = lambda obs, previous, noise=None: runtime.sample(obs)


def test_synchronous_chunks_batched_over_worlds_equal_each_world_run_alone(diffusion_onnx):
    spec, worlds = robot_spec("pusher"), 3
    batched_runtime = DiffusionRuntime(diffusion_onnx, spec=spec, num_envs=worlds, warm_start=True)
    _sampler_of_the_observation(batched_runtime)
    batched = ChunkedPolicy(batched_runtime, synchronous=True)
    alone = []
    for _ in range(worlds):
        runtime = DiffusionRuntime(diffusion_onnx, spec=spec, warm_start=True)
        _sampler_of_the_observation(runtime)
        alone.append(ChunkedPolicy(runtime, synchronous=True))
    for k in range(24):
        states = [_pusher_state(k + 5 * w) for w in range(worlds)]
        batch = RobotState(0.0, np.array([s.q for s in states]), np.zeros((worlds, 2)), np.zeros((worlds, 2)))
        executed = batched.step(batch, {"object_pose": np.tile(POSE["object_pose"], (worlds, 1))}).q
        for w, policy in enumerate(alone):
            assert np.array_equal(executed[w], policy.step(states[w], POSE).q), (k, w)
        if k == 10:                                    # world 1 starts a new episode: it plans at its next tick
            batched.reset(np.array([1]))
            alone[1].reset()
    planned = [p.stats()["chunks_planned"] for p in alone]
    assert planned == [3, 4, 3] and batched.stats()["chunks_planned"] == 10     # world 1: ticks 0, 8, then 11, 19
    assert batched.stats()["blended_ticks"] > 0


# --- one evaluation loop ----------------------------------------------------------------------
def _old_evaluation(path: Path, *, episodes: int, seed: int, warm_start: bool, action_horizon: int | None) -> dict:
    """The evaluator s2r's documented push_t figures were measured with: each world replans every action_horizon
    steps and executes chunk[obs_horizon - 1 + k] at once, no cross-fade (its loop, written out)."""
    env = make_env("push_t", episodes, seed=seed)
    runtime = DiffusionRuntime(path, spec=env.spec, num_envs=episodes, warm_start=warm_start,
                               action_horizon=action_horizon, seed=seed)
    chunks = np.zeros((episodes, runtime.pred_horizon, 2))
    cursor = np.full(episodes, runtime.pred_horizon)
    has_chunk = np.zeros(episodes, dtype=bool)
    returns, successes = np.full(episodes, np.nan), np.zeros(episodes)
    env.reset()
    while np.isnan(returns).any():
        obs = runtime.observe(env.read_state(), {"object_pose": env.inputs["object_pose"]})
        plan = cursor >= runtime.obs_horizon - 1 + runtime.action_horizon
        warm = plan & has_chunk & warm_start
        cold = plan & ~warm
        if cold.any():
            chunks[cold] = runtime.unnormalize(runtime.sample(obs[cold]), obs[cold])
        if warm.any():
            chunks[warm] = runtime.unnormalize(runtime.warm_sample(obs[warm], chunks[warm]), obs[warm])
        cursor[plan] = runtime.obs_horizon - 1
        has_chunk |= plan
        action = runtime.mapping.clip_action(chunks[np.arange(episodes), cursor])
        cursor += 1
        runtime.last_action[:] = action
        _, _, terminated, truncated, info = env.step(torch.from_numpy(action))
        done = np.flatnonzero((terminated | truncated).numpy())
        first = np.isnan(returns[done])
        returns[done[first]] = info["episode"]["return"].numpy()[first]
        successes[done[first]] = info["episode"]["success"].numpy()[first]
        runtime.reset(done)
        cursor[done], has_chunk[done] = runtime.pred_horizon, False
    env.close()
    return {"mean_return": float(returns.mean()), "success_rate": float(successes.mean())}


@pytest.mark.parametrize(("warm_start", "action_horizon"), [(False, None), (True, 3)])
def test_eval_with_the_robots_chunking_and_no_cross_fade_gives_exactly_the_documented_evaluation(
        diffusion_onnx, warm_start, action_horizon):
    options = {"warm_start": True} if warm_start else {}
    if action_horizon is not None:
        options["action_horizon"] = action_horizon
    new = evaluate(diffusion_onnx, episodes=3, seed=2, blend_steps=0, **options)
    old = _old_evaluation(diffusion_onnx, episodes=3, seed=2, warm_start=warm_start, action_horizon=action_horizon)
    assert new["mean_return"] == old["mean_return"] and new["success_rate"] == old["success_rate"]
    assert new["blend_steps"] == 0 and new["synchronous"] and new["warm_start"] == warm_start


def test_eval_cross_fades_chunks_as_the_robot_does_by_default(diffusion_onnx):
    result = evaluate(diffusion_onnx, episodes=2)
    assert result["blend_steps"] == 3 and result["blended_ticks"] == 3 * result["chunk_switches"] > 0
    assert result["action_horizon"] == 8 and result["chunk_overruns"] == 0
