"""Leader–follower teleoperation: a torque-free leader arm, read each tick, is the follower's command.

The follower's `RobotLoop` hosts the leader as its policy (`LeaderArm`, the loop's runtime):
every control period the loop reads the follower, `LeaderArm.step` reads the leader and returns
its joint positions as the follower's position targets (with the follower spec's gains), and the
`SafetyFilter` stands between them and the motors as between any policy and the motors (soft
start to the default pose, then a fade to the leader; joint, rate and effort limits; a leader
that stops answering for `watchdog_periods` periods sends the follower to damping). Nothing
crosses a process or a queue that blocks inside the tick: the frames for the recording leave
through a non-blocking hand-off.

    with open_driver("feetech:/dev/ttyACM1", spec) as leader, open_driver("feetech:/dev/ttyACM0", spec) as follower:
        summary = run_leader_follower(leader, follower, duration_s=60, record=Path("data/so101_teleop"))

The recording (`--record DIR`) is a LeRobot v3 dataset (`s2r.dataset`), one episode per run:
`observation.state` the follower's joint positions (rad), `action` the leader's (rad, what the
follower was told before the filter), and each frame's measurement times: the frame's
`timestamp` is when the follower was measured, `observation.stamp` and `action.stamp` the
follower's and the leader's measurement times (time.time(), s). Ticks on which either arm gave
no new measurement add no frame.

numpy and the hardware layer only: this runs on the robot computer.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from s2r.dataset import ACTION, OBS_STATE, DatasetWriter
from s2r.hardware.robot_loop import LoopConfig, RobotLoop
from s2r.hardware.safety import SafetyConfig, SafetyFilter
from s2r.interface import RobotError, RobotInterface
from s2r.reports import SampleWindow, percentiles_us
from s2r.state import Command, RobotState

OBS_STAMP = "observation.stamp"
"""Feature: the follower's measurement time of the frame, time.time() seconds, (1,) float64."""
ACTION_STAMP = "action.stamp"
"""Feature: the leader's measurement time of the frame's action, time.time() seconds, (1,) float64."""


@dataclass(frozen=True)
class Frame:
    """One tick's pair of measurements: the follower's state and the leader's."""

    follower: RobotState
    leader: RobotState


