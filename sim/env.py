"""BatchEnv: N worlds of one task, on `mujoco.batch.Batch` (`cpu`) or MuJoCo Warp (`warp`).

The `cpu` backend steps every world on MuJoCo's C thread pool, bit-identical to a
loop over one MjData per world; the `warp` backend (`sim.warp_batch.WarpBatch`)
steps them in Warp kernels on a GPU. Both return torch tensors. Observations are built with the
shared terms of `s2r.observations` and actions go through the shared
`ActionMapping`, exactly as on the robot. Worlds that finish an episode reset
themselves; `info["final_critic_obs"]` keeps what they ended in.

    env = BatchEnv(make_task("cartpole"), num_envs=1024, seed=0)
    obs = env.reset()                                    # {"policy": (N, P), "critic": (N, C)}
    obs, reward, terminated, truncated, info = env.step(actions)   # actions: (N, A)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import mujoco
import mujoco.batch
import numpy as np
import torch

from s2r.actions import ActionMapping
from s2r.contract import PolicyContract
from s2r.observations import LAST_ACTION, ObservationHistory, build_observation, term_sizes
from s2r.sim.model import compile_model
from s2r.sim.privileged import PRIVILEGED
from s2r.sim.randomization import Randomize, Randomizer
from s2r.sim.robot_view import RobotView
from s2r.sim.task import Task
from s2r.sim.terrain import build_terrain
from s2r.spec import RobotSpec, robot_spec
from s2r.state import RobotState

Backend = Literal["cpu", "warp"]
BACKENDS: tuple[Backend, ...] = ("cpu", "warp")


class BatchEnv:
    """A batched environment of `num_envs` worlds running one task."""

    def __init__(self, task: Task, num_envs: int, *, seed: int = 0, nthread: int = 0,
                 spec: RobotSpec | None = None, device: torch.device | str = "cpu",
                 randomization: tuple[Randomize, ...] = (), backend: Backend = "cpu",
                 nconmax: int | None = None, njmax: int | None = None) -> None:
        """`nthread`: the cpu backend's threads (0: all cores). `nconmax`/`njmax`: the warp backend's
        contact and constraint buffers per world (MuJoCo Warp's defaults if None)."""
        cfg = task.config
        for name in cfg.privileged_terms:
            if name not in PRIVILEGED:
                raise ValueError(f"task {cfg.name}: privileged term {name!r} is unknown; known: {', '.join(PRIVILEGED)}")
        self.task = task
        self.spec = spec or robot_spec(cfg.robot)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.action_mapping = ActionMapping.for_robot(self.spec, cfg.action_mode, cfg.action_scale, clip=cfg.action_clip)
        self.num_actions = self.action_mapping.num_actions
        self.terrain = build_terrain(cfg.terrain, seed=seed) if cfg.terrain is not None else None
        """The task's heightfield tiles (`sim.terrain.Terrain`), the same in every world; None: the MJCF's floor."""
        self.model = compile_model(self.spec, cfg.action_mode, terrain=self.terrain)
        self.decimation = round(self.spec.control_period / self.model.opt.timestep)
        if abs(self.decimation * self.model.opt.timestep - self.spec.control_period) > 1e-9:
            raise ValueError(
                f"{self.spec.source}: control_period {self.spec.control_period} s is not a multiple of "
                f"the MJCF timestep {self.model.opt.timestep} s"
            )
        self.max_episode_length = round(cfg.episode_length_s / self.spec.control_period)
        self.success_window = round(cfg.success_window_s / self.spec.control_period)
        self.backend = backend
        if backend == "cpu":
            self.batch = mujoco.batch.Batch(self.model, nsim=num_envs, nthread=nthread)
        elif backend == "warp":
            from s2r.sim.warp_batch import WarpBatch

            self.batch = WarpBatch(self.model, num_envs, nconmax=nconmax, njmax=njmax, source=str(self.spec.mjcf))
        else:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")

        self.view = RobotView(self.model, self.spec)
        """Where the spec's joints (and base) are in `model`: `view.dof_index` picks them from dof fields."""
        self._qpos = self.batch.bind("qpos")
        self._qvel = self.batch.bind("qvel")
        self._ctrl = self.batch.bind("ctrl")
        self._qfrc_actuator = self.batch.bind("qfrc_actuator")
        self._site_xpos = self.batch.bind("site_xpos")
        self._mocap_pos = self.batch.bind("mocap_pos") if self.model.nmocap else None
        self._xfrc_applied = self.batch.bind("xfrc_applied")
        self._time = self.batch.bind("time")
        self._stage = mujoco.mjtStage.mjSTAGE_POS if cfg.kinematics else mujoco.mjtStage.mjSTAGE_NONE
        self.diverged_total = 0
        """Worlds whose physics blew up (NaN/Inf) and that MuJoCo reset; each ended its episode as a failure."""

        self.inputs: dict[str, np.ndarray] = {LAST_ACTION: np.zeros((num_envs, self.num_actions))}
        for name, size in cfg.inputs.items():
            self.inputs[name] = np.zeros((num_envs, size))
        frame = sum(term_sizes(cfg.policy_terms, self.spec))
        self.history = ObservationHistory(cfg.history_length, frame, num_envs)
        self.rng = np.random.default_rng(seed)
        self.episode_return = np.zeros(num_envs)
        self.episode_length = np.zeros(num_envs, dtype=np.int64)
        self.success_held = np.zeros(num_envs, dtype=np.int64)
        self.success_reached = np.zeros(num_envs, dtype=bool)
        """Whether the task's success condition has held at any step of each world's episode."""
        self.episode_terms = {term.name: np.zeros(num_envs) for term in cfg.rewards}
        """Each reward term's weighted sum over the current episode, (num_envs,) per term."""
        self._command_delay = np.zeros(num_envs, dtype=np.int64)
        """Physics steps each world applies the previous action before this one (`set_command_delay`)."""
        self._encoder_offset = np.zeros((num_envs, self.spec.num_joints))
        """Added to the joint positions the policy measures (`set_encoder_offset`)."""
        self._last_ctrl = np.zeros((num_envs, self.model.nu))
        self.task.bind(self)
        self.randomizer = Randomizer(self, randomization, seed) if randomization else None
        self.obs_dims = {"policy": frame * cfg.history_length, "critic": self._critic_dim()}
        self._obs: dict[str, torch.Tensor] | None = None

    # --- model access, for tasks and randomization ----------------------------------------
    def site_id(self, name: str) -> int:
        return self.model.site(name).id

    def site_pos(self, site: int) -> np.ndarray:
        """World position of a site in every world, (num_envs, 3), current after each step."""
        return self._site_xpos[:, site]

    def set_mocap(self, ids: np.ndarray, pos: np.ndarray) -> None:
        if self._mocap_pos is not None:
            self._mocap_pos[ids, 0] = pos

    def model_field(self, name: str) -> np.ndarray:
        """A model field made per-world, (num_envs, ...), live: writes take effect at the next step."""
        return self.batch.expand(name)

    def data_field(self, name: str) -> np.ndarray:
        """A live (num_envs, ...) view of an MjData field (state fields such as xfrc_applied are writable)."""
        return self.batch.bind(name)

    def set_const(self, worlds: np.ndarray) -> None:
        """Recompute the constants derived from masses, inertias and armatures (mj_setConst) of `worlds`
        after writing their model fields."""
        self.batch.set_const(worlds)

    def apply_force(self, worlds: np.ndarray, body: int, force: np.ndarray) -> None:
        """Add world-frame forces (n, 3) N at the centre of mass of body `body` of `worlds` (n,) to those already
        on it, until changed: forces from several sources (a task's disturbance, randomization's pushes) compose,
        each source ends its own by applying its negative, and resetting a world clears every force on it."""
        self._xfrc_applied[worlds, body, :3] += force

    def set_command_delay(self, worlds: np.ndarray, delay_s: np.ndarray) -> np.ndarray:
        """Delay the actions of `worlds` (n,) by `delay_s` (n,) seconds: each world applies its previous action
        for that long into the control period. Rounded to whole physics steps and held within
        [0, control_period - timestep]; returns the delays applied, (n,) s."""
        steps = np.clip(np.rint(np.asarray(delay_s) / self.model.opt.timestep), 0, self.decimation - 1)
        self._command_delay[worlds] = steps.astype(np.int64)
        return steps * self.model.opt.timestep

    @property
    def command_delay_s(self) -> np.ndarray:
        """Each world's action delay (`set_command_delay`), (num_envs,) s."""
        return self._command_delay * self.model.opt.timestep

    def set_encoder_offset(self, worlds: np.ndarray, joints: np.ndarray, offset: np.ndarray) -> None:
        """Bias what the policy measures of joints `joints` (k,) (spec indices) in `worlds` (n,) by `offset`
        (n, k) rad or m; the physics and the critic see the truth."""
        self._encoder_offset[np.ix_(worlds, joints)] = offset

    @property
    def encoder_offset(self) -> np.ndarray:
        """Each world's encoder bias (`set_encoder_offset`), (num_envs, num_joints) rad or m, read-only."""
        view = self._encoder_offset.view()
        view.flags.writeable = False
        return view

    def set_joint_state(self, ids: np.ndarray, q: np.ndarray, dq: np.ndarray) -> None:
        """Put the joints of worlds `ids` (n,) at positions `q` and velocities `dq`, (n, num_joints) in spec
        order, and recompute their positions (sites); the episode clocks are left as they are."""
        self.view.write_joint_state(self._qpos, self._qvel, q, dq, ids)
        self.batch.forward(ids, stage=mujoco.mjtStage.mjSTAGE_POS)

    def model_value(self, name: str) -> np.ndarray:
        """A model field's per-world values, read-only, (num_envs, ...), expanded or shared."""
        values = self.batch.expanded(name)
        if values is None:
            shared = getattr(self.model, name)
            return np.broadcast_to(shared, (self.num_envs, *shared.shape))
        return values

    def contract(self, provenance: dict[str, Any] | None = None) -> PolicyContract:
        """The contract a policy trained on this env carries."""
        cfg = self.task.config
        return PolicyContract.build(spec=self.spec, terms=cfg.policy_terms, action=self.action_mapping,
                                    history_length=cfg.history_length, provenance=provenance)

    # --- the loop -------------------------------------------------------------------------
    def read_state(self) -> RobotState:
        """Every world's RobotState: (num_envs, num_joints) arrays (and the base's, with an IMU; see RobotView)."""
        return self.view.read_state(self._qpos, self._qvel, self._qfrc_actuator)

    def reset(self, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Reset every world; returns the first observations."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_worlds(np.arange(self.num_envs))
        policy, critic = self._observe(self.read_state(), None)
        self._obs = {"policy": self._tensor(policy), "critic": self._tensor(critic)}
        return self._obs

    @property
    def reward_terms(self) -> tuple[str, ...]:
        """The task's reward terms, in the order of `info["reward_terms"]` columns."""
        return tuple(term.name for term in self.task.config.rewards)

    def reward_weights(self) -> np.ndarray:
        """(K,) each reward term's weight in effect (a curriculum changes them), per step."""
        cfg = self.task.config
        scale = self.spec.control_period if cfg.rewards_per_second else 1.0
        return np.array([term.weight * scale for term in cfg.rewards])

    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Apply raw actions (num_envs, A) for one control period; auto-reset finished worlds."""
        if tuple(actions.shape) != (self.num_envs, self.num_actions):
            raise ValueError(f"BatchEnv.step: actions: shape {tuple(actions.shape)} "
                             f"(expected ({self.num_envs}, {self.num_actions}))")
        action = self.action_mapping.clip_action(actions.detach().cpu().numpy().astype(np.float64))
        targets = self.action_mapping.targets(action)
        if self.randomizer is not None:
            self.randomizer.on_step()
        if self._command_delay.any():
            # Latency: world i applies the previous targets for its first _command_delay[i] physics steps.
            for substep in range(self.decimation):
                self._ctrl[:] = np.where((substep < self._command_delay)[:, None], self._last_ctrl, targets)
                last = substep == self.decimation - 1
                self.batch.step(nstep=1, stage=self._stage if last else mujoco.mjtStage.mjSTAGE_NONE)
        else:
            self._ctrl[:] = targets
            self.batch.step(nstep=self.decimation, stage=self._stage)
        self._last_ctrl[:] = targets

        state = self.read_state()
        self.task.update(self)
        weights = self.reward_weights()    # before evaluate, which may move a curriculum on
        reward, failed, terms = self.task.evaluate(self, state, action)
        for name, value in terms.items():
            self.episode_terms[name] += value
        self.episode_length += 1
        # MuJoCo resets a world whose state turns NaN/Inf, clock included: catch it by its clock.
        diverged = np.abs(self._time - self.episode_length * self.spec.control_period) > 0.5 * self.model.opt.timestep
        self.diverged_total += int(diverged.sum())
        terminated = failed | diverged
        truncated = (self.episode_length >= self.max_episode_length) & ~terminated
        self.success_held = np.where(self.task.success_condition(self, state), self.success_held + 1, 0)
        self.success_reached |= self.success_held > 0
        self.episode_return += reward
        self.inputs[LAST_ACTION][:] = action
        policy, critic = self._observe(state, None)

        done = np.flatnonzero(terminated | truncated)
        success = truncated[done] & (self.success_held[done] >= self.success_window)
        info: dict[str, Any] = {
            "diverged": int(diverged.sum()),
            "final_critic_obs": self._tensor(critic),
            # each reward term's unweighted value (num_envs, K) (reward = terms · the weights this step paid with) and
            # the weights in effect from now on (K,) (a curriculum may have moved on in this step)
            "reward_terms": self._tensor(np.array([terms[name] for name in self.reward_terms]).reshape(
                len(weights), self.num_envs).T / np.where(weights == 0, 1.0, weights)),
            "reward_weights": self._tensor(self.reward_weights()),
            "episode": {
                "return": torch.from_numpy(self.episode_return[done].astype(np.float32)),
                "length": torch.from_numpy(self.episode_length[done].astype(np.float32)),
                "success": torch.from_numpy(success.astype(np.float32)),
                "reached": torch.from_numpy(self.success_reached[done].astype(np.float32)),
                # each reward term's mean per step over the episode (TensorBoard: episode/reward/NAME)
                **{f"reward/{name}": torch.from_numpy((total[done] / self.episode_length[done]).astype(np.float32))
                   for name, total in self.episode_terms.items()},
                **{name: torch.from_numpy(value) for name, value in self.task.episode_metrics(self, done).items()},
            },
        }
        if len(done):
            self._reset_worlds(done)
            policy[done], critic[done] = self._observe(self.read_state().take(done), done)
        self._obs = {"policy": self._tensor(policy), "critic": self._tensor(critic)}
        return (self._obs, self._tensor(reward), torch.from_numpy(terminated).to(self.device),
                torch.from_numpy(truncated).to(self.device), info)

    def copy_state(self, source: BatchEnv) -> None:
        """Make every world's state a copy of `source`'s worlds (an env of the same task, robot and size):
        physics, task inputs, the last action and the episode clocks, then the task's derived quantities
        (`Task.update`); the next step from the same actions then continues each world as `source` would
        (cpu backend, without randomization)."""
        if self.backend != "cpu" or source.backend != "cpu":
            raise NotImplementedError("copy_state: needs the cpu backend on both envs")
        if self.randomizer is not None or source.randomizer is not None:
            raise NotImplementedError("copy_state: randomized model parameters are not copied; use envs without "
                                      "randomization")
        if (source.task.config.name, source.num_envs, source.spec.name) != (self.task.config.name, self.num_envs,
                                                                           self.spec.name):
            raise ValueError(f"copy_state: source is {source.task.config.name} × {source.num_envs} on "
                             f"{source.spec.name}, this env {self.task.config.name} × {self.num_envs} on {self.spec.name}")
        self.batch.state[:] = source.batch.state
        for name, value in source.inputs.items():
            self.inputs[name][:] = value
        self._last_ctrl[:] = source._last_ctrl
        self._command_delay[:] = source._command_delay
        self._encoder_offset[:] = source._encoder_offset
        self.episode_length[:] = source.episode_length
        self.success_held[:] = source.success_held
        self.success_reached[:] = source.success_reached
        self.episode_return[:] = source.episode_return
        for name, total in source.episode_terms.items():
            self.episode_terms[name][:] = total
        self.history.buffer[:] = source.history.buffer
        self.history.fresh[:] = source.history.fresh
        self.batch.forward(stage=mujoco.mjtStage.mjSTAGE_POS)    # positions (sites) the task may read
        self.task.update(self)

    def close(self) -> None:
        """Release the batch (its thread pool)."""
        self.batch = None

    # --- internals --------------------------------------------------------------------------
    def _reset_worlds(self, ids: np.ndarray) -> None:
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        if self.randomizer is not None:
            self.randomizer.on_reset(ids)
        q, dq = self.task.reset(self, ids, self.rng)
        self.view.write_joint_state(self._qpos, self._qvel, q, dq, ids)
        self.batch.forward(ids, stage=mujoco.mjtStage.mjSTAGE_POS)
        self.inputs[LAST_ACTION][ids] = 0.0
        self._last_ctrl[ids] = self.action_mapping.targets(np.zeros((len(ids), self.num_actions)))
        self.history.reset(ids)
        self.episode_return[ids] = 0.0
        self.episode_length[ids] = 0
        self.success_held[ids] = 0
        self.success_reached[ids] = False
        for total in self.episode_terms.values():
            total[ids] = 0.0

    def _observe(self, state: RobotState, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Policy (noisy, stacked) and critic (clean + privileged) observations of rows `ids` (all for None)."""
        cfg = self.task.config
        inputs = self.inputs if ids is None else {k: v[ids] for k, v in self.inputs.items()}
        offset = self._encoder_offset if ids is None else self._encoder_offset[ids]
        measured = replace(state, q=state.q + offset)
        policy = self.history.push(build_observation(cfg.policy_terms, measured, inputs, self.spec, rng=self.rng), ids)
        clean = build_observation(cfg.policy_terms, state, inputs, self.spec)
        privileged = [PRIVILEGED[name](self) for name in cfg.privileged_terms]
        if self.randomizer is not None:
            privileged.append(self.randomizer.observation())
        if ids is not None:
            privileged = [p[ids] for p in privileged]
        critic = np.concatenate([clean, *privileged], axis=-1) if privileged else clean
        return policy, critic

    def _critic_dim(self) -> int:
        cfg = self.task.config
        frame = sum(term_sizes(cfg.policy_terms, self.spec))
        randomized = self.randomizer.dim if self.randomizer is not None else 0
        return frame + randomized + sum(PRIVILEGED[name](self).shape[-1] for name in cfg.privileged_terms)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)


def make_env(task_name: str, num_envs: int, *, seed: int = 0, backend: Backend = "cpu",
             randomize: str | None = None, robot: str | None = None, nconmax: int | None = None,
             njmax: int | None = None, device: torch.device | str = "cpu", nthread: int = 0) -> BatchEnv:
    """The env for a task on a backend (`cpu` or `warp`; `nconmax`/`njmax`: warp's buffers per world),
    returning its tensors on `device`; `nthread`: the cpu backend's threads (0: all cores).

    `randomize`: None for the nominal model, "default" for the task's own randomization
    terms, or the path of a randomization YAML.
    """
    from s2r.sim.randomization import load_randomization
    from s2r.sim.tasks import make_task

    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    task = make_task(task_name)
    if randomize is None:
        terms: tuple[Randomize, ...] = ()
    elif randomize == "default":
        terms = task.config.randomization
    else:
        terms = load_randomization(randomize)
    spec = robot_spec(robot) if robot is not None else None
    if spec is not None and spec.joint_names != robot_spec(task.config.robot).joint_names:
        raise ValueError(f"{robot}: joints {spec.joint_names} are not those of task {task_name}'s robot "
                         f"{task.config.robot!r}")
    return BatchEnv(task, num_envs, seed=seed, randomization=terms, spec=spec, backend=backend,
                    nconmax=nconmax, njmax=njmax, device=device, nthread=nthread)
