"""robot_node: one robot on the ROS 2 graph, its control loop in this process, the SafetyFilter its only way out.

A lifecycle node that owns one `hardware.RobotInterface` and runs its `s2r.hardware.robot_loop.RobotLoop`:

    configure   load the spec (and the policy), build and connect the robot, create topics and services
    activate    enable the motors, start the loop (warm-up, SCHED_FIFO, mlockall where permitted)
    deactivate  stop the loop, damp for `shutdown_damping_s`, disable the motors
    cleanup     close the robot
    shutdown    (SIGINT/SIGTERM) deactivate and clean up, whatever the state

With `autostart` (the default) it configures and activates itself; on a machine with a
full ROS 2 install `autostart:=false` hands the transitions to a lifecycle manager.

With `policy:=FILE.onnx` the node hosts the policy, as a ros2_control controller manager hosts
its controllers: read → observe → policy → safety filter → write runs in one real-time thread,
and nothing of ROS is inside it. Without one (the two-process mode, `s2r deploy --split`), the
commands come from policy_node on `joint_command` and are filtered and written the moment they
arrive; the loop still reads, publishes and ticks the filter's watchdog every period.

ROS 2 stays around the loop: a telemetry thread drains the loop's non-blocking hand-off and
publishes each tick's state and command; subscriptions hand task inputs to the loop through
`TaskInputs` (never a lock the loop waits on). Topics and services (relative names, so a
namespace can hold several robots; at the root they are /joint_states, ...):

    joint_states   sensor_msgs/JointState  out  every new measurement, header.stamp = state.stamp
    imu            sensor_msgs/Imu         out  floating-base robots with an IMU
    joint_command  sensor_msgs/JointState  out  hosted policy: its command each tick (stamp = its state's)
                                           in   two-process mode: see s2r.ros.messages (names checked)
    cmd_vel, target, object_pose           in   hosted policy: its task inputs (s2r.ros.messages.INPUT_TOPICS)
                                           (a multirotor's `target`: optional, it holds its own until one comes)
    /diagnostics   diagnostic_msgs/DiagnosticArray  out  ~1 Hz: safety mode and events, loop figures
    enable, disable, estop, reset_estop    std_srvs/Trigger

A robot that measures on its own clock and announces its measurements (SimRobot,
`AnnouncesStates`) drives the loop: it ticks the moment a measurement becomes readable; the
loop's absolute deadlines, `state_wait_s` later, tick it when one is late or never comes.

`state_to_command` is measured here: a state's measurement stamp to the write of the command
computed from it (hosted), or to the arrival of policy_node's command, which carries the
state's stamp (two-process). The figures, diagnostics, summary and trajectory are kept by
`s2r.ros.robot_report`. The robot is opened through the driver registry
(`s2r.hardware.drivers`, `driver:=KIND[:WHERE]`): only `sim` loads MuJoCo.

    s2r-robot-node --ros-args -p driver:=sim:hardware/configs/cartpole_hanging.yaml -p policy:=cartpole.onnx
"""

from __future__ import annotations

import queue
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Imu, JointState
from std_srvs.srv import Trigger

from s2r.contract import ContractError
from s2r.hardware.drivers import help_text, open_driver
from s2r.hardware.motors import BusRobot
from s2r.hardware.robot_loop import LoopConfig, RobotLoop, TaskInputs, TickRecord
from s2r.hardware.safety import SafetyConfig, SafetyFilter
from s2r.interface import RobotError, RobotInterface
from s2r.observations import LAST_ACTION
from s2r.runtime import load_runtime
from s2r.runtime.chunking import DEFAULT_BLEND_STEPS
from s2r.runtime.protocol import Runtime
from s2r.spec import RobotSpec, SpecError, robot_spec

from .messages import (
    INPUT_TOPICS,
    CommandReader,
    MessageError,
    check_gains,
    imu_from_state,
    joint_state_from_command,
    joint_state_from_state,
    to_time,
)
from .parameters import Param, declare, driver, non_empty, non_negative, positive, priority
from .qos import COMMAND_QOS, DIAGNOSTICS_QOS, SENSOR_QOS, TELEMETRY_QOS
from .robot_report import RobotReport
from .spin import StartupError, reported, run_node

