"""Evaluate a policy in simulation: an exported ONNX file or a training run directory, in one loop.

An ONNX file runs through the runtime `load_runtime` picks for it, exactly as on the robot: it
builds its own observations from each world's RobotState with the shared terms and its own
action mapping; only the physics is simulated. A diffusion policy runs through the robot's
`ChunkedPolicy` in its synchronous mode, batched over the worlds: chunks planned at the same
ticks, time-aligned and cross-faded over `blend_steps` ticks as policy_node executes them
(`sampling_ticks` 1 also takes each chunk a tick late, as the planner thread at best does).
A diffusion run directory is exported to a temporary ONNX file first, so what is measured is
always the exported graph and the numpy sampler. An mlp run directory runs the torch actor on
the env's observations. One episode per world, so short (failed) episodes do not crowd out
long ones.

`success_rate` is the task's rule (success held for its window at the time-out); `reached_rate`
the rule of Diffusion Policy's and LeRobot's Push-T (the success condition held at any step,
where their episode ends); `mean_final_reward` and `mean_max_reward` the reward of each
episode's last step and its best (push_t's reward is the goal coverage: its final and best
coverage).

    result = evaluate(Path("policy.onnx"), episodes=64)   # {"task", "episodes", "mean_return", "success_rate", ...}
    result = evaluate(Path("dp.onnx"), episodes=50, blend_steps=0, warm_start=True)
    result = evaluate(Path("policy.onnx"), episodes=16, video=Path("eval.mp4"), video_worlds=4)   # + "video"

With `video`, the first `video_worlds` worlds are filmed off-screen into one tiled MP4
(`s2r.sim.render.EpisodeVideo`: task, time, command or goal, reward, success on each tile).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from s2r.contract import ContractError
from s2r.observations import LAST_ACTION
from s2r.policies.episodes import run_episodes
from s2r.policies.train import load_policy
from s2r.runtime import load_runtime, read_contract
from s2r.runtime.diffusion import CHECKPOINT as DIFFUSION_CHECKPOINT
from s2r.sim.env import BatchEnv, make_env

if TYPE_CHECKING:
    from s2r.sim.render import EpisodeVideo


def evaluate(source: Path, *, task: str | None = None, episodes: int = 64, seed: int = 1,
             backend: str = "cpu", randomize: str | None = None, video: Path | None = None, video_worlds: int = 4,
             **options: Any) -> dict[str, Any]:
    """Run `episodes` episodes (one per world) and report return, success and reward figures.

    `randomize` evaluates on perturbed worlds: "default" (the task's training randomization)
    or a randomization YAML, e.g. a fixed perturbed robot. `options` are the runtime's
    (`s2r.runtime.load.DIFFUSION_OPTIONS`: warm_start, action_horizon, blend_steps, ...); a
    policy whose kind does not take them refuses them. A diffusion policy's result adds its
    execution settings and chunk counters (`ChunkedPolicy.stats`).
    """
    source = Path(source)
    film = _filming(video, min(video_worlds, episodes))
    if source.is_dir() and (source / DIFFUSION_CHECKPOINT).is_file():
        from s2r.policies.diffusion.export import export_diffusion

        with tempfile.TemporaryDirectory() as tmp:
            return evaluate(export_diffusion(source, Path(tmp) / "policy.onnx"), task=task, episodes=episodes,
                            seed=seed, backend=backend, randomize=randomize, video=video,
                            video_worlds=video_worlds, **options)
    if source.is_dir():
        if options:
            raise ValueError(f"{source}: {', '.join(options)}: options of diffusion policies; this one is an mlp")
        policy, _, cfg = load_policy(source, task=task)
        env = make_env(cfg.task, episodes, seed=seed, backend=backend, randomize=randomize)

        def act(obs: dict[str, torch.Tensor]) -> torch.Tensor:
            with torch.no_grad():
                return policy.act_inference(obs["policy"])

        return run_episodes(env, cfg.task, act, lambda ids: None, film)
    task = task or read_contract(source).provenance.get("task")
    if task is None:
        raise ContractError(f"{source}: the contract names no task; pass --task")
    env = make_env(task, episodes, seed=seed, backend=backend, randomize=randomize)
    runtime = load_runtime(source, env.spec, num_envs=episodes, synchronous=True, seed=seed, **options)

    def act_runtime(obs: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in env.inputs.items() if k != LAST_ACTION}
        return torch.from_numpy(runtime.action(env.read_state(), inputs))

    try:
        return {**run_episodes(env, task, act_runtime, runtime.reset, film), **runtime.stats()}
    finally:
        runtime.close()


def _filming(video: Path | None, worlds: int) -> Callable[[BatchEnv], EpisodeVideo] | None:
    """What opens the video of an evaluation, its path checked now (before any work); None without one."""
    if video is None:
        return None
    from s2r.sim.render import EpisodeVideo, check_video_path

    path = check_video_path(video)
    return lambda env: EpisodeVideo(env, path, worlds=worlds)