class LeaderArm:
    """The leader arm as the follower loop's runtime: `step` reads the leader and returns its pose as the command.

    The leader and the follower must have the same joints in the same order (their specs' joint
    names). A leader read that fails, a leader state that did not change since the previous step
    or one older than `stale_periods` control periods (a bus driver keeps a missed motor's last
    measurement and its stamp) gives no command (None): the filter holds the last one and, after
    `watchdog_periods` periods without a command, damps the follower.
    """

    rehearses = False
    """A step reads the leader arm off the bus: the loop must not run it twice a period."""
    computed_inputs = ()
    """It takes no task inputs."""
    optional_inputs: Mapping[str, int] = MappingProxyType({})
    """None beyond the contract's."""

    def __init__(self, leader: RobotInterface, follower: RobotInterface, *, stale_periods: int = 3,
                 frames_depth: int = 10_000) -> None:
        if leader.spec.joint_names != follower.spec.joint_names:
            raise ValueError(f"leader {leader.spec.name} has joints {', '.join(leader.spec.joint_names)}, but follower "
                             f"{follower.spec.name} has {', '.join(follower.spec.joint_names)} (expected the same "
                             f"joints, in the same order)")
        self.leader, self.spec = leader, follower.spec
        self.stale_s = stale_periods * follower.spec.control_period
        """A leader state older than this (s) gives no command."""
        self.num_envs = 1
        self.warnings: list[str] = []
        index = self.spec.actuated_index
        self.index = index
        """The follower's actuated joints in the joint order, (A,)."""
        self._kp, self._kd = self.spec.joint_array("kp", actuated_only=True), \
            self.spec.joint_array("kd", actuated_only=True)
        self._zeros = np.zeros(len(index))
        self.frames: queue.SimpleQueue[Frame] = queue.SimpleQueue()
        """The ticks' measurement pairs, for a recorder thread (never blocks the loop)."""
        self.frames_depth = frames_depth
        self.counts = {"leader_reads": 0, "leader_errors": 0, "leader_stale": 0, "frames_dropped": 0}
        self._last_stamp: float | None = None
        self.read_time = SampleWindow()
        """Seconds of each leader read."""

    def reset(self, ids: np.ndarray | None = None) -> None:
        """Forget the frames so far (the loop's warm-up steps on its first state)."""
        while not self.frames.empty():
            self.frames.get_nowait()

    def step(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> Command | None:
        """The follower's command for this tick: the leader's joint positions (rad), the follower's kp and kd."""
        start = time.perf_counter()
        try:
            leader = self.leader.read_state()
        except RobotError:
            self.counts["leader_errors"] += 1
            return None
        finally:
            self.read_time.add(time.perf_counter() - start)
        self.counts["leader_reads"] += 1
        if leader.stamp == self._last_stamp or time.time() - leader.stamp > self.stale_s:
            self.counts["leader_stale"] += 1
            return None
        self._last_stamp = leader.stamp
        if self.frames.qsize() < self.frames_depth:
            self.frames.put(Frame(state, leader))
        else:
            self.counts["frames_dropped"] += 1
        return Command(q=leader.q[self.index].copy(), dq=self._zeros.copy(), kp=self._kp.copy(), kd=self._kd.copy(),
                       tau_ff=self._zeros.copy())

    def stats(self) -> dict[str, Any]:
        return {**self.counts, **percentiles_us(self.read_time.values(), "leader_read")}

    def close(self) -> None:
        pass


def dataset_features(spec) -> dict[str, dict[str, Any]]:
    """The features a leader–follower recording of `spec` holds."""
    names = list(spec.joint_names)
    return {OBS_STATE: {"dtype": "float32", "shape": [len(names)], "names": names},
            ACTION: {"dtype": "float32", "shape": [len(spec.actuated_index)],
                     "names": list(spec.actuated_joint_names)},
            OBS_STAMP: {"dtype": "float64", "shape": [1], "names": None},
            ACTION_STAMP: {"dtype": "float64", "shape": [1], "names": None}}


def run_leader_follower(leader: RobotInterface, follower: RobotInterface, *, duration_s: float,
                        record: Path | None = None, task: str = "teleoperation", safety: SafetyConfig = SafetyConfig(),
                        loop: LoopConfig = LoopConfig(), log=print) -> dict[str, Any]:
    """Drive `follower` (connected) from `leader` (connected, left torque-free) for `duration_s` seconds.

    Returns the loop's figures (achieved rate, tick periods, leader read times, safety events, and
    `loop_failure`: why the loop thread died, None while it ran to the end),
    the tracking error of the follower behind the leader over the frames after the soft start
    and fade (rad: p50, p95 and max over joints and frames), and the recording's path and frames.
    """
    if not duration_s > 0:
        raise ValueError(f"duration_s: expected seconds > 0, got {duration_s}")
    spec = follower.spec
    arm = LeaderArm(leader, follower)
    leader.disable()
    control = RobotLoop(follower, SafetyFilter(spec, spec.control_period, safety), runtime=arm, config=loop, log=log)
    writer = (DatasetWriter(Path(record), fps=1.0 / spec.control_period, features=dataset_features(spec),
                            robot=spec.name, task=task) if record is not None else None)
    frames: list[Frame] = []
    control.enable()
    control.start()
    try:
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            time.sleep(min(0.05, max(end - time.monotonic(), 0.0)))
            _drain(arm, frames, writer)
    finally:
        control.stop()
        control.damp_and_disable(0.2)
    _drain(arm, frames, writer)
    if writer is not None:
        if writer.frames_in_episode:
            writer.end_episode()
        writer.close()
    settle = safety.soft_start_s + safety.fade_in_s + 0.5
    tracking = [np.abs(f.follower.q - f.leader.q) for f in frames if f.follower.stamp - frames[0].follower.stamp > settle]
    errors = np.concatenate(tracking) if tracking else np.array([np.nan])
    stats = control.stats()
    return {"duration_s": duration_s, "control_hz_target": stats["control_hz_target"],
            "control_hz_achieved": stats["control_hz_achieved"], "ticks": stats["ticks"],
            "late_ticks": stats["late_ticks"], "stale_ticks": stats["stale_ticks"], "frames": len(frames),
            "tracking_error_p50_rad": float(np.percentile(errors, 50)),
            "tracking_error_p95_rad": float(np.percentile(errors, 95)), "tracking_error_max_rad": float(errors.max()),
            **{k: v for k, v in stats.items() if k.startswith("period_") or k.startswith("leader_")},
            "safety_events": dict(control.safety.events), "loop_failure": control.failure,
            "record": None if record is None else str(record)}


def _drain(arm: LeaderArm, frames: list[Frame], writer: DatasetWriter | None) -> None:
    """Move the loop's frames into `frames` and the recording (the recorder side, never inside a tick)."""
    while True:
        try:
            frame = arm.frames.get_nowait()
        except queue.Empty:
            return
        if frames and frame.follower.stamp <= frames[-1].follower.stamp:
            continue  # no new follower measurement since the previous frame
        frames.append(frame)
        if writer is not None:
            writer.add_frame({OBS_STATE: frame.follower.q, ACTION: frame.leader.q[arm.index],
                              OBS_STAMP: np.array([frame.follower.stamp]), ACTION_STAMP: np.array([frame.leader.stamp])},
                             timestamp=frame.follower.stamp)


def teleoperate(leader: str, follower: str, spec, *, duration_s: float, record: Path | None = None,
                leader_spec=None) -> dict[str, Any]:
    """`s2r teleop --leader KIND:PORT --follower KIND:PORT`: open both arms, run, close (torque off) both.

    leader_spec: the leader's spec when it is not the follower's (same joints, in the same order).
    """
    from s2r.hardware.drivers import open_driver

    with open_driver(leader, leader_spec or spec) as leader_arm, open_driver(follower, spec) as follower_arm:
        return {"leader": leader, "follower": follower,
                **run_leader_follower(leader_arm, follower_arm, duration_s=duration_s, record=record)}
