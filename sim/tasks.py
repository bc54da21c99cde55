"""The shipped tasks, each a `TaskConfig` of terms plus its scene's reset and success, and their registry.

A task names its robot, its action mapping, its observation terms (the shared
ones in `s2r.observations`, plus privileged critic terms from `sim.privileged`),
its reward and termination terms (`sim.terms`) and defines reset and success
(`sim.task.Task`). Every method works on all worlds at once, (num_envs, ...)
numpy arrays. The legged tasks live in `sim.locomotion`.

Success is one rule for every task: the task's success condition held for the
last `success_window_s` seconds of an episode that timed out.

    task = make_task("cartpole")
    env = BatchEnv(task, num_envs=1024)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s2r.geometry import wrap_to_pi, yaw_from_quat
from s2r.observations import OBJECT_POSE, TARGET, ObsTerm
from s2r.sim.locomotion import Go2Flat, Go2Rough
from s2r.sim.push_t import GOAL_POSE, PUSHER_RADIUS, coverage, t_distance, to_block_frame
from s2r.sim.quadrotor import QuadrotorHover, QuadrotorTrack
from s2r.sim.randomization import Dist, Randomize
from s2r.sim.task import Task, TaskConfig
from s2r.sim.terms import NoParams, Reward, StepContext, Termination, reward_term


@reward_term()
def pole_upright_cart_centered(ctx: StepContext, p: NoParams) -> np.ndarray:
    """(1 + cos θ) / 2 of the pole (joint 1) times (1 + exp(-x²)) / 2 of the cart (joint 0, m): 1 upright at the
    rail's centre."""
    x, angle = ctx.state.q[:, 0], wrap_to_pi(ctx.state.q[:, 1])
    return 0.5 * (1 + np.cos(angle)) * (0.5 * (1 + np.exp(-x**2)))


@dataclass(frozen=True)
class Kernel:
    """The length scale of a distance kernel, m."""

    std: float = 0.1


@reward_term(Kernel)
def ee_distance_tanh(ctx: StepContext, p: Kernel) -> np.ndarray:
    """1 - tanh(d / std) of the end effector's distance d to the target (the `ee_error` quantity)."""
    return 1.0 - np.tanh(np.linalg.norm(ctx.quantities["ee_error"], axis=-1) / p.std)


@reward_term()
def goal_coverage(ctx: StepContext, p: NoParams) -> np.ndarray:
    """The fraction of the goal T the block covers (the `coverage` quantity)."""
    return ctx.quantities["coverage"]


class PendulumSwingUp(Task):
    """Swing a torque-limited pendulum up from any angle and hold it upright."""

    config = TaskConfig(
        name="pendulum",
        robot="pendulum",
        action_mode="torque",
        action_scale=2.5,
        policy_terms=(ObsTerm("joint_pos_sincos"), ObsTerm("joint_vel", scale=0.2, noise=0.05), ObsTerm("last_action")),
        rewards=(Reward("joint_upright_cos", 1.0, {"joint": 0}), Reward("joint_vel_l2", -0.01, {"joints": (0,)}),
                 Reward("action_l2", -0.01)),
        privileged_terms=("joint_damping", "body_mass"),
        episode_length_s=5.0,
        success_window_s=1.0,
        randomization=(
            Randomize("mass", Dist("uniform", 0.8, 1.2)),
            Randomize("damping", Dist("log_uniform", 0.5, 2.0)),
            Randomize("motor_strength", Dist("uniform", 0.85, 1.15)),
            Randomize("command_delay_s", Dist("uniform", 0, 0.01), "set"),
        ),
    )

    def reset(self, env, ids, rng):
        q = rng.uniform(-np.pi, np.pi, size=(len(ids), 1))
        dq = rng.uniform(-1.0, 1.0, size=(len(ids), 1))
        return q, dq

    def success_condition(self, env, state):
        return (np.abs(wrap_to_pi(state.q[:, 0])) < 0.3) & (np.abs(state.dq[:, 0]) < 2.0)


