"""What a simulator task's demonstration datasets hold, and what its trainer expects of one.

Recorders (`s2r demos`, `s2r teleop`) write a task's `task_features`; `check_dataset` and the
diffusion trainer check a dataset against `task_expectation`, plain data the core's check
reads without knowing the task. Imports the task definitions only (no torch, no renderer).

    task_features("push_t")          # {observation.state: [4], observation.environment_state: [4], action: [2]}
    check_dataset(root, expect=task_expectation("push_t"))
"""

from __future__ import annotations

from typing import Any

from s2r.dataset import ACTION, ACTION_PLAN, IMAGES, DatasetExpectation, ObservationLayout
from s2r.sim.tasks import make_task
from s2r.spec import robot_spec

CAMERA = "top"
"""The fixed camera every task scene names `top`."""
IMAGE_SIZE = 96
"""Rendered images are IMAGE_SIZE × IMAGE_SIZE pixels, as Diffusion Policy's Push-T."""


def task_layout(task: str) -> ObservationLayout:
    """Where the task's policy observation goes in a dataset (one frame: a dataset stores no history)."""
    cfg = make_task(task).config
    if cfg.history_length != 1:
        raise ValueError(f"task {task}: history_length {cfg.history_length}; a dataset stores single frames")
    return ObservationLayout(cfg.policy_terms, robot_spec(cfg.robot))


def task_features(task: str, *, image: bool = False, plan_horizon: int = 0) -> dict[str, dict[str, Any]]:
    """The dataset features a task's demonstrations hold: its policy observation (observation.state and
    observation.environment_state), its action, the camera, the expert's plan of `plan_horizon` actions."""
    layout = task_layout(task)
    joints = layout.spec.actuated_joint_names
    features = {**layout.features(), ACTION: {"dtype": "float32", "shape": [len(joints)], "names": list(joints)}}
    if plan_horizon:
        features[ACTION_PLAN] = {"dtype": "float32", "shape": [plan_horizon * len(joints)],
                                 "names": [f"{k}.{joint}" for k in range(plan_horizon) for joint in joints]}
    if image:
        features[IMAGES + CAMERA] = {"dtype": "video", "shape": [IMAGE_SIZE, IMAGE_SIZE, 3]}
    return features


def task_expectation(task: str) -> DatasetExpectation:
    """What a trainer for `task` reads of a dataset: the task's robot, its observation and action features,
    and its observation terms (checked against a dataset's contract)."""
    layout = task_layout(task)
    terms = tuple((t.name, size, t.scale) for t, size in zip(layout.terms, layout.sizes, strict=True))
    return DatasetExpectation(consumer=f"task {task}", robot=make_task(task).config.robot,
                              features=task_features(task), observation=terms)