TRACE_TICKS = 1 << 15
"""Ticks a trace (`trace_path`) holds: 65 s at 500 Hz, 5 MB."""
PARAMS = (
    Param("robot", "cartpole", "Robot spec: a robot shipped with s2r or a spec YAML path.", non_empty),
    Param("driver", "sim", f"The RobotInterface, KIND[:WHERE]: {help_text()}.", driver),
    Param("policy", "", "The exported .onnx policy the loop runs; empty: commands come on joint_command "
          "(the two-process mode)."),
    Param("state_wait_s", 0.002, "Seconds the loop waits past a measurement's expected time before it ticks "
          "without it (robots that announce their measurements; below half the control period).", non_negative),
    Param("rehearse_s", LoopConfig.rehearse_s, "Hosted policy: seconds before each state is due that the rehearsal "
          "of the policy's step and the filter ends (it starts as long before as recent ones took); the loop spins "
          "them, so they are CPU each period. 0: no rehearsal.", non_negative),
    Param("stale_state_periods", 3, "Hosted policy: a state older than this many periods is not acted on.", positive),
    Param("input_timeout_s", 0.5, "Hosted policy: cmd_vel older than this falls back to zero.", positive),
    Param("blend_steps", DEFAULT_BLEND_STEPS, "Hosted diffusion policies: ticks over which a new chunk is "
          "cross-faded in (0: none).", non_negative),
    Param("warm_start", False, "Hosted diffusion policies: sample each chunk from the previous one, shifted."),
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
    Param("lock_memory", True, "mlockall the process where permitted (no page faults in the loop)."),
    Param("diagnostics_period_s", 1.0, "Seconds between /diagnostics messages.", positive),
    Param("summary_path", "", "JSON written at shutdown: safety report, latencies, counters (empty: none)."),
    Param("trajectory_path", "", "NPZ written at shutdown: stamp, q, dq and mode of every tick (empty: none)."),
    Param("ready_path", "", "Hosted policy: file created at its first command, for supervisors (empty: none)."),
    Param("trace_path", "", f"NPZ written at shutdown: the timeline of the loop's first {TRACE_TICKS} ticks "
          "(RobotLoop's TickTrace: wake-up, read, step, write, faults, context switches, collections; empty: none)."),
)
TELEMETRY_POLL_S = 0.1
"""Seconds the telemetry thread waits for a tick record before it checks for a stop."""


