"""Demonstrations in simulation: an expert drives the batched simulator and its episodes become a dataset.

Each frame records what the policy will see (the task's policy observation: the robot's terms in
`observation.state`, the block's pose in `observation.environment_state`, see s2r.dataset.observation),
the raw action the expert chose (`action`, before the action mapping, as a policy outputs it),
optionally the top camera rendered off-screen (`observation.images.top`, MUJOCO_GL=egl), and the
simulated time the frame was captured at; meta/info.json carries the env's policy contract. An
episode ends when the task's success condition has held for `hold_s` seconds (a success: the expert has finished its placement and come to rest, so
the demonstration does not stop at the threshold), or when the episode times out (a failure).
An expert is a function of the policy's observation frame alone (no hidden state), so its actions can be imitated;
with `action_noise` the env executes perturbed actions while the clean expert action is recorded (DART).
With `plan_horizon` H, each frame also holds the expert's own next H actions from that frame's state
(`action.plan`), rolled out without noise in a copy of the simulator: the action chunk an imitator
should plan there, free of the noise the recording went on to add.

    result = record_demos("push_t", expert="scripted", episodes=100, out=Path("data/push_t"), image=True)
    result["success_rate"], result["frames"]
    evaluate_expert("push_t", episodes=50)["success_rate"]     # the task's own rule: success held at timeout
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from s2r.dataset import ACTION, ACTION_PLAN, IMAGES, DatasetWriter  # noqa: E402
from s2r.observations import term_sizes  # noqa: E402
from s2r.sim.env import BatchEnv  # noqa: E402
from s2r.sim.push_t import ScriptedPushExpert  # noqa: E402
from s2r.sim.render import CameraRenderer  # noqa: E402
from s2r.sim.task_dataset import CAMERA, IMAGE_SIZE, task_features, task_layout  # noqa: E402
from s2r.sim.tasks import make_task  # noqa: E402

Expert = Callable[[np.ndarray], np.ndarray]
"""An expert bound to an env: every world's policy observation (num_envs, D) → its raw action (num_envs, A).

It sees exactly what the policy sees and keeps no state between calls, so the action it takes in a
recorded frame is a function of that frame's observation: a policy can imitate it."""


