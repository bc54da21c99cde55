"""Legged locomotion: velocity-tracking terms and the `go2_flat` task (legged_gym's base config).

The policy sees what the robot measures (IMU angular velocity, projected gravity, the
velocity command, joint positions relative to the default pose, joint velocities, the
last action; with noise) and no base linear velocity; the critic adds the true base
linear velocity, the feet's contact forces, the base height and the randomized
parameters (friction, added mass, pushes, ...). Rewards are legged_gym's, per second.
`Locomotion.symmetry(env)` gives the robot's left-right mirror of observations and actions, for
PPO's symmetry augmentation.

    env = make_env("go2_flat", 1024, randomize="default")
    # info["episode"]: lin_vel_error (m/s), yaw_rate_error (rad/s), fell (0/1), reward/NAME per episode

Walking rule (docs/locomotion.md): over episodes of random commands within the trained
ranges, mean linear-velocity tracking error < 0.2 m/s, yaw-rate error < 0.3 rad/s and
fewer than 5 % of episodes ending in a fall.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from s2r.observations import CMD_VEL, ObsTerm, projected_gravity, term_sizes
from s2r.sim.commands import VelocityCommandConfig
from s2r.sim.floating_base import FloatingBase
from s2r.sim.privileged import PRIVILEGED
from s2r.sim.randomization import Dist, Randomize
from s2r.sim.task import Task, TaskConfig
from s2r.sim.terms import NoParams, Reward, SoftLimits, StepContext, Termination, reward_term, termination_term
from s2r.sim.terrain import TerrainConfig, TerrainCurriculum


# --- reward terms ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrackingKernel:
    """exp(-err² / sigma): sigma in (m/s)² or (rad/s)²."""

    sigma: float = 0.25


@reward_term(TrackingKernel)
def track_lin_vel_xy_exp(ctx: StepContext, p: TrackingKernel) -> np.ndarray:
    """exp(-|v_cmd - v_b|² / sigma) of the commanded and the true planar base velocity (base frame)."""
    error = np.sum((ctx.inputs[CMD_VEL][:, :2] - ctx.quantities["lin_vel_b"][:, :2]) ** 2, axis=-1)
    return np.exp(-error / p.sigma)


@reward_term(TrackingKernel)
def track_ang_vel_z_exp(ctx: StepContext, p: TrackingKernel) -> np.ndarray:
    """exp(-(ω_cmd - ω_z)² / sigma) of the commanded and the measured yaw rate."""
    return np.exp(-((ctx.inputs[CMD_VEL][:, 2] - ctx.state.base_ang_vel[:, 2]) ** 2) / p.sigma)


@reward_term()
def lin_vel_z_l2(ctx: StepContext, p: NoParams) -> np.ndarray:
    """v_z² of the base in its frame, (m/s)²."""
    return ctx.quantities["lin_vel_b"][:, 2] ** 2


@reward_term()
def ang_vel_xy_l2(ctx: StepContext, p: NoParams) -> np.ndarray:
    """ω_x² + ω_y² of the base (roll and pitch rates), (rad/s)²."""
    return np.sum(ctx.state.base_ang_vel[:, :2] ** 2, axis=-1)


@reward_term()
def flat_orientation_l2(ctx: StepContext, p: NoParams) -> np.ndarray:
    """g_x² + g_y² of the projected gravity: 0 level."""
    return np.sum(ctx.quantities["projected_gravity"][:, :2] ** 2, axis=-1)


@dataclass(frozen=True)
class HeightTarget:
    """The base height to hold, m."""

    target: float = 0.30


@reward_term(HeightTarget)
def base_height_l2(ctx: StepContext, p: HeightTarget) -> np.ndarray:
    """(h - target)² of the base height, m²."""
    return (ctx.quantities["base_height"] - p.target) ** 2


@dataclass(frozen=True)
class AirTime:
    """Feet air time: seconds of swing rewarded above `threshold_s`, only while the command's speed exceeds
    `min_command` m/s."""

    threshold_s: float = 0.5
    min_command: float = 0.1


@reward_term(AirTime)
def feet_air_time(ctx: StepContext, p: AirTime) -> np.ndarray:
    """Σ over the feet touching down this step of (air time - threshold) s (legged_gym's feet_air_time)."""
    landed = ctx.quantities["feet_landing_air_time"]
    reward = np.sum(np.where(landed > 0, landed - p.threshold_s, 0.0), axis=-1)
    return reward * (np.linalg.norm(ctx.inputs[CMD_VEL][:, :2], axis=-1) > p.min_command)


@dataclass(frozen=True)
class ForceThreshold:
    """A contact counts above this normal force, N."""

    threshold: float = 1.0


@reward_term(ForceThreshold)
def undesired_contacts(ctx: StepContext, p: ForceThreshold) -> np.ndarray:
    """How many thighs and calves touch something."""
    return np.sum(ctx.quantities["undesired_contact_forces"] > p.threshold, axis=-1).astype(float)


# --- terminations -------------------------------------------------------------------------------

@termination_term(ForceThreshold)
def base_contact(ctx: StepContext, p: ForceThreshold) -> np.ndarray:
    """The base (body or head) touches something."""
    return np.any(ctx.quantities["base_contact_forces"] > p.threshold, axis=-1)


@dataclass(frozen=True)
class TiltLimit:
    """The largest tilt of the base from upright, rad."""

    limit_rad: float = 1.0


@termination_term(TiltLimit)
def bad_orientation(ctx: StepContext, p: TiltLimit) -> np.ndarray:
    """The base tilts more than `limit_rad` from upright (from the projected gravity)."""
    return -ctx.quantities["projected_gravity"][:, 2] < np.cos(p.limit_rad)


# --- left-right symmetry ------------------------------------------------------------------------

@dataclass(frozen=True)
class SignedPermutation:
    """A map of vectors that picks and negates entries: `x[..., index] * sign`; both (D,)."""

    index: np.ndarray
    sign: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x[..., self.index] * self.sign


@dataclass(frozen=True)
class Mirror:
    """The robot's left-right mirror image (y → -y in the base frame) as signed permutations of the policy
    observation (P,), the critic observation (C,) and the action (A,): a transition mirrored is one the robot
    could equally have made, for PPO's data augmentation (`PPOConfig.symmetry`)."""

    policy: SignedPermutation
    critic: SignedPermutation
    action: SignedPermutation


_VECTOR_SIGNS = {
    "base_ang_vel": (-1.0, 1.0, -1.0),          # roll and yaw rates turn, pitch rate stays
    "projected_gravity": (1.0, -1.0, 1.0),
    "cmd_vel": (1.0, -1.0, -1.0),               # vx stays, vy and the yaw rate turn
    "base_lin_vel": (1.0, -1.0, 1.0),
    "base_height": (1.0,),
}
_JOINT_TERMS = ("joint_pos", "joint_vel", "last_action")


def _other_side(name: str) -> str:
    """FL_hip_joint → FR_hip_joint: the side letter (the last of the prefix before the first '_') L ↔ R."""
    prefix, _, rest = name.partition("_")
    swapped = prefix[:-1] + {"L": "R", "R": "L"}.get(prefix[-1:], prefix[-1:])
    return f"{swapped}_{rest}" if rest else swapped


def joint_mirror(spec, model) -> SignedPermutation:
    """The mirror of joint vectors (num_joints,) in spec order: each joint's value goes to its other-side partner
    (name with L ↔ R), negated for joints turning about the base's x or z axis (hips: abduction), kept for those
    turning about y (thighs, calves). Refuses a robot whose joints or default pose are not mirror images."""
    names = list(spec.joint_names)
    index, sign = [], []
    for name in names:
        partner = _other_side(name)
        if partner not in names:
            raise ValueError(f"{spec.source}: joint {name!r} has no mirror partner {partner!r}")
        axis = model.jnt_axis[model.joint(name).id]
        index.append(names.index(partner))
        sign.append(1.0 if abs(axis[1]) > 0.99 else -1.0)
    mirror = SignedPermutation(np.array(index), np.array(sign))
    if not np.allclose(mirror(spec.default_q), spec.default_q, atol=1e-6):
        raise ValueError(f"{spec.source}: the default pose is not its own mirror image ({spec.default_q.tolist()})")
    return mirror


def _group_mirror(terms: list[tuple[str, int]], joints: SignedPermutation, feet: SignedPermutation,
                  where: str) -> SignedPermutation:
    index, sign, offset = [], [], 0
    for name, size in terms:
        if name in _JOINT_TERMS:
            part = SignedPermutation(joints.index + offset, joints.sign)
        elif name == "foot_contact_forces":
            part = SignedPermutation(feet.index + offset, feet.sign)
        elif name in _VECTOR_SIGNS and len(_VECTOR_SIGNS[name]) == size:
            part = SignedPermutation(np.arange(size) + offset, np.array(_VECTOR_SIGNS[name]))
        else:
            raise ValueError(f"{where}: observation term {name!r} has no mirror image (mirrored: "
                             f"{', '.join([*_VECTOR_SIGNS, *_JOINT_TERMS, 'foot_contact_forces'])})")
        index.append(part.index)
        sign.append(part.sign)
        offset += size
    return SignedPermutation(np.concatenate(index), np.concatenate(sign))


# --- the task -----------------------------------------------------------------------------------

class Locomotion(Task):
    """Base of the velocity-tracking tasks: quantities from the floating base, feet air time, the command,
    tracking errors and falls per episode. Subclasses set `config`."""

    reset_joint_scale = (0.5, 1.5)
    """Initial joint positions: the default pose times a uniform factor per joint in this range (legged_gym; it makes
    about 4 % of the worlds fall within 60 zero-action steps, where Isaac Lab's Go2 reset, 1 and 0, makes none)."""
    reset_base_speed = 0.5
    """Initial base velocity: uniform in ±this per axis, m/s and rad/s (legged_gym; Isaac Lab's Go2: 0)."""
    only_positive_rewards = True
    """Clip each step's total reward at 0 (legged_gym's only_positive_rewards; Isaac Lab does not)."""

    def bind(self, env):
        super().bind(env)
        self.base = FloatingBase(env)
        n, feet = env.num_envs, len(env.spec.feet)
        self.air_time = np.zeros((n, feet))
        self.landing_air_time = np.zeros((n, feet))
        self.last_dq = np.zeros((n, env.spec.num_joints))
        self.lin_vel_error = np.zeros(n)
        self.yaw_rate_error = np.zeros(n)

    def reset(self, env, ids, rng):
        n, spec = len(ids), env.spec
        q = spec.default_q * rng.uniform(*self.reset_joint_scale, (n, spec.num_joints))
        q = np.clip(q, spec.lower, spec.upper)
        speed = self.reset_base_speed
        self.base.set_velocity(ids, rng.uniform(-speed, speed, (n, 3)), rng.uniform(-speed, speed, (n, 3)))
        self.command.reset(ids, rng)
        self.air_time[ids] = 0.0
        self.landing_air_time[ids] = 0.0
        self.last_dq[ids] = 0.0
        self.lin_vel_error[ids] = 0.0
        self.yaw_rate_error[ids] = 0.0
        return q, np.zeros((n, spec.num_joints))

    def update(self, env):
        contact = self.base.touch("feet") > 1.0
        self.air_time += env.spec.control_period
        self.landing_air_time = np.where(contact & (self.air_time > env.spec.control_period), self.air_time, 0.0)
        self.air_time[contact] = 0.0
        self.command.step(self.base.heading(), env.rng)

    def quantities(self, env):
        state = env.read_state()
        return {
            "lin_vel_b": self.base.lin_vel_b(),
            "base_height": self.base_height(env),
            "projected_gravity": projected_gravity(state, env.inputs, env.spec),
            "feet_landing_air_time": self.landing_air_time,
            "undesired_contact_forces": self.base.touch("undesired"),
            "base_contact_forces": self.base.touch("base"),
            "last_dq": self.last_dq,
        }

    def base_height(self, env) -> np.ndarray:
        """The base's height above the ground under it, (num_envs,) m."""
        if env.terrain is None:
            return self.base.height()
        pos = self.base.pos_w()
        return pos[:, 2] - env.terrain.height_at(pos[:, :2])

    def evaluate(self, env, state, action):
        reward, terminated, parts = super().evaluate(env, state, action)
        command = env.inputs[CMD_VEL]
        self.lin_vel_error += np.linalg.norm(command[:, :2] - self.base.lin_vel_b()[:, :2], axis=-1)
        self.yaw_rate_error += np.abs(command[:, 2] - state.base_ang_vel[:, 2])
        self.last_dq = state.dq.copy()
        return (np.maximum(reward, 0.0) if self.only_positive_rewards else reward), terminated, parts

    def episode_metrics(self, env, done):
        steps = np.maximum(env.episode_length[done], 1)
        tracking = next((r for r in self.config.rewards if r.name == "track_lin_vel_xy_exp"), None)
        if tracking is not None and len(done):
            best = tracking.weight * (env.spec.control_period if self.config.rewards_per_second else 1.0)
            self.command.end_episodes(env.episode_terms[tracking.name][done] / steps / best)
        return {"lin_vel_error": (self.lin_vel_error[done] / steps).astype(np.float32),
                "yaw_rate_error": (self.yaw_rate_error[done] / steps).astype(np.float32),
                "fell": (env.episode_length[done] < env.max_episode_length).astype(np.float32)}

    def success_condition(self, env, state):
        """Tracking within the walking rule's bounds this step (0.2 m/s, 0.3 rad/s)."""
        command = env.inputs[CMD_VEL]
        return ((np.linalg.norm(command[:, :2] - self.base.lin_vel_b()[:, :2], axis=-1) < 0.2)
                & (np.abs(command[:, 2] - state.base_ang_vel[:, 2]) < 0.3))

    def symmetry(self, env) -> Mirror:
        """The left-right mirror of this task's observations and actions on `env` (`Mirror`); refuses a task
        whose observations hold a term without one (the height scan, the randomization terms, history)."""
        cfg, spec = self.config, env.spec
        where = f"task {cfg.name}"
        if cfg.history_length != 1:
            raise ValueError(f"{where}: history_length {cfg.history_length}: the mirror covers one frame")
        if env.randomizer is not None:
            raise ValueError(f"{where}: the randomization terms in the critic observation have no mirror image")
        joints = joint_mirror(spec, env.model)
        feet = list(spec.feet)
        feet_mirror = SignedPermutation(np.array([feet.index(_other_side(f)) for f in feet]), np.ones(len(feet)))
        policy = list(zip([t.name for t in cfg.policy_terms], term_sizes(cfg.policy_terms, spec)))
        privileged = [(name, PRIVILEGED[name](env).shape[-1]) for name in cfg.privileged_terms]
        return Mirror(_group_mirror(policy, joints, feet_mirror, where),
                      _group_mirror(policy + privileged, joints, feet_mirror, where), joints)


class Go2Flat(Locomotion):
    """The Go2 tracks random planar velocity and yaw-rate commands on flat ground (legged_gym's base config:
    ±1 m/s, ±1 rad/s, resampled every 10 s; only positive rewards)."""

    config = TaskConfig(
        name="go2_flat",
        robot="go2",
        action_mode="position",
        action_scale=0.25,
        action_clip=100.0,
        policy_terms=(
            ObsTerm("base_ang_vel", scale=0.25, noise=0.2),
            ObsTerm("projected_gravity", noise=0.05),
            ObsTerm("cmd_vel"),
            ObsTerm("joint_pos", noise=0.01),
            ObsTerm("joint_vel", scale=0.05, noise=1.5),
            ObsTerm("last_action"),
        ),
        # legged_gym's base config (with its Go2's dof_pos_limits); Isaac Lab's Go2 flat weights (tracking 1.5 and
        # 0.75, torques -2e-4, feet air time 0.25, flat orientation -2.5, no clipping at 0) with the default-pose reset
        # did not walk within 611 iterations of 256 worlds either (docs/locomotion.md)
        rewards=(
            Reward("track_lin_vel_xy_exp", 1.0, {"sigma": 0.25}),
            Reward("track_ang_vel_z_exp", 0.5, {"sigma": 0.25}),
            Reward("lin_vel_z_l2", -2.0),
            Reward("ang_vel_xy_l2", -0.05),
            Reward("joint_torques_l2", -1e-5),
            Reward("joint_acc_l2", -2.5e-7),
            Reward("feet_air_time", 1.0, {"threshold_s": 0.5}),
            Reward("undesired_contacts", -1.0),
            Reward("action_rate_l2", -0.01),
            Reward("joint_pos_limits", -10.0, {"soft_fraction": 0.9}),
        ),
        rewards_per_second=True,
        terminations=(Termination("base_contact"), Termination("bad_orientation", {"limit_rad": 1.0})),
        command=VelocityCommandConfig(lin_vel_x=(-1.0, 1.0), lin_vel_y=(-1.0, 1.0), ang_vel_z=(-1.0, 1.0),
                                      resample_s=10.0, standing_fraction=0.05),
        privileged_terms=("base_lin_vel", "foot_contact_forces", "base_height"),
        episode_length_s=20.0,
        success_window_s=1.0,
        inputs={CMD_VEL: 3},
        randomization=(
            Randomize("friction", Dist("uniform", 0.5, 1.25), "set", names=("floor",)),
            Randomize("mass", Dist("uniform", -1.0, 1.0), "add", names=("base",)),
            Randomize("motor_strength", Dist("uniform", 0.9, 1.1)),
            Randomize("kp", Dist("uniform", 0.9, 1.1)),
            Randomize("kd", Dist("uniform", 0.9, 1.1)),
            Randomize("command_delay_s", Dist("uniform", 0.0, 0.01), "set"),
            Randomize("push", Dist("uniform", 50.0, 150.0), "set", mode="interval", names=("base",),
                      interval_s=(8.0, 15.0)),
        ),
    )


class Go2Rough(Locomotion):
    """go2_flat's terms on rough terrain (legged_gym's rough config, blind): each world spawns on the platform
    of its own tile, the terrain curriculum moves it up a level after walking past half a tile and down one
    after covering less than half its commanded distance, and the critic adds a height scan around the base."""

    config = replace(
        Go2Flat.config,
        name="go2_rough",
        terrain=TerrainConfig(levels=5, border_m=20.0),
        privileged_terms=(*Go2Flat.config.privileged_terms, "height_scan"),
    )
    max_start_level = 1
    """Worlds start on levels 0 to this one (legged_gym starts on the easier half)."""
    spawn_spread_m = 0.5
    """Spawn points lie uniformly within ±this of a platform's centre in x and y, m."""
    spawn_lift_m = 0.1
    """The base spawns this much above the MJCF's standing height, m: with the reset's random joint positions a
    foot may otherwise start below the surface, and a heightfield's triangular prisms, unlike a plane, can then
    hold it inside (the robot kneels or falls)."""
    scan_clip_m = 1.0
    """The height scan is clipped to ±this, m (a pit or a wall farther away reads as this)."""

    def bind(self, env):
        super().bind(env)
        n = env.num_envs
        self.curriculum = TerrainCurriculum(env.terrain, n, max_start_level=self.max_start_level,
                                            seed=int(env.rng.integers(2**31)))
        self.spawn_w = np.zeros((n, 3))
        """(num_envs, 3) m: where each world's episode started."""
        self.commanded_speed = np.zeros(n)
        """(num_envs,) m/s summed over the episode's steps: the planar speed its commands asked for."""
        joint = int(env.model.body_jntadr[env.view.base_body])
        self._spawn_height = float(env.model.qpos0[env.model.jnt_qposadr[joint] + 2]) + self.spawn_lift_m
        self.scan = np.zeros((n, len(self._scan(env.terrain, np.zeros((1, 3)), np.zeros(1))[0])), dtype=np.float32)
        """(num_envs, points) m: the height scan of each base, refreshed after every step and at resets."""

    def reset(self, env, ids, rng):
        q, dq = super().reset(env, ids, rng)
        spawn = self.curriculum.origins(ids)
        spawn[:, :2] += rng.uniform(-self.spawn_spread_m, self.spawn_spread_m, (len(ids), 2))
        self.spawn_w[ids] = spawn
        base = spawn + [0.0, 0.0, self._spawn_height]
        self.base.set_position(ids, base)
        self.scan[ids] = self._scan(env.terrain, base, self.base.heading()[ids])
        self.commanded_speed[ids] = 0.0
        return q, dq

    def update(self, env):
        super().update(env)
        self.commanded_speed += np.linalg.norm(env.inputs[CMD_VEL][:, :2], axis=-1)
        self.scan[:] = self._scan(env.terrain, self.base.pos_w(), self.base.heading())

    def episode_metrics(self, env, done):
        metrics = super().episode_metrics(env, done)
        metrics["terrain_level"] = self.curriculum.level[done].astype(np.float32)
        walked = np.linalg.norm(self.base.pos_w()[done, :2] - self.spawn_w[done, :2], axis=-1)
        # legged_gym's demotion: less than half of what the episode's mean command asks over a whole episode
        mean_speed = self.commanded_speed[done] / np.maximum(env.episode_length[done], 1)
        self.curriculum.update(done, walked, mean_speed * self.config.episode_length_s)
        return metrics

    def height_scan(self, env) -> np.ndarray:
        """(num_envs, points) m: the base's height above the ground around it, clipped to ±scan_clip_m (the
        privileged term `height_scan`)."""
        return self.scan

    def _scan(self, terrain, base_pos_w: np.ndarray, heading: np.ndarray) -> np.ndarray:
        return np.clip(terrain.height_scan(base_pos_w, heading), -self.scan_clip_m, self.scan_clip_m)
