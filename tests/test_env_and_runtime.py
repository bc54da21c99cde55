"""The batched simulator and the robot runtime compute the same observations and commands."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from s2r import ContractError, RobotState, robot_spec
from s2r.observations import LAST_ACTION, TARGET, ObservationHistory, build_observation
from s2r.policies.export import export_onnx
from s2r.policies.ppo import ActorCritic, ActorCriticConfig
from s2r.runtime import read_contract
from s2r.runtime.mlp import PolicyRuntime
from s2r.sim.env import make_env


def exported(env, path: Path) -> ActorCritic:
    policy = ActorCritic(ActorCriticConfig(), num_policy_obs=env.obs_dims["policy"],
                         num_critic_obs=env.obs_dims["critic"], num_actions=env.num_actions)
    policy.actor_normalizer.update(torch.randn(256, env.obs_dims["policy"]) * 3 + 1)
    policy.eval()
    export_onnx(policy, env.contract({"task": env.task.config.name}), path)
    return policy


@pytest.mark.parametrize("task", ["pendulum", "cartpole", "reach"])
def test_env_steps_return_the_documented_shapes(task):
    env = make_env(task, 16, seed=0)
    obs = env.reset()
    assert obs["policy"].shape == (16, env.obs_dims["policy"]) and obs["critic"].shape == (16, env.obs_dims["critic"])
    obs, reward, terminated, truncated, info = env.step(torch.zeros(16, env.num_actions))
    assert reward.shape == (16,) and terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert info["final_critic_obs"].shape == (16, env.obs_dims["critic"])
    assert torch.isfinite(obs["policy"]).all() and torch.isfinite(reward).all()


def test_actions_of_the_wrong_shape_are_refused_instead_of_broadcast():
    env = make_env("reach", 4, seed=0)
    env.reset()
    for shape in [(1, env.num_actions), (4, env.num_actions + 1), (4,)]:
        with pytest.raises(ValueError, match=r"actions: shape .* \(expected \(4, 3\)\)"):
            env.step(torch.zeros(shape))


def test_episodes_time_out_and_worlds_reset_themselves():
    env = make_env("pendulum", 8, seed=0)
    env.reset()
    ended = []
    for _ in range(env.max_episode_length):
        _, _, terminated, truncated, info = env.step(torch.zeros(8, 1))
        ended.append(truncated.clone())
    assert ended[-1].all() and not torch.stack(ended[:-1]).any()
    assert info["episode"]["length"].tolist() == [float(env.max_episode_length)] * 8
    assert (env.episode_length == 0).all()


def test_an_episode_reports_whether_its_success_condition_held_at_any_step_not_only_at_the_end(monkeypatch):
    env = make_env("pendulum", 3, seed=0)
    # World 0 meets the condition once, on its third step; world 1 over the whole episode; world 2 never.
    monkeypatch.setattr(env.task, "success_condition",
                        lambda env, state: np.array([env.episode_length[0] == 3, True, False]))
    env.reset()
    for _ in range(env.max_episode_length):
        _, _, _, truncated, info = env.step(torch.zeros(3, 1))
    assert truncated.all()
    assert info["episode"]["reached"].tolist() == [1.0, 1.0, 0.0]
    assert info["episode"]["success"].tolist() == [0.0, 1.0, 0.0]
    assert not env.success_reached.any(), "a reset world starts unreached"


def test_the_same_seed_gives_the_same_rollout():
    def rollout(seed):
        env = make_env("cartpole", 32, seed=seed)
        obs = [env.reset()["policy"]]
        actions = torch.from_numpy(np.random.default_rng(3).uniform(-1, 1, (50, 32, 1)).astype(np.float32))
        for a in actions:
            obs.append(env.step(a)[0]["policy"])
        return torch.stack(obs)

    assert torch.equal(rollout(7), rollout(7)) and not torch.equal(rollout(7), rollout(8))


def test_per_world_model_fields_change_only_their_world():
    env = make_env("pendulum", 4, seed=0)
    env.reset()
    env.model_field("body_mass")[2, 1] *= 3.0  # a heavier pole in world 2
    start = env.read_state()
    env.set_joint_state(np.arange(4), np.repeat(start.q[:1], 4, axis=0), np.zeros((4, 1)))
    for _ in range(20):
        env.step(torch.zeros(4, 1))
    q = env.read_state().q[:, 0]
    assert q[0] == q[1] == q[3] != q[2]
    assert env.obs_dims["critic"] == env.step(torch.zeros(4, 1))[0]["critic"].shape[1]


def test_observation_terms_give_identical_numbers_in_the_simulator_and_the_runtime(tmp_path):
    env = make_env("reach", 8, seed=0)
    obs = env.reset()
    exported(env, tmp_path / "reach.onnx")
    runtime = PolicyRuntime(tmp_path / "reach.onnx", spec=env.spec, num_envs=8)
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = torch.from_numpy(rng.uniform(-1, 1, (8, 3)).astype(np.float32))
        obs, *_ = env.step(action)
        runtime.last_action[:] = env.inputs[LAST_ACTION]
        from_runtime = runtime.observe(env.read_state(), {TARGET: env.inputs[TARGET]})
        clean_sim = obs["critic"][:, : from_runtime.shape[1]].numpy()
        np.testing.assert_array_equal(from_runtime, clean_sim)


def test_export_parity_between_torch_and_onnxruntime(tmp_path):
    env = make_env("cartpole", 1)
    policy = exported(env, tmp_path / "cartpole.onnx")
    runtime = PolicyRuntime(tmp_path / "cartpole.onnx", spec=env.spec)
    for batch in (1, 37):
        x = torch.randn(batch, env.obs_dims["policy"]) * 4
        with torch.no_grad():
            expected = policy.act_inference(x).numpy()
        assert np.abs(runtime.act(x.numpy()) - expected).max() < 1e-5


def test_the_runtime_turns_a_robot_state_into_a_command(tmp_path):
    env = make_env("reach", 1)
    exported(env, tmp_path / "reach.onnx")
    spec = robot_spec("arm")
    runtime = PolicyRuntime(tmp_path / "reach.onnx", spec=spec)
    state = RobotState(stamp=0.0, q=spec.default_q.copy(), dq=np.zeros(3), tau=np.zeros(3))
    command = runtime.step(state, {TARGET: np.array([0.3, 0.0, 0.3])})
    assert command.q.shape == (3,) and command.kp.tolist() == [40.0, 60.0, 40.0]
    assert np.all(np.abs(command.q - spec.default_q) <= 2.0 + 1e-12)
    with pytest.raises(ContractError, match="input 'target'"):
        runtime.step(state)


def test_evaluating_an_mlp_policy_with_a_diffusion_sampler_option_is_refused(tmp_path):
    from s2r.policies.evaluate import evaluate

    exported(make_env("pendulum", 1), tmp_path / "pendulum.onnx")
    with pytest.raises(ValueError, match="action_horizon: options of diffusion policies"):
        evaluate(tmp_path / "pendulum.onnx", episodes=1, action_horizon=2)


def test_a_policy_refuses_a_robot_it_was_not_trained_for(tmp_path):
    exported(make_env("pendulum", 1), tmp_path / "pendulum.onnx")
    with pytest.raises(ContractError, match="robot: policy expects 'pendulum', spec is 'cartpole'"):
        PolicyRuntime(tmp_path / "pendulum.onnx", spec=robot_spec("cartpole"))


def test_an_onnx_file_without_a_contract_is_refused(tmp_path):
    path = tmp_path / "bare.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["obs"], ["action"])], "bare",
        [onnx.helper.make_tensor_value_info("obs", onnx.TensorProto.FLOAT, [None, 4])],
        [onnx.helper.make_tensor_value_info("action", onnx.TensorProto.FLOAT, [None, 4])],
    )
    onnx.save(onnx.helper.make_model(graph, ir_version=10, opset_imports=[onnx.helper.make_opsetid("", 18)]), path)
    with pytest.raises(ContractError, match="no policy contract in the ONNX metadata"):
        read_contract(path)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ContractError, match="not a loadable ONNX model"):
        read_contract(tmp_path / "junk.onnx")


def test_projected_gravity_and_history():
    spec = robot_spec("pendulum")
    upright = RobotState(0.0, np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), base_quat=np.array([[1.0, 0, 0, 0]]))
    from s2r.observations import ObsTerm

    np.testing.assert_allclose(build_observation((ObsTerm("projected_gravity"),), upright, {}, spec), [[0, 0, -1]])
    history = ObservationHistory(3, 2, 2)
    first = history.push(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert first[0].tolist() == [1, 2, 1, 2, 1, 2]
    history.reset(np.array([1]))
    second = history.push(np.array([[5.0, 6.0], [7.0, 8.0]]))
    assert second[0].tolist() == [1, 2, 1, 2, 5, 6] and second[1].tolist() == [7, 8, 7, 8, 7, 8]
