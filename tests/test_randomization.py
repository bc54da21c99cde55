"""Domain randomization perturbs each world reproducibly and shows the critic what it drew."""

import numpy as np
import pytest
import torch

from s2r.sim.env import BatchEnv, make_env
from s2r.sim.randomization import Dist, RandomizationError, Randomize, load_randomization
from s2r.sim.tasks import make_task


def arm(terms, seed=0, n=8):
    env = BatchEnv(make_task("reach"), n, seed=seed, randomization=terms)
    env.reset()
    return env


def test_the_same_seed_draws_the_same_worlds():
    terms = make_task("reach").config.randomization
    a, b, c = arm(terms, 3), arm(terms, 3), arm(terms, 4)
    np.testing.assert_array_equal(a.randomizer.observation(), b.randomizer.observation())
    assert not np.array_equal(a.randomizer.observation(), c.randomizer.observation())


def test_model_fields_are_set_per_world_and_terms_compose():
    env = arm((Randomize("mass", Dist("uniform", 0.5, 1.5)),
               Randomize("mass", Dist("uniform", 0.1, 0.3), "add", names=("link3",)),
               Randomize("kp", Dist("uniform", 0.5, 1.0)), Randomize("damping", Dist("uniform", 2.0, 2.0), "set")))
    link3 = env.model.body("link3").id
    nominal = env.model.body_mass[link3]
    mass = env.model_value("body_mass")[:, link3]
    scale, payload = env.randomizer.samples[0][:, list(env.randomizer.ids[0]).index(link3)], env.randomizer.samples[1][:, 0]
    np.testing.assert_allclose(mass, nominal * scale + payload)
    assert len(set(np.round(mass, 9))) == 8
    gain, bias = env.model_value("actuator_gainprm")[:, :, 0], env.model_value("actuator_biasprm")[:, :, 1]
    np.testing.assert_array_equal(bias, -gain)
    assert np.all(env.model_value("dof_damping") == 2.0)
    critic = env.step(torch.zeros(8, 3))[0]["critic"]
    assert critic.shape[1] == env.obs_dims["critic"]
    np.testing.assert_allclose(critic[:, -env.randomizer.dim:].numpy(), env.randomizer.observation(), rtol=1e-6)


def test_command_latency_in_seconds_delays_the_motors_by_whole_physics_steps():
    env = arm((Randomize("command_delay_s", Dist("uniform", 0.014, 0.014), "set", mode="startup"),), n=2)
    assert np.allclose(env.command_delay_s, 0.015), "14 ms rounds to 3 physics steps of 5 ms"
    np.testing.assert_allclose(env.randomizer.observation()[:, 0], 0.015)
    applied = env.set_command_delay(np.array([0, 1]), np.array([0.0, 0.5]))
    np.testing.assert_allclose(applied, [0.0, env.spec.control_period - env.model.opt.timestep])
    env.set_command_delay(np.array([1]), np.array([0.015]))
    start = env.read_state()
    env.set_joint_state(np.arange(2), np.repeat(start.q[:1], 2, axis=0), np.zeros((2, 3)))
    env.step(torch.full((2, 3), 1.5))
    q = env.read_state().q
    assert not np.allclose(q[0], q[1])
    moved = np.abs(q - env.spec.default_q).sum(axis=1)
    assert moved[1] < moved[0]


def test_pushes_apply_a_force_for_their_duration_then_stop():
    env = arm((Randomize("push", Dist("uniform", 10, 10), "set", mode="interval", names=("link3",),
                         interval_s=(0.06, 0.06), duration_s=0.04),), n=2)
    xfrc = env.data_field("xfrc_applied")[:, env.model.body("link3").id, :3]
    for _ in range(3):  # the push fires at 0.06 s, the third control step
        env.step(torch.zeros(2, 3))
    np.testing.assert_allclose(np.linalg.norm(xfrc, axis=1), 10.0)
    for _ in range(2):  # and ends 0.04 s later
        env.step(torch.zeros(2, 3))
    assert np.all(xfrc == 0)


