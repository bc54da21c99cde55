"""Rough terrain as one MuJoCo heightfield of square tiles: difficulty levels in rows, terrain kinds in columns.

As legged_gym and Isaac Lab lay out their terrain, tile (level, kind) holds one kind of ground at one
difficulty, from 0 (flat) to 1 (the hardest), with a flat platform at its centre where a world spawns:

    rough         uniform height noise on a coarse grid, ±level × max_roughness_m
    slope_up      a pyramid rising to the platform at level × max_slope_rad; slope_down: a pit
    stairs_up     rings of step_width_m rising level × max_step_m each towards the platform; stairs_down: a pit

    terrain = generate_terrain(TerrainConfig(levels=5), seed=0)
    terrain.heights          # (levels × n, kinds × n) m, n = tile_size_m / resolution_m samples per tile
    terrain.origin(2, 3)     # (3,) m: the centre of level 2's stairs_up tile, on its platform
    spec = mujoco.MjSpec.from_file("go2.xml"); terrain.add_to(spec)   # the floor becomes the heightfield

A heightfield read from a file (`load_heights`) must hold exactly the samples the config lays out;
any other size is refused naming the file, its shape and the expected one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

KINDS = ("rough", "slope_up", "slope_down", "stairs_up", "stairs_down")
"""The tile kinds, one per column, in this order."""


class TerrainError(ValueError):
    """A terrain config or heightfield file that cannot be used; the message names the field or file."""


@dataclass(frozen=True)
class TerrainConfig:
    """The layout of the terrain and the hardest value of each kind (at level 1)."""

    levels: int = 5
    """Rows of tiles, from flat (row 0) to the hardest (the last row)."""
    kinds: tuple[str, ...] = KINDS
    """Columns of tiles, each one of KINDS."""
    tile_size_m: float = 8.0
    """Side of a square tile, m."""
    resolution_m: float = 0.1
    """Distance between heightfield samples, m."""
    platform_m: float = 2.0
    """Side of the flat square at each tile's centre where a world spawns, m."""
    max_roughness_m: float = 0.08
    """Height noise amplitude at the hardest level, m."""
    roughness_cell_m: float = 0.2
    """Horizontal size of the noise's cells, m."""
    max_slope_rad: float = 0.4
    """Slope at the hardest level, rad."""
    max_step_m: float = 0.2
    """Stair height at the hardest level, m."""
    step_width_m: float = 0.3
    """Stair tread, m."""

    def __post_init__(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
            raise TerrainError(f"TerrainConfig.levels: expected an integer >= 1, got {self.levels!r}")
        unknown = [k for k in self.kinds if k not in KINDS]
        if not self.kinds or unknown:
            raise TerrainError(f"TerrainConfig.kinds: {unknown[0] if unknown else 'none'!r} is not a kind "
                               f"(known: {', '.join(KINDS)})")
        for key in ("tile_size_m", "resolution_m", "platform_m", "max_roughness_m", "roughness_cell_m",
                    "max_slope_rad", "max_step_m", "step_width_m"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise TerrainError(f"TerrainConfig.{key}: expected a finite number > 0, got {value!r}")
        if not self.platform_m < self.tile_size_m:
            raise TerrainError(f"TerrainConfig.platform_m: {self.platform_m} m, expected below tile_size_m "
                               f"{self.tile_size_m} m")

    @property
    def samples_per_tile(self) -> int:
        """Heightfield samples along one side of a tile."""
        return round(self.tile_size_m / self.resolution_m)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the whole heightfield."""
        n = self.samples_per_tile
        return self.levels * n, len(self.kinds) * n

    def difficulty(self, level: int) -> float:
        """Row `level`'s difficulty in [0, 1]."""
        return level / max(self.levels - 1, 1)


@dataclass(frozen=True)
class Terrain:
    """Heights of every sample, (rows, columns) m, laid out by `config`; the heightfield is centred on the origin."""

    config: TerrainConfig
    heights: np.ndarray

    def origin(self, level: int, kind: int) -> np.ndarray:
        """The centre of tile (level, kind) on its platform, (3,) m in the world."""
        c = self.config
        n = c.samples_per_tile
        x = (level + 0.5) * c.tile_size_m - c.levels * c.tile_size_m / 2
        y = (kind + 0.5) * c.tile_size_m - len(c.kinds) * c.tile_size_m / 2
        return np.array([x, y, float(self.heights[level * n + n // 2, kind * n + n // 2])])

    def add_to(self, spec: mujoco.MjSpec, *, floor: str = "floor") -> None:
        """Replace the plane geom `floor` of a robot's MjSpec with this heightfield (same contact settings)."""
        geom = spec.geom(floor)
        if geom is None:
            raise TerrainError(f"the model has no geom named {floor!r} to replace with the terrain")
        low, high = float(self.heights.min()), float(self.heights.max())
        span = max(high - low, 1e-6)
        rows, cols = self.heights.shape
        c = self.config
        field = spec.add_hfield(name="terrain", nrow=cols, ncol=rows,
                                size=[c.levels * c.tile_size_m / 2, len(c.kinds) * c.tile_size_m / 2, span, 0.5])
        # MuJoCo's heightfield rows run along y and its columns along x: transposed, levels lie along x.
        field.userdata = ((self.heights.T - low) / span).ravel().tolist()
        geom.type = mujoco.mjtGeom.mjGEOM_HFIELD
        geom.hfieldname = "terrain"
        geom.pos = [0.0, 0.0, low]


def generate_terrain(config: TerrainConfig = TerrainConfig(), *, seed: int = 0) -> Terrain:
    """Every tile of `config`, its kind at its level's difficulty; the noise drawn from `seed`."""
    rng = np.random.default_rng(seed)
    n = config.samples_per_tile
    heights = np.zeros(config.shape)
    for level in range(config.levels):
        for column, kind in enumerate(config.kinds):
            heights[level * n:(level + 1) * n, column * n:(column + 1) * n] = _tile(
                config, kind, config.difficulty(level), rng)
    return Terrain(config, heights)


def load_heights(path: str | Path, config: TerrainConfig) -> Terrain:
    """A terrain from a `.npy` file of heights in m, which must have `config.shape`."""
    path = Path(path)
    try:
        heights = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise TerrainError(f"{path}: not a .npy array of heights ({error})") from None
    if heights.shape != config.shape:
        raise TerrainError(f"{path}: heights of shape {heights.shape}, expected {config.shape} "
                           f"({config.levels} levels × {len(config.kinds)} kinds of {config.samples_per_tile} "
                           f"samples per {config.tile_size_m:g} m tile)")
    if not np.isfinite(heights).all():
        raise TerrainError(f"{path}: heights hold non-finite values")
    return Terrain(config, heights.astype(np.float64))


def _tile(config: TerrainConfig, kind: str, difficulty: float, rng: np.random.Generator) -> np.ndarray:
    """One tile's heights, (n, n) m, flat on its central platform."""
    n = config.samples_per_tile
    centre = (np.arange(n) + 0.5) * config.resolution_m - config.tile_size_m / 2
    # Distance from the platform's edge towards the tile's border (Chebyshev: square rings), m.
    ring = np.maximum(np.maximum(np.abs(centre)[:, None], np.abs(centre)[None, :]) - config.platform_m / 2, 0.0)
    outer = config.tile_size_m / 2 - config.platform_m / 2
    if kind == "rough":
        cells = max(round(config.tile_size_m / config.roughness_cell_m), 1)
        noise = rng.uniform(-1.0, 1.0, (cells, cells)) * difficulty * config.max_roughness_m
        index = np.minimum((np.arange(n) * cells) // n, cells - 1)
        return noise[np.ix_(index, index)] * (ring > 0)
    if kind.startswith("slope"):
        height = math.tan(difficulty * config.max_slope_rad) * (outer - ring)
    else:
        steps = np.floor((outer - ring) / config.step_width_m)
        height = steps * difficulty * config.max_step_m
    height = height - height[0, 0]   # the tile's border at 0: neighbouring tiles meet there
    return height if kind.endswith("_up") else -height
