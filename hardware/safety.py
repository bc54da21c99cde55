"""SafetyFilter: the only path from a policy to the motors.

Called once per control period with the policy's command (None when there is
none this tick) and the newest measured state, it returns a command that never
exceeds a limit of the robot's spec:

    safety = SafetyFilter(spec, spec.control_period)
    command = safety.filter(policy_command, robot.read_state(), time.time())
    robot.write_command(command)
    safety.report()    # {"mode": "running", "nan_guard": 0, "watchdog": 2, ...}

What it guarantees for every command it returns, per actuated joint:
- every value is finite; 0 <= kp <= kp_max and 0 <= kd <= kd_max;
- lower <= q* <= upper, and |q* - previous q*| <= max_position_step; a continuous joint's
  q* is the angle within π of its measured position (any target, however large, is wrapped);
- |dq*| <= velocity_limit and |tau_ff| <= effort_limit;
- the position term it implies stays within the effort limit, |kp (q* - q_meas)| <= effort_limit
  (q* is first pulled within effort/kp of the measured position; if the joint and rate
  limits keep it farther, kp is lowered). The damping term kd (dq* - dq) is left to the
  driver's effort clamp: lowering kd would remove damping when it is needed most.

And how it behaves over time:

    no state, or state older than watchdog_periods periods ─► damping (kp = 0, kd > 0)
    a state whose `fault` is set (the driver's latched fault) ─► damping while it is set, then a new soft start
    estop() ─────────────────────────────────────────────────► damping, latched until reset_estop()
    fresh state after construction, reset(), recovery:
    │ ramp: q* from the measured pose to the default pose   │ fade: blend to the policy's   │ running
    │ with the spec's kp, kd (joints with spec kp > 0)       │ command, linear in time       │
    0 ──────────────────────────────────────────── soft_start_s ─────────────── + fade_in_s ──►
    A robot without position gains (kp = 0 in its spec, a torque-controlled robot) skips the
    ramp and fades tau_ff in from zero torque. The fade starts with the first policy command
    after the ramp; until then the ramp's end command is held. A policy whose commands stop for
    more than watchdog_periods periods after the fade began gets damping and a new soft start.

A multirotor's rotors (the spec's `rotors`, `Command.rotor_thrust` as fractions of top thrust):
- the command must carry one value per rotor (a wrong size is refused naming the field);
- 0 <= thrust <= 1 (counted as `effort_clamp`) and |thrust - previous thrust| <= rotor_thrust_rate ×
  control period (counted as `rate_limit`);
- the safe state is motors off (thrust 0): on a NaN from the policy, a stale, missing or non-finite
  state (the IMU's attitude and rate included), the e-stop, and before the first policy command;
  the soft start fades the policy's thrust in from motors off over fade_in_s.

A legged robot (a floating base without rotors) whose state carries its base orientation (the IMU):
- a base tilted more than tilt_limit_rad from upright (a fall) → damping, latched until reset_estop(),
  counted as `orientation_limit` on every tick it holds; `fault` says why;
- a robot already tilted beyond the limit at the soft start (lying on its back or side) is not stood up:
  the same latch, and `fault` says that the soft start refused. Lying on its belly is upright: the
  ramp stands it up.

Every tick on which an intervention acts increments `events[name]` (once per tick whatever
the number of joints; clamps of q* count only on joints with kp > 0, where q* matters).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from s2r.geometry import tilt_from_quat, wrap_to_pi
from s2r.spec import RobotSpec
from s2r.state import Command, RobotState

Mode = Literal["soft_start", "running", "damping", "estop"]
EVENTS = ("nan_guard", "position_clamp", "rate_limit", "velocity_clamp", "effort_clamp", "gain_clamp",
          "watchdog", "estop", "soft_start", "orientation_limit", "robot_fault")
"""The interventions `SafetyFilter.events` counts."""


@dataclass(frozen=True)
class SafetyConfig:
    """How the SafetyFilter intervenes; the limits themselves come from the RobotSpec."""

    watchdog_periods: int = 3
    """State (or, once running, policy commands) older than this many control periods → damping."""
    damping_kd: float | None = None
    """kd of the damping command (N·m·s/rad or N·s/m); None: the spec's kd where > 0, else 1.0."""
    soft_start_s: float = 1.0
    """Seconds of the ramp from the measured pose to the default pose (joints with spec kp > 0)."""
    fade_in_s: float = 1.0
    """Seconds of the linear blend from the ramp's end (or zero torque) to the policy's command."""
    max_gain_ratio: float = 2.0
    """kp_max = max_gain_ratio × spec kp; kd_max = max(max_gain_ratio × spec kd, damping kd)."""
    rotor_thrust_rate: float = 100.0
    """Rotors: the largest change of a thrust command per second, fractions of top thrust (100: the full range
    in one 100 Hz period; at 500 Hz a single-tick spike moves the command by 0.2 at most)."""
    tilt_limit_rad: float = 1.0
    """Legged robots: the largest tilt of the base from upright, rad (legged_gym's termination: 1 rad);
    beyond it, damping until reset_estop()."""

    def __post_init__(self) -> None:
        if isinstance(self.watchdog_periods, bool) or not isinstance(self.watchdog_periods, int) \
                or self.watchdog_periods < 1:
            raise ValueError(f"SafetyConfig.watchdog_periods: expected an integer >= 1, got {self.watchdog_periods!r}")
        if self.damping_kd is not None and not (math.isfinite(self.damping_kd) and self.damping_kd > 0):
            raise ValueError(f"SafetyConfig.damping_kd: expected None or a finite kd > 0, got {self.damping_kd!r}")
        for key in ("soft_start_s", "fade_in_s", "max_gain_ratio", "rotor_thrust_rate", "tilt_limit_rad"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"SafetyConfig.{key}: expected a finite number >= 0, got {value!r}")


