"""Quadrotor tasks: `quadrotor_hover`, Learning to Fly's hover (Eschmann et al.) on the Crazyflie.

From Learning to Fly's training distribution (the authors' repository: position ±0.2 m per axis,
attitude up to 90° from level, linear velocity ±1 m/s and angular velocity ±1 rad/s per axis, every
motor at a quarter of top thrust; `HoverInit` widens it, up to upside down), fly to the target at the
origin of the world and hold it. 10 % of episodes start at the target, level and at rest (the
authors' "guidance"). A constant disturbance force per episode (N(0, 5 % of the weight) per axis)
pushes the vehicle.

- actor (146 values, `s2r.flight`): position error (world, m), rotation matrix (9), linear
  velocity (world, m/s), angular velocity (body, rad/s), with the paper's observation noise, and the
  last 32 actions (at a reset: the action that holds each motor's initial state, as L2F fills it);
- critic: the same without noise, plus each rotor's thrust state (the motor lag's output, a
  fraction of top thrust) and the disturbance force (N);
- reward (the paper's `reward_squared_position_only_torque`): 2 - 0.5 (5 |p|² + 5 (1 - w²) + 0.01 |v|²
  + 0.01 |a - a_hover|²), w the attitude quaternion's scalar part, a the raw actions; positive over
  the whole initial distribution, so ending an episode early never pays. The paper's curriculum (`RewardCurriculum`) multiplies the
  position, velocity and action weights by 1.2, 1.4 and 1.4 every 100k transitions, up to 40, 1 and 1;
- termination: leaving the box (|p| > 0.6 m, |v| > 10 m/s or |ω| > 35 rad/s on any axis).

`quadrotor_track` (`QuadrotorTrack`) is the same task with a moving target: a figure-eight (`FigureEight`).

Success rule (docs/quadrotor.md): position error < 0.1 m and attitude error < 10° through the
last 2 s of the 5 s episode (from 3 s on), in 95 % of episodes from the initial distribution
without guidance (`hover_success`).

    env = make_env("quadrotor_hover", 64)
    env.task.nan_actions     # (num_envs,) NaN actions this episode (MuJoCo turned those motors off)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from s2r.flight import ACTION_HISTORY, ACTION_HISTORY_LENGTH, BASE_LIN_VEL_W, POSITION_ERROR
from s2r.observations import ObsTerm
from s2r.sim.randomization import Dist, Randomize
from s2r.sim.task import Task, TaskConfig
from s2r.sim.terms import NoParams, Reward, StepContext, Termination, reward_term, termination_term

G = 9.81


# --- terms --------------------------------------------------------------------------------------

def attitude_error(quat: np.ndarray) -> np.ndarray:
    """The rotation angle from level with zero yaw, (n,) rad in [0, π], of unit quaternions (n, 4)."""
    return 2 * np.arccos(np.clip(np.abs(quat[:, 0]), 0.0, 1.0))


@reward_term()
def alive(ctx: StepContext, p: NoParams) -> np.ndarray:
    """1 every step."""
    return np.ones(len(ctx.action))


@reward_term()
def position_error_sq(ctx: StepContext, p: NoParams) -> np.ndarray:
    """|p - p_target|², m²."""
    return np.sum(ctx.quantities["position_error_w"] ** 2, axis=-1)


@reward_term()
def attitude_error_sq_sin(ctx: StepContext, p: NoParams) -> np.ndarray:
    """1 - w² of the base's attitude quaternion: sin² of half the rotation angle from level (yaw included),
    0 level, 1 upside down (L2F's orientation cost)."""
    return 1 - ctx.state.base_quat[:, 0] ** 2


@reward_term()
def lin_vel_sq(ctx: StepContext, p: NoParams) -> np.ndarray:
    """|v|² of the base, (m/s)²."""
    return np.sum(ctx.quantities["lin_vel_w"] ** 2, axis=-1)


@reward_term()
def action_from_hover_l2(ctx: StepContext, p: NoParams) -> np.ndarray:
    """Σ (a - a_hover)² of the raw actions a in [-1, 1] and the raw action that holds the weight."""
    return np.sum((ctx.action - (2 * ctx.quantities["hover_thrust"][:, None] - 1)) ** 2, axis=-1)


@dataclass(frozen=True)
class FlightBox:
    """The box a flight stays in, per axis: position error (m), linear velocity (m/s), angular velocity (rad/s).
    Learning to Fly's position (0.6 m); the velocity limits are RLtools' `narrow` ones (the paper has none):
    they end only a flight gone wild, never one that is recovering."""

    position_m: float = 0.6
    lin_vel: float = 10.0
    ang_vel: float = 35.0


@termination_term(FlightBox)
def out_of_box(ctx: StepContext, p: FlightBox) -> np.ndarray:
    """Any axis of the position error, linear or angular velocity beyond the box."""
    return ((np.abs(ctx.quantities["position_error_w"]) > p.position_m).any(axis=-1)
            | (np.abs(ctx.quantities["lin_vel_w"]) > p.lin_vel).any(axis=-1)
            | (np.abs(ctx.state.base_ang_vel) > p.ang_vel).any(axis=-1))


# --- the initial-state distribution -------------------------------------------------------------

@dataclass(frozen=True)
class HoverInit:
    """Learning to Fly's initial states (the paper's training distribution, `orientation_biggest_angle`):
    uniform per axis within these bounds; attitude uniform over rotations of angle up to `max_angle_rad`
    (π: any, upside down included)."""

    position_m: float = 0.2
    max_angle_rad: float = math.pi / 2
    lin_vel: float = 1.0
    ang_vel: float = 1.0
    motor_thrust: tuple[float, float] = (0.25, 0.25)
    """Range of each motor's initial thrust state, fractions of top thrust, drawn per rotor (the paper's: every
    rotor at half its rpm range, a quarter of top thrust). Rotors started apart spin the vehicle faster than
    the 0.15 s motors can stop it: (0, 1) puts up to 1000 rad/s² of torque on it."""
    at_target_fraction: float = 0.1
    """Episodes that start at the target, level, at rest, motors at hover (the authors' guidance)."""
    disturbance_std: float = 0.027 * G / 20
    """Std of the constant disturbance force per episode and axis, N (the paper's: 5 % of the Crazyflie's weight)."""

    def __post_init__(self) -> None:
        for name in ("position_m", "max_angle_rad", "lin_vel", "ang_vel", "disturbance_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"quadrotor_hover: init.{name}: {getattr(self, name)} (expected >= 0)")
        low, high = self.motor_thrust
        if not 0 <= low <= high <= 1:
            raise ValueError(f"quadrotor_hover: init.motor_thrust: {self.motor_thrust} (expected 0 <= low <= high <= 1)")
        if not 0 <= self.at_target_fraction <= 1:
            raise ValueError(f"quadrotor_hover: init.at_target_fraction: {self.at_target_fraction} (expected in [0, 1])")


@dataclass(frozen=True)
class HoverConfig:
    """The hover task's initial states and box; every initial state must start inside the box."""

    init: HoverInit = field(default_factory=HoverInit)
    box: FlightBox = field(default_factory=FlightBox)

    def __post_init__(self) -> None:
        for name in ("position_m", "lin_vel", "ang_vel"):
            start, limit = getattr(self.init, name), getattr(self.box, name)
            if start >= limit:
                raise ValueError(f"quadrotor_hover: init.{name}: {start} starts outside the box "
                                 f"(box.{name} {limit}; expected less)")


def random_rotations(rng: np.random.Generator, n: int, max_angle: float) -> np.ndarray:
    """n unit quaternions (n, 4) (w >= 0), uniform over rotations of angle at most `max_angle` rad (<= π): a
    uniform axis and an angle of density ∝ sin²(θ/2) (Haar measure), drawn by rejection."""
    angle = np.zeros(n)
    if max_angle > 0:
        todo = np.arange(n)
        while len(todo):
            proposal = rng.uniform(0, max_angle, len(todo))
            accept = rng.uniform(size=len(todo)) * np.sin(max_angle / 2) ** 2 < np.sin(proposal / 2) ** 2
            angle[todo[accept]] = proposal[accept]
            todo = todo[~accept]
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    return np.column_stack([np.cos(angle / 2), np.sin(angle / 2)[:, None] * axis])


# --- the task -----------------------------------------------------------------------------------

HOVER = HoverConfig()
MAX_SENSOR_DELAY_STEPS = 10
"""The longest motion-capture delay a world can be given, control periods (100 ms at 100 Hz)."""


@dataclass(frozen=True)
class WeightRamp:
    """One reward weight of a curriculum: multiplied by `factor` at each stage, its magnitude held at `limit`."""

    term: str
    factor: float
    limit: float


@dataclass(frozen=True)
class RewardCurriculum:
    """Learning to Fly's reward curriculum: every `every_transitions` transitions the task has stepped (all
    worlds), each ramp's weight grows by its factor, up to its limit. The stage in effect is `stage`."""

    every_transitions: int = 100_000
    ramps: tuple[WeightRamp, ...] = (WeightRamp("position_error_sq", 1.2, 20.0), WeightRamp("lin_vel_sq", 1.4, 0.5),
                                     WeightRamp("action_from_hover_l2", 1.4, 0.5))

    def __post_init__(self) -> None:
        if self.every_transitions < 1:
            raise ValueError(f"quadrotor_hover: curriculum.every_transitions: {self.every_transitions} (expected >= 1)")


HOVER_CURRICULUM = RewardCurriculum()


QUADROTOR_RANDOMIZATION = (
    Randomize("mass", Dist("uniform", 0.9, 1.1), names=("base",)),         # the inertia scales with it
    Randomize("inertia", Dist("uniform", 0.9, 1.1), names=("base",)),      # then each moment on its own
    Randomize("thrust_max", Dist("uniform", 0.9, 1.1)),                    # the thrust coefficient, per rotor
    Randomize("time_constant", Dist("uniform", 0.8, 1.25)),                # the motor lag, per rotor
    Randomize("command_delay_s", Dist("uniform", 0.0, 0.004), "set"),      # the motor delay
    Randomize("sensor_delay_s", Dist("uniform", 0.0, 0.02), "set"),        # motion capture's latency
    Randomize("push", Dist("uniform", 0.0, 0.027 * G * 0.1), mode="interval", names=("base",),
              interval_s=(0.5, 2.0), duration_s=0.3),                      # wind gusts, up to 10 % of the weight
)
"""The quadrotor tasks' randomization (`make_env(..., randomize="default")`): each world's mass, inertia, thrust
coefficient and motor time constant ±10-25 % per episode, a motor delay up to 4 ms, a motion-capture delay up
to 20 ms, and wind gusts (0.3 s pushes on top of the constant disturbance). Sensor noise is the observation
terms' (the paper's σ per term), the same in every world."""


class QuadrotorHover(Task):
    """Recover from any attitude and hold the position at the origin; see the module docstring."""

    config = TaskConfig(
        name="quadrotor_hover",
        robot="crazyflie",
        action_mode="thrust",
        action_scale=1.0,
        policy_terms=(ObsTerm("position_error", noise=0.001), ObsTerm("base_rotation_matrix", noise=0.001),
                      ObsTerm("base_lin_vel_w", noise=0.002), ObsTerm("base_ang_vel", noise=0.002),
                      ObsTerm("action_history")),
        rewards=(Reward("alive", 2.0), Reward("position_error_sq", -2.5), Reward("attitude_error_sq_sin", -2.5),
                 Reward("lin_vel_sq", -0.005), Reward("action_from_hover_l2", -0.005)),
        terminations=(Termination("out_of_box", HOVER.box),),
        privileged_terms=("rotor_thrust_state", "disturbance_force"),
        episode_length_s=5.0,
        success_window_s=2.0,
        inputs={POSITION_ERROR: 3, BASE_LIN_VEL_W: 3, ACTION_HISTORY: ACTION_HISTORY_LENGTH * 4},
        randomization=QUADROTOR_RANDOMIZATION,
    )
    success_position_m = 0.1
    success_attitude_rad = math.radians(10)

    def __init__(self, hover: HoverConfig = HOVER, curriculum: RewardCurriculum | None = HOVER_CURRICULUM) -> None:
        if hover.box != HOVER.box:
            self.config = replace(self.config, terminations=(Termination("out_of_box", hover.box),))
        names = {r.name for r in self.config.rewards}
        for ramp in curriculum.ramps if curriculum is not None else ():
            if ramp.term not in names:
                raise ValueError(f"quadrotor_hover: curriculum: {ramp.term!r} is not a reward term "
                                 f"(expected one of {', '.join(sorted(names))})")
        self.hover, self.curriculum = hover, curriculum
        self.transitions = 0
        """Transitions (steps × worlds) this task has evaluated: the curriculum's clock."""
        self.stage = 0
        """Curriculum stages applied so far."""

    def bind(self, env):
        super().bind(env)
        model = env.model
        if env.view.base_body is None or not env.spec.rotors:
            raise ValueError(f"{env.spec.source}: quadrotor_hover needs a floating base with rotors")
        self.base_body = env.view.base_body
        self.env_control_period = env.spec.control_period
        joint = int(model.body_jntadr[self.base_body])
        self._qpos_adr, self._dof_adr = int(model.jnt_qposadr[joint]), int(model.jnt_dofadr[joint])
        self._qpos, self._qvel, self._act = env.data_field("qpos"), env.data_field("qvel"), env.data_field("act")
        self.target_w = np.zeros((env.num_envs, 3))
        """Each world's position target, (num_envs, 3) m (the origin)."""
        self.disturbance = np.zeros((env.num_envs, 3))
        """Each world's constant disturbance force this episode, (num_envs, 3) N, world frame."""
        self.nan_actions = np.zeros(env.num_envs, dtype=np.int64)
        """NaN actions each world received this episode (MuJoCo turned its motors off for that step)."""
        self.nan_actions_total = 0
        self.position_error_w = np.zeros((env.num_envs, 3))
        """Each world's true position error to its target, (num_envs, 3) m (the rewards, the box, success)."""
        self.lin_vel_error_w = np.zeros((env.num_envs, 3))
        """Each world's true linear velocity relative to its target's, (num_envs, 3) m/s."""
        self._sensor_delay = np.zeros(env.num_envs, dtype=np.int64)
        """Control periods each world's motion-capture inputs lag the truth (`set_sensor_delay`)."""
        self._measured = np.zeros((env.num_envs, MAX_SENSOR_DELAY_STEPS + 1, 6))
        """The last measurements of (position error, linear velocity) per world, newest first."""
        mass = float(model.body_subtreemass[self.base_body])
        self.hover_thrust = np.full(env.num_envs, mass * G / sum(r.thrust_max for r in env.spec.rotors))
        """Each world's thrust fraction that holds its weight, (num_envs,)."""

    def position_w(self) -> np.ndarray:
        """The base position in the world, (num_envs, 3) m."""
        return self._qpos[:, self._qpos_adr:self._qpos_adr + 3]

    def lin_vel_w(self) -> np.ndarray:
        """The base linear velocity in the world, (num_envs, 3) m/s."""
        return self._qvel[:, self._dof_adr:self._dof_adr + 3]

    def target_velocity(self, env) -> np.ndarray:
        """The target's velocity, (num_envs, 3) m/s in the world: at rest."""
        return np.zeros((env.num_envs, 3))

    def set_sensor_delay(self, worlds: np.ndarray, delay_s: np.ndarray) -> np.ndarray:
        """Delay the motion-capture inputs (position error, linear velocity) of `worlds` (n,) by `delay_s` (n,) s,
        rounded to whole control periods and held within [0, MAX_SENSOR_DELAY_STEPS]; the delays applied, (n,) s.
        The rewards, the box and the success rule keep judging the truth. (The IMU's attitude and rate are not
        delayed: on a Crazyflie they come from the board.)"""
        period = self.env_control_period
        steps = np.clip(np.rint(np.asarray(delay_s) / period), 0, MAX_SENSOR_DELAY_STEPS).astype(np.int64)
        self._sensor_delay[worlds] = steps
        return steps * period

    def motor_thrust(self) -> np.ndarray:
        """Each rotor's thrust state (the motor lag's output), (num_envs, num_rotors) fractions of top thrust."""
        return self._act

    def reset(self, env, ids, rng):
        n, init = len(ids), self.hover.init
        pos = rng.uniform(-init.position_m, init.position_m, (n, 3))
        quat = random_rotations(rng, n, init.max_angle_rad)
        lin_vel = rng.uniform(-init.lin_vel, init.lin_vel, (n, 3))
        ang_vel = rng.uniform(-init.ang_vel, init.ang_vel, (n, 3))
        motors = rng.uniform(*init.motor_thrust, (n, len(env.spec.rotors)))
        guided = rng.uniform(size=n) < init.at_target_fraction
        pos[guided], lin_vel[guided], ang_vel[guided] = 0.0, 0.0, 0.0
        quat[guided] = (1.0, 0.0, 0.0, 0.0)
        motors[guided] = self.hover_thrust[ids[guided], None]
        qpos, qvel = self._qpos[ids], self._qvel[ids]
        qpos[:, self._qpos_adr:self._qpos_adr + 3] = self.target_w[ids] + pos
        qpos[:, self._qpos_adr + 3:self._qpos_adr + 7] = quat
        qvel[:, self._dof_adr:self._dof_adr + 3] = lin_vel
        qvel[:, self._dof_adr + 3:self._dof_adr + 6] = ang_vel      # MuJoCo's free joint: body frame
        self._qpos[ids], self._qvel[ids] = qpos, qvel
        self._act[ids] = motors
        self.disturbance[ids] = rng.normal(0.0, init.disturbance_std, (n, 3))
        env.apply_force(ids, self.base_body, self.disturbance[ids])
        self.position_error_w[ids], self.lin_vel_error_w[ids] = pos, lin_vel
        self._measured[ids] = np.concatenate([pos, lin_vel], axis=1)[:, None]
        env.inputs[POSITION_ERROR][ids] = pos
        env.inputs[BASE_LIN_VEL_W][ids] = lin_vel
        # The motors were commanded to their initial state: the history says so (L2F's), as on the robot
        env.inputs[ACTION_HISTORY][ids] = np.tile(2 * motors - 1, ACTION_HISTORY_LENGTH)
        self.nan_actions[ids] = 0
        return np.zeros((n, 0)), np.zeros((n, 0))

    def update(self, env):
        self.position_error_w[:] = self.position_w() - self.target_w
        self.lin_vel_error_w[:] = self.lin_vel_w() - self.target_velocity(env)
        self._measured[:, 1:] = self._measured[:, :-1]
        self._measured[:, 0, :3], self._measured[:, 0, 3:] = self.position_error_w, self.lin_vel_error_w
        measured = self._measured[np.arange(env.num_envs), self._sensor_delay]
        env.inputs[POSITION_ERROR][:] = measured[:, :3]
        env.inputs[BASE_LIN_VEL_W][:] = measured[:, 3:]

    def quantities(self, env):
        return {"position_error_w": self.position_error_w, "lin_vel_w": self.lin_vel_error_w,
                "hover_thrust": self.hover_thrust}

    def evaluate(self, env, state, action):
        bad = np.isnan(action).any(axis=-1)
        if bad.any():  # MuJoCo's bad-control guard zeroed those worlds' controls: motors off (raw -1)
            self.nan_actions += bad
            self.nan_actions_total += int(bad.sum())
            action = np.where(bad[:, None], -1.0, action)
        reward, terminated, parts = super().evaluate(env, state, action)
        self.transitions += len(action)
        if self.curriculum is not None and self.transitions // self.curriculum.every_transitions > self.stage:
            self._advance_curriculum()
        history = env.inputs[ACTION_HISTORY]
        num_rotors = action.shape[-1]
        history[:, :-num_rotors] = history[:, num_rotors:]
        history[:, -num_rotors:] = action
        return reward, terminated, parts

    def _advance_curriculum(self) -> None:
        """The next stage: each ramped weight times its factor, its magnitude at most its limit."""
        self.stage += 1
        ramps = {ramp.term: ramp for ramp in self.curriculum.ramps}

        def ramped(term: Reward) -> Reward:
            ramp = ramps.get(term.name)
            if ramp is None:
                return term
            return replace(term, weight=math.copysign(min(abs(term.weight) * ramp.factor, ramp.limit), term.weight))

        self.config = replace(self.config, rewards=tuple(ramped(term) for term in self.config.rewards))

    def episode_metrics(self, env, done):
        return {"position_error": np.linalg.norm(self.position_error_w[done], axis=-1).astype(np.float32),
                "attitude_error_deg": np.degrees(attitude_error(env.read_state().base_quat[done])).astype(np.float32),
                "nan_actions": self.nan_actions[done].astype(np.float32)}

    def success_condition(self, env, state):
        """Within 0.1 m of the target and 10° of level this step."""
        return ((np.linalg.norm(self.position_error_w, axis=-1) < self.success_position_m)
                & (attitude_error(state.base_quat) < self.success_attitude_rad))


# --- tracking a figure-eight ----------------------------------------------------------------------

@dataclass(frozen=True)
class FigureEight:
    """The reference of `quadrotor_track`: a 1:2 Lissajous figure-eight in the horizontal plane about the origin,

        x = a sin(θ),  y = (a / 2) sin(2θ),  z = 0,   θ = 2π t / period + phase,

    peak speeds a·2π/period in x and y alike (0.3 m over 8 s: 0.24 m/s). Each episode starts at a random phase."""

    amplitude_m: float = 0.3
    period_s: float = 8.0

    def __post_init__(self) -> None:
        if not (self.amplitude_m >= 0 and self.period_s > 0):
            raise ValueError(f"quadrotor_track: reference: amplitude_m {self.amplitude_m} (expected >= 0), "
                             f"period_s {self.period_s} (expected > 0)")

    def position(self, t: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """The reference positions (n, 3) m at times `t` (n,) s of episodes started at phases `phase` (n,) rad."""
        theta = 2 * np.pi * t / self.period_s + phase
        a = self.amplitude_m
        return np.column_stack([a * np.sin(theta), 0.5 * a * np.sin(2 * theta), np.zeros_like(theta)])

    def velocity(self, t: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """The reference velocities (n, 3) m/s at times `t` (n,) s of episodes started at phases `phase` (n,) rad."""
        theta = 2 * np.pi * t / self.period_s + phase
        rate = 2 * np.pi * self.amplitude_m / self.period_s
        return np.column_stack([rate * np.cos(theta), rate * np.cos(2 * theta), np.zeros_like(theta)])


class QuadrotorTrack(QuadrotorHover):
    """`quadrotor_track`: follow a figure-eight (`FigureEight`) for 10 s. The hover task with a moving target: the
    same initial states (about the reference's point at the start), box, rewards and curriculum, and the same
    observation terms, with the position error and the linear velocity taken relative to the moving reference's
    (the reference's velocity subtracted: a hover policy then tracks instead of lagging by its velocity damping,
    0.15 m for the hand-written controller on the default figure-eight). A hover policy runs on it unchanged.
    Success: within 0.1 m of the reference through the last 5 s (attitude free: tracking tilts the vehicle)."""

    config = replace(QuadrotorHover.config, name="quadrotor_track", episode_length_s=10.0, success_window_s=5.0)

    def __init__(self, hover: HoverConfig = HOVER, curriculum: RewardCurriculum | None = HOVER_CURRICULUM,
                 reference: FigureEight = FigureEight()) -> None:
        super().__init__(hover, curriculum)
        self.reference = reference

    def bind(self, env):
        super().bind(env)
        self.phase = np.zeros(env.num_envs)
        """Each world's reference phase this episode, (num_envs,) rad."""

    def reset(self, env, ids, rng):
        self.phase[ids] = rng.uniform(0, 2 * np.pi, len(ids))
        start = np.zeros(len(ids))
        self.target_w[ids] = self.reference.position(start, self.phase[ids])
        result = super().reset(env, ids, rng)
        self._qvel[ids, self._dof_adr:self._dof_adr + 3] += self.reference.velocity(start, self.phase[ids])
        return result   # the initial velocity drawn is relative to the reference's, as the observation sees it

    def update(self, env):
        self.target_w[:] = self.reference.position(self._time(env), self.phase)
        super().update(env)

    def target_velocity(self, env) -> np.ndarray:
        """The reference's velocity, (num_envs, 3) m/s."""
        return self.reference.velocity(self._time(env), self.phase)

    @staticmethod
    def _time(env) -> np.ndarray:
        """Each world's episode time at the end of the step being evaluated, (num_envs,) s."""
        return (env.episode_length + 1) * env.spec.control_period

    def success_condition(self, env, state):
        """Within 0.1 m of the reference this step."""
        return np.linalg.norm(self.position_error_w, axis=-1) < self.success_position_m
