"""`s2r deploy`: run an exported policy on a robot, with ROS 2 around it, and report how it went.

By default the policy runs inside `robot_node`'s control loop (read → policy → safety filter →
write in one real-time thread of one process, as ros2_control hosts its controllers); with
`split` it runs in its own `policy_node` process and state and command cross DDS (a policy on
another computer), which the figures show as extra latency. The recorder (with `record`) is a
process of its own: if it dies the robot goes on, the run says so (`recorder_failures`) and
the file is recovered to its last complete chunk. With `foxglove` (a port), a `foxglove_bridge`
process serves the same topics live to Foxglove (`ws://127.0.0.1:PORT`; the layout in
docs/foxglove/s2r_layout.json); it too can die without stopping the robot. All processes join one ROS domain on
loopback (`s2r.ros.environment()`): `domain_id`, else the user's ROS_DOMAIN_ID, else 0
(`"random"`: a random one), printed at start and in the result, so a user's own tools can
listen. It waits until the first command, runs for `duration` seconds, stops the nodes with
SIGINT (the robot first: it damps and disables its motors), and merges their summaries:

    result = deploy("cartpole.onnx", driver="sim:hardware/configs/cartpole_hanging.yaml",
                    duration=8.0, record="run.mcap")
    result["control_hz_achieved"], result["state_to_command_p99_us"], result["upright_fraction"]

Figures: the control loop's rate and period, inference latency, state-to-command latency (a
state's measurement stamp to the write of the command computed from it, or, split, to its
arrival at the robot node; `publish_to_command` is the ROS round trip alone), late ticks (no
new state by the deadline), stale ticks (no fresh state to act on), overruns, the
SafetyFilter's interventions, and the task's metric computed from the robot node's own
samples. Each process's log, summary and the robot's trajectory stay in `out_dir`.

With `rt_priority` > 0 (and the right to use it: root, CAP_SYS_NICE or an rtprio limit) the
node processes run under SCHED_FIFO at `rt_priority - 10` and their control threads at
`rt_priority`, as ros2_control does; on a loaded machine this is what keeps the loops on time.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from s2r.contract import PolicyContract
from s2r.geometry import wrap_to_pi
from s2r.hardware.drivers import Driver, parse_driver, preflight

CONFIG = Path(str(resources.files("s2r.ros") / "config" / "deploy.yaml"))
"""The nodes' parameters (one ROS params file for all three); run-specific ones are set per run."""
OBSERVERS = ("recorder", "foxglove_bridge")
"""Processes that only listen: one that dies is reported and the robot goes on."""
STOP_TIMEOUT_S = 15.0
"""Seconds a node gets to exit after SIGINT before it is killed."""


class DeployError(RuntimeError):
    """A node refused to start or died; the message carries the end of its log."""


@dataclass(frozen=True)
class UprightMetric:
    """Fraction of robot-side samples with the continuous joint `joint` within `threshold` rad of upright."""

    joint: str
    threshold: float


TASK_METRICS = {"cartpole": UprightMetric("hinge", 0.25), "pendulum": UprightMetric("hinge", 0.3)}
"""Task (from the contract's provenance, else the robot) → its deploy metric."""


def upright_fraction(trajectory: dict[str, np.ndarray], metric: UprightMetric, *, start: float = -math.inf,
                     end: float = math.inf) -> float:
    """The fraction of samples stamped in [start, end) whose |wrap(q[joint])| < threshold."""
    names = [str(n) for n in trajectory["joint_names"]]
    keep = (trajectory["stamp"] >= start) & (trajectory["stamp"] < end)
    angle = wrap_to_pi(trajectory["q"][keep, names.index(metric.joint)])
    return float(np.mean(np.abs(angle) < metric.threshold)) if len(angle) else math.nan


HOVER_SETTLE_S = 3.0
"""Seconds after the first command before a multirotor's hover is judged (the hover rule's 3 s)."""


def position_error(trajectory: dict[str, np.ndarray], *, start: float, end: float) -> dict[str, float]:
    """A multirotor's distance to the hover target (the origin, FlightRuntime's default) over the samples stamped
    in [start, end): its largest (`position_error_max_m`, the recovery from the start included) and, from
    HOVER_SETTLE_S after `start`, its median and p99 (m)."""
    keep = (trajectory["stamp"] >= start) & (trajectory["stamp"] < end)
    distance = np.linalg.norm(trajectory["base_pos_w"][keep], axis=-1)
    settled = distance[trajectory["stamp"][keep] >= start + HOVER_SETTLE_S]
    figures = {"position_error_max_m": float(distance.max()) if len(distance) else math.nan}
    for name, q in (("p50", 50), ("p99", 99)):
        figures[f"position_error_{name}_m"] = float(np.percentile(settled, q)) if len(settled) else math.nan
    return figures


