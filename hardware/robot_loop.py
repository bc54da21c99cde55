"""RobotLoop: read → observe → policy → safety filter → write, in one real-time thread of one process.

As a ros2_control controller manager hosts its controllers, the loop hosts the policy: each
tick reads the robot, runs the policy runtime on that state (and the task inputs' newest
values), passes the command through the SafetyFilter and writes it, without a message, a
process boundary or a lock that another thread holds for long. Nothing crosses DDS inside it:
what the rest of the world sees (joint states, the commands sent, the safety mode) leaves as a
`TickRecord` through a non-blocking hand-off (`telemetry`, a `queue.SimpleQueue`) that a
non-real-time thread drains and publishes; task inputs arrive the other way through
`TaskInputs`, whose `set` and `read` never block.

    loop = RobotLoop(robot, SafetyFilter(spec, spec.control_period), runtime=load_runtime("p.onnx", spec),
                     inputs=TaskInputs({"cmd_vel": 3}))
    loop.enable()
    loop.start()                     # warm-up, SCHED_FIFO and mlockall where permitted, then ticks
    record = loop.telemetry.get()    # TickRecord: state, command, mode, ... (non-real-time thread)
    loop.stop(); loop.damp_and_disable(0.5)

The loop never raises: a read error is a missing state (the filter's watchdog damps), a policy
that raises or returns a non-finite command hands the filter a NaN command (its NaN guard
damps at once), and an error anywhere else in a tick writes the damping command. Ticks are
woken by the robot's announcement of a new measurement when it makes one (`AnnouncesStates`),
else at absolute deadlines (`DeadlineLoop`); a tick that finds no new state does not step the
policy (`stale_ticks`). Without a runtime (the two-process mode, `s2r deploy --split`) the
commands come from outside through `command()`, filtered and written at once.

No rclpy, no MuJoCo: it runs on the robot computer.
"""

from __future__ import annotations

import gc
import math
import queue
import resource
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from s2r.hardware.deadline import DEFAULT_SPIN_S, DeadlineLoop, TickTrigger, lock_memory, set_realtime_priority
from s2r.hardware.safety import SafetyFilter
from s2r.interface import RobotError, RobotInterface
from s2r.observations import CMD_VEL
from s2r.reports import SampleWindow, percentiles_us
from s2r.runtime.protocol import Runtime
from s2r.state import Command, RobotState

SAFE_INPUTS = {CMD_VEL: 0.0}
"""Task inputs with a safe value, taken when their newest message is older than the timeout:
standing still. The others (a tracked object's pose) keep their newest value."""


@runtime_checkable
class AnnouncesStates(Protocol):
    """A robot that measures on its own clock and calls back the moment a measurement becomes
    readable, one every `period` seconds (see `s2r.sim.sim_robot.SimRobot.set_state_callback`)."""

    def set_state_callback(self, callback: Callable[[], None] | None, *, period: float | None = None) -> None: ...