class CartpoleSwingUp(Task):
    """Swing the passive pole up by moving the cart, then balance it near the rail's centre."""

    config = TaskConfig(
        name="cartpole",
        robot="cartpole",
        action_mode="torque",
        action_scale=20.0,
        policy_terms=(
            ObsTerm("joint_pos", noise=0.005),
            ObsTerm("joint_pos_sincos"),
            ObsTerm("joint_vel", scale=0.2, noise=0.05),
            ObsTerm("last_action"),
        ),
        rewards=(Reward("pole_upright_cart_centered", 1.0), Reward("action_l2", -0.01),
                 Reward("joint_vel_l2", -0.002, {"joints": (1,)})),
        terminations=(Termination("joint_pos_out_of_bounds", {"joint": 0, "limit": 1.75}),),
        privileged_terms=("joint_damping", "body_mass"),
        episode_length_s=6.0,
        success_window_s=2.0,
        randomization=(
            Randomize("mass", Dist("uniform", 0.8, 1.2)),
            Randomize("damping", Dist("log_uniform", 0.5, 2.0)),
            Randomize("frictionloss", Dist("uniform", 0.0, 0.03), "add", names=("slider",)),
            Randomize("motor_strength", Dist("uniform", 0.85, 1.15)),
            Randomize("command_delay_s", Dist("uniform", 0, 0.01), "set"),
        ),
    )

    def reset(self, env, ids, rng):
        n = len(ids)
        q = np.stack([rng.uniform(-0.3, 0.3, n), np.pi + rng.uniform(-0.3, 0.3, n)], axis=-1)
        dq = rng.uniform(-0.1, 0.1, size=(n, 2))
        return q, dq

    def success_condition(self, env, state):
        return (np.abs(wrap_to_pi(state.q[:, 1])) < 0.25) & (np.abs(state.q[:, 0]) < 1.0)