def test_a_push_cut_short_by_a_reset_leaves_nothing_behind_in_the_next_episode():
    env = arm((Randomize("push", Dist("uniform", 10, 10), "set", mode="interval", names=("link3",),
                         interval_s=(0.06, 0.06), duration_s=0.04),), n=2)
    xfrc = env.data_field("xfrc_applied")[:, env.model.body("link3").id, :3]
    for _ in range(3):
        env.step(torch.zeros(2, 3))
    assert np.all(np.linalg.norm(xfrc, axis=1) > 0)
    env.reset()                                    # the push is on: the reset clears it
    assert np.all(xfrc == 0) and np.all(env.randomizer.observation() == 0)
    for _ in range(3):                             # the next episode's push is the push drawn, alone
        env.step(torch.zeros(2, 3))
    np.testing.assert_allclose(np.linalg.norm(xfrc, axis=1), 10.0)
    for _ in range(2):
        env.step(torch.zeros(2, 3))
    assert np.all(xfrc == 0)


def test_encoder_bias_shifts_what_the_policy_measures_not_the_truth():
    terms = (Randomize("encoder_offset", Dist("uniform", 0.1, 0.1), "add", names=("shoulder",)),)
    biased, clean = arm(terms), arm(())
    biased_obs, clean_obs = biased.step(torch.zeros(8, 3))[0], clean.step(torch.zeros(8, 3))[0]
    np.testing.assert_allclose(biased_obs["critic"][:, :12], clean_obs["critic"][:, :12], atol=1e-6)
    shift = (biased_obs["policy"] - clean_obs["policy"])[:, :3]
    np.testing.assert_allclose(shift, np.tile([0.0, 0.1, 0.0], (8, 1)), atol=1e-6)


def test_randomization_yaml_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "dr.yaml"
    path.write_text("- {target: mass, dist: [uniform, 0.8, 1.2], opperation: scale}\n")
    with pytest.raises(RandomizationError, match=r"dr.yaml: \[0\]\.opperation: unknown field"):
        load_randomization(path)
    path.write_text("- {target: gravity, dist: [uniform, 0.8, 1.2]}\n")
    with pytest.raises(RandomizationError, match="target 'gravity' is unknown"):
        load_randomization(path)
    path.write_text("- {target: mass, operation: add}\n")
    with pytest.raises(RandomizationError, match=r"\[0\]\.dist: missing"):
        load_randomization(path)
    with pytest.raises(RandomizationError, match="no body 'gripper'"):
        arm((Randomize("mass", Dist("uniform", 1, 1), names=("gripper",)),))


def test_the_shipped_perturbed_arm_loads_and_applies():
    env = make_env("reach", 4, randomize="sim/perturbations/arm_perturbed.yaml")
    env.reset()
    assert np.allclose(env.command_delay_s, 0.015) and np.all(env.encoder_offset[:, 1] == 0.02)
    link3 = env.model.body("link3").id
    np.testing.assert_allclose(env.model_value("body_mass")[:, link3], env.model.body_mass[link3] + 0.3)


def test_training_with_randomization_logs_each_worlds_draws(tmp_path):
    from s2r.policies.train import default_config, train

    metrics = train(default_config("reach", num_envs=16, iterations=2, randomize="default"), tmp_path, progress=False)
    assert metrics["iterations"] == 2
    events = next(tmp_path.glob("events.*")).read_bytes()
    assert b"randomization/8_command_delay_s" in events


@pytest.mark.slow
def test_a_randomized_reach_policy_beats_a_nominal_one_on_the_perturbed_arm(tmp_path):
    from s2r.policies.evaluate import evaluate
    from s2r.policies.train import default_config, train

    perturbed = "sim/perturbations/arm_perturbed.yaml"
    rates = {}
    for randomize in (None, "default"):
        run = tmp_path / str(randomize)
        train(default_config("reach", randomize=randomize), run, progress=False)
        rates[randomize] = evaluate(run, episodes=128, randomize=perturbed)["success_rate"]
    assert rates["default"] >= 0.8 and rates["default"] > rates[None] + 0.2
