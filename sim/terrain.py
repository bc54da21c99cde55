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

Worlds move between levels by `TerrainCurriculum` (legged_gym's: promoted after walking past half a
tile, demoted after covering less than half the distance their command asked for), and
`Terrain.height_scan` gives the privileged critic the ground's height on a grid around each base.

A heightfield read from a file (`TerrainConfig.heights_file`, `load_heights`) must hold exactly the
samples the config lays out; any other size is refused naming the file, its shape and the expected one.
`border_m` of flat ground surrounds the tiles in the model, so worlds that walk off the outer tiles
stay on the ground. A task with a `terrain` in its config (`go2_rough`) gets it in its model
(`sim.model.compile_model`) and spawns each world on its curriculum's tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
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
    border_m: float = 0.0
    """Flat ground (height 0) around the tiles, m, so that a world walking off the outer tiles does not drop
    off the heightfield (legged_gym's border_size)."""
    heights_file: str | None = None
    """A `.npy` file of the tiles' heights in m, of `shape` (`load_heights`); None: generated (`generate_terrain`)."""

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
        if not (isinstance(self.border_m, (int, float)) and math.isfinite(self.border_m) and self.border_m >= 0):
            raise TerrainError(f"TerrainConfig.border_m: expected a finite number >= 0, got {self.border_m!r}")
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

    @property
    def border_samples(self) -> int:
        """Samples of flat border on each side of the tiles."""
        return round(self.border_m / self.resolution_m)