class ArmReach(Task):
    """Move the arm's end effector to a random reachable target and hold it there."""

    config = TaskConfig(
        name="reach",
        robot="arm",
        action_mode="position",
        action_scale=1.0,
        action_clip=2.0,
        policy_terms=(
            ObsTerm("joint_pos", noise=0.01),
            ObsTerm("joint_vel", scale=0.2, noise=0.05),
            ObsTerm("target"),
            ObsTerm("last_action"),
        ),
        rewards=(Reward("ee_distance_tanh", 1.0, {"std": 0.1}), Reward("action_rate_l2", -0.01),
                 Reward("joint_vel_l2", -0.001)),
        privileged_terms=("ee_error", "joint_damping", "body_mass"),
        episode_length_s=3.0,
        success_window_s=0.5,
        inputs={TARGET: 3},
        kinematics=True,
        randomization=(
            Randomize("mass", Dist("uniform", 0.8, 1.2)),
            Randomize("mass", Dist("uniform", 0.0, 0.4), "add", names=("link3",)),  # payload
            Randomize("damping", Dist("log_uniform", 0.5, 2.5)),
            Randomize("armature", Dist("uniform", 0.7, 1.5)),
            Randomize("frictionloss", Dist("uniform", 0.0, 0.1), "add"),
            Randomize("kp", Dist("uniform", 0.6, 1.2)),
            Randomize("kd", Dist("uniform", 0.6, 1.4)),
            Randomize("encoder_offset", Dist("uniform", -0.03, 0.03), "add"),
            Randomize("command_delay_s", Dist("uniform", 0, 0.015), "set"),
            Randomize("push", Dist("uniform", 2.0, 8.0), "set", mode="interval", names=("link3",)),
        ),
    )
    success_radius = 0.05
    """Metres between end effector and target that count as reached."""
    shoulder = np.array([0.0, 0.0, 0.2])
    """The shoulder's position in the base frame: the centre of the sampled target shell."""

    def bind(self, env):
        super().bind(env)
        self.ee = env.site_id("ee")

    def reset(self, env, ids, rng):
        n = len(ids)
        radius = rng.uniform(0.2, 0.5, n)
        elevation = rng.uniform(-0.3, 0.9, n)
        azimuth = rng.uniform(-1.5, 1.5, n)
        target = self.shoulder + radius[:, None] * np.stack(
            [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=-1
        )
        env.inputs[TARGET][ids] = target
        env.set_mocap(ids, target)
        q = env.spec.default_q + rng.uniform(-0.3, 0.3, size=(n, 3))
        return q, np.zeros((n, 3))

    def ee_error(self, env) -> np.ndarray:
        """End effector minus target, (num_envs, 3) m."""
        return env.site_pos(self.ee) - env.inputs[TARGET]

    def quantities(self, env):
        return {"ee_error": self.ee_error(env)}

    def success_condition(self, env, state):
        return np.linalg.norm(self.ee_error(env), axis=-1) < self.success_radius


class PushT(Task):
    """Push a T-shaped block across a table onto a fixed goal pose with a planar pusher (Diffusion Policy's Push-T).

    The block slides on the table with Coulomb friction; the policy sees the pusher's
    position and velocity and the block's pose (x, y, sin yaw, cos yaw), as a tracker or
    a camera would report it, through the `object_pose` input. The reward is the coverage
    of the goal T (`sim.push_t.coverage`); success, a coverage above 95 % for the last half
    second of the 30 s episode.
    """

    config = TaskConfig(
        name="push_t",
        robot="pusher",
        action_mode="position",
        action_scale=0.25,
        policy_terms=(ObsTerm("joint_pos"), ObsTerm("joint_vel"), ObsTerm("object_pose")),
        rewards=(Reward("goal_coverage", 1.0),),
        episode_length_s=30.0,     # 300 steps, as Diffusion Policy's and LeRobot's Push-T
        success_window_s=0.5,
        inputs={OBJECT_POSE: 4},
    )
    success_coverage = 0.95
    """Coverage above which the block counts as placed."""
    has_mirror = True
    block_range = 0.15
    """The block's initial position is uniform in ±block_range m on both axes; its yaw in [-π, π)."""
    pusher_range = 0.2
    """The pusher's initial position is uniform in ±pusher_range m, clear of the block."""

    def bind(self, env):
        super().bind(env)
        joint = env.model.joint("block")
        self.block_qpos = int(env.model.jnt_qposadr[joint.id])
        self.qpos = env.data_field("qpos")
        self.current_coverage = np.zeros(env.num_envs)
        """(num_envs,) coverage after the last step, shared by reward and success."""

    def block_pose(self, env) -> np.ndarray:
        """Every world's block pose (x, y, yaw), (num_envs, 3), from its free joint."""
        q = self.qpos[:, self.block_qpos:self.block_qpos + 7]
        return np.stack([q[:, 0], q[:, 1], yaw_from_quat(q[:, 3:7])], axis=-1)

    def coverage(self, env) -> np.ndarray:
        """(num_envs,) fraction of the goal T the block covers."""
        return coverage(self.block_pose(env))

    def reset(self, env, ids, rng):
        n = len(ids)
        block = np.empty((n, 3))
        pusher = np.empty((n, 2))
        todo = np.arange(n)
        while len(todo):  # rejection: start off the goal, the pusher clear of the block
            block[todo, :2] = rng.uniform(-self.block_range, self.block_range, (len(todo), 2))
            block[todo, 2] = rng.uniform(-np.pi, np.pi, len(todo))
            pusher[todo] = rng.uniform(-self.pusher_range, self.pusher_range, (len(todo), 2))
            clear = t_distance(to_block_frame(pusher[todo, None], block[todo]))[:, 0] > PUSHER_RADIUS + 0.01
            todo = todo[~(clear & (coverage(block[todo]) < 0.5))]
        qpos = self.qpos[ids]
        qpos[:, self.block_qpos:self.block_qpos + 3] = np.column_stack([block[:, :2], np.full(n, 0.01)])
        qpos[:, self.block_qpos + 3:self.block_qpos + 7] = np.column_stack(
            [np.cos(block[:, 2] / 2), np.zeros(n), np.zeros(n), np.sin(block[:, 2] / 2)])
        self.qpos[ids] = qpos
        env.inputs[OBJECT_POSE][ids] = _planar_pose_input(block)
        return pusher, np.zeros((n, 2))

    def update(self, env):
        pose = self.block_pose(env)
        env.inputs[OBJECT_POSE][:] = _planar_pose_input(pose)
        self.current_coverage = coverage(pose)

    def quantities(self, env):
        return {"coverage": self.current_coverage}

    def success_condition(self, env, state):
        return self.current_coverage > self.success_coverage

    def mirror(self, obs, actions):
        """Reflection across the goal T's axis of symmetry, the line through the origin along its stem
        (yaw 3π/4): (x, y) → (-y, -x) for positions, velocities and targets, yaw ψ → π/2 - ψ (the T is
        symmetric about its own stem), so (sin ψ, cos ψ) → (cos ψ, sin ψ). Isotropic friction and two
        identical axes make the reflected motion physical too."""
        if not np.allclose(GOAL_POSE, (0.0, 0.0, np.pi / 4)) or self.config.policy_terms != PushT.config.policy_terms:
            raise NotImplementedError("push_t's mirror assumes the goal at (0, 0, π/4) and its own observation terms")
        swap = np.array([1, 0])
        obs = obs.copy()
        for start in (0, 2, 4):       # joint_pos, joint_vel, object_pose (x, y)
            obs[..., start:start + 2] = -obs[..., start + swap]
        obs[..., 6:8] = obs[..., 6 + swap]
        return obs, -actions[..., swap]


def _planar_pose_input(pose: np.ndarray) -> np.ndarray:
    """(x, y, yaw) poses (n, 3) as the `object_pose` input (x, y, sin yaw, cos yaw), (n, 4)."""
    return np.column_stack([pose[:, 0], pose[:, 1], np.sin(pose[:, 2]), np.cos(pose[:, 2])])


TASKS: dict[str, type[Task]] = {"pendulum": PendulumSwingUp, "cartpole": CartpoleSwingUp, "reach": ArmReach,
                                "push_t": PushT, "go2_flat": Go2Flat, "go2_rough": Go2Rough,
                                "quadrotor_hover": QuadrotorHover, "quadrotor_track": QuadrotorTrack}


def make_task(name: str) -> Task:
    """A fresh task by name: `pendulum`, `cartpole`, `reach`, `push_t`, `go2_flat`, `go2_rough`, `quadrotor_hover` or
    `quadrotor_track`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]()
