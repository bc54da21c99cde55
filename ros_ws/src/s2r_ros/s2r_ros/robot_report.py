"""What robot_node reports: safety-mode changes, counters, latencies, diagnostics, summary, trajectory.

robot_node's control loop and command callback tell a `RobotReport` what happened; it keeps
the figures and turns them into a /diagnostics message (~1 Hz), the summary JSON a deploy
run reads, and the trajectory NPZ (stamp, q, dq and safety mode of every measurement; base_pos_w too
where the states carry the base's position, a multirotor's):

    report = RobotReport(spec, driver="sim", logger=node.get_logger(), keep_trajectory=True)
    report.state_published(stamp_ns, time.time())
    report.command_arrived(stamp_ns, time.time())
    mode = report.track_mode(safety.mode, safety.events)
    report.write(summary_path, trajectory_path, report.summary(safety.report(), ...))

Not thread-safe by itself: robot_node calls it from its telemetry thread (states, modes, the
hosted policy's commands) and from the executor thread (policy_node's commands, diagnostics),
whose calls touch separate fields or single dictionary operations.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from s2r.reports import SampleWindow, diagnostic_text, percentiles_us, write_json
from s2r.spec import RobotSpec
from s2r.state import RobotState

MODE_CODES = {"soft_start": 0, "running": 1, "damping": 2, "estop": 3, "disabled": 4}
"""Mode of each trajectory sample, as stored in the trajectory file."""
CAUSES = {"watchdog": "watchdog: no fresh state or policy command within the watchdog periods",
          "nan_guard": "NaN guard: a non-finite command", "estop": "e-stop latched",
          "robot_fault": "robot fault: the driver latched a motor lost or in hardware error (see /diagnostics)",
          "orientation_limit": "orientation limit: the base tilted beyond the limit (a fall, or lying on its back "
                               "at the start); latched until reset_estop"}
"""SafetyFilter events that put the robot in damping, and how the log says so."""
DIAGNOSTIC_LEVELS = {"running": DiagnosticStatus.OK, "soft_start": DiagnosticStatus.OK,
                     "damping": DiagnosticStatus.WARN, "disabled": DiagnosticStatus.WARN,
                     "estop": DiagnosticStatus.ERROR}
PUBLISHED_KEPT = 64
"""States whose publish time is kept to measure publish → command latency."""


class RobotReport:
    """The robot side's figures for one run of robot_node."""

    def __init__(self, spec: RobotSpec, *, driver: str, logger: Any, keep_trajectory: bool) -> None:
        self.spec, self.driver, self.logger, self.keep_trajectory = spec, driver, logger, keep_trajectory
        self.counters = {"commands_applied": 0, "commands_rejected": 0, "read_errors": 0, "states_published": 0,
                         "shutdown_damping_commands": 0}
        self.last_rejection = ""
        self.events_seen: dict[str, int] = {}
        """SafetyFilter event counts at the last mode check, to tell what caused a change."""
        self.mode_log: list[tuple[float, str]] = []
        """(time.time(), mode) at every change of the safety mode."""
        self.first_command_time: float | None = None
        self.last_command_time: float | None = None
        self.published: OrderedDict[int, float] = OrderedDict()
        """state stamp (ns) → time.time() it was published, for the last PUBLISHED_KEPT states."""
        self.state_to_command = SampleWindow()
        self.publish_to_command = SampleWindow()
        self.diagnosed = 0
        """state_to_command samples at the last diagnostics message: each message covers what came since."""
        self.trajectory: list[tuple[float, np.ndarray, np.ndarray, int, np.ndarray | None]] = []
        """(stamp, q, dq, mode code, base_pos_w or None) of every new measurement, kept only with `keep_trajectory`."""

    def state_published(self, stamp_ns: int, now: float) -> None:
        """A state stamped `stamp_ns` (ns) left at `now` (time.time(), s)."""
        self.published[stamp_ns] = now
        if len(self.published) > PUBLISHED_KEPT:
            self.published.popitem(last=False)
        self.counters["states_published"] += 1

    def command_arrived(self, stamp_ns: int, now: float) -> None:
        """A command computed from the state stamped `stamp_ns` (ns) arrived at `now` (time.time(), s)."""
        self.state_to_command.add(now - stamp_ns * 1e-9)
        published = self.published.get(stamp_ns)
        if published is not None:
            self.publish_to_command.add(now - published)
        if self.first_command_time is None:
            self.first_command_time = now
        self.last_command_time = now

    def rejected(self, problem: str) -> int:
        """A command that did not fit the robot; how many were rejected so far."""
        self.counters["commands_rejected"] += 1
        self.last_rejection = problem
        return self.counters["commands_rejected"]

    def measured(self, state: RobotState, mode: str) -> None:
        """A new measurement, taken in safety mode `mode`."""
        if self.keep_trajectory:
            base = None if state.base_pos_w is None else np.array(state.base_pos_w, dtype=np.float64)
            self.trajectory.append((state.stamp, state.q.copy(), state.dq.copy(), MODE_CODES[mode], base))

    def track_mode(self, mode: str, events: dict[str, int]) -> str:
        """Note the safety mode ('disabled' while the motors are off) and `events` (the SafetyFilter's
        counts); a change is logged with its cause. Returns `mode`."""
        causes = [CAUSES[k] for k in CAUSES if events[k] > self.events_seen.get(k, 0)]
        self.events_seen = dict(events)
        if not self.mode_log or self.mode_log[-1][1] != mode:
            previous = self.mode_log[-1][1] if self.mode_log else "start"
            self.mode_log.append((time.time(), mode))
            if mode in ("damping", "estop"):
                why = f" ({'; '.join(causes)})" if causes else ""
                self.logger.warning(f"safety mode {previous} → {mode}{why}")
            else:
                self.logger.info(f"safety mode {previous} → {mode}")
        return mode

    def diagnostics(self, mode: str, safety: dict[str, Any], stamp: Any, *,
                    extra: dict[str, Any] | None = None) -> DiagnosticArray:
        """The /diagnostics message: mode, the SafetyFilter's report `safety`, counters, the
        state-to-command latency since the last message and `extra` (the loop's figures);
        `stamp` is its header stamp."""
        latency = self.state_to_command.since(self.diagnosed)
        self.diagnosed = self.state_to_command.count
        values = {**{k: v for k, v in safety.items() if k != "mode"}, **self.counters,
                  **percentiles_us(latency, "state_to_command"), "last_rejection": self.last_rejection, **(extra or {})}
        status = DiagnosticStatus(level=DIAGNOSTIC_LEVELS[mode], name=f"s2r robot_node: {self.spec.name}",
                                  hardware_id=f"{self.driver}:{self.spec.name}", message=mode,
                                  values=[KeyValue(key=k, value=diagnostic_text(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = stamp
        return msg

    def summary(self, safety: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Everything a deploy run reports from the robot side; `extra` (loop and robot figures) is appended."""
        return {
            "robot": self.spec.name,
            "driver": self.driver,
            "control_period": self.spec.control_period,
            "mode": self.mode_log[-1][1] if self.mode_log else "unconfigured",
            "safety": safety,
            "safety_events": {k: v for k, v in safety.items() if k != "mode" and v},
            "mode_log": self.mode_log,
            **self.counters,
            "last_rejection": self.last_rejection,
            "first_command_time": self.first_command_time,
            "last_command_time": self.last_command_time,
            **percentiles_us(self.state_to_command.values(), "state_to_command"),
            **percentiles_us(self.publish_to_command.values(), "publish_to_command"),
            **extra,
        }

    def write(self, summary_path: str, trajectory_path: str, summary: dict[str, Any]) -> None:
        """The summary JSON and the trajectory NPZ, each where a path is given (empty: not written)."""
        if summary_path:
            write_json(summary_path, summary)
        if trajectory_path and self.trajectory:
            stamp, q, dq, mode, base = zip(*self.trajectory)
            path = Path(trajectory_path)
            tmp = path.with_name(path.name + ".tmp.npz")
            positions = {} if any(b is None for b in base) else {"base_pos_w": np.stack(base)}
            np.savez(tmp, stamp=np.array(stamp), q=np.stack(q), dq=np.stack(dq), mode=np.array(mode, dtype=np.int8),
                     joint_names=np.array(self.spec.joint_names), modes=np.array(list(MODE_CODES)), **positions)
            tmp.replace(path)