@dataclass(frozen=True)
class LoopConfig:
    """How the loop ticks; the period is the robot spec's control period."""

    state_wait_s: float = 0.002
    """Seconds past a measurement's expected time before the tick runs without it (announcing robots)."""
    stale_state_periods: int = 3
    """A state older than this many periods is not acted on (the filter's watchdog takes over)."""
    realtime_priority: int = 50
    """SCHED_FIFO priority of the loop thread, 1..99; 0: normal scheduling."""
    lock_memory: bool = True
    """mlockall(MCL_CURRENT | MCL_FUTURE) where permitted, so no page fault stalls a tick."""
    spin_s: float = DEFAULT_SPIN_S
    """Seconds spun (not slept) before each deadline."""
    warmup_steps: int = 20
    """Policy steps on the first state before the first tick (then the runtime is reset)."""
    rehearse_s: float = 0.0003
    """Seconds before each state is due that the loop's rehearsal of the policy's step and the filter on the
    previous state ends (`Runtime.rehearse`, `SafetyFilter.rehearse`: nothing kept), so that the tick on the
    new state runs warm; it starts as long before that as recent rehearsals took, and the loop spins from its
    end to the state (this much CPU a period: 1.5 % of a core at 50 Hz, 15 % at 500 Hz). 0: never rehearse
    (nor for a runtime whose `rehearses` is False)."""
    telemetry_depth: int = 256
    """Tick records the hand-off holds before the loop drops new ones (counted)."""
    trace_ticks: int = 0
    """Ticks whose timeline the loop keeps (`TickTrace`: where each tick's time went); 0: none."""

    def __post_init__(self) -> None:
        for key in ("state_wait_s", "spin_s", "rehearse_s"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"LoopConfig.{key}: expected seconds >= 0, got {value!r}")
        for key, low in (("stale_state_periods", 1), ("warmup_steps", 0), ("telemetry_depth", 1), ("trace_ticks", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"LoopConfig.{key}: expected an integer >= {low}, got {value!r}")
        if isinstance(self.realtime_priority, bool) or not isinstance(self.realtime_priority, int) \
                or not 0 <= self.realtime_priority <= 99:
            raise ValueError(f"LoopConfig.realtime_priority: expected 0..99, got {self.realtime_priority!r}")


class TaskInputs:
    """The newest value of each task input, set by subscriber threads and read by the loop, neither blocking.

    A value is one reference swapped under the GIL, never a lock. Inputs in SAFE_INPUTS fall back
    to their safe value when their newest message is older than `timeout_s` (a stalled
    publisher), and so does a message with a non-finite value (counted in `rejected`; the others
    ignore it); every input is zero until its first message, except the `optional` ones, which
    `read` leaves out until then (the runtime's own value holds: a multirotor's target).

        inputs = TaskInputs({"cmd_vel": 3}, timeout_s=0.5)
        inputs.set("cmd_vel", np.array([0.5, 0.0, 0.0]))    # subscriber thread
        inputs.read()                                         # {"cmd_vel": (3,) array}, the loop
    """

    def __init__(self, sizes: Mapping[str, int], *, timeout_s: float = 0.5, optional: Iterable[str] = ()) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"TaskInputs timeout_s: expected seconds > 0, got {timeout_s!r}")
        self.sizes = dict(sizes)
        self.optional = frozenset(optional)
        """Inputs left out of `read` until their first message."""
        if not self.optional <= self.sizes.keys():
            raise ValueError(f"TaskInputs optional: {sorted(self.optional - self.sizes.keys())} not among the inputs "
                             f"{sorted(self.sizes)}")
        self.timeout_s = timeout_s
        self._safe = {name: np.full(size, SAFE_INPUTS.get(name, 0.0)) for name, size in self.sizes.items()}
        self._newest: dict[str, tuple[float, np.ndarray]] = {name: (-math.inf, value)
                                                             for name, value in self._safe.items()}
        self.fallbacks = dict.fromkeys(self.sizes, 0)
        """Reads that took an input's safe value because its newest message was too old (after a first one)."""
        self.rejected = dict.fromkeys(self.sizes, 0)
        """Messages with a non-finite value (cmd_vel takes its safe value, the others keep their newest)."""

    def set(self, name: str, value: np.ndarray) -> None:
        """The newest value of input `name`, (size,); KeyError for an input the policy does not take."""
        value = np.asarray(value, dtype=np.float64)
        if value.shape != (self.sizes[name],):
            raise ValueError(f"task input {name}: expected shape ({self.sizes[name]},), got {value.shape}")
        if not np.isfinite(value).all():   # cmd_vel: stand still; a tracked pose keeps its newest value
            self.rejected[name] += 1
            if name not in SAFE_INPUTS:
                return
            value = self._safe[name]
        self._newest[name] = (time.monotonic(), value)

    def read(self) -> dict[str, np.ndarray]:
        """Each input's newest value, or its safe value where that is too old; an optional one once it came."""
        now = time.monotonic()
        values = {}
        for name, (arrived, value) in self._newest.items():
            if arrived == -math.inf and name in self.optional:
                continue
            if name in SAFE_INPUTS and now - arrived > self.timeout_s:
                if arrived > -math.inf:
                    self.fallbacks[name] += 1
                value = self._safe[name]
            values[name] = value
        return values


