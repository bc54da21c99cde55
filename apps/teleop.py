"""Teleoperate a simulated task with a device and record the episodes as a demonstration dataset.

A session runs one world of the task's BatchEnv at the task's control rate (in real time, unless
told otherwise), reads the device once per control period and maps its command to the task's
raw action, as a policy would output it:

    push_t   the planar velocity (x, y) moves the pusher's position target, kept in the workspace
    reach    the end-effector velocity goes through damped-least-squares IK (hardware.teleop.ik,
             Jacobians from `env.batch.jac`) into joint position targets within the joint limits

Each frame records the policy observation (the robot's terms in `observation.state`, the object's
in `observation.environment_state`), the raw action and the simulated time it was captured at
(`s2r.dataset`, LeRobot v3, the same features and contract as `s2r demos`). An episode ends as a success
when the task's success condition has held for its success window, at the task's time limit
(marked by the task's own rule), or when the operator presses "save" (marked by whether the
goal holds then). "discard" drops the episode and starts it again; "quit" drops the episode in
progress and ends the session.

A device lost mid-episode (unplugged, terminal closed): the episode in progress is discarded,
never written in part, and never kept as a failure either (a take cut short by the hardware
says nothing about the task). The episodes finished before it are committed, and the session
raises DeviceUnavailable saying so.

While it runs, a status line (simulated time, the task's progress, the episode) is kept on stderr
and handed with world 0's state to a `LiveView` (s2r.apps.live_view: MuJoCo's viewer where there is
a display, or a page on localhost), which draws it outside this loop.

    with open_device("keyboard") as device:
        summary = run_teleop("push_t", device, out=Path("data/push_t_teleop"), episodes=5)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2r.apps.live_view import DEFAULT_WEB_PORT, LiveView, ViewMode
from s2r.dataset import ACTION, DatasetWriter, ObservationLayout
from s2r.hardware.teleop.devices import DeviceUnavailable, TeleopCommand, TeleopDevice
from s2r.hardware.teleop.ik import DifferentialIK
from s2r.observations import TARGET
from s2r.sim.env import BatchEnv
from s2r.sim.push_t import WORKSPACE
from s2r.sim.task_dataset import task_features, task_layout
from s2r.sim.tasks import make_task

SPEEDS = {"push_t": (0.15, 0.0), "reach": (0.25, 0.0)}
"""Per task, (linear m/s, angular rad/s) at full deflection of the device."""
LIMIT_MARGIN = 0.02
"""rad (or m) kept between an IK target and its joint limit."""


class PushTMapping:
    """push_t: planar velocity → the pusher's position target → raw action. World 0 of `env`."""

    def __init__(self, env: BatchEnv) -> None:
        self.env = env
        self.dt = env.spec.control_period
        self.offset = np.asarray(env.action_mapping.offset)
        self.scale = np.asarray(env.action_mapping.scale)
        self.target = np.zeros(2)

    def reset(self) -> None:
        self.target = self.env.read_state().q[0].copy()

    def __call__(self, command: TeleopCommand) -> np.ndarray:
        """The raw action (2,) for `command`, already scaled to m/s."""
        self.target = np.clip(self.target + command.linear[:2] * self.dt, -WORKSPACE, WORKSPACE)
        return (self.target - self.offset) / self.scale


class ReachMapping:
    """reach: end-effector velocity → DLS IK on the `ee` site → joint position targets → raw action."""

    def __init__(self, env: BatchEnv, *, site: str = "ee") -> None:
        self.env = env
        self.dt = env.spec.control_period
        self.site = env.site_id(site)
        self.body = int(env.model.site_bodyid[self.site])
        mapping = env.action_mapping
        self.offset = np.asarray(mapping.offset)
        self.scale = np.asarray(mapping.scale)
        limits = np.array([joint.limits for joint in env.spec.joints])
        # Targets stay inside both the joint limits and what a raw action can reach.
        lower = np.maximum(limits[:, 0], self.offset - mapping.clip * self.scale) + LIMIT_MARGIN
        upper = np.minimum(limits[:, 1], self.offset + mapping.clip * self.scale) - LIMIT_MARGIN
        self.ik = DifferentialIK(lower, upper)
        self.target = np.zeros(len(lower))

    def reset(self) -> None:
        self.target = np.clip(self.env.read_state().q[0], self.ik.lower, self.ik.upper)

    def jacobian(self) -> np.ndarray:
        """The ee site's translational Jacobian in world 0 over the robot's joints, (3, n)."""
        jacp, _ = self.env.batch.jac(self.body, self.env.site_pos(self.site)[0], ids=np.array([0]))
        return jacp[0][:, self.env.view.dof_index]

    def __call__(self, command: TeleopCommand) -> np.ndarray:
        """The raw action (n,) for `command`, already scaled to m/s."""
        dq = self.ik.solve(self.jacobian(), command.linear, self.target, self.dt)
        self.target = np.clip(self.target + dq * self.dt, self.ik.lower, self.ik.upper)
        return (self.target - self.offset) / self.scale


MAPPINGS: dict[str, Callable[[BatchEnv], PushTMapping | ReachMapping]] = {"push_t": PushTMapping,
                                                                          "reach": ReachMapping}
"""Tasks that can be teleoperated, and how a device's command becomes their action."""


def progress_text(env: BatchEnv, reward: float) -> str:
    """The task's progress in world 0, in words: push_t's coverage of the goal, reach's distance to its target."""
    if env.task.config.name == "push_t":
        return f"coverage {reward:.0%}"
    if env.task.config.name == "reach":
        return f"distance {np.linalg.norm(env.site_pos(env.site_id('ee'))[0] - env.inputs[TARGET][0]):.3f} m"
    return f"reward {reward:+.3f}"


