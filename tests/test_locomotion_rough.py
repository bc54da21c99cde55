"""go2_rough: each world on its own terrain tile, the curriculum moving worlds by how far they walk, the critic's
height scan, a heightfield file of the wrong size, and a few iterations of training."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from s2r.sim.env import BatchEnv, make_env
from s2r.sim.locomotion import Go2Rough
from s2r.sim.terrain import KINDS, TerrainError


def test_each_world_spawns_standing_on_the_platform_of_its_own_tile():
    env = make_env("go2_rough", 10, seed=0)
    env.reset()
    task, terrain = env.task, env.terrain
    base = task.base.pos_w()
    origins = task.curriculum.origins(np.arange(10))
    assert np.all(np.abs(base[:, :2] - origins[:, :2]) <= task.spawn_spread_m)
    assert task.curriculum.kind.tolist() == [i % len(KINDS) for i in range(10)]
    assert np.allclose(task.base_height(env), base[:, 2] - origins[:, 2]) and np.all(task.base_height(env) > 0.4)
    for _ in range(50):
        _, _, terminated, _, _ = env.step(torch.zeros(10, 12))
        assert not terminated.any(), "a go2 holding its default pose fell on its spawn platform"
    assert np.all((task.base_height(env) > 0.15) & (task.base_height(env) < 0.35)), "not standing on its tile"


def test_the_curriculum_moves_worlds_that_walked_far_up_a_level_and_those_that_fell_short_down():
    env = make_env("go2_rough", 5, seed=0)
    env.reset()
    task = env.task
    task.curriculum.level[:] = 1
    env.reset()
    spawn = task.spawn_w.copy()
    env.inputs["cmd_vel"][:] = [1.0, 0.0, 0.0]
    # World 0 has walked 5 m (more than half an 8 m tile), world 1 stayed where it spawned though told to
    # walk at 1 m/s; both episodes time out on the next step.
    task.base.set_position(np.array([0]), task.base.pos_w()[:1] + [5.0, 0.0, 0.0])
    env.episode_length[:2] = env.max_episode_length - 1
    task.commanded_speed[:2] = 1.0 * (env.max_episode_length - 1)
    env.step(torch.zeros(5, 12))
    assert task.curriculum.level.tolist() == [2, 0, 1, 1, 1]
    moved = task.spawn_w[:2] - spawn[:2]
    assert moved[0, 0] == pytest.approx(8.0, abs=2 * task.spawn_spread_m)    # one tile farther along x
    assert moved[1, 0] == pytest.approx(-8.0, abs=2 * task.spawn_spread_m)   # one tile back
    assert np.allclose(task.base.pos_w()[:2, :2], task.spawn_w[:2, :2])     # and reset onto it


def test_the_critic_sees_the_height_scan_and_the_policy_does_not():
    flat, rough = make_env("go2_flat", 5, seed=0), make_env("go2_rough", 5, seed=0)
    assert rough.obs_dims["policy"] == flat.obs_dims["policy"]
    assert rough.obs_dims["critic"] == flat.obs_dims["critic"] + 17 * 11
    rough.task.curriculum.level[:] = rough.terrain.config.levels - 1
    rough.reset()
    # each world's base at the edge of its hardest tile's platform, above the ground that falls or rises from it
    task = rough.task
    task.base.set_position(np.arange(5), task.spawn_w + [rough.terrain.config.platform_m / 2, 0.0, 0.4])
    obs, *_ = rough.step(torch.zeros(5, 12))
    scan = obs["critic"][:, -17 * 11:].numpy()
    expected = np.clip(rough.terrain.height_scan(task.base.pos_w(), task.base.heading()), -1, 1)
    assert np.allclose(scan, expected, atol=1e-5)
    relief = scan.max(axis=1) - scan.min(axis=1)
    assert relief[KINDS.index("stairs_up")] > 0.3 and relief[KINDS.index("stairs_down")] > 0.3   # 20 cm steps


def test_a_heightfield_file_of_the_wrong_size_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "tiles.npy"
    np.save(path, np.zeros((40, 40)))
    task = Go2Rough()
    task.config = replace(task.config, terrain=replace(task.config.terrain, heights_file=str(path)))
    with pytest.raises(TerrainError, match=r"tiles.npy: heights of shape \(40, 40\), expected \(400, 400\)"):
        BatchEnv(task, 2)


def test_go2_rough_trains_for_a_few_iterations_and_logs_the_terrain_level(tmp_path):
    from s2r.policies.train import default_config, train

    metrics = train(default_config("go2_rough", num_envs=8, iterations=2), tmp_path, progress=False)
    assert metrics["env_steps"] == 2 * 8 * 24 and (tmp_path / "checkpoint.pt").is_file()