def _term_reader(env: BatchEnv, name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Reads the observation term `name` back out of policy observations (N, D), unscaled: (N, size)."""
    terms = env.task.config.policy_terms
    sizes = term_sizes(terms, env.spec)
    names = [t.name for t in terms]
    if name not in names:
        raise ValueError(f"task {env.task.config.name}: an expert needs the observation term {name!r}; "
                         f"the policy observes {names}")
    i = names.index(name)
    start, scale = sum(sizes[:i]), terms[i].scale
    return lambda obs: obs[:, start:start + sizes[i]] / scale


def scripted_push_t(env: BatchEnv) -> Expert:
    """The push_t scripted expert (sim.push_t.ScriptedPushExpert) on the policy's observation, its targets
    mapped back to raw actions."""
    expert = ScriptedPushExpert()
    pusher, block = _term_reader(env, "joint_pos"), _term_reader(env, "object_pose")
    offset, scale = np.asarray(env.action_mapping.offset), np.asarray(env.action_mapping.scale)

    def act(obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        x, y, sin_yaw, cos_yaw = block(obs).T
        targets = expert(pusher(obs), np.column_stack([x, y, np.arctan2(sin_yaw, cos_yaw)]))
        return (targets - offset) / scale

    return act


def scripted_reach(env: BatchEnv) -> Expert:
    """The reach task's scripted expert: the arm's joint targets at the target point by closed-form inverse
    kinematics (base yaw toward it, then the two-link shoulder-elbow plane with the elbow up), clipped to the
    joint limits, as raw actions."""
    target = _term_reader(env, "target")
    shoulder, upper, fore = env.task.shoulder, 0.3, 0.25      # arm.xml: the shoulder's height, link2 and link3
    offset, scale = np.asarray(env.action_mapping.offset), np.asarray(env.action_mapping.scale)
    low, high = np.array([j.limits for j in env.spec.joints]).T

    def act(obs: np.ndarray) -> np.ndarray:
        point = target(np.asarray(obs, dtype=np.float64)) - shoulder
        yaw = np.arctan2(point[:, 1], point[:, 0])
        reach, height = np.hypot(point[:, 0], point[:, 1]), point[:, 2]
        cos_elbow = (reach**2 + height**2 - upper**2 - fore**2) / (2 * upper * fore)
        bend = -np.arccos(np.clip(cos_elbow, -1.0, 1.0))      # in the arm's plane, elbow up
        lift = np.arctan2(height, reach) - np.arctan2(fore * np.sin(bend), upper + fore * np.cos(bend))
        q = np.clip(np.column_stack([yaw, -lift, -bend]), low, high)   # pitch joints turn about +y: x toward -z
        return (q - offset) / scale

    return act


EXPERTS: dict[tuple[str, str], Callable[[BatchEnv], Expert]] = {("push_t", "scripted"): scripted_push_t,
                                                                ("reach", "scripted"): scripted_reach}
"""(task, expert name) → a factory of the expert for an env of that task."""


def make_expert(task: str, name: str, env: BatchEnv) -> Expert:
    if (task, name) not in EXPERTS:
        known = ", ".join(f"{t} --expert {n}" for t, n in EXPERTS)
        raise ValueError(f"no expert {name!r} for task {task!r}; known: {known}")
    return EXPERTS[(task, name)](env)


class ExpertPlanner:
    """The expert's next `horizon` actions from every world's current state: (num_envs, horizon, A).

    Each call copies the env's worlds into a second env (`BatchEnv.copy_state`) and lets the expert
    drive it without noise; the first planned action is the expert's action in the env itself. A world
    whose copy ends its episode early (it diverged) holds its last planned action.
    """

    def __init__(self, env: BatchEnv, expert: str, horizon: int) -> None:
        if horizon < 1:
            raise ValueError(f"plan_horizon: expected >= 1, got {horizon}")
        self.env = env
        self.horizon = horizon
        self.copy = BatchEnv(make_task(env.task.config.name), env.num_envs, spec=env.spec, nthread=1)
        self.copy.max_episode_length = np.iinfo(np.int64).max    # the copy never times out
        self.expert = make_expert(env.task.config.name, expert, self.copy)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Plans from the env's current state, whose policy observations are `obs` (num_envs, D)."""
        self.copy.copy_state(self.env)
        plans = np.empty((self.env.num_envs, self.horizon, self.env.num_actions))
        ended = np.zeros(self.env.num_envs, dtype=bool)
        for k in range(self.horizon):
            plans[:, k] = self.expert(obs)
            if k:
                plans[ended, k] = plans[ended, k - 1]
            if k + 1 < self.horizon:
                obs_t, _, terminated, truncated, _ = self.copy.step(torch.from_numpy(plans[:, k]))
                obs = obs_t["policy"].numpy()
                ended |= (terminated | truncated).numpy()
        return plans

    def close(self) -> None:
        self.copy.close()


@dataclass
class _Take:
    """One world's episode as it is recorded."""

    states: list[np.ndarray]
    actions: list[np.ndarray]
    plans: list[np.ndarray]
    images: list[np.ndarray]
    stamps: list[float]
    success: bool = False


def record_demos(task: str = "push_t", *, expert: str = "scripted", episodes: int, out: Path, image: bool = False,
                 seed: int = 0, num_envs: int = 16, successful_only: bool = False, action_noise: float = 0.0,
                 hold_s: float = 2.0, plan_horizon: int = 0, progress: bool = False) -> dict[str, Any]:
    """Record `episodes` expert episodes of `task` into the dataset at `out` (appending if it exists).

    Worlds run in batches of `num_envs`; each batch's episodes are written in world order, so a
    seed gives the same dataset. successful_only: keep running until `episodes` successful
    ones are recorded, leaving the failures out. action_noise: std of gaussian noise (raw action
    units) added to the action the env executes, while the frame records the expert's clean
    action (DART, Laskey et al. 2017): the demonstrations then also show how the expert recovers
    from the small errors an imitator makes. hold_s: how long the task's success condition must
    hold before a world stops recording (at least the task's success window); push_t's expert
    pushes on past the 95 % threshold to its own stop coverage and backs off meanwhile, which a
    policy that imitates it must see. plan_horizon: also record the expert's noise-free next
    `plan_horizon` actions from each frame's state (`action.plan`, see ExpertPlanner); a
    diffusion policy trains its action chunks on them. Returns the success rate over the episodes
    attempted (with the noise), the episodes and frames recorded, and the wall time.
    """
    if episodes < 1:
        raise ValueError(f"episodes: expected >= 1, got {episodes}")
    if action_noise < 0:
        raise ValueError(f"action_noise: expected >= 0, got {action_noise}")
    if plan_horizon < 0:
        raise ValueError(f"plan_horizon: expected >= 0 (0: no plans), got {plan_horizon}")
    env = BatchEnv(make_task(task), min(num_envs, episodes), seed=seed, nthread=1)
    if hold_s < env.task.config.success_window_s:
        env.close()
        raise ValueError(f"hold_s: expected >= task {task}'s success window {env.task.config.success_window_s} s, "
                         f"got {hold_s}")
    hold = round(hold_s / env.spec.control_period)
    driver = make_expert(task, expert, env)
    planner = ExpertPlanner(env, expert, plan_horizon) if plan_horizon else None
    rng = np.random.default_rng(seed)
    camera = IMAGES + CAMERA
    layout = task_layout(task)
    started = time.perf_counter()
    recorded = attempted = succeeded = frames = 0
    renderer = CameraRenderer(env, CAMERA, height=IMAGE_SIZE, width=IMAGE_SIZE) if image else None
    try:
        with DatasetWriter(Path(out), fps=1.0 / env.spec.control_period,
                           features=task_features(task, image=image, plan_horizon=plan_horizon),
                           robot=env.spec.name, task=task,
                           contract=env.contract({"task": task, "recorder": "s2r.sim.demos", "expert": expert})
                           ) as writer:
            while recorded < episodes:
                for take in _run_batch(env, driver, planner, renderer, rng, action_noise, hold):
                    if recorded == episodes:
                        break
                    attempted += 1
                    succeeded += take.success
                    if successful_only and not take.success:
                        continue
                    for k, stamp in enumerate(take.stamps):
                        frame = {**layout.split(take.states[k]), ACTION: take.actions[k]}
                        if planner is not None:
                            frame[ACTION_PLAN] = take.plans[k]
                        if image:
                            frame[camera] = take.images[k]
                        writer.add_frame(frame, timestamp=stamp)
                    writer.end_episode(success=take.success)
                    recorded += 1
                    frames += len(take.stamps)
                if progress:
                    print(f"recorded {recorded}/{episodes} episodes ({succeeded}/{attempted} successful)",
                          file=sys.stderr)
                if successful_only and attempted >= 10 * episodes and succeeded == 0:
                    raise RuntimeError(f"the {expert} expert succeeded in none of {attempted} episodes of {task}")
    finally:
        if renderer is not None:
            renderer.close()
        if planner is not None:
            planner.close()
        env.close()
    return {"task": task, "expert": expert, "out": str(out), "episodes": recorded, "attempted": attempted,
            "success_rate": succeeded / attempted, "frames": frames, "image": image, "action_noise": action_noise,
            "hold_s": hold_s, "plan_horizon": plan_horizon, "seconds": time.perf_counter() - started}


def _run_batch(env: BatchEnv, driver: Expert, planner: ExpertPlanner | None, renderer: CameraRenderer | None,
               rng: np.random.Generator, action_noise: float, hold: int) -> list[_Take]:
    """One episode in every world, from a fresh reset; a world stops recording once its success held
    for `hold` control steps.
    The env executes the expert's action plus `action_noise`; the frames hold the clean action."""
    period = env.spec.control_period
    obs = env.reset()["policy"].numpy()
    takes = [_Take([], [], [], [], []) for _ in range(env.num_envs)]
    active = np.ones(env.num_envs, dtype=bool)
    for step in range(env.max_episode_length):
        action = driver(obs)
        plans = planner(obs).reshape(env.num_envs, -1).astype(np.float32) if planner is not None else None
        ids = np.flatnonzero(active)
        images = renderer.render(ids) if renderer is not None else None
        for k, i in enumerate(ids):
            take = takes[i]
            take.states.append(obs[i].copy())
            take.actions.append(action[i].astype(np.float32))
            if plans is not None:
                take.plans.append(plans[i])
            take.stamps.append(step * period)
            if images is not None:
                take.images.append(images[k])
        executed = action + rng.normal(0.0, action_noise, action.shape) if action_noise else action
        obs_t, _, terminated, truncated, info = env.step(torch.from_numpy(executed))
        obs = obs_t["policy"].numpy()
        done = (terminated | truncated).numpy()
        held = env.success_held >= hold
        if done.any():  # time out (or diverged): the env's rule decides, then the world restarts
            for i, success in zip(np.flatnonzero(done), info["episode"]["success"].numpy(), strict=True):
                if active[i]:
                    takes[i].success = bool(success)
            active &= ~done
        for i in np.flatnonzero(active & held):
            takes[i].success = True
        active &= ~held
        if not active.any():
            break
    return takes


def evaluate_expert(task: str = "push_t", *, expert: str = "scripted", episodes: int = 50, seed: int = 1,
                    num_envs: int = 50) -> dict[str, Any]:
    """The expert's success rate under the task's own rule (success held at the episode's timeout).

    For push_t, whose reward is the coverage, `mean_final_reward` is the mean final coverage.
    """
    successes, finals = [], []
    while len(successes) < episodes:
        env = BatchEnv(make_task(task), min(num_envs, episodes - len(successes)), seed=seed + len(successes), nthread=1)
        driver = make_expert(task, expert, env)
        obs = env.reset()["policy"].numpy()
        for _ in range(env.max_episode_length):
            obs_t, reward, _, _, info = env.step(torch.from_numpy(driver(obs)))
            obs = obs_t["policy"].numpy()
        successes += info["episode"]["success"].tolist()
        finals += reward.tolist()
        env.close()
    return {"task": task, "expert": expert, "episodes": episodes, "success_rate": float(np.mean(successes)),
            "mean_final_reward": float(np.mean(finals))}