def run_teleop(task: str, device: TeleopDevice, *, out: Path | None = None, episodes: int = 1, seed: int = 0,
               realtime: bool = True, progress: bool = False, view: ViewMode = "none",
               port: int = DEFAULT_WEB_PORT) -> dict[str, Any]:
    """Teleoperate `episodes` episodes of `task` with `device`, recording them into the dataset `out` (if given).

    realtime: pace the simulation to the wall clock (an operator is watching); False runs as fast
    as it computes (tests, replays). `view` (`LiveView.open`: auto, viewer, web on `port`, none) shows
    world 0 and the status line after every step; with `progress` the status line is also kept on
    stderr. Returns the episodes recorded, their successes and frames, and
    the episodes discarded. Raises DeviceUnavailable when the device is lost, after committing the
    episodes finished before it and discarding the one in progress.
    """
    if task not in MAPPINGS:
        raise ValueError(f"task {task!r} cannot be teleoperated; known: {', '.join(MAPPINGS)}")
    if episodes < 1:
        raise ValueError(f"episodes: expected >= 1, got {episodes}")
    env = BatchEnv(make_task(task), 1, seed=seed, nthread=1)
    live = LiveView.open(view, env.model, spec=env.spec, port=port)
    mapping = MAPPINGS[task](env)
    linear, angular = SPEEDS[task]
    contract = env.contract({"task": task, "recorder": "s2r.apps.teleop", "device": device.name})
    writer = (DatasetWriter(Path(out), fps=1.0 / env.spec.control_period, features=task_features(task),
                            robot=env.spec.name, task=task, contract=contract) if out is not None else None)
    layout = task_layout(task)
    summary = {"task": task, "device": device.name, "out": None if out is None else str(out), "episodes": 0,
               "successes": 0, "frames": 0, "discarded": 0}
    if progress and device.controls:
        print(f"{device.name}: {device.controls}", file=sys.stderr)
    try:
        while summary["episodes"] < episodes:
            try:
                status = _Status(f"episode {summary['episodes'] + 1}/{episodes}", live, progress)
                outcome, frames = _run_episode(env, device, mapping, writer, layout, (linear, angular), realtime,
                                               status)
            except DeviceUnavailable as error:
                if writer is not None:
                    writer.discard_episode()
                raise DeviceUnavailable(f"{error}; the episode in progress was discarded, "
                                        f"{summary['episodes']} finished episodes kept") from None
            if outcome in ("discard", "quit"):
                summary["discarded"] += 1
            else:
                summary["episodes"] += 1
                summary["successes"] += outcome == "success"
                summary["frames"] += frames
            if progress:
                line = f"episode {summary['episodes']}/{episodes}: {outcome} ({frames} frames)"
                print(f"\r{line:<60}" if sys.stderr.isatty() else line, file=sys.stderr)
            if outcome == "quit":
                break
    finally:
        live.close()
        if writer is not None:
            writer.close()
        env.close()
    return summary


def _run_episode(env: BatchEnv, device: TeleopDevice, mapping: PushTMapping | ReachMapping,
                 writer: DatasetWriter | None, layout: ObservationLayout, speeds: tuple[float, float],
                 realtime: bool, status: _Status) -> tuple[str, int]:
    """One episode from a fresh reset; its outcome ("success", "failure", "discard", "quit") and frames."""
    period = env.spec.control_period
    clock = env.data_field("time")
    obs = env.reset()["policy"].numpy()[0]
    mapping.reset()
    started = time.monotonic()
    for step in range(env.max_episode_length):
        command = device.read().scaled(linear=speeds[0], angular=speeds[1])
        if "quit" in command.buttons or "discard" in command.buttons:
            if writer is not None:
                writer.discard_episode()
            return ("quit" if "quit" in command.buttons else "discard"), step
        if "save" in command.buttons and step > 0:
            success = bool(env.task.success_condition(env, env.read_state())[0])
            return _end(writer, success), step
        action = mapping(command)
        if writer is not None:
            writer.add_frame({**layout.split(obs), ACTION: action.astype(np.float32)}, timestamp=float(clock[0]))
        if realtime:
            time.sleep(max(0.0, started + (step + 1) * period - time.monotonic()))
        obs_t, reward, terminated, truncated, info = env.step(torch.from_numpy(action[None]))
        obs = obs_t["policy"].numpy()[0]
        status.update(env, float(reward[0]))
        if terminated[0] or truncated[0]:  # the env's rule decides (success held at the time limit)
            return _end(writer, bool(info["episode"]["success"][0])), step + 1
        if env.success_held[0] >= env.success_window:
            return _end(writer, True), step + 1
    raise AssertionError("unreachable: the env ends every episode at max_episode_length")


class _Status:
    """The live status line of an episode: to the view after every step, to stderr a few times a second."""

    def __init__(self, episode: str, view: LiveView | None, to_stderr: bool) -> None:
        self.episode, self.view, self.to_stderr = episode, view, to_stderr
        self.tty = sys.stderr.isatty()
        self._printed = 0.0

    def update(self, env: BatchEnv, reward: float) -> None:
        line = f"t {float(env.data_field('time')[0]):5.2f} s  {progress_text(env, reward)}  {self.episode}"
        if self.view is not None:
            mocap = env.data_field("mocap_pos")[0] if env.model.nmocap else None
            self.view.show(env.data_field("qpos")[0], mocap, line)
        now = time.monotonic()
        if self.to_stderr and now - self._printed >= (0.2 if self.tty else 1.0):
            self._printed = now
            print(f"\r{line}   " if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)


def _end(writer: DatasetWriter | None, success: bool) -> str:
    if writer is not None:
        writer.end_episode(success=success)
    return "success" if success else "failure"