@dataclass(frozen=True)
class Terrain:
    """Heights of every sample, (rows, columns) m, laid out by `config`; the heightfield is centred on the origin."""

    config: TerrainConfig
    heights: np.ndarray

    @cached_property
    def field(self) -> np.ndarray:
        """The heightfield MuJoCo gets: `heights` inside `config.border_m` of flat ground, (rows, columns) m."""
        return np.pad(self.heights, self.config.border_samples)

    def origin(self, level: int, kind: int) -> np.ndarray:
        """The centre of tile (level, kind) on its platform, (3,) m in the world."""
        c = self.config
        n = c.samples_per_tile
        x = (level + 0.5) * c.tile_size_m - c.levels * c.tile_size_m / 2
        y = (kind + 0.5) * c.tile_size_m - len(c.kinds) * c.tile_size_m / 2
        return np.array([x, y, float(self.heights[level * n + n // 2, kind * n + n // 2])])

    def height_at(self, xy: np.ndarray) -> np.ndarray:
        """Ground height (...) m under world points `xy` (..., 2) m, bilinear between samples as MuJoCo's
        heightfield triangles are near the samples; points off the terrain read its border."""
        res = self.config.resolution_m
        rows, cols = self.field.shape
        return self._interpolate((xy[..., 0] / res + (rows - 1) / 2).astype(np.float32),
                                 (xy[..., 1] / res + (cols - 1) / 2).astype(np.float32))

    def height_scan(self, base_pos_w: np.ndarray, base_yaw: np.ndarray, *, size_m: tuple[float, float] = (1.6, 1.0),
                    spacing_m: float = 0.1) -> np.ndarray:
        """Base height above the ground at a grid of points around each base (Isaac Lab's height scanner),
        (num_envs, points) float32 m: `base_pos_w` (num_envs, 3) m, `base_yaw` (num_envs,) rad; the grid
        (size_m along the base's x and y, every spacing_m) turns with the base's yaw. Each point reads its
        nearest sample, as legged_gym's measured heights do: 1024 bases × 187 points take a few ms."""
        res = self.config.resolution_m
        rows, cols = self.field.shape
        gx = np.arange(-size_m[0] / 2, size_m[0] / 2 + 1e-9, spacing_m) / res
        gy = np.arange(-size_m[1] / 2, size_m[1] / 2 + 1e-9, spacing_m) / res
        gx, gy = (g.astype(np.float32).ravel() for g in np.meshgrid(gx, gy, indexing="ij"))
        cos, sin = np.cos(base_yaw).astype(np.float32)[:, None], np.sin(base_yaw).astype(np.float32)[:, None]
        # sample coordinates + 0.5, so that truncation rounds to the nearest sample
        fr = (base_pos_w[:, :1] / res + rows / 2).astype(np.float32) + cos * gx - sin * gy
        fc = (base_pos_w[:, 1:2] / res + cols / 2).astype(np.float32) + sin * gx + cos * gy
        index = np.clip(fr, 0, rows - 0.5, out=fr).astype(np.int32) * cols
        index += np.clip(fc, 0, cols - 0.5, out=fc).astype(np.int32)
        return base_pos_w[:, 2:3].astype(np.float32) - self._flat_field[index]

    @cached_property
    def _flat_field(self) -> np.ndarray:
        """`field` as float32, raveled (row-major) for gathers."""
        return self.field.astype(np.float32).ravel()

    def _interpolate(self, fr: np.ndarray, fc: np.ndarray) -> np.ndarray:
        """Bilinear heights at fractional sample coordinates (row `fr`, column `fc`, same shape, overwritten),
        clamped to the field."""
        rows, cols = self.field.shape
        np.clip(fr, 0, rows - 1.001, out=fr)
        np.clip(fc, 0, cols - 1.001, out=fc)
        r0, c0 = fr.astype(np.int32), fc.astype(np.int32)
        fr -= r0
        fc -= c0
        index = r0 * cols + c0
        h = self._flat_field
        h00, h10 = h[index], h[index + cols]
        top = h00 + fr * (h10 - h00)
        index += 1
        h01, h11 = h[index], h[index + cols]
        return top + fc * (h01 + fr * (h11 - h01) - top)

    def add_to(self, spec: mujoco.MjSpec, *, floor: str = "floor") -> None:
        """Replace the plane geom `floor` of a robot's MjSpec with this heightfield (same contact settings)."""
        geom = spec.geom(floor)
        if geom is None:
            raise TerrainError(f"the model has no geom named {floor!r} to replace with the terrain")
        heights = self.field
        low, high = float(heights.min()), float(heights.max())
        span = max(high - low, 1e-6)
        rows, cols = heights.shape
        res = self.config.resolution_m
        field = spec.add_hfield(name="terrain", nrow=cols, ncol=rows, size=[rows * res / 2, cols * res / 2, span, 0.5])
        # MuJoCo's heightfield rows run along y and its columns along x: transposed, levels lie along x.
        field.userdata = ((heights.T - low) / span).ravel().tolist()
        geom.type = mujoco.mjtGeom.mjGEOM_HFIELD
        geom.hfieldname = "terrain"
        geom.pos = [0.0, 0.0, low]


class TerrainCurriculum:
    """Each world's terrain level and kind, moved up and down with how far its episodes walk (legged_gym's).

    At an episode's end a world that walked farther than half a tile goes up a level; one that walked
    less than half of what its command asked for goes down one (never below 0); a world promoted past
    the last level goes to a random level, so the hardest tiles never hold every world. Kinds are
    assigned round-robin over the worlds.

        curriculum = TerrainCurriculum(terrain, num_envs=512, max_start_level=1, seed=0)
        curriculum.update(ids, walked_m, commanded_m)      # at episode ends: (n,) int, (n,) m, (n,) m
        spawn = curriculum.origins(ids)                    # (n, 3) m
    """

    def __init__(self, terrain: Terrain, num_envs: int, *, max_start_level: int = 0, seed: int = 0) -> None:
        self.terrain = terrain
        self.rng = np.random.default_rng(seed)
        levels = terrain.config.levels
        self.level = self.rng.integers(0, min(max_start_level, levels - 1) + 1, num_envs)
        """(num_envs,) each world's level (row)."""
        self.kind = np.arange(num_envs) % len(terrain.config.kinds)
        """(num_envs,) each world's kind (column)."""

    def update(self, ids: np.ndarray, walked_m: np.ndarray, commanded_m: np.ndarray) -> None:
        """Move the worlds `ids` (n,) whose episodes ended: `walked_m` (n,) m from their spawn point,
        `commanded_m` (n,) m their command's speed times the episode's duration."""
        up = walked_m > self.terrain.config.tile_size_m / 2
        down = ~up & (walked_m < 0.5 * commanded_m)
        level = self.level[ids] + up - down
        last = self.terrain.config.levels - 1
        past = level > last
        level[past] = self.rng.integers(0, last + 1, int(past.sum()))
        self.level[ids] = np.maximum(level, 0)

    def origins(self, ids: np.ndarray) -> np.ndarray:
        """Spawn points of worlds `ids` (n,): their tiles' platform centres, (n, 3) m."""
        return np.stack([self.terrain.origin(int(r), int(k)) for r, k in zip(self.level[ids], self.kind[ids])])


def build_terrain(config: TerrainConfig, *, seed: int = 0) -> Terrain:
    """The terrain `config` describes: read from its `heights_file`, or generated from `seed`."""
    if config.heights_file is not None:
        return load_heights(config.heights_file, config)
    return generate_terrain(config, seed=seed)


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
