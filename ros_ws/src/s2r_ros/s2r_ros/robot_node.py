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
publish, the policy's wait for its deadline, inference and the way back. The figures,
diagnostics, summary and trajectory are kept by `s2r.ros.robot_report`. The robot is opened
through the driver registry (`s2r.hardware.drivers`, `driver:=KIND[:WHERE]`): only `sim` loads MuJoCo.

    s2r-robot-node --ros-args -p robot:=cartpole -p driver:=sim:hardware/configs/cartpole_hanging.yaml
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Imu, JointState
from std_srvs.srv import Trigger

from s2r.hardware.deadline import DeadlineLoop, TickTrigger, set_realtime_priority
from s2r.hardware.drivers import help_text, open_driver
from s2r.hardware.safety import SafetyConfig, SafetyFilter
from s2r.interface import RobotError, RobotInterface
from s2r.spec import RobotSpec, SpecError, robot_spec
from s2r.state import Command, RobotState

from .messages import CommandReader, MessageError, imu_from_state, joint_state_from_state
from .parameters import Param, declare, driver, non_empty, non_negative, positive, priority
from .qos import COMMAND_QOS, DIAGNOSTICS_QOS, SENSOR_QOS
from .robot_report import RobotReport
from .spin import StartupError, reported, run_node


@runtime_checkable
class AnnouncesStates(Protocol):
    """A robot that measures on its own clock and calls back the moment a measurement becomes
    readable, one every `period` seconds (see `s2r.sim.sim_robot.SimRobot.set_state_callback`)."""

    def set_state_callback(self, callback: Callable[[], None] | None, *, period: float | None = None) -> None: ...


PARAMS = (
    Param("robot", "cartpole", "Robot spec: a robot shipped with s2r or a spec YAML path.", non_empty),
    Param("driver", "sim", f"The RobotInterface, KIND[:WHERE]: {help_text()}.", driver),
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
        self.report: RobotReport | None = None
        """The figures, from configure on."""
        self.robot_stats: dict[str, int] = {}
        """The robot's own counters, read when it is released."""
        if self.params["autostart"]:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self.startup_error)
            if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self.startup_error)

    # --- lifecycle ------------------------------------------------------------------------------
    @reported
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
            self.report = RobotReport(self.spec, driver=p["driver"], logger=self.get_logger(),
                                      keep_trajectory=bool(p["trajectory_path"]))
            self.robot = open_driver(p["driver"], self.spec)
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
        self.get_logger().info(f"configured {self.spec.name} (driver {p['driver']}), "
                               f"control period {self.spec.control_period * 1e3:g} ms")
        return super().on_configure(state)

    @reported
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

    @reported
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loop()
        self._damp_and_disable()
        return super().on_deactivate(state)

    @reported
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

    @reported
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
                self.report.counters["read_errors"] += 1
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
            if new:
                self.report.measured(state, mode)

    def _publish(self, state: RobotState) -> None:
        msg = joint_state_from_state(state, self.spec, self.state_msg)
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.state_pub.publish(msg)
        self.report.state_published(stamp_ns, time.time())
        if self.imu_pub is not None and state.base_quat is not None:
            self.imu_pub.publish(imu_from_state(state))

    def _apply(self, command: Command | None, now: float) -> None:
        """Filter `command` (None: this tick has none) against the newest state and write it. Holds the lock."""
        safe = self.safety.filter(command, self.state, now)
        if self.enabled:
            self.robot.write_command(safe)

    def _mode(self) -> str:
        """The safety mode ('disabled' while the motors are off); logs changes. Holds the lock."""
        return self.report.track_mode(self.safety.mode if self.enabled else "disabled", self.safety.events)

    # --- commands -------------------------------------------------------------------------------
    def on_command(self, msg: JointState) -> None:
        """A policy command: check names and lengths, measure its latency, filter and write it now."""
        now = time.time()
        if not self.active:
            return
        try:
            command = self.commands(msg)
        except MessageError as error:
            count = self.report.rejected(str(error))
            self.get_logger().warning(f"rejected command #{count}: {error}", throttle_duration_sec=1.0)
            return
        self.report.command_arrived(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, now)
        with self.lock:
            self._apply(command, now)
            self.commanded_since_tick = True
            self.report.counters["commands_applied"] += 1
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
                    self.report.counters["shutdown_damping_commands"] += 1
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
            safety = self.safety.report()
        self.diagnostics_pub.publish(self.report.diagnostics(mode, safety, self.get_clock().now().to_msg()))

    def _write_outputs(self) -> None:
        if self.report is None:
            return
        summary = self.report.summary(
            self.safety.report(), loop_overruns=self.loop.overruns if self.loop else 0,
            late_measurements=self.loop.late if self.loop else 0, robot_stats=self.robot_stats,
            shutdown_damping_s=self.params["shutdown_damping_s"])
        self.report.write(self.params["summary_path"], self.params["trajectory_path"], summary)


def main(args: list[str] | None = None) -> int:
    return run_node(RobotNode, args, name="robot_node")


if __name__ == "__main__":
    sys.exit(main())
