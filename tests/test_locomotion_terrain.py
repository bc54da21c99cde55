"""Rough terrain: heightfield tiles in difficulty levels that a go2 stands on, and heightfields of the wrong size."""

import mujoco
import numpy as np
import pytest

from s2r.sim.terrain import KINDS, TerrainConfig, TerrainError, generate_terrain, load_heights
from s2r.spec import shipped_robots_dir

CONFIG = TerrainConfig(levels=3, tile_size_m=4.0, platform_m=1.0)


def test_tiles_get_harder_level_by_level_and_each_kind_has_a_flat_platform():
    terrain = generate_terrain(CONFIG, seed=0)
    n = CONFIG.samples_per_tile
    assert terrain.heights.shape == (3 * n, len(KINDS) * n)
    assert not terrain.heights[:n].any(), "level 0 is not flat"
    relief = [[np.ptp(terrain.heights[r * n:(r + 1) * n, k * n:(k + 1) * n]) for k in range(len(KINDS))] for r in range(3)]
    assert all(relief[1][k] < relief[2][k] for k in range(len(KINDS)))
    stairs_up, stairs_down = terrain.origin(2, KINDS.index("stairs_up")), terrain.origin(2, KINDS.index("stairs_down"))
    steps = np.floor((CONFIG.tile_size_m - CONFIG.platform_m) / 2 / CONFIG.step_width_m)
    assert stairs_up[2] == pytest.approx(steps * CONFIG.max_step_m, abs=0.21) and stairs_down[2] < -0.5


def test_a_go2_dropped_on_a_stairs_platform_rests_on_it_and_one_beside_it_ends_lower():
    terrain = generate_terrain(CONFIG, seed=0)
    top = terrain.origin(2, KINDS.index("stairs_up"))

    def rest_height(xy_offset):
        spec = mujoco.MjSpec.from_file(str(shipped_robots_dir() / "go2" / "go2.xml"))
        terrain.add_to(spec)
        model = spec.compile()
        data = mujoco.MjData(model)
        data.qpos[:3] = top + [xy_offset, 0.0, 0.45]
        for _ in range(400):
            mujoco.mj_step(model, data)
        return data.qpos[2]

    on_platform = rest_height(0.0)
    assert top[2] < on_platform < top[2] + 0.35, "the go2 fell through the platform or floats above it"
    assert rest_height(1.6) < on_platform - 0.1, "off the platform, down the stairs, it did not end lower"


def test_a_heightfield_file_of_the_wrong_size_is_refused_naming_the_file_and_the_shape(tmp_path):
    path = tmp_path / "terrain.npy"
    np.save(path, np.zeros((10, 10)))
    with pytest.raises(TerrainError, match=r"terrain.npy: heights of shape \(10, 10\), expected \(120, 200\) "
                                           r"\(3 levels × 5 kinds of 40 samples per 4 m tile\)"):
        load_heights(path, CONFIG)
    np.save(path, generate_terrain(CONFIG).heights)
    assert load_heights(path, CONFIG).heights.shape == CONFIG.shape
    with pytest.raises(TerrainError, match=r"TerrainConfig.kinds: 'gaps' is not a kind"):
        TerrainConfig(kinds=("rough", "gaps"))


def test_the_terrain_curriculum_promotes_worlds_that_walk_far_and_demotes_those_that_fall_short():
    from s2r.sim.terrain import TerrainCurriculum

    terrain = generate_terrain(CONFIG, seed=0)
    curriculum = TerrainCurriculum(terrain, 6, max_start_level=1, seed=0)
    curriculum.level[:] = [1, 1, 1, 0, 2, 2]
    walked = np.array([3.0, 1.5, 0.2, 0.1, 1.5, 3.0])     # m; half a tile is 2 m
    commanded = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0])  # m asked for
    curriculum.update(np.arange(6), walked, commanded)
    assert curriculum.level[:5].tolist() == [2, 1, 0, 0, 2]   # up, stays, down, stays at 0, stays
    assert 0 <= curriculum.level[5] <= 2                        # past the last level: a random one
    origins = curriculum.origins(np.arange(6))
    assert origins.shape == (6, 3) and origins[0, 0] > origins[2, 0]   # harder levels lie farther along x


def test_the_height_scan_reads_the_base_height_above_the_steps_around_it():
    terrain = generate_terrain(CONFIG, seed=0)
    top = terrain.origin(2, KINDS.index("stairs_up"))
    base = np.array([top + [0.0, 0.0, 0.3]])
    scan = terrain.height_scan(base, np.zeros(1), size_m=(3.0, 0.0), spacing_m=0.5)
    assert scan.shape == (1, 7)
    assert scan[0, 3] == pytest.approx(0.3, abs=1e-6)                 # over the platform
    assert scan[0, 0] > 0.3 + 0.1 and scan[0, -1] > 0.3 + 0.1          # the stairs fall away on both sides