class SafetyFilter:
    """Limits, watchdog, e-stop and soft start between a policy and a robot's actuated joints.

    Arrays are per actuated joint in spec order, (num_actuated,). Thread-safe: `estop()` may
    come from a service thread while the control thread calls `filter`.
    """

    def __init__(self, spec: RobotSpec, control_period: float, config: SafetyConfig = SafetyConfig()) -> None:
        if not (math.isfinite(control_period) and control_period > 0):
            raise ValueError(f"SafetyFilter control_period: expected seconds > 0, got {control_period!r}")
        self.spec = spec
        self.control_period = control_period
        self.config = config
        actuated = spec.actuated_index
        self.lower = spec.lower[actuated]
        self.upper = spec.upper[actuated]
        self.default_q = spec.default_q[actuated]
        self.velocity_limit = spec.joint_array("velocity_limit", actuated_only=True)
        self.effort_limit = spec.joint_array("effort_limit", actuated_only=True)
        self.max_position_step = self.velocity_limit * control_period
        """Rate limit on q* per call, velocity_limit × control_period."""
        self.spec_kp = spec.joint_array("kp", actuated_only=True)
        self.spec_kd = spec.joint_array("kd", actuated_only=True)
        self.damping_kd = (np.where(self.spec_kd > 0, self.spec_kd, 1.0) if config.damping_kd is None
                           else np.full(len(actuated), float(config.damping_kd)))
        self.kp_max = config.max_gain_ratio * self.spec_kp
        self.kd_max = np.maximum(config.max_gain_ratio * self.spec_kd, self.damping_kd)
        self._terms_low = np.stack([np.zeros(len(actuated)), np.zeros(len(actuated)), -self.velocity_limit,
                                    -self.effort_limit])
        self._terms_high = np.stack([self.kp_max, self.kd_max, self.velocity_limit, self.effort_limit])
        """Bounds of (kp, kd, dq*, tau_ff), (4, num_actuated): one clip for the four per tick."""
        self._continuous = spec.continuous_mask[actuated]
        self._ramp_s = config.soft_start_s if (self.spec_kp > 0).any() else 0.0
        self._zeros = np.zeros(len(actuated))
        self._motors_off = np.zeros(len(spec.rotors)) if spec.rotors else None
        """The rotors' safe thrust (off), (num_rotors,); None for a robot without rotors."""
        self.max_thrust_step = config.rotor_thrust_rate * control_period
        """Rate limit on each rotor's thrust command per call, fractions of top thrust."""
        self.legged = spec.floating_base and not spec.rotors
        """Whether the base-orientation limit applies (a multirotor flies at any attitude)."""
        self._lock = threading.RLock()

        self.events: dict[str, int] = dict.fromkeys(EVENTS, 0)
        self.mode: Mode = "soft_start"
        self._estopped = False
        self.fault: str | None = None
        """Why the orientation limit latched (a fall, or a soft start refused), until reset_estop()."""
        self._last_q: np.ndarray | None = None
        """The previous output's q*, for the rate limit."""
        self._last_thrust = self._motors_off
        """The previous output's rotor thrust, for the rate limit (the motors start off)."""
        self.reset()

    # --- the tick -----------------------------------------------------------------------------
    def filter(self, command: Command | None, state: RobotState | None, now: float) -> Command:
        """The command to send this tick; `now` in seconds on the clock of `state.stamp`."""
        with self._lock:
            return self._filter(command, state, now)

    def _filter(self, command: Command | None, state: RobotState | None, now: float) -> Command:
        q_meas = self._measured(state)
        if command is not None:
            self._policy, self._policy_time = self._arrays(command), now
        window = self.config.watchdog_periods * self.control_period
        policy = self._policy if now - self._policy_time <= window else None

        if self._estopped:
            return self._safe(state, q_meas, "estop", "estop")
        if self.fault is None and q_meas is not None and now - state.stamp <= window:
            self._check_tilt(state)
        if self.fault is not None:
            return self._safe(state, q_meas, "orientation_limit", "damping")
        if state is not None and state.fault is not None:  # a motor lost or in hardware error (overload, heat)
            self._restart()
            return self._safe(state, q_meas, "robot_fault", "damping")
        if q_meas is None or now - state.stamp > window:
            self._restart()
            return self._safe(state, q_meas, "watchdog", "damping")
        if self._start_time is None:
            self._start_time, self._start_q = now, q_meas
        elapsed = now - self._start_time
        if elapsed < self._ramp_s or (policy is None and self._fade_start is None):
            self.events["soft_start"] += 1
            self.mode = "soft_start"
            return self._limited(self._hold(elapsed), q_meas)
        if policy is None:
            self._restart()
            return self._safe(state, q_meas, "watchdog", "damping")
        if not all(np.isfinite(value).all() for value in vars(policy).values() if value is not None):
            return self._safe(state, q_meas, "nan_guard", "damping")
        if self._fade_start is None:
            self._fade_start = now
        fade = self.config.fade_in_s
        alpha = min((now - self._fade_start) / fade, 1.0) if fade > 0 else 1.0
        if alpha < 1.0:
            self.events["soft_start"] += 1
            self.mode = "soft_start"
            hold = self._hold(elapsed)
            policy = Command(**{k: (1 - alpha) * getattr(hold, k) + alpha * v for k, v in vars(policy).items()
                                if v is not None})
        else:
            self.mode = "running"
        return self._limited(policy, q_meas)

    def rehearse(self, command: Command | None, state: RobotState | None, now: float) -> None:
        """`filter`'s work with its result thrown away and the filter left as it was (mode, events, soft
        start, the held command, the last q*): a control loop runs it shortly before a state is due, so
        that the filter on that state finds its code and data in the caches. An e-stop or reset meanwhile
        waits for it (the filter's lock)."""
        with self._lock:
            kept, events = dict(vars(self)), dict(self.events)
            try:
                self._filter(command, state, now)
            finally:
                vars(self).update(kept)
                self.events.update(events)

    def damping_command(self, state: RobotState | None) -> Command:
        """kp = 0, kd = damping kd, q* at the measured pose (else the last q*, else the default), dq* = tau_ff = 0;
        rotors off."""
        q_meas = self._measured(state)
        q = q_meas if q_meas is not None else self._last_q if self._last_q is not None else self.default_q
        return Command(q=q.copy(), dq=self._zeros.copy(), kp=self._zeros.copy(), kd=self.damping_kd.copy(),
                       tau_ff=self._zeros.copy(), rotor_thrust=self._off())

    # --- operator actions ---------------------------------------------------------------------
    def estop(self) -> None:
        """Latch the e-stop: damping from the next tick until `reset_estop()`."""
        with self._lock:
            self._estopped = True
            self.mode = "estop"

    def reset_estop(self) -> None:
        """Release the e-stop and the orientation limit; the robot soft-starts again from its measured pose."""
        with self._lock:
            self._estopped = False
            self.fault = None
            self.reset()

    def reset(self) -> None:
        """Soft-start again at the next fresh state (call it after enabling the robot); forget the
        held policy command. The e-stop latch and the event counts stay."""
        with self._lock:
            self._restart()
            self._policy: Command | None = None
            self._policy_time = -math.inf
            if not self._estopped and self.fault is None:
                self.mode = "soft_start"

    def report(self) -> dict[str, str | int]:
        """The mode and every event count, flat: {"mode": ..., "nan_guard": n, ...}."""
        with self._lock:
            return {"mode": self.mode, **self.events}

    # --- internals ----------------------------------------------------------------------------
    def _restart(self) -> None:
        self._start_time: float | None = None
        self._start_q: np.ndarray | None = None
        self._fade_start: float | None = None

    def _check_tilt(self, state: RobotState) -> None:
        """Latch the orientation limit (`fault`) when a legged robot's base tilts beyond it."""
        if not self.legged or state.base_quat is None:
            return
        tilt = float(tilt_from_quat(state.base_quat))
        limit = self.config.tilt_limit_rad
        if tilt <= limit:   # a non-finite orientation trips it too
            return
        if self._start_time is None:
            self.fault = (f"{self.spec.name}: the soft start refuses to stand up a robot lying on its back or side "
                          f"(base tilted {tilt:.2f} rad, limit {limit:g} rad): right it, then reset_estop")
        else:
            self.fault = (f"{self.spec.name}: base tilted {tilt:.2f} rad beyond the {limit:g} rad limit (a fall): "
                          f"damping until reset_estop")

    def _safe(self, state: RobotState | None, q_meas: np.ndarray | None, event: str, mode: Mode) -> Command:
        self.events[event] += 1
        self.mode = mode
        return self._limited(self.damping_command(state), q_meas, motors_off=True)

    def _hold(self, elapsed: float) -> Command:
        """The soft start's command `elapsed` seconds after it began: the ramp, or zero torque."""
        if self._ramp_s == 0:
            return Command(q=self._start_q, dq=self._zeros, kp=self._zeros, kd=self._zeros, tau_ff=self._zeros,
                           rotor_thrust=self._off())
        to_default = self.default_q - self._start_q
        to_default = np.where(self._continuous, wrap_to_pi(to_default), to_default)
        s = min(elapsed / self._ramp_s, 1.0)
        return Command(q=self._start_q + s * to_default, dq=self._zeros, kp=self.spec_kp, kd=self.spec_kd,
                       tau_ff=self._zeros, rotor_thrust=self._off())

    def _limited(self, command: Command, q_meas: np.ndarray | None, *, motors_off: bool = False) -> Command:
        """The command with every limit applied, in the order that keeps each one true at the end; with
        `motors_off`, rotors stop at once (no rate limit on the way to the safe state). Each numpy call
        costs microseconds, and tens when the tick finds the caches cold: kp, kd, dq* and tau_ff are
        clipped in one call, and a step that changes nothing is skipped."""
        raw = np.array((command.kp, command.kd, command.dq, command.tau_ff))
        terms = np.minimum(np.maximum(raw, self._terms_low), self._terms_high)
        kp_clamped, kd_clamped, velocity_clamped, effort_clamped = (terms != raw).any(axis=1).tolist()
        kp, kd, dq, tau_ff = terms
        positioned = kp > 0   # joints where q* matters
        q = command.q
        if q_meas is not None:
            # A continuous joint's target is an angle: take the one within π of the measured angle, so that
            # no target, however large, leaves the range where the rate limit below is exact.
            far = self._continuous & (np.abs(q - q_meas) > np.pi)
            if far.any():
                self._count("position_clamp", bool((far & positioned).any()))
                q = np.where(far, q_meas + wrap_to_pi(q - q_meas), q)
            band = self.effort_limit / np.where(positioned, kp, 1.0)
            band[~positioned] = np.inf
            banded = np.minimum(np.maximum(q, q_meas - band), q_meas + band)
            effort_clamped = effort_clamped or bool(((banded != q) & positioned).any())
            q = banded
        limited = np.minimum(np.maximum(q, self.lower), self.upper)
        self._count("position_clamp", bool(((limited != q) & positioned).any()))
        q = limited
        if self._last_q is not None:
            limited = np.minimum(np.maximum(q, self._last_q - self.max_position_step),
                                 self._last_q + self.max_position_step)
            self._count("rate_limit", bool(((limited != q) & positioned).any()))
            q = limited
        if q_meas is not None:
            error = np.abs(q - q_meas)
            over = kp * error > self.effort_limit
            if over.any():
                kp = np.where(over, self.effort_limit / np.where(over, error, 1.0), kp)
                effort_clamped = True
        thrust = None
        if self._motors_off is not None:
            thrust = np.clip(command.rotor_thrust, 0.0, 1.0)
            effort_clamped = effort_clamped or bool((thrust != command.rotor_thrust).any())
            limited = thrust if motors_off else np.clip(thrust, self._last_thrust - self.max_thrust_step,
                                                        self._last_thrust + self.max_thrust_step)
            self._count("rate_limit", bool((limited != thrust).any()))
            thrust = self._last_thrust = limited
        self._count("gain_clamp", kp_clamped or kd_clamped)
        self._count("velocity_clamp", velocity_clamped)
        self._count("effort_clamp", effort_clamped)
        self._last_q = q
        return Command(q=q, dq=dq, kp=kp, kd=kd, tau_ff=tau_ff, rotor_thrust=thrust)

    def _off(self) -> np.ndarray | None:
        """Motors off, (num_rotors,), a fresh array; None without rotors."""
        return None if self._motors_off is None else self._motors_off.copy()

    def _count(self, event: str, acted: bool) -> None:
        """One `event` for this command where its limit changed any of it."""
        if acted:
            self.events[event] += 1

    def _measured(self, state: RobotState | None) -> np.ndarray | None:
        """The actuated joints' measured positions, or None without a usable (finite) state."""
        if state is None:
            return None
        q = np.asarray(state.q, dtype=np.float64)
        if q.shape != (self.spec.num_joints,):
            raise ValueError(f"RobotState.q: expected shape ({self.spec.num_joints},), got {q.shape}")
        q = q[self.spec.actuated_index]
        if self._motors_off is not None:   # a multirotor flies on its attitude and rate: they must be usable too
            base = (state.base_quat, state.base_ang_vel)
            if any(value is None or not np.isfinite(value).all() for value in base):
                return None
        return q if np.isfinite(q).all() and math.isfinite(state.stamp) else None

    def _arrays(self, command: Command) -> Command:
        """The command as float64 (num_actuated,) arrays; ValueError naming the field otherwise."""
        size = len(self._zeros)
        fields = {}
        for key in ("q", "dq", "kp", "kd", "tau_ff"):
            value = np.asarray(getattr(command, key), dtype=np.float64)
            if value.shape != (size,):
                raise ValueError(f"Command.{key}: expected shape ({size},) for the actuated joints, got {value.shape}")
            fields[key] = value
        if self._motors_off is None:
            if command.rotor_thrust is not None:
                raise ValueError(f"Command.rotor_thrust: {self.spec.name} has no rotors (expected None)")
            return Command(**fields)
        rotors = len(self._motors_off)
        thrust = None if command.rotor_thrust is None else np.asarray(command.rotor_thrust, dtype=np.float64)
        if thrust is None or thrust.shape != (rotors,):
            raise ValueError(f"Command.rotor_thrust: expected shape ({rotors},) for the rotors, got "
                             f"{None if thrust is None else thrust.shape}")
        return Command(**fields, rotor_thrust=thrust)