def realtime_permitted() -> bool:
    """Whether this user may start processes under SCHED_FIFO (chrt present and allowed)."""
    chrt = shutil.which("chrt")
    return chrt is not None and subprocess.run([chrt, "-f", "1", "true"], capture_output=True).returncode == 0


class _Process:
    """One node process with its log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        self._log_file = open(log, "w")
        self.popen = subprocess.Popen(command, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def tail(self, lines: int = 15) -> str:
        self._log_file.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def interrupt(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Its exit status; SIGKILL if it is still running after `timeout`."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log_file.close()
        return self.popen.returncode


def deploy(policy: str | Path, *, robot: str | None = None, driver: str | Driver = "sim", duration: float = 10.0,
           record: str | Path | None = None, out_dir: str | Path | None = None, rt_priority: int = 50,
           domain_id: int | str | None = None, split: bool = False, foxglove: int | None = None,
           view: str = "auto", view_port: int = 8080, startup_timeout: float = 60.0, trace: bool = False,
           announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run `policy` on the robot for `duration` seconds after its first command; the figures.

    `robot` is the robot's spec, a name or YAML (default: the contract's robot); `driver` is
    `KIND[:WHERE]` of the driver registry (`sim:SIMROBOT.yaml`: SimRobot with that YAML's
    latency, noise and start pose). `split`: the policy in its own process (two-process mode).
    `domain_id`: an id, "random", or None (ROS_DOMAIN_ID, else 0); `announce` is told the
    domain and the run directory at start. `foxglove`: serve the topics to Foxglove on this port
    (ValueError naming the port and a free one when it is taken). `view` (auto, viewer, web on
    `view_port`, none): the robot's model following its joint_states, drawn in this process, away
    from the nodes (s2r.apps.live_view). `trace`: robot_node keeps its loop's per-tick timeline in
    the run directory's `trace.npz` (one process; see `RobotLoop.trace`). Raises DeployError when a
    node refuses to start (a contract mismatch names the field) or the robot or policy node dies.
    """
    from s2r.ros import environment, resolve_domain_id
    from s2r.runtime.load import check_policy_file
    from s2r.spec import robot_spec

    driver = parse_driver(driver)
    if not duration > 0:
        raise ValueError(f"--duration: expected seconds > 0, got {duration}")
    domain = resolve_domain_id(domain_id)
    if foxglove is not None:
        from s2r.ports import port_in_use, port_taken_message

        if port_in_use("127.0.0.1", foxglove):
            raise ValueError(port_taken_message("--foxglove", "127.0.0.1", foxglove))
    policy = Path(policy).resolve()
    contract = check_policy_file(policy)  # refused here, in one line, before any node starts
    spec = robot or contract.robot
    contract.check(robot_spec(spec))
    preflight(driver, robot_spec(spec))  # a bus robot's port, motors and calibration: refused here, in one line
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="s2r-deploy-"))
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("robot_node.json", "policy_node.json", "trajectory.npz", "trace.npz", "ready"):
        (out / stale).unlink(missing_ok=True)
    env = {**os.environ, **environment(domain)}
    if announce is not None:
        announce(f"ROS domain {domain} (export ROS_DOMAIN_ID={domain} to listen), "
                 f"{'two processes (--split)' if split else 'one process'}, logs in {out}")
    rt = rt_priority if rt_priority > 0 and realtime_permitted() else 0
    prefix = ["chrt", "-f", str(max(rt - 10, 1))] if rt else []
    # The recorder below the nodes but above ordinary processes: a CPU hog does not make it drop messages.
    recorder_prefix = ["chrt", "-f", str(max(rt - 20, 1))] if rt else []

    def node(module: str, params: dict[str, Any]) -> list[str]:
        args = [f"{k}:={v}" for k, v in params.items() if v != ""]
        return [*prefix, sys.executable, "-m", f"s2r.ros.{module}", "--ros-args", "--params-file", str(CONFIG),
                *[token for arg in args for token in ("-p", arg)]]

    processes: list[_Process] = []
    recorder_failures: list[str] = []
    live = follower = None
    from s2r.apps.live_view import JointStateFollower, LiveView, has_display

    if view == "auto" and not has_display():
        view = "none"  # a headless deploy (tests, robots) is not told about views it did not ask for
    if view != "none":
        import mujoco

        display_spec = robot_spec(spec)
        live = LiveView.open(view, mujoco.MjModel.from_xml_path(str(display_spec.mjcf)), spec=display_spec,
                             port=view_port, say=announce)
        os.environ.update(environment(domain))  # this process joins the nodes' domain on loopback to listen
        follower = JointStateFollower(live, display_spec, domain)
    try:
        if record:
            record = Path(record).resolve()
            recorder = [*recorder_prefix, sys.executable, "-m", "s2r.ros.recorder", "--ros-args",
                        "--params-file", str(CONFIG), "-p", f"path:={record}"]
            processes.append(_Process("recorder", recorder, env, out / "recorder.log"))
        if foxglove is not None:
            bridge = [*recorder_prefix, sys.executable, "-m", "s2r.ros.foxglove_bridge", "--ros-args",
                      "-p", f"port:={foxglove}"]
            processes.append(_Process("foxglove_bridge", bridge, env, out / "foxglove_bridge.log"))
            if announce is not None:
                announce(f"Foxglove: open ws://127.0.0.1:{foxglove} with the layout docs/foxglove/s2r_layout.json")
        robot_params = {"robot": spec, "driver": driver, "realtime_priority": rt,
                        "summary_path": out / "robot_node.json", "trajectory_path": out / "trajectory.npz"}
        period = robot_spec(spec).control_period
        if period < 0.008:  # a 500 Hz loop has 1 ms of half-period: the wait for a late state takes 0.4 ms of it
            robot_params["state_wait_s"] = period / 5
        if robot_spec(spec).rotors:  # a multirotor in the air cannot fade its thrust in from motors off over 1 s
            robot_params["fade_in_s"] = 0.0
        if split:
            # The policy first: it checks its contract against the robot while the robot starts,
            # and a refusal is the error a user needs to see.
            processes.append(_Process("policy_node", node("policy_node", {
                "policy": policy, "robot": spec, "realtime_priority": rt, "summary_path": out / "policy_node.json",
                "ready_path": out / "ready"}), env, out / "policy_node.log"))
        else:
            robot_params.update(policy=policy, ready_path=out / "ready",
                                trace_path=out / "trace.npz" if trace else "")
        processes.append(_Process("robot_node", node("robot_node", robot_params), env, out / "robot_node.log"))
        commander = "policy_node" if split else "robot_node"
        if not _watch(processes, startup_timeout, recorder_failures, until=lambda: (out / "ready").exists()):
            raise DeployError(f"no command from the policy within {startup_timeout:g} s; {commander} log:\n"
                              f"{_by_name(processes, commander).tail()}")
        _watch(processes, duration, recorder_failures)
    finally:
        # The robot first: it stops its loop, damps and disables its motors while the policy
        # still commands (stopping the policy first would trip the robot's watchdog).
        codes = {}
        for process in sorted(processes, key=lambda p: p.name != "robot_node"):
            process.interrupt()
            codes[process.name] = process.wait()
        if follower is not None:
            follower.close()
            live.close()
    failed = {name: code for name, code in codes.items() if code != 0 and name not in OBSERVERS}
    if failed:
        raise DeployError("; ".join(f"{name} exited with status {code}:\n{_by_name(processes, name).tail()}"
                                    for name, code in failed.items()))
    result = _report(out, contract, driver, duration, record, rt, split=split, domain=domain,
                     recorder_failures=recorder_failures)
    return {**result, "foxglove": f"ws://127.0.0.1:{foxglove}"} if foxglove is not None else result


