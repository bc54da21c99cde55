"""Task and TaskConfig: what every task is made of.

A task is a config that lists its terms (observations, rewards with weights,
terminations, a command generator, randomization) plus the few methods a scene
needs: `reset` (initial joint state, targets), `quantities` (what its terms read
from the simulator) and `success_condition`. `Task.evaluate` turns the listed
terms into each step's reward and terminations, and reports every reward term's
weighted value for logging. A new task is one file: a `TaskConfig` and a `Task`
subclass, registered in `sim.tasks.TASKS`.

    class Hold(Task):
        config = TaskConfig(name="hold", robot="arm", action_mode="position", action_scale=1.0,
                            policy_terms=(ObsTerm("joint_pos"),), rewards=(Reward("joint_vel_l2", -0.01),))
        def reset(self, env, ids, rng):
            return env.spec.default_q + rng.uniform(-0.1, 0.1, (len(ids), 3)), np.zeros((len(ids), 3))
        def success_condition(self, env, state):
            return np.abs(state.dq).max(axis=-1) < 0.05
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from s2r.actions import ActionMode
from s2r.observations import LAST_ACTION, ObsTerm
from s2r.sim.commands import VelocityCommand, VelocityCommandConfig
from s2r.sim.randomization import Randomize
from s2r.sim.terms import Reward, StepContext, Termination, weighted_sum
from s2r.sim.terrain import TerrainConfig
from s2r.state import RobotState

if TYPE_CHECKING:
    from s2r.sim.env import BatchEnv


@dataclass(frozen=True)
class TaskConfig:
    """The declarative part of a task."""

    name: str
    robot: str
    """A robot shipped in sim/robots, or a path to a spec YAML."""
    action_mode: ActionMode
    action_scale: float
    """rad (or m) per unit action in position mode; N·m (or N) in torque mode."""
    policy_terms: tuple[ObsTerm, ...]
    """What the robot can measure, in order; the critic sees these without noise."""
    rewards: tuple[Reward, ...] = ()
    """Reward terms (`sim.terms.REWARDS`) with weights; a step's reward is their weighted sum, in order."""
    terminations: tuple[Termination, ...] = ()
    """Failure terms (`sim.terms.TERMINATIONS`); the time-out at `episode_length_s` is not one of them."""
    rewards_per_second: bool = False
    """Weights are per second of simulated time (legged_gym's convention): each is multiplied by the control period."""
    command: VelocityCommandConfig | None = None
    """A base velocity command generator writing the `cmd_vel` input; None for tasks without one."""
    privileged_terms: tuple[str, ...] = ()
    """Sim-only critic terms from s2r.sim.privileged."""
    action_clip: float = 1.0
    history_length: int = 1
    """Policy observation frames stacked, oldest first."""
    episode_length_s: float = 5.0
    success_window_s: float = 1.0
    inputs: dict[str, int] = field(default_factory=dict)
    """Task inputs the env keeps per world besides the last action (name → size)."""
    kinematics: bool = False
    """Whether terms or success read positions (site_xpos) that must be current after each step."""
    randomization: tuple[Randomize, ...] = ()
    """The task's default domain randomization (`s2r train TASK --randomize`)."""
    terrain: TerrainConfig | None = None
    """Heightfield tiles that replace the robot MJCF's `floor` plane (`sim.terrain`); None: the MJCF's floor."""

    def __post_init__(self) -> None:
        names = [r.name for r in self.rewards]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"task {self.name}: reward terms listed twice: {', '.join(repeated)}")
        if self.command is not None and "cmd_vel" not in self.inputs:
            raise ValueError(f"task {self.name}: command: needs inputs['cmd_vel'] (size 3)")


class Task:
    """Base class: subclasses set `config` and define `reset` and `success_condition`."""

    config: TaskConfig
    has_mirror: bool = False
    """Whether `mirror` reflects the task's demonstrations into equally valid ones."""
    command: VelocityCommand | None = None
    """The command generator, made at `bind` from `config.command`."""

    def bind(self, env: BatchEnv) -> None:
        """Resolve model ids once, after the env has built its batch; subclasses call super().bind."""
        if self.config.command is not None:
            self.command = VelocityCommand(self.config.command, env.inputs["cmd_vel"], env.spec.control_period)

    def reset(self, env: BatchEnv, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Initial joint positions and velocities for worlds `ids`, each (n, num_joints); may set env.inputs.
        Tasks with a command resample it here (`self.command.reset(ids, rng)`)."""
        raise NotImplementedError

    def update(self, env: BatchEnv) -> None:
        """Refresh task inputs and quantities that follow from the new physics state; called after every step."""

    def quantities(self, env: BatchEnv) -> dict[str, np.ndarray]:
        """What the task's terms read from the simulator this step, each (num_envs, ...)."""
        return {}

    def context(self, env: BatchEnv, state: RobotState, action: np.ndarray) -> StepContext:
        """What this step's terms read: `state`, the clipped `action` (num_envs, A), the previous action, the
        task inputs and `quantities`."""
        return StepContext(state, action, env.inputs[LAST_ACTION], env.inputs, env.spec, env.spec.control_period,
                           self.quantities(env))

    def evaluate(self, env: BatchEnv, state: RobotState, action: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                       dict[str, np.ndarray]]:
        """The step's reward (num_envs,), terminations (num_envs,) bool and each reward term's weighted
        value (num_envs,), from the config's terms, for the step that led to `state` under `action`."""
        cfg = self.config
        ctx = self.context(env, state, action)
        reward, parts = weighted_sum(cfg.rewards, ctx, env.spec.control_period if cfg.rewards_per_second else 1.0)
        terminated = np.zeros(len(action), dtype=bool)
        for term in cfg.terminations:
            terminated |= term(ctx)
        return reward, terminated, parts

    def episode_metrics(self, env: BatchEnv, done: np.ndarray) -> dict[str, np.ndarray]:
        """Called for the worlds `done` (k,) whose episodes end this step, before they reset: the task's figures
        of those episodes, each (k,) float32, reported in `info["episode"]`. A task with a curriculum moves it
        here too, from the same episodes."""
        return {}

    def success_condition(self, env: BatchEnv, state: RobotState) -> np.ndarray:
        """(num_envs,) bool: the goal holds in this state."""
        raise NotImplementedError

    def mirror(self, obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Policy observations (..., D) and raw actions (..., A) of a demonstration reflected by the task's
        mirror symmetry (scene, goal and physics unchanged): a second, equally valid demonstration.
        Tasks without one raise NotImplementedError."""
        raise NotImplementedError(f"task {self.config.name} defines no mirror symmetry")
