"""The success rule a training run is judged by: a task's success rate over fresh episodes of its rule's
initial states, any trainer's deterministic actor.

quadrotor_hover's rule (docs/quadrotor.md) starts from the training distribution without the episodes
started at the target (`HOVER_RULE`); every other task is judged on itself. PPO (`policies.train`,
`evaluate_every`), TD3 and SAC (`policies.offpolicy.train`) and bench/l2f.py judge with it.

    rate = rule_success_rate(policy.act_inference, "quadrotor_hover", episodes=128, seed=1)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from s2r.policies.episodes import run_episodes
from s2r.sim.env import BatchEnv
from s2r.sim.quadrotor import HOVER, HoverConfig, QuadrotorHover
from s2r.sim.task import Task
from s2r.sim.tasks import make_task

HOVER_RULE = HoverConfig(init=replace(HOVER.init, at_target_fraction=0.0))
"""The hover rule's initial states: the training distribution without the episodes started at the target."""


def rule_task(name: str) -> Task:
    """The task whose success rate is the rule: quadrotor_hover from HOVER_RULE, else the task itself."""
    return QuadrotorHover(HOVER_RULE) if name == "quadrotor_hover" else make_task(name)


def rule_success_rate(act: Callable[[torch.Tensor], torch.Tensor], task: str, *, episodes: int, seed: int) -> float:
    """The rule's success rate over `episodes` fresh episodes (one per world) of `rule_task(task)`, `act` mapping
    policy observations `(episodes, P)` to actions `(episodes, A)` (any trainer's deterministic actor)."""
    env = BatchEnv(rule_task(task), episodes, seed=seed)
    with torch.no_grad():
        result = run_episodes(env, task, lambda obs: act(obs["policy"]), lambda done: None)
    return result["success_rate"]
