"""robot_node: one robot on the ROS 2 graph, with the SafetyFilter as the only path to its motors.

A lifecycle node that owns one `hardware.RobotInterface`:

    configure   load the spec, build and connect the robot, create topics and services
    activate    enable the motors, start the control-period loop
    deactivate  stop the loop, damp for `shutdown_damping_s`, disable the motors
    cleanup     close the robot
    shutdown    (SIGINT/SIGTERM) deactivate and clean up, whatever the state

With `autostart` (the default) it configures and activates itself; on a machine with a
full ROS 2 install `autostart:=false` hands the transitions to a lifecycle manager.

Topics and services (relative names, so a namespace can hold several robots):

    joint_states   sensor_msgs/JointState  out  every control period, header.stamp = state.stamp
    imu            sensor_msgs/Imu         out  floating-base robots with an IMU
    joint_command  sensor_msgs/JointState  in   see s2r.ros.messages: names checked, reordered
    /diagnostics   diagnostic_msgs/DiagnosticArray  out  ~1 Hz: safety mode and events, latency
    enable, disable, estop, reset_estop    std_srvs/Trigger

The loop thread runs at the spec's control period, the SafetyFilter's period: it reads the
state, publishes it (each measurement once), and, when no command came since its last tick,
calls the filter without one, so the filter's watchdog drops to damping when the policy
stops. A robot that measures on its own clock and announces its measurements (SimRobot,
`AnnouncesStates`) drives the loop: it ticks the moment the measurement of its period becomes
readable, so a state leaves at the age the robot gave it; the loop's absolute deadlines,
`state_wait_s` after each expected measurement, tick it when one is late or never comes (a
stalled robot still gets its watchdog). Any other robot is read at the loop's deadlines.
A command is filtered and written the moment it arrives, on the executor thread: the motors
get it within a fraction of a millisecond instead of at the next tick. Both paths share one
lock; between them the filter is called about once per control period, as it expects.

`state_to_command` latency is measured here: a command's header.stamp is the stamp of the
state it was computed from, and its arrival time minus that stamp covers sensor age, the
publish, the policy's wait for its deadline, inference and the way back.

    s2r-robot-node --ros-args -p robot:=cartpole -p robot_config:=hardware/configs/cartpole_hanging.yaml
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Imu, JointState
from std_srvs.srv import Trigger

from s2r.hardware.deadline import DeadlineLoop, TickTrigger, set_realtime_priority
from s2r.hardware.safety import SafetyConfig, SafetyFilter
from s2r.interface import RobotError, RobotInterface
from s2r.reports import SampleWindow, diagnostic_text, percentiles_us, write_json
from s2r.spec import RobotSpec, SpecError, robot_spec
from s2r.state import Command, RobotState

from .messages import CommandReader, MessageError, imu_from_state, joint_state_from_state
from .parameters import Param, declare, non_empty, non_negative, one_of, positive, priority
from .qos import COMMAND_QOS, DIAGNOSTICS_QOS, SENSOR_QOS
from .spin import StartupError, run_node

MODE_CODES = {"soft_start": 0, "running": 1, "damping": 2, "estop": 3, "disabled": 4}
"""Mode of each trajectory sample, as stored in the trajectory file."""
CAUSES = {"watchdog": "watchdog: no fresh state or policy command within the watchdog periods",
          "nan_guard": "NaN guard: a non-finite command", "estop": "e-stop latched"}
"""SafetyFilter events that put the robot in damping, and how the log says so."""
DIAGNOSTIC_LEVELS = {"running": DiagnosticStatus.OK, "soft_start": DiagnosticStatus.OK,
                     "damping": DiagnosticStatus.WARN, "disabled": DiagnosticStatus.WARN,
                     "estop": DiagnosticStatus.ERROR}


def _sim_robot(spec: RobotSpec, config_path: str) -> RobotInterface:
    """SimRobot, imported here: MuJoCo is needed only when the robot is simulated."""
    from s2r.sim.sim_robot import SimRobot, load_sim_robot_config

    return SimRobot(spec, load_sim_robot_config(config_path) if config_path else None)


DRIVERS = {"sim": _sim_robot}
"""`driver` parameter → factory(spec, robot_config) of the RobotInterface."""


@runtime_checkable
class AnnouncesStates(Protocol):
    """A robot that measures on its own clock and calls back the moment a measurement becomes
    readable, one every `period` seconds (see `s2r.sim.sim_robot.SimRobot.set_state_callback`)."""

    def set_state_callback(self, callback: Callable[[], None] | None, *, period: float | None = None) -> None: ...


PARAMS = (
    Param("robot", "cartpole", "Robot spec: a robot shipped with s2r or a spec YAML path.", non_empty),
    Param("driver", "sim", f"The RobotInterface: {', '.join(DRIVERS)}.", one_of(*DRIVERS)),
    Param("robot_config", "", "Driver config file; for sim, a SimRobot YAML (latency, noise, overrides)."),
    Param("state_wait_s", 0.002, "Seconds the loop waits past a measurement's expected time before it ticks "
          "without it (robots that announce their measurements; below half the control period).", non_negative),
    Param("watchdog_periods", 3, "State or policy commands older than this many control periods → damping.",
          positive),
    Param("soft_start_s", 1.0, "Seconds of the soft start's ramp to the default pose.", non_negative),
    Param("fade_in_s", 1.0, "Seconds of the fade from the soft start to the policy's command.", non_negative),
    Param("damping_kd", 0.0, "kd of the damping command; 0: the spec's kd where > 0, else 1.0.", non_negative),
    Param("shutdown_damping_s", 0.5, "Seconds of damping at shutdown before the motors are disabled.",
          non_negative),
    Param("autostart", True, "Configure, activate and enable at start, without a lifecycle manager."),
    Param("realtime_priority", 50, "SCHED_FIFO priority of the control thread, 1..99; 0: normal scheduling.",
          priority),
    Param("diagnostics_period_s", 1.0, "Seconds between /diagnostics messages.", positive),
    Param("summary_path", "", "JSON written at shutdown: safety report, latencies, counters (empty: none)."),
    Param("trajectory_path", "", "NPZ written at shutdown: stamp, q, dq and mode of every tick (empty: none)."),
)


def _reported(transition):
    """A lifecycle callback whose unexpected exception is logged and kept (rclpy would swallow it)."""

    @functools.wraps(transition)
    def wrapper(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return transition(self, state)
        except Exception as error:
            self.startup_error = f"{transition.__name__}: {type(error).__name__}: {error}"
            self.get_logger().error(f"{self.startup_error}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR

    return wrapper


class RobotNode(LifecycleNode):
    """Publishes a robot's state, takes commands through the SafetyFilter, serves e-stop and enable."""

    def __init__(self) -> None:
        super().__init__("robot_node")
        self.params = declare(self, PARAMS)
        self.spec: RobotSpec | None = None
        self.robot: RobotInterface | None = None
        self.startup_error = ""
        self.lock = threading.Lock()
        """Guards the SafetyFilter, the robot's command path and the newest state."""
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.enabled = False
        self.active = False
        self.closed = False
        self.failure: str | None = None
        """Set when the loop thread died; the process then shuts down (see s2r.ros.spin)."""
        self.state: RobotState | None = None
        self.measured = TickTrigger()
        """Fired by the robot when the measurement of a control period becomes readable."""
        self.loop: DeadlineLoop | None = None
        self.commanded_since_tick = False
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
        """state stamp (ns) → time.time() it was published, for the last few states."""
        self.state_to_command = SampleWindow()
        self.publish_to_command = SampleWindow()
        self.window_start = {"state_to_command": 0}
        """Sample counts at the last diagnostics message: each message covers what came since."""
        self.trajectory: list[tuple[float, np.ndarray, np.ndarray, int]] = []
        """(stamp, q, dq, mode code) of every tick, kept only with a trajectory_path."""
        if self.params["autostart"]:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self.startup_error)
            if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self.startup_error)

    # --- lifecycle ------------------------------------------------------------------------------
    @_reported
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        try:
            self.spec = robot_spec(p["robot"])
            if not p["state_wait_s"] < self.spec.control_period / 2:
                raise ValueError(f"parameter 'state_wait_s': expected below half the control period "
                                 f"{self.spec.control_period / 2} s (got {p['state_wait_s']})")
            config = SafetyConfig(watchdog_periods=p["watchdog_periods"], damping_kd=p["damping_kd"] or None,
                                  soft_start_s=p["soft_start_s"], fade_in_s=p["fade_in_s"])
            self.safety = SafetyFilter(self.spec, self.spec.control_period, config)
            self.robot = DRIVERS[p["driver"]](self.spec, p["robot_config"])
            self.robot.connect()
        except (SpecError, RobotError, ValueError, OSError) as error:
            self.startup_error = f"{type(error).__name__}: {error}"
            self.get_logger().error(f"configure failed: {self.startup_error}")
            return TransitionCallbackReturn.FAILURE
        self.commands = CommandReader(self.spec)
        self.state_msg = JointState(name=list(self.spec.joint_names))
        self.state_pub = self.create_lifecycle_publisher(JointState, "joint_states", SENSOR_QOS)
        self.imu_pub = self.create_lifecycle_publisher(Imu, "imu", SENSOR_QOS) if self.spec.imu else None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.command_sub = self.create_subscription(JointState, "joint_command", self.on_command, COMMAND_QOS)
        self.trigger_services = [self.create_service(Trigger, name, handler) for name, handler in (
            ("enable", self.on_enable), ("disable", self.on_disable),
            ("estop", self.on_estop), ("reset_estop", self.on_reset_estop))]
        self.diagnostics_timer = self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics)
        self.get_logger().info(f"configured {self.spec.name} ({p['driver']} driver"
                               f"{', ' + p['robot_config'] if p['robot_config'] else ''}), "
                               f"control period {self.spec.control_period * 1e3:g} ms")
        return super().on_configure(state)

    @_reported
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._enable()
        except RobotError as error:
            self.startup_error = f"RobotError: {error}"
            self.get_logger().error(f"activate failed: {error}")
            return TransitionCallbackReturn.FAILURE
        announces = isinstance(self.robot, AnnouncesStates)
        self.loop = DeadlineLoop(self.spec.control_period, trigger=self.measured if announces else None,
                                 trigger_wait_s=self.params["state_wait_s"])
        if announces:
            self.robot.set_state_callback(self.measured.fire, period=self.spec.control_period)
        self.active = True
        self.stop.clear()
        self.thread = threading.Thread(target=self.run_loop, name="robot_node loop", daemon=True)
        self.thread.start()
        self.get_logger().info("active: motors enabled, soft start")
        return super().on_activate(state)

    @_reported
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loop()
        self._damp_and_disable()
        return super().on_deactivate(state)

    @_reported
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        for publisher in (self.state_pub, self.imu_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self.destroy_publisher(self.diagnostics_pub)
        self.destroy_subscription(self.command_sub)
        for service in self.trigger_services:
            self.destroy_service(service)
        self.destroy_timer(self.diagnostics_timer)
        return super().on_cleanup(state)

    @_reported
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.robot is not None:
            self._stop_loop()
            self._damp_and_disable()
            self._release()
        return super().on_shutdown(state)

    def close(self) -> None:
        """SIGINT/SIGTERM: damping, motors off, robot closed, summary written. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.trigger_shutdown()
        self._write_outputs()

    # --- the loop -------------------------------------------------------------------------------
    def run_loop(self) -> None:
        """The loop thread: ticks until stopped; on an unexpected error, damping and a failure report."""
        problem = set_realtime_priority(self.params["realtime_priority"])
        if problem:
            self.get_logger().warning(problem)
        try:
            self.ticks()
        except Exception as error:
            self.get_logger().fatal(f"control loop died: {traceback.format_exc()}")
            with self.lock:
                self.robot.write_command(self.safety.damping_command(self.state))
            self.failure = f"{type(error).__name__}: {error}"

    def ticks(self) -> None:
        """Every control period: read, publish a new measurement, and tick the SafetyFilter when no command came."""
        last_stamp = None
        while self.loop.wait(self.stop):
            try:
                state = self.robot.read_state()
            except RobotError as error:
                state = None
                self.counters["read_errors"] += 1
                self.get_logger().error(f"read_state failed: {error}", throttle_duration_sec=1.0)
            new = state is not None and state.stamp != last_stamp
            if new:
                self._publish(state)
                last_stamp = state.stamp
            with self.lock:
                self.state = state
                if not self.commanded_since_tick:
                    self._apply(None, time.time())
                self.commanded_since_tick = False
                mode = self._mode()
            if new and self.params["trajectory_path"]:
                self.trajectory.append((state.stamp, state.q.copy(), state.dq.copy(), MODE_CODES[mode]))

    def _publish(self, state: RobotState) -> None:
        msg = joint_state_from_state(state, self.spec, self.state_msg)
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.state_pub.publish(msg)
        self.published[stamp_ns] = time.time()
        if len(self.published) > 64:
            self.published.popitem(last=False)
        if self.imu_pub is not None and state.base_quat is not None:
            self.imu_pub.publish(imu_from_state(state))
        self.counters["states_published"] += 1

    def _apply(self, command: Command | None, now: float) -> None:
        """Filter `command` (None: this tick has none) against the newest state and write it. Holds the lock."""
        safe = self.safety.filter(command, self.state, now)
        if self.enabled:
            self.robot.write_command(safe)

    def _mode(self) -> str:
        """The safety mode ('disabled' while the motors are off); logs changes. Holds the lock."""
        mode = self.safety.mode if self.enabled else "disabled"
        events = self.safety.events
        causes = [CAUSES[k] for k in CAUSES if events[k] > self.events_seen.get(k, 0)]
        self.events_seen = dict(events)
        if not self.mode_log or self.mode_log[-1][1] != mode:
            previous = self.mode_log[-1][1] if self.mode_log else "start"
            self.mode_log.append((time.time(), mode))
            if mode in ("damping", "estop"):
                why = f" ({'; '.join(causes)})" if causes else ""
                self.get_logger().warning(f"safety mode {previous} → {mode}{why}")
            else:
                self.get_logger().info(f"safety mode {previous} → {mode}")
        return mode

    # --- commands -------------------------------------------------------------------------------
    def on_command(self, msg: JointState) -> None:
        """A policy command: check names and lengths, measure its latency, filter and write it now."""
        now = time.time()
        if not self.active:
            return
        try:
            command = self.commands(msg)
        except MessageError as error:
            self.counters["commands_rejected"] += 1
            self.last_rejection = str(error)
            self.get_logger().warning(f"rejected command #{self.counters['commands_rejected']}: {error}",
                                      throttle_duration_sec=1.0)
            return
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.state_to_command.add(now - stamp_ns * 1e-9)
        published = self.published.get(stamp_ns)
        if published is not None:
            self.publish_to_command.add(now - published)
        if self.first_command_time is None:
            self.first_command_time = now
        self.last_command_time = now
        with self.lock:
            self._apply(command, now)
            self.commanded_since_tick = True
            self.counters["commands_applied"] += 1
            self._mode()

    # --- services -------------------------------------------------------------------------------
    def on_enable(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            self._enable()
        except RobotError as error:
            response.success, response.message = False, f"enable failed: {error}"
            return response
        response.success, response.message = True, "motors enabled; soft start from the measured pose"
        return response

    def on_disable(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.lock:
            self.enabled = False
            self.robot.disable()
        self.get_logger().warning("motors disabled (zero torque) by the disable service")
        response.success, response.message = True, "motors disabled (zero torque); call enable to restart"
        return response

    def on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.lock:
            self.safety.estop()
            self._apply(None, time.time())
            self._mode()
        self.get_logger().error("E-STOP latched: damping until reset_estop")
        response.success, response.message = True, "e-stop latched: damping until reset_estop"
        return response

    def on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.lock:
            was_latched = self.safety.mode == "estop"
            self.safety.reset_estop()
            self._mode()
        response.success = True
        response.message = "e-stop released; soft start" if was_latched else "e-stop was not latched; soft start"
        return response

    def _enable(self) -> None:
        with self.lock:
            self.robot.enable()
            self.safety.reset()
            self.enabled = True

    # --- shutdown -------------------------------------------------------------------------------
    def _stop_loop(self) -> None:
        self.active = False
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if isinstance(self.robot, AnnouncesStates):
            self.robot.set_state_callback(None)

    def _damp_and_disable(self) -> None:
        """The damping command each control period for `shutdown_damping_s`, then motors off."""
        if self.enabled:
            end = time.monotonic() + self.params["shutdown_damping_s"]
            while True:
                try:
                    state = self.robot.read_state()
                except RobotError:
                    state = None
                with self.lock:
                    self.robot.write_command(self.safety.damping_command(state))
                    self.counters["shutdown_damping_commands"] += 1
                if time.monotonic() >= end:
                    break
                time.sleep(min(self.spec.control_period, max(end - time.monotonic(), 0.0)))
            self.get_logger().info(f"shutdown: damping sent for {self.params['shutdown_damping_s']:g} s")
        with self.lock:
            self.enabled = False
            self.robot.disable()
            self._mode()
        self.get_logger().info("motors disabled")

    def _release(self) -> None:
        if self.robot is not None:
            self.robot_stats = self.robot.stats() if hasattr(self.robot, "stats") else {}
            self.robot.close()
            self.robot = None

    # --- reports --------------------------------------------------------------------------------
    def publish_diagnostics(self) -> None:
        with self.lock:
            mode = self._mode()
            report = self.safety.report()
        latency = self.state_to_command.since(self.window_start["state_to_command"])
        self.window_start["state_to_command"] = self.state_to_command.count
        values = {**{k: v for k, v in report.items() if k != "mode"}, **self.counters,
                  **percentiles_us(latency, "state_to_command"), "last_rejection": self.last_rejection}
        status = DiagnosticStatus(level=DIAGNOSTIC_LEVELS[mode], name=f"s2r robot_node: {self.spec.name}",
                                  hardware_id=f"{self.params['driver']}:{self.spec.name}", message=mode,
                                  values=[KeyValue(key=k, value=diagnostic_text(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(msg)

    def summary(self) -> dict[str, Any]:
        """Everything a deploy run reports from the robot side."""
        report = self.safety.report()
        return {
            "robot": self.spec.name,
            "driver": self.params["driver"],
            "control_period": self.spec.control_period,
            "mode": self.mode_log[-1][1] if self.mode_log else "unconfigured",
            "safety": report,
            "safety_events": {k: v for k, v in report.items() if k != "mode" and v},
            "mode_log": self.mode_log,
            **self.counters,
            "last_rejection": self.last_rejection,
            "first_command_time": self.first_command_time,
            "last_command_time": self.last_command_time,
            **percentiles_us(self.state_to_command.values(), "state_to_command"),
            **percentiles_us(self.publish_to_command.values(), "publish_to_command"),
            "loop_overruns": self.loop.overruns if self.loop else 0,
            "late_measurements": self.loop.late if self.loop else 0,
            "robot_stats": getattr(self, "robot_stats", {}),
            "shutdown_damping_s": self.params["shutdown_damping_s"],
        }

    def _write_outputs(self) -> None:
        if self.spec is None:
            return
        if self.params["summary_path"]:
            write_json(self.params["summary_path"], self.summary())
        if self.params["trajectory_path"] and self.trajectory:
            stamp, q, dq, mode = zip(*self.trajectory)
            path = Path(self.params["trajectory_path"])
            tmp = path.with_name(path.name + ".tmp.npz")
            np.savez(tmp, stamp=np.array(stamp), q=np.stack(q), dq=np.stack(dq), mode=np.array(mode, dtype=np.int8),
                     joint_names=np.array(self.spec.joint_names), modes=np.array(list(MODE_CODES)))
            tmp.replace(path)


def main(args: list[str] | None = None) -> int:
    return run_node(RobotNode, args, name="robot_node")


if __name__ == "__main__":
    sys.exit(main())