class RobotNode(LifecycleNode):
    """Runs a robot's control loop (with its policy, or commanded from joint_command) and publishes around it."""

    def __init__(self) -> None:
        super().__init__("robot_node")
        self.params = declare(self, PARAMS)
        self.spec: RobotSpec | None = None
        self.robot: RobotInterface | None = None
        self.runtime: Runtime | None = None
        self.loop: RobotLoop | None = None
        self.startup_error = ""
        self.stop = threading.Event()
        self.telemetry_thread: threading.Thread | None = None
        self.active = False
        self.closed = False
        self.ready_written = False
        self.fault_logged: str | None = None
        """The SafetyFilter's fault last logged (the orientation limit's reason)."""
        self.report: RobotReport | None = None
        """The figures, from configure on."""
        self.robot_stats: dict[str, int] = {}
        """The robot's own counters, read when it is released."""
        self.loop_stats: dict = {}
        """The loop's figures, read when it stops."""
        if self.params["autostart"]:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self.startup_error)
            if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self.startup_error)

    @property
    def failure(self) -> str | None:
        """Set when the loop thread died; the process then shuts down (see s2r.ros.spin)."""
        return self.loop.failure if self.loop is not None else None

    # --- lifecycle ------------------------------------------------------------------------------
    @reported
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        try:
            self.spec = robot_spec(p["robot"])
            inputs = TaskInputs({}, timeout_s=p["input_timeout_s"])
            if p["policy"]:
                self.runtime = load_runtime(p["policy"], self.spec, warm_start=p["warm_start"],
                                            blend_steps=p["blend_steps"], refuse_unused=False)
                check_gains(self.runtime.contract.action, self.spec)
                sizes = {n: size for n, size in self.runtime.contract.inputs.items()
                         if n != LAST_ACTION and n not in self.runtime.computed_inputs}   # the others: topics
                unknown = [n for n in sizes if n not in INPUT_TOPICS]
                if unknown:
                    raise ContractError(f"{p['policy']}: inputs.{unknown[0]}: no topic feeds this task input "
                                        f"(supported: {', '.join(INPUT_TOPICS)})")
                optional = {n: size for n, size in self.runtime.optional_inputs.items() if n in INPUT_TOPICS}
                inputs = TaskInputs({**sizes, **optional}, timeout_s=p["input_timeout_s"], optional=optional)
                for warning in self.runtime.warnings:
                    self.get_logger().warning(warning)
            config = SafetyConfig(watchdog_periods=p["watchdog_periods"], damping_kd=p["damping_kd"] or None,
                                  soft_start_s=p["soft_start_s"], fade_in_s=p["fade_in_s"])
            safety = SafetyFilter(self.spec, self.spec.control_period, config)
            loop_config = LoopConfig(state_wait_s=p["state_wait_s"], stale_state_periods=p["stale_state_periods"],
                                     rehearse_s=p["rehearse_s"], realtime_priority=p["realtime_priority"],
                                     lock_memory=p["lock_memory"], trace_ticks=TRACE_TICKS if p["trace_path"] else 0)
            if not p["state_wait_s"] < self.spec.control_period / 2:
                raise ValueError(f"parameter 'state_wait_s': expected below half the control period "
                                 f"{self.spec.control_period / 2} s (got {p['state_wait_s']})")
            if not p["rehearse_s"] < self.spec.control_period / 2 - p["state_wait_s"]:
                raise ValueError(f"parameter 'rehearse_s': expected below half the control period less state_wait_s, "
                                 f"{self.spec.control_period / 2 - p['state_wait_s']:g} s (got {p['rehearse_s']})")
            self.report = RobotReport(self.spec, driver=p["driver"], logger=self.get_logger(),
                                      keep_trajectory=bool(p["trajectory_path"]))
            self.robot = open_driver(p["driver"], self.spec)
            self.robot.connect()
            self.loop = RobotLoop(self.robot, safety, runtime=self.runtime, inputs=inputs, config=loop_config,
                                  log=self.get_logger().warning)
        except (ContractError, SpecError, RobotError, ValueError, OSError) as error:
            self.startup_error = str(error) if isinstance(error, ContractError) else f"{type(error).__name__}: {error}"
            self.get_logger().error(f"configure failed: {self.startup_error}")
            return TransitionCallbackReturn.FAILURE
        self.state_msg = JointState(name=list(self.spec.joint_names))
        self.command_msg = JointState(name=list(self.spec.actuated_joint_names))
        self.state_pub = self.create_lifecycle_publisher(JointState, "joint_states", TELEMETRY_QOS)
        self.imu_pub = self.create_lifecycle_publisher(Imu, "imu", TELEMETRY_QOS) if self.spec.imu else None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.subscriptions_made = []
        if self.runtime is None:
            self.commands = CommandReader(self.spec)
            self.command_pub = None
            self.subscriptions_made.append(
                self.create_subscription(JointState, "joint_command", self.on_command, COMMAND_QOS))
        else:
            self.command_pub = self.create_lifecycle_publisher(JointState, "joint_command", TELEMETRY_QOS)
            for name in inputs.sizes:
                topic, msg_type, to_array = INPUT_TOPICS[name]
                self.subscriptions_made.append(self.create_subscription(
                    msg_type, topic, lambda msg, name=name, f=to_array: self.loop.inputs.set(name, f(msg)),
                    SENSOR_QOS))
        self.trigger_services = [self.create_service(Trigger, name, handler) for name, handler in (
            ("enable", self.on_enable), ("disable", self.on_disable),
            ("estop", self.on_estop), ("reset_estop", self.on_reset_estop))]
        self.diagnostics_timer = self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics)
        hosted = f", hosting {p['policy']}" if self.runtime else ", commands on joint_command"
        self.get_logger().info(f"configured {self.spec.name} (driver {p['driver']}{hosted}), "
                               f"control period {self.spec.control_period * 1e3:g} ms")
        return super().on_configure(state)

    @reported
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.loop.enable()
        except RobotError as error:
            self.startup_error = f"RobotError: {error}"
            self.get_logger().error(f"activate failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self.active = True
        self.stop.clear()
        self.telemetry_thread = threading.Thread(target=self.publish_telemetry, name="robot_node telemetry",
                                                 daemon=True)
        self.telemetry_thread.start()
        self.loop.start()
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
        for publisher in (self.state_pub, self.imu_pub, self.command_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self.destroy_publisher(self.diagnostics_pub)
        for subscription in self.subscriptions_made:
            self.destroy_subscription(subscription)
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

    # --- telemetry: a non-real-time thread around the loop ----------------------------------------
    def publish_telemetry(self) -> None:
        """Drain the loop's tick records: publish states and commands, note modes, keep the trajectory."""
        while not self.stop.is_set():
            try:
                record = self.loop.telemetry.get(timeout=TELEMETRY_POLL_S)
            except queue.Empty:
                continue
            self._publish(record)

    def _publish(self, record: TickRecord) -> None:
        mode = self.report.track_mode(record.mode, record.events)
        fault = self.loop.safety.fault
        if fault is not None and fault != self.fault_logged:
            self.get_logger().error(fault)
        self.fault_logged = fault
        state = record.state
        if state is None:
            return
        stamp = to_time(state.stamp)
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        if record.command is not None:  # measured before the publish: the state left after its command
            self.report.command_arrived(stamp_ns, record.written)
        msg = joint_state_from_state(state, self.spec, self.state_msg)
        self.state_pub.publish(msg)
        self.report.state_published(stamp_ns, time.time())
        if self.imu_pub is not None and state.base_quat is not None:
            self.imu_pub.publish(imu_from_state(state))
        if record.command is not None:
            self.command_pub.publish(joint_state_from_command(record.command, self.spec,
                                                              self.runtime.contract.action.mode, stamp,
                                                              self.command_msg))
            self.report.counters["commands_applied"] += 1
            if not self.ready_written and self.params["ready_path"]:
                with open(self.params["ready_path"], "w") as ready:
                    ready.write(f"{record.written}\n")
                self.ready_written = True
        self.report.measured(state, mode)

    # --- commands (the two-process mode) --------------------------------------------------------
    def on_command(self, msg: JointState) -> None:
        """A policy_node command: check names and lengths, measure its latency, filter and write it now."""
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
        self.loop.command(command)
        self.report.counters["commands_applied"] += 1

    # --- services -------------------------------------------------------------------------------
    def on_enable(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            self.loop.enable()
        except RobotError as error:
            response.success, response.message = False, f"enable failed: {error}"
            return response
        response.success, response.message = True, "motors enabled; soft start from the measured pose"
        return response

    def on_disable(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.loop.disable()
        self.get_logger().warning("motors disabled (zero torque) by the disable service")
        response.success, response.message = True, "motors disabled (zero torque); call enable to restart"
        return response

    def on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.loop.estop()
        self.get_logger().error("E-STOP latched: damping until reset_estop")
        response.success, response.message = True, "e-stop latched: damping until reset_estop"
        return response

    def on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        was_latched = self.loop.reset_estop()
        response.success = True
        response.message = "e-stop released; soft start" if was_latched else "e-stop was not latched; soft start"
        return response

    # --- shutdown -------------------------------------------------------------------------------
    def _stop_loop(self) -> None:
        self.active = False
        if self.loop is not None:
            self.loop.stop()
            self.loop_stats = self.loop.stats()
        self.stop.set()
        if self.telemetry_thread is not None:
            self.telemetry_thread.join()
            self.telemetry_thread = None
        while self.loop is not None and not self.loop.telemetry.empty():  # the last ticks' records
            self._publish(self.loop.telemetry.get())

    def _damp_and_disable(self) -> None:
        """The damping command each control period for `shutdown_damping_s`, then motors off."""
        seconds = self.params["shutdown_damping_s"]
        sent = self.loop.damp_and_disable(seconds)
        self.report.counters["shutdown_damping_commands"] += sent
        if sent:
            self.get_logger().info(f"shutdown: damping sent for {seconds:g} s")
        self.report.track_mode(self.loop.mode(), self.loop.safety.events)
        self.get_logger().info("motors disabled")

    def _release(self) -> None:
        if self.robot is not None:
            self.robot_stats = self.robot.stats() if hasattr(self.robot, "stats") else {}
            self.robot.close()
            self.robot = None
        if self.runtime is not None:
            self.runtime.close()

    # --- reports --------------------------------------------------------------------------------
    def publish_diagnostics(self) -> None:
        loop = self.loop.stats()
        extra = {k: loop[k] for k in ("late_ticks", "stale_ticks", "overruns", "policy_errors", "telemetry_dropped",
                                      "inference_p99_us")}
        msg = self.report.diagnostics(self.loop.mode(), self.loop.safety.report(), self.get_clock().now().to_msg(),
                                      extra=extra)
        if isinstance(self.robot, BusRobot):  # one status per motor: temperature, voltage, error flags, faults
            levels = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN, "ERROR": DiagnosticStatus.ERROR}
            msg.status.extend(DiagnosticStatus(level=levels[m.level], name=f"{self.get_name()}: motor {m.id} ({m.joint})",
                                               message=m.message, hardware_id=f"{m.model} id {m.id}",
                                               values=[KeyValue(key=k, value=v) for k, v in m.key_values().items()])
                              for m in self.robot.diagnostics())
        self.diagnostics_pub.publish(msg)

    def _write_outputs(self) -> None:
        if self.report is None:
            return
        # The report's state_to_command and first command cover both modes (the write, or
        # policy_node's command arriving); the loop's own are for callers without ROS.
        loop = {k: v for k, v in self.loop_stats.items()
                if not k.startswith("state_to_command") and k != "first_command_time"}
        summary = self.report.summary(self.loop.safety.report() if self.loop else {}, robot_stats=self.robot_stats,
                                      policy=self.params["policy"],
                                      safety_fault=self.loop.safety.fault if self.loop else None,
                                      shutdown_damping_s=self.params["shutdown_damping_s"], **loop)
        self.report.write(self.params["summary_path"], self.params["trajectory_path"], summary)
        if self.params["trace_path"] and self.loop is not None and self.loop.trace is not None:
            trace = self.loop.trace
            np.savez(self.params["trace_path"], clock_offset=trace.clock_offset, thread_id=trace.thread_id,
                     **trace.arrays())


def main(args: list[str] | None = None) -> int:
    return run_node(RobotNode, args, name="robot_node")


if __name__ == "__main__":
    sys.exit(main())
