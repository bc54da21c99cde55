"""Simulation throughput: s2r's BatchEnv against the bare physics and against gymnasium.

Three loops step the same compiled model (`env.model`, actuators included) with the
same decimation and the same pre-generated random raw actions, in one process run:

- s2r: `BatchEnv.step`, the full env: action mapping, physics, observations, rewards, auto-resets.
- ceiling: a bare `mujoco.batch.Batch` on the same thread pool, started from the env's reset
  states; each step writes `ctrl = action_mapping.targets(action)` and steps `decimation`
  substeps, and observes nothing. This is what the Python around the physics is measured against.
- peer: gymnasium's `SyncVectorEnv` over a `MujocoEnv` built on the same model (observation
  qpos + qvel, reward 0, no rendering), from the same start states. It steps worlds one by one
  in Python, so it is timed on fewer worlds and steps.

Throughput is env steps per second, one env step being `decimation` physics steps of one
world, so the three compare like with like. Absolute numbers are notes on a shared machine;
the ratios are the result.

    result = run("cartpole", num_envs=1024, steps=200)
    result["ratio_vs_ceiling"], result["ratio_vs_peer"]

    PYTHONPATH=. python -m bench.sim --task cartpole --num-envs 1024
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import mujoco.batch
import numpy as np
import torch
from gymnasium.envs.mujoco import MujocoEnv

from bench.report import machine, report
from s2r.sim.env import BatchEnv, make_env

WARMUP_STEPS = 10
"""Untimed steps each loop takes first (thread pool start, caches, allocations)."""


class SavedModelEnv(MujocoEnv):
    """A gymnasium MuJoCo env on a model saved as MJB: observation qpos + qvel, reward 0, never terminates.

    MujocoEnv loads its model from a file path; s2r's model is compiled from an MjSpec and
    cannot be written back as XML, so it is saved in MuJoCo's binary format (bit-identical)
    and loaded from that path.
    """

    metadata = {"render_modes": []}

    def __init__(self, model_path: str, frame_skip: int, obs_dim: int) -> None:
        space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float64)
        super().__init__(model_path, frame_skip, observation_space=space)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = mujoco.MjModel.from_binary_path(self.fullpath)
        return model, mujoco.MjData(model)

    def reset_model(self) -> np.ndarray:
        self.set_state(self.init_qpos, self.init_qvel)
        return self._observation()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.do_simulation(action, self.frame_skip)
        return self._observation(), 0.0, False, False, {}

    def _observation(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel])


def run(task: str = "cartpole", num_envs: int = 1024, steps: int = 200, seed: int = 0, *,
        peer_envs: int = 64, peer_steps: int = 50) -> dict[str, Any]:
    """Env steps per second of s2r, the bare batch and gymnasium on one task, and their ratios.

    The peer is timed on `min(num_envs, peer_envs)` worlds for `min(steps, peer_steps)` steps.
    """
    env = make_env(task, num_envs, seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.standard_normal((WARMUP_STEPS + steps, num_envs, env.num_actions)).astype(np.float32)
    env.reset(seed=seed)
    qpos, qvel = env.batch.bind("qpos").copy(), env.batch.bind("qvel").copy()

    s2r_s = _time_s2r(env, torch.from_numpy(actions), seed)
    ceiling_s = _time_ceiling(env, actions, qpos, qvel)
    n_peer, t_peer = min(num_envs, peer_envs), min(steps, peer_steps)
    peer_s = _time_peer(env, actions[: WARMUP_STEPS + t_peer, :n_peer], qpos, qvel)
    env.close()

    s2r_rate, ceiling_rate, peer_rate = num_envs * steps / s2r_s, num_envs * steps / ceiling_s, n_peer * t_peer / peer_s
    return {
        "task": task,
        "num_envs": num_envs,
        "steps": steps,
        "decimation": env.decimation,
        "peer_envs": n_peer,
        "peer_steps": t_peer,
        "s2r_steps_per_s": s2r_rate,
        "ceiling_steps_per_s": ceiling_rate,
        "peer_steps_per_s": peer_rate,
        "ratio_vs_ceiling": s2r_rate / ceiling_rate,
        "ratio_vs_peer": s2r_rate / peer_rate,
        "machine": machine(),
    }


def _seconds(step: Callable[[Any], object], actions: Any, finish: Callable[[], object] = lambda: None) -> float:
    """Wall seconds for `step(action)` over the leading axis of `actions`, then `finish()` (a device sync)."""
    start = time.perf_counter()
    for action in actions:
        step(action)
    finish()
    return time.perf_counter() - start


def _time_s2r(env: BatchEnv, actions: torch.Tensor, seed: int) -> float:
    """Seconds for `BatchEnv.step` over actions[WARMUP_STEPS:], (steps, num_envs, A), after a warm-up and a reset."""
    _seconds(env.step, actions[:WARMUP_STEPS])
    env.reset(seed=seed)
    return _seconds(env.step, actions[WARMUP_STEPS:])


def _time_ceiling(env: BatchEnv, actions: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> float:
    """Seconds for the bare batch over actions[WARMUP_STEPS:], started from states qpos (N, nq), qvel (N, nv)."""
    batch = mujoco.batch.Batch(env.model, nsim=len(qpos))
    ctrl, mapping = batch.bind("ctrl"), env.action_mapping

    def start_from_reset_states() -> None:
        batch.reset(stage=mujoco.mjtStage.mjSTAGE_NONE)
        batch.bind("qpos")[:], batch.bind("qvel")[:] = qpos, qvel

    def step(action: np.ndarray) -> None:
        ctrl[:] = mapping.targets(action)
        batch.step(nstep=env.decimation)

    start_from_reset_states()
    _seconds(step, actions[:WARMUP_STEPS])
    start_from_reset_states()
    return _seconds(step, actions[WARMUP_STEPS:])


def _time_peer(env: BatchEnv, actions: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> float:
    """Seconds for gymnasium's SyncVectorEnv over actions[WARMUP_STEPS:], (steps, n, A), on the first n start states."""
    n = actions.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "model.mjb")
        mujoco.mj_saveModel(env.model, path)
        obs_dim = env.model.nq + env.model.nv
        make_one = lambda: gym.wrappers.TimeLimit(  # noqa: E731
            SavedModelEnv(path, env.decimation, obs_dim), max_episode_steps=env.max_episode_length)
        peer = gym.vector.SyncVectorEnv([make_one for _ in range(n)])

    def start_from_reset_states() -> None:
        peer.reset()
        for world, q, dq in zip(peer.envs, qpos, qvel):
            world.unwrapped.set_state(q, dq)

    def step(action: np.ndarray) -> None:
        peer.step(env.action_mapping.targets(action))

    start_from_reset_states()
    _seconds(step, actions[:WARMUP_STEPS])
    start_from_reset_states()
    seconds = _seconds(step, actions[WARMUP_STEPS:])
    peer.close()
    return seconds


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="cartpole", help="pendulum, cartpole or reach")
    parser.add_argument("--num-envs", type=int, default=1024, help="worlds stepped by s2r and the ceiling")
    parser.add_argument("--steps", type=int, default=200, help="timed env steps")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(args)
    r = run(opts.task, opts.num_envs, opts.steps, opts.seed)
    rows = [
        ("s2r BatchEnv.step", f"{r['s2r_steps_per_s']:,.0f} steps/s"),
        ("ceiling: bare mujoco.batch", f"{r['ceiling_steps_per_s']:,.0f} steps/s"),
        (f"peer: gymnasium SyncVectorEnv ({r['peer_envs']} envs)", f"{r['peer_steps_per_s']:,.0f} steps/s"),
        ("s2r / ceiling", f"{r['ratio_vs_ceiling']:.2f}"),
        ("s2r / peer", f"{r['ratio_vs_peer']:.1f}×"),
    ]
    report(f"sim_{opts.task}", f"simulation throughput: {opts.task}, {opts.num_envs} envs", rows, r)


if __name__ == "__main__":
    main()