@dataclass(slots=True)
class TickRecord:
    """What one tick did, handed to the telemetry thread."""

    state: RobotState | None
    """The measurement this tick read when it was new (each one once), else None."""
    command: Command | None
    """The policy's command this tick (before the filter), None when the policy did not act."""
    mode: str
    """The safety mode after the tick ('disabled' while the motors are off)."""
    events: dict[str, int]
    """The SafetyFilter's event counts after the tick."""
    written: float
    """time.time() when the filtered command was written."""


class TickTrace:
    """The timeline of the loop's first `capacity` ticks: where each tick's time went.

    One row per tick, `FIELDS` its columns; times are time.monotonic() seconds (the clock of
    `perf record -k CLOCK_MONOTONIC`, so a scheduler trace lines up with it), NaN where a tick had
    none (no rehearsal, woken by the deadline, no new state). The loop thread's own counters
    (`resource.getrusage(RUSAGE_THREAD)`, cumulative) are read at the rehearsal, the wake-up and the
    write: a voluntary context switch between wake-up and write is the loop waiting (the GIL,
    a lock), an involuntary one a preemption, a fault a page the tick touched first. Every
    garbage collection in the process while tracing, on any thread, is in `collections`.

        loop = RobotLoop(robot, safety, runtime=runtime, config=LoopConfig(trace_ticks=2000))
        ...
        loop.trace.arrays()      # {"wake": (ticks,), ..., "gc_start": (collections,), ...}
    """

    FIELDS = ("rehearse_start", "rehearse_end", "due", "arrival", "wake", "read", "stepped", "written", "stamp",
              "rehearse_minflt", "rehearse_nvcsw", "rehearse_nivcsw",
              "wake_minflt", "wake_majflt", "wake_nvcsw", "wake_nivcsw",
              "written_minflt", "written_majflt", "written_nvcsw", "written_nivcsw")
    """rehearse_*: the rehearsal before the tick; due: the deadline it served (the arrival's expected time
    plus state_wait_s); arrival: the announcement that woke it; stamp: its state's measurement time (on
    time.monotonic(), from time.time() by the offset at the trace's start); *_minflt .. *_nivcsw: the loop
    thread's minor and major page faults and voluntary and involuntary context switches so far."""

    def __init__(self, capacity: int) -> None:
        self.rows = np.full((capacity, len(self.FIELDS)), np.nan)
        self.ticks = 0
        """Rows filled (at most `capacity`)."""
        self.clock_offset = time.time() - time.monotonic()
        """time.time() - time.monotonic(), seconds: what turns a state's stamp into the trace's clock."""
        self.thread_id = 0
        """The loop thread's native id (what `perf` and `top -H` show), once it runs."""
        self.collections: list[tuple[float, float, int, str]] = []
        """Every collection while tracing: (start, end, generation, thread name)."""
        self._column = {name: i for i, name in enumerate(self.FIELDS)}
        self._gc_start = math.nan

    @property
    def full(self) -> bool:
        return self.ticks >= len(self.rows)

    def mark(self, field: str, value: float | None = None) -> None:
        """`field` of the current tick's row: `value`, else time.monotonic() now."""
        if not self.full:
            self.rows[self.ticks, self._column[field]] = time.monotonic() if value is None else value

    def usage(self, prefix: str) -> None:
        """The loop thread's fault and context-switch counters so far, as `prefix`_minflt ...  (the calling thread)."""
        if not self.full:
            usage = resource.getrusage(resource.RUSAGE_THREAD)
            row, column = self.rows[self.ticks], self._column
            for key in ("minflt", "majflt", "nvcsw", "nivcsw"):
                name = f"{prefix}_{key}"
                if name in column:
                    row[column[name]] = getattr(usage, f"ru_{key}")

    def next_tick(self) -> None:
        if not self.full:
            self.ticks += 1

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """gc.callbacks hook: each collection's start, end, generation and thread."""
        if phase == "start":
            self._gc_start = time.monotonic()
        elif len(self.collections) < len(self.rows):
            self.collections.append((self._gc_start, time.monotonic(), info["generation"],
                                     threading.current_thread().name))

    def arrays(self) -> dict[str, np.ndarray]:
        """Each field over the traced ticks, (ticks,); and gc_start, gc_end, gc_generation, (collections,)."""
        rows = self.rows[:self.ticks]
        out = {name: rows[:, i].copy() for i, name in enumerate(self.FIELDS)}
        gcs = np.array([c[:3] for c in self.collections]).reshape(-1, 3)
        out.update(gc_start=gcs[:, 0], gc_end=gcs[:, 1], gc_generation=gcs[:, 2],
                   gc_thread=np.array([c[3] for c in self.collections], dtype=str))
        return out