def _by_name(processes: list[_Process], name: str) -> _Process:
    return next(p for p in processes if p.name == name)


def _watch(processes: list[_Process], timeout: float, recorder_failures: list[str],
           until: Callable[[], bool] | None = None) -> bool:
    """Wait `timeout` seconds or until `until()`; whether `until()` came true. DeployError if a node
    exits; a recorder that exits is noted in `recorder_failures` and the run goes on without it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for process in list(processes):
            if process.popen.poll() is None:
                continue
            if process.name in OBSERVERS:
                goes_on = "unrecorded" if process.name == "recorder" else "without Foxglove"
                message = f"{process.name} exited with status {process.popen.returncode}; the robot goes on {goes_on}"
                print(f"s2r deploy: {message}", file=sys.stderr, flush=True)
                if process.name == "recorder":
                    recorder_failures.append(message)
                processes.remove(process)
                process.wait()
                continue
            raise DeployError(f"{process.name} exited with status {process.popen.returncode}:\n{process.tail()}")
        if until is not None and until():
            return True
        time.sleep(0.05)
    return False


LOOP_FIGURES = ("control_hz_target", "control_hz_achieved", "period_p50_us", "period_p99_us", "period_max_us",
                "period_p99_error_us", "inference_p50_us", "inference_p99_us", "overruns")
"""Figures of the control loop: robot_node's (one process) or policy_node's (split)."""


def _report(out: Path, contract: PolicyContract, driver: Driver, duration: float, record: Path | None,
            rt: int, *, split: bool, domain: int, recorder_failures: list[str]) -> dict[str, Any]:
    robot_side = json.loads((out / "robot_node.json").read_text())
    loop_side = json.loads((out / "policy_node.json").read_text()) if split else robot_side
    result: dict[str, Any] = {
        "policy": loop_side["policy"], "robot": robot_side["robot"],
        "driver": str(driver), "duration_s": duration, "mode": "split" if split else "one-process",
        "ros_domain_id": domain, "rt_priority": rt,
        **{key: loop_side[key] for key in LOOP_FIGURES},
        "state_to_command_p50_us": robot_side["state_to_command_p50_us"],
        "state_to_command_p99_us": robot_side["state_to_command_p99_us"],
        "state_to_command_max_us": robot_side["state_to_command_max_us"],
        "publish_to_command_p50_us": robot_side["publish_to_command_p50_us"] if split else None,
        "publish_to_command_p99_us": robot_side["publish_to_command_p99_us"] if split else None,
        # At the robot, in both modes: measurements that came late, periods without a fresh command.
        "late_ticks": robot_side["late_ticks"],
        "stale_ticks": robot_side["stale_ticks"],
        "safety_events": robot_side["safety_events"],
        "safety_fault": robot_side.get("safety_fault"),
        "commands_rejected": robot_side["commands_rejected"],
        "realtime_notes": robot_side.get("realtime_notes", []),
    }
    task = contract.provenance.get("task", contract.robot)
    trajectory_path = out / "trajectory.npz"
    if trajectory_path.exists():
        with np.load(trajectory_path) as loaded:
            trajectory = dict(loaded)
        # The run's window, first command to `duration` after it: not the shutdown's damping.
        start = robot_side["first_command_time"] or -math.inf
        if task in TASK_METRICS:
            result["upright_fraction"] = upright_fraction(trajectory, TASK_METRICS[task], start=start,
                                                          end=start + duration)
        # A multirotor's distance to the hover target (the origin); a walking robot's base position (SimRobot
        # reports any floating base's) is no error.
        if contract.action.mode == "thrust" and "base_pos_w" in trajectory:
            result.update(position_error(trajectory, start=start, end=start + duration))
    if record:
        from s2r.ros.recorder import is_closed, recover_recording

        result["recording"] = str(record)
        result["recorder_failures"] = len(recorder_failures)
        if not is_closed(record):
            result["recording_recovered"] = True
            result["recording_messages"] = recover_recording(record)
        else:
            result["recording_messages"] = _message_counts(record)
    result["run_dir"] = str(out)
    return {k: _rounded(k, v) for k, v in result.items()}


def _rounded(key: str, value: Any) -> Any:
    """Microseconds as whole numbers (finer is noise), rates and fractions to 4 digits."""
    if isinstance(value, float) and math.isfinite(value):
        return round(value) if key.endswith("_us") else round(value, 4)
    return value


def _message_counts(path: Path) -> dict[str, int]:
    """Messages per topic from a closed MCAP file's statistics."""
    from mcap.reader import make_reader

    with open(path, "rb") as stream:
        summary = make_reader(stream).get_summary()
    if summary is None or summary.statistics is None:
        return {}
    return {summary.channels[cid].topic: n for cid, n in summary.statistics.channel_message_counts.items()}
