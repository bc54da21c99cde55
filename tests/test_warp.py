"""The `warp` backend (MuJoCo Warp) agrees with the `cpu` backend, run here on Warp's CPU device.

Warp compiles its kernels on first use (about half a minute per new model on two cores)
and caches them; the envs are small so that the rest costs seconds.
"""

import logging

import mujoco
import numpy as np
import pytest
import torch

from s2r.sim.env import make_env
from s2r.sim.warp_batch import WarpBatch, WarpOverflowError, WarpUnsupportedError

# float32 (Warp) against float64 (MuJoCo's C engine), one second of random control:
# the shipped robots agree to about 1e-5; the tolerance leaves a decade of margin.
TRAJECTORY_TOLERANCE = 1e-4


def rollouts(task: str, randomize: str | None = None, steps: int = 50, worlds: int = 4):
    """Both backends driven by one random control sequence: (steps, worlds, joints) positions each,
    and the last observations."""
    envs = {backend: make_env(task, worlds, seed=3, backend=backend, randomize=randomize)
            for backend in ("cpu", "warp")}
    for env in envs.values():
        env.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, worlds, envs["cpu"].num_actions)).astype(np.float32)
    q = {backend: [] for backend in envs}
    for action in actions:
        for backend, env in envs.items():
            obs, *_ = env.step(torch.from_numpy(action))
            q[backend].append(env.read_state().q.copy())
    return envs, {backend: np.array(v) for backend, v in q.items()}, obs


@pytest.mark.parametrize("task", ["pendulum", "cartpole", "reach"])
def test_the_same_controls_give_the_same_trajectories_on_cpu_and_warp(task):
    envs, q, _ = rollouts(task)
    assert envs["warp"].backend == "warp"
    assert np.abs(q["cpu"] - q["warp"]).max() < TRAJECTORY_TOLERANCE
    assert np.ptp(q["cpu"], axis=0).max() > 0.1  # the robots did move


@pytest.mark.parametrize("task", ["pendulum", "cartpole"])
def test_the_same_seed_gives_the_same_randomized_parameters_on_cpu_and_warp(task):
    envs, q, _ = rollouts(task, randomize="default", steps=25)
    cpu, warp = envs["cpu"], envs["warp"]
    assert np.array_equal(cpu.randomizer.observation(), warp.randomizer.observation())
    assert np.array_equal(cpu.command_delay_s, warp.command_delay_s)
    for field in ("body_mass", "dof_damping", "actuator_gear", "dof_invweight0"):
        values = cpu.model_value(field)
        assert np.allclose(values, warp.model_value(field), rtol=1e-6, atol=1e-7), field
    assert np.ptp(cpu.model_value("body_mass"), axis=0).max() > 0  # worlds differ
    assert np.abs(q["cpu"] - q["warp"]).max() < TRAJECTORY_TOLERANCE


def test_host_mirrors_the_gpu_uses_behave_like_zero_copy_views():
    """Runs the CUDA path's push/pull synchronization on the CPU device: no GPU needed to catch its bugs."""
    model = make_env("cartpole", 1).model

    def drive(host_mirrors: bool) -> list[np.ndarray]:
        batch = WarpBatch(model, 4, host_mirrors=host_mirrors)
        qpos, qvel, ctrl = batch.bind("qpos"), batch.bind("qvel"), batch.bind("ctrl")
        mass = batch.expand("body_mass")
        mass[:, 2] *= np.array([0.5, 1.0, 1.5, 2.0])  # per-world pole masses
        batch.set_const()
        qpos[:, 1] = np.array([0.1, 0.2, 0.3, 0.4])
        batch.forward(stage=mujoco.mjtStage.mjSTAGE_POS)
        seen = []
        for k, u in enumerate(np.random.default_rng(0).uniform(-1, 1, (30, 4, 1))):
            ctrl[:] = u
            if k == 10:
                qvel[3] = np.nan  # diverges: reset by step
            if k == 20:
                batch.reset(np.array([0]))
            batch.step(nstep=2, stage=mujoco.mjtStage.mjSTAGE_POS)
            seen += [qpos.copy(), qvel.copy(), batch.bind("site_xpos").copy(), batch.bind("time").copy()]
        return seen + [batch.expanded("body_mass"), batch.expanded("dof_invweight0")]

    for mirrored, direct in zip(drive(True), drive(False), strict=True):
        assert np.array_equal(mirrored, direct, equal_nan=True)


def test_a_world_whose_state_turns_nan_is_reset_and_counted_as_diverged_on_warp():
    env = make_env("cartpole", 4, seed=0, backend="warp")
    env.reset()
    env.data_field("qvel")[2] = np.nan
    obs, _, terminated, _, info = env.step(torch.zeros(4, 1))
    assert info["diverged"] == 1 and terminated.tolist() == [False, False, True, False]
    assert torch.isfinite(obs["policy"]).all()


def test_overflowing_contact_buffers_raise_naming_the_setting():
    env = make_env("push_t", 2, seed=0, backend="cpu")  # the block rests on the table: several contacts
    batch = WarpBatch(env.model, 2, nconmax=1, njmax=4, source="pusher.xml")
    with pytest.raises(WarpOverflowError, match="nconmax=1") as raised:
        batch.step(nstep=2)
    assert raised.value.worlds.tolist() == [0, 1]


def test_a_model_feature_warp_lacks_is_named_with_the_cpu_backend_as_the_way_out():
    model = mujoco.MjModel.from_xml_string(
        '<mujoco><option solver="PGS"/><worldbody><body><joint/><geom size=".1"/></body></worldbody></mujoco>')
    expected = r"pgs.xml: a feature MuJoCo Warp does not support \(mjSOL_PGS.*\)\. Use --backend cpu"
    with pytest.raises(WarpUnsupportedError, match=expected):
        WarpBatch(model, 1, source="pgs.xml")


def test_without_a_gpu_the_warp_backend_says_it_runs_on_the_cpu_device(caplog):
    with caplog.at_level(logging.WARNING):
        make_env("pendulum", 1, backend="warp")
    assert "Warp's CPU device" in caplog.text and "slow" in caplog.text


def test_warp_data_fields_are_torch_tensors_without_a_copy():
    env = make_env("pendulum", 3, backend="warp")
    env.reset()
    qpos = env.batch.tensor("qpos")
    assert isinstance(qpos, torch.Tensor) and qpos.shape == (3, 1)
    env.step(torch.ones(3, 1))
    assert np.allclose(qpos.numpy(), env.data_field("qpos"))


def test_copying_world_states_on_warp_is_refused_naming_the_backend():
    env = make_env("pendulum", 1, backend="warp")
    with pytest.raises(NotImplementedError, match="copy_state: needs the cpu backend"):
        make_env("pendulum", 1).copy_state(env)


def test_a_policy_trained_on_cpu_does_the_same_on_warp(cartpole_onnx):
    from s2r.policies.evaluate import evaluate

    results = {backend: evaluate(cartpole_onnx, episodes=4, backend=backend) for backend in ("cpu", "warp")}
    assert results["cpu"]["success_rate"] == results["warp"]["success_rate"] == 1.0
    assert abs(results["cpu"]["mean_return"] - results["warp"]["mean_return"]) < 1e-3 * abs(results["cpu"]["mean_return"])