@dataclass
class LoopCounters:
    """What the loop counts; every field an int."""

    ticks_with_policy: int = 0
    stale_ticks: int = 0
    """Ticks that wrote no command computed from a new, fresh state: the hosted policy was not
    stepped, or (external commands) none came since the previous tick, after the first."""
    read_errors: int = 0
    policy_errors: int = 0
    """Policy steps that raised: NaN handed to the filter (damping)."""
    nonfinite_actions: int = 0
    loop_errors: int = 0
    """Ticks that raised elsewhere: damping written."""
    telemetry_dropped: int = 0
    external_commands: int = 0
    ticks_before_first_command: int = 0
    """Policy steps that returned no command yet (a diffusion policy's first chunk sampling)."""
    rehearsals: int = 0
    """Rehearsals of the newest tick before the next state was due (one before nearly every tick)."""
    rehearsal_errors: int = 0
    """Rehearsals that raised (nothing written: the tick's own step decides)."""


class RobotLoop:
    """One robot's control loop: its own thread, real-time where permitted, the SafetyFilter the only way out."""

    def __init__(self, robot: RobotInterface, safety: SafetyFilter, *, runtime: Runtime | None = None,
                 inputs: TaskInputs | None = None, config: LoopConfig = LoopConfig(),
                 log: Callable[[str], None] = print) -> None:
        self.robot, self.safety, self.runtime, self.config, self.log = robot, safety, runtime, config, log
        self.spec = robot.spec
        self.period = safety.control_period
        if not config.state_wait_s < self.period / 2:
            raise ValueError(f"LoopConfig.state_wait_s: expected below half the control period {self.period / 2} s "
                             f"(got {config.state_wait_s})")
        if not config.spin_s < self.period:
            raise ValueError(f"LoopConfig.spin_s: expected below the control period {self.period} s "
                             f"(got {config.spin_s})")
        if not config.rehearse_s < self.period / 2 - config.state_wait_s:
            raise ValueError(f"LoopConfig.rehearse_s: expected below half the control period less state_wait_s, "
                             f"{self.period / 2 - config.state_wait_s} s (got {config.rehearse_s})")
        self.inputs = inputs or TaskInputs({})
        self.lock = threading.Lock()
        """Guards the filter and the robot's command path: the loop, `command()` and the services."""
        self.enabled = False
        self.announces = isinstance(robot, AnnouncesStates)
        self.measured = TickTrigger()
        rehearses = runtime is not None and runtime.rehearses and config.rehearse_s > 0
        self.deadlines = DeadlineLoop(self.period, spin_s=config.spin_s,
                                      trigger=self.measured if self.announces else None,
                                      trigger_wait_s=config.state_wait_s,
                                      prepare=self._rehearse if rehearses else None, prepare_s=config.rehearse_s)
        self.telemetry: queue.SimpleQueue[TickRecord] = queue.SimpleQueue()
        self.counters = LoopCounters()
        self.inference = SampleWindow()
        """Seconds of each policy step inside the loop."""
        self.rehearsal = SampleWindow()
        """Seconds of each rehearsal (the policy's step and the filter) before a state was due."""
        self.state_to_command = SampleWindow()
        """Seconds from a state's measurement stamp to the write of the command computed from it."""
        self.trace = TickTrace(config.trace_ticks) if config.trace_ticks else None
        """The first `trace_ticks` ticks' timeline (None: not traced)."""
        self.setup_notes: list[str] = []
        """Why SCHED_FIFO or mlockall could not be had, as the loop thread found it."""
        self.failure: str | None = None
        self.first_command_time: float | None = None
        self.state: RobotState | None = None
        """The newest state read (under `lock`)."""
        self._stop = threading.Event()
        self._ready = threading.Event()
        """Set by the loop thread once its set-up is done (or failed): what `start` waits for."""
        self.setup_s: float | None = None
        """Seconds `start` took: scheduling, memory locking and the warm-up before the first tick."""
        self._thread: threading.Thread | None = None
        self._last_stamp: float | None = None
        self._stepped: tuple[RobotState, dict[str, np.ndarray]] | None = None
        """The state and inputs of the policy's newest step: what the next rehearsal runs on."""
        self._commanded_since_tick = False
        self._nan = Command(*(np.full(len(self.spec.actuated_index), np.nan) for _ in range(5)),
                            rotor_thrust=np.full(len(self.spec.rotors), np.nan) if self.spec.rotors else None)

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, *, ready_timeout_s: float = 30.0) -> None:
        """Start the loop thread and return once it ticks: it sets its scheduling, locks memory, warms the
        runtime up, then ticks. That set-up can take seconds (mlockall faults in every mapped page: 3.4 s in
        a process that has trained and loaded torch models), so a caller timing a run from here times ticks.
        After `ready_timeout_s` without the loop ready, it returns anyway and says so."""
        if self.announces:
            self.robot.set_state_callback(self.measured.fire, period=self.period)
        self._stop.clear()
        self._ready.clear()
        started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="s2r robot loop", daemon=True)
        self._thread.start()
        if not self._ready.wait(ready_timeout_s):
            self.log(f"control loop not ticking {ready_timeout_s} s after start (set-up still running)")
        self.setup_s = time.monotonic() - started

    def stop(self) -> None:
        """Stop and join the loop thread. Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.announces:
            self.robot.set_state_callback(None)

    def enable(self) -> None:
        """Motors on; the filter soft-starts from the next state."""
        with self.lock:
            self.robot.enable()
            self.safety.reset()
            self.enabled = True

    def disable(self) -> None:
        """Motors off (zero torque) now."""
        with self.lock:
            self.enabled = False
            self.robot.disable()

    def estop(self) -> None:
        """Latch the e-stop and write damping now."""
        with self.lock:
            self.safety.estop()
            self._write(None, time.time())

    def reset_estop(self) -> bool:
        """Release the e-stop into a soft start; whether it was latched."""
        with self.lock:
            latched = self.safety.mode == "estop"
            self.safety.reset_estop()
            return latched

    def command(self, command: Command) -> None:
        """An external command (the two-process mode): filtered against the newest state and written now."""
        with self.lock:
            self._write(command, time.time())
            self._commanded_since_tick = True
            self.counters.external_commands += 1

    def mode(self) -> str:
        """The safety mode, 'disabled' while the motors are off."""
        return self.safety.mode if self.enabled else "disabled"

    def damp_and_disable(self, seconds: float) -> int:
        """The damping command each control period for `seconds`, then motors off; how many were sent."""
        sent = 0
        if self.enabled:
            end = time.monotonic() + seconds
            while True:
                try:
                    state = self.robot.read_state()
                except RobotError:
                    state = None
                with self.lock:
                    self.robot.write_command(self.safety.damping_command(state))
                sent += 1
                if time.monotonic() >= end:
                    break
                time.sleep(min(self.period, max(end - time.monotonic(), 0.0)))
        self.disable()
        return sent

    # --- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            for problem in (set_realtime_priority(self.config.realtime_priority),
                            lock_memory() if self.config.lock_memory else None):
                if problem:
                    self.setup_notes.append(problem)
                    self.log(problem)
            self._warm_up()
            # What exists now lives as long as the process: out of the collector's sight, so that a
            # full collection triggered inside a tick walks only what was made since.
            gc.collect()
            gc.freeze()
            if self.trace is not None:
                self.trace.thread_id = threading.get_native_id()
                gc.callbacks.append(self.trace.on_gc)
            self._ready.set()
            while self.deadlines.wait(self._stop):
                self._tick()
        except Exception as error:  # outside any tick: the thread itself failed
            self.log(f"control loop died: {traceback.format_exc()}")
            with self.lock:
                self.robot.write_command(self.safety.damping_command(self.state))
            self.failure = f"{type(error).__name__}: {error}"
        finally:
            if self.trace is not None and self.trace.on_gc in gc.callbacks:
                gc.callbacks.remove(self.trace.on_gc)
            self._ready.set()

    def _warm_up(self) -> None:
        """Run the policy `warmup_steps` times on the first state, then forget it: the first tick's
        inference runs on loaded code and touched memory."""
        if self.runtime is None or not self.config.warmup_steps:
            return
        try:
            state = self.robot.read_state()
            for _ in range(self.config.warmup_steps):
                self.runtime.step(state, self.inputs.read())
        except Exception as error:
            self.log(f"policy warm-up failed ({type(error).__name__}: {error}); the loop goes on and will go safe")
        self.runtime.reset()

    def _tick(self) -> None:
        """One control period: read → policy (on a new, fresh state) → filter → write → hand-off."""
        trace = self.trace
        if trace is not None:
            self._trace_wake(trace)
        try:
            try:
                state = self.robot.read_state()
            except RobotError:
                state = None
                self.counters.read_errors += 1
            new = state is not None and state.stamp != self._last_stamp
            if trace is not None:
                trace.mark("read")
            command = None
            if self.runtime is not None:
                fresh = new and time.time() - state.stamp <= self.config.stale_state_periods * self.period
                if fresh:
                    command = self._policy(state)
                    if trace is not None:
                        trace.mark("stepped")
                else:
                    self.counters.stale_ticks += 1
            with self.lock:
                self.state = state
                if self.runtime is None and not self._commanded_since_tick and self.counters.external_commands:
                    self.counters.stale_ticks += 1
                if self.runtime is not None or not self._commanded_since_tick:
                    self._write(command, time.time())
                written = time.time()   # the command is the robot's: what comes after is not its latency
                if trace is not None:
                    trace.mark("written")
                self._commanded_since_tick = False
                mode, events = self.mode(), dict(self.safety.events)
            if trace is not None:
                self._trace_written(trace, state if new else None)
        except Exception as error:
            self._failed_tick(error)
            if trace is not None:
                trace.next_tick()
            return
        if new:
            self._last_stamp = state.stamp
            if command is not None:
                self.state_to_command.add(written - state.stamp)
        if command is not None and self.first_command_time is None:
            self.first_command_time = written
        if self.telemetry.qsize() < self.config.telemetry_depth:
            self.telemetry.put(TickRecord(state if new else None, command, mode, events, written))
        else:
            self.counters.telemetry_dropped += 1

    def _trace_wake(self, trace: TickTrace) -> None:
        deadlines = self.deadlines
        trace.mark("wake", deadlines.last_wake)
        trace.mark("due", deadlines.served)
        if deadlines.last_triggered:
            trace.mark("arrival", self.measured.last)
        trace.usage("wake")

    def _trace_written(self, trace: TickTrace, state: RobotState | None) -> None:
        trace.usage("written")
        if state is not None:
            trace.mark("stamp", state.stamp - trace.clock_offset)
        trace.next_tick()

    def _policy(self, state: RobotState) -> Command | None:
        """The runtime's command for `state`; NaN when it raises or returns a non-finite one. Timed:
        the runtime's step alone (`inference`), as bench.inference times it."""
        inputs = self.inputs.read()
        self._stepped = state, inputs
        start = time.perf_counter()
        try:
            command = self.runtime.step(state, inputs)
        except Exception as error:
            self.counters.policy_errors += 1
            if self.counters.policy_errors == 1:
                self.log(f"policy step failed, going safe: {type(error).__name__}: {error}")
            return self._nan
        finally:
            self.inference.add(time.perf_counter() - start)
        if command is None:  # a diffusion policy's first chunk is still sampling
            self.counters.ticks_before_first_command += 1
            return None
        self.counters.ticks_with_policy += 1
        if not all(np.isfinite(value).all() for value in (command.q, command.dq, command.kp, command.kd,
                                                          command.tau_ff, command.rotor_thrust) if value is not None):
            self.counters.nonfinite_actions += 1
        return command

    def _rehearse(self) -> None:
        """The newest tick's policy step and filter again with nothing kept (`Runtime.rehearse`,
        `SafetyFilter.rehearse`), shortly before the next state is due, so that the tick on it finds
        their code and data in the caches. Only while states flow (the newest step within two
        periods). A rehearsal that raises is counted, never raised: the tick's own step goes safe if
        the policy is broken."""
        if self._stepped is None:
            return
        state, inputs = self._stepped
        now = time.time()
        if now - state.stamp > 2 * self.period:
            return
        self.counters.rehearsals += 1
        if self.trace is not None:
            self.trace.mark("rehearse_start")
            self.trace.usage("rehearse")
        start = time.perf_counter()
        try:
            self.runtime.rehearse(state, inputs)
            self.safety.rehearse(None, state, now)   # on the policy's newest command, which the filter holds
        except Exception:
            self.counters.rehearsal_errors += 1
        self.rehearsal.add(time.perf_counter() - start)
        if self.trace is not None:
            self.trace.mark("rehearse_end")

    def _write(self, command: Command | None, now: float) -> None:
        """Filter and write (the motors only while enabled). Holds the lock."""
        safe = self.safety.filter(command, self.state, now)
        if self.enabled:
            self.robot.write_command(safe)

    def _failed_tick(self, error: Exception) -> None:
        self.counters.loop_errors += 1
        if self.counters.loop_errors == 1:
            self.log(f"control tick failed, damping: {traceback.format_exc()}")
        try:
            with self.lock:
                if self.enabled:
                    self.robot.write_command(self.safety.damping_command(self.state))
        except Exception:  # the robot itself fails: the next tick tries again
            pass

    # --- figures --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The loop's figures for a summary: rate, period, inference, latency, counters (µs for times)."""
        counters = dict(vars(self.counters))
        return {
            "control_hz_target": 1 / self.period,
            "control_hz_achieved": self.deadlines.achieved_hz(),
            "setup_s": self.setup_s,
            **self.deadlines.period_stats(),
            **percentiles_us(self.inference.values(), "inference"),
            **percentiles_us(self.rehearsal.values(), "rehearsal"),
            # Each wake-up after what woke it (a measurement's announcement, else the deadline), and
            # how far the deadlines sat from their place behind the announcements: where a late tick came from.
            **percentiles_us(self.deadlines.lateness.values(), "wake_late"),
            **percentiles_us(np.abs(self.deadlines.phase_error.values()), "phase_error"),
            **percentiles_us(self.state_to_command.values(), "state_to_command"),
            "ticks": self.deadlines.ticks,
            "late_ticks": self.deadlines.late,
            "overruns": self.deadlines.overruns,
            "missed_deadlines": self.deadlines.missed,
            **counters,
            "input_fallbacks": dict(self.inputs.fallbacks),
            "input_rejected": dict(self.inputs.rejected),
            "first_command_time": self.first_command_time,
            "realtime_notes": list(self.setup_notes),
            **({} if self.runtime is None else self.runtime.stats()),
        }

