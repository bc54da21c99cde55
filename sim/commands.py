"""Command generators: what a locomotion task asks each world's base to do.

`VelocityCommand` writes a planar velocity command (vx, vy in the base frame, m/s; yaw
rate, rad/s) into the `cmd_vel` task input of every world, resampled every
`resample_s` seconds and at reset, as legged_gym and Isaac Lab do: a fraction of worlds
is told to stand still, and in heading mode the yaw rate steers towards a sampled
heading (yaw rate = stiffness · heading error, clipped to the yaw range).

    command = VelocityCommand(VelocityCommandConfig(), env.inputs["cmd_vel"], control_period=0.02)
    command.reset(ids, rng)             # new commands for worlds ids
    command.step(heading, rng)          # heading (num_envs,) rad: advance the clocks, resample the due ones

With a `CommandCurriculum` the ranges start narrow and widen (or narrow again) with the
tracking of the episodes that end (`end_episodes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s2r.geometry import wrap_to_pi


@dataclass(frozen=True)
class CommandCurriculum:
    """Command ranges that widen as the robot tracks them (legged_gym's command curriculum): every range
    starts at `start_fraction` of the configured one and moves by `step` (a fraction of it) when the
    mean linear-velocity tracking of the episodes that just ended is above `promote_above` or below
    `demote_below` (fractions of the term's best)."""

    start_fraction: float = 0.5
    step: float = 0.1
    promote_above: float = 0.8
    demote_below: float = 0.4

    def __post_init__(self) -> None:
        if not 0.0 < self.start_fraction <= 1.0:
            raise ValueError(f"CommandCurriculum.start_fraction: {self.start_fraction} (expected in (0, 1])")
        if not self.demote_below < self.promote_above:
            raise ValueError(f"CommandCurriculum: demote_below {self.demote_below} must be below promote_above "
                             f"{self.promote_above}")


@dataclass(frozen=True)
class VelocityCommandConfig:
    """Ranges and schedule of a base velocity command."""

    lin_vel_x: tuple[float, float] = (-1.0, 1.0)
    """Forward velocity range, m/s."""
    lin_vel_y: tuple[float, float] = (-1.0, 1.0)
    """Sideways velocity range, m/s."""
    ang_vel_z: tuple[float, float] = (-1.0, 1.0)
    """Yaw rate range, rad/s."""
    resample_s: float = 10.0
    """Seconds between two samples of a world's command."""
    standing_fraction: float = 0.0
    """Fraction of samples that command standing still (all zeros)."""
    heading_mode: bool = False
    """Sample a heading (rad) instead of a yaw rate and steer towards it."""
    heading_stiffness: float = 0.5
    """Heading mode: yaw rate per radian of heading error, 1/s."""
    min_speed: float = 0.2
    """Planar commands slower than this (m/s) are set to zero, as legged_gym does."""
    curriculum: CommandCurriculum | None = None
    """Widen the ranges as tracking improves; None: the full ranges from the start."""

    def __post_init__(self) -> None:
        for name in ("lin_vel_x", "lin_vel_y", "ang_vel_z"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"VelocityCommandConfig.{name}: {low} > {high}")
        if self.resample_s <= 0:
            raise ValueError(f"VelocityCommandConfig.resample_s: {self.resample_s} (expected > 0 s)")
        if not 0.0 <= self.standing_fraction <= 1.0:
            raise ValueError(f"VelocityCommandConfig.standing_fraction: {self.standing_fraction} (expected in [0, 1])")


class VelocityCommand:
    """Per-world velocity commands and their resampling clocks; see the module docstring."""

    def __init__(self, cfg: VelocityCommandConfig, out: np.ndarray, control_period: float) -> None:
        """`out`: the (num_envs, 3) `cmd_vel` input it writes, (vx m/s, vy m/s, yaw rate rad/s)."""
        self.cfg, self.out = cfg, out
        self.resample_steps = max(1, round(cfg.resample_s / control_period))
        self.steps_left = np.zeros(len(out), dtype=np.int64)
        """Control steps until each world's next resample, (num_envs,)."""
        self.heading = np.zeros(len(out))
        """Heading mode: each world's target heading, (num_envs,) rad."""
        self.standing = np.zeros(len(out), dtype=bool)
        self.full_ranges = np.array([cfg.lin_vel_x, cfg.lin_vel_y, cfg.ang_vel_z], dtype=float)
        """The configured (3, 2) ranges (vx, vy, yaw rate; low, high)."""
        self.level = cfg.curriculum.start_fraction if cfg.curriculum is not None else 1.0
        """The fraction of the configured ranges sampled now (the curriculum's level)."""

    @property
    def ranges(self) -> np.ndarray:
        """The (3, 2) ranges sampled now: the configured ones times `level`."""
        return self.full_ranges * self.level

    def end_episodes(self, tracking: np.ndarray) -> None:
        """Move the curriculum on the linear-velocity tracking (k,) (fractions of the best) of the episodes
        that just ended; without a curriculum, nothing."""
        curriculum = self.cfg.curriculum
        if curriculum is None or len(tracking) == 0:
            return
        mean = float(np.mean(tracking))
        if mean > curriculum.promote_above:
            self.level = min(1.0, self.level + curriculum.step)
        elif mean < curriculum.demote_below:
            self.level = max(curriculum.start_fraction, self.level - curriculum.step)

    def reset(self, ids: np.ndarray, rng: np.random.Generator) -> None:
        """Sample new commands for worlds `ids` (n,) and restart their clocks."""
        n = len(ids)
        low, high = self.ranges[:, 0], self.ranges[:, 1]
        command = rng.uniform(low, high, (n, 3))
        command[np.linalg.norm(command[:, :2], axis=-1) < self.cfg.min_speed, :2] = 0.0
        self.standing[ids] = rng.uniform(size=n) < self.cfg.standing_fraction
        command[self.standing[ids]] = 0.0
        self.heading[ids] = rng.uniform(-np.pi, np.pi, n)
        self.out[ids] = command
        self.steps_left[ids] = self.resample_steps

    def step(self, heading: np.ndarray, rng: np.random.Generator) -> None:
        """Advance every world's clock by one control step and resample those due; in heading mode, steer
        from the bases' current `heading` (num_envs,) rad."""
        self.steps_left -= 1
        due = np.flatnonzero(self.steps_left <= 0)
        if len(due):
            self.reset(due, rng)
        if self.cfg.heading_mode:
            rate = self.cfg.heading_stiffness * wrap_to_pi(self.heading - heading)
            self.out[:, 2] = np.where(self.standing, 0.0, np.clip(rate, *self.ranges[2]))
