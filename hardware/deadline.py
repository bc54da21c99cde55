"""DeadlineLoop: wake a control thread at absolute deadlines, start + k·period on time.monotonic().

Each wait sleeps until `spin_s` before the deadline (the OS wakes a sleeper late by tens to
hundreds of microseconds), then spins on the clock for the rest, so the wake-up lands within
a few microseconds of the deadline when the machine is not starved. Deadlines are absolute:
a late tick never shifts the ones after it. A tick whose deadline has already passed when it
comes to wait (the previous tick's work ran past it) is an overrun: it runs at once, and
deadlines missed entirely are skipped (`missed`), so the loop keeps its phase instead of
bursting to catch up.

    loop = DeadlineLoop(0.02)
    while loop.wait(stop):         # stop: threading.Event; False once it is set
        tick()
    loop.period_stats()            # {"period_p50_us": ..., "period_p99_us": ..., ...}

A loop that serves a periodic input (a robot's measurements, the states a policy answers)
ticks the moment it arrives instead: with a `TickTrigger` that the input's thread fires, tick k
wakes at the first arrival in the half period before its deadline, and only without one at
the deadline itself, `trigger_wait_s` after the arrival was due. The deadlines stay absolute
and lock onto the arrivals (the first one places them, a small correction each tick keeps
them there: a software PLL that also follows a source whose clock drifts), so a late or
missing input costs `trigger_wait_s`, never a stalled loop:

    arrivals     │         ▼               ▼             (late: none)            ▼
    deadlines  ──┼───────────|───────────────|───────────────|───────────────|──
    ticks        │         ▲               ▲                 ▲ (deadline)    ▲
                 │  window: ├──── period/2 ──┤ before each deadline

    new_state = TickTrigger()      # on_state: new_state.fire()
    loop = DeadlineLoop(0.02, trigger=new_state, trigger_wait_s=0.002)

A loop whose tick runs cold code (a policy called once a period, its weights evicted from the
caches by other processes in between) can `prepare` for it: `prepare()` runs once per wait so
that it ends `prepare_s` before the tick is due (the trigger's expected arrival, else the
deadline): it starts its own duration earlier, as measured on its recent runs
(`prepare_estimate`: the longest, decaying slowly), unless the tick's input comes first;
`prepared` counts the waits it ran in. From `prepare` to the tick the loop spins instead of
sleeping (`prepare_s` of CPU a tick): a core that sleeps even 1 ms after `prepare` is given to
other processes or idles, and the tick finds the caches cold again. A `prepare` that started at
a fixed time before the tick ran past it whenever it took longer (a cold policy step and filter:
1.2 ms on a loaded host), and the tick waited for it.

    loop = DeadlineLoop(0.02, trigger=new_state, trigger_wait_s=0.002, prepare=rehearse, prepare_s=0.0003)

No rclpy: it runs on the robot computer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import resource
import threading
import time
from collections.abc import Callable

import numpy as np

from s2r.reports import SampleWindow, percentiles_us

DEFAULT_SPIN_S = 0.0003
"""Seconds spun before each deadline: above the p99 oversleep of a 2-core Linux box under
load (see docs/deploy.md), small enough to cost little CPU at 1 kHz."""
PREPARE_DECAY = 0.05
"""Fraction of the gap to a shorter `prepare` run by which the planned duration comes down each run."""
PHASE_GAIN = 0.1
"""Fraction of the measured phase error a triggered loop corrects per tick."""
PHASE_STEP_MAX_S = 0.0005
"""Largest phase correction of one tick, seconds."""
PHASE_ACQUIRE_TICKS = 5
"""Ticks over which a triggered loop's deadlines take the whole measured phase error (then PHASE_GAIN of it):
the first arrival may come late (a process starting up holds the GIL; the input's thread catches up after),
and at PHASE_GAIN a misplaced first deadline took 10-20 ticks, each late, to reach its place."""


def set_realtime_priority(priority: int) -> str | None:
    """Run the calling thread under SCHED_FIFO at `priority` (1..99; 0 leaves it as it is).

    A preempted control thread wakes milliseconds late whatever its loop does: on a loaded
    2-core machine the p99 lateness of a 50 Hz loop falls from ~3 ms to ~1 µs with FIFO
    scheduling. Needs root or CAP_SYS_NICE (or an rtprio limit); returns why it could not,
    or None. The kernel's RT throttling keeps a runaway FIFO thread from locking a core.
    """
    if priority == 0:
        return None
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as error:
        return f"SCHED_FIFO priority {priority} not permitted ({error}); running with normal scheduling"
    return None


MCL_CURRENT, MCL_FUTURE = 1, 2
"""mlockall flags (Linux <sys/mman.h>)."""


def lock_memory() -> str | None:
    """Lock this process's pages in RAM now and from now on (mlockall), so that no tick waits
    for a page fault; returns why it could not, or None.

    Only with the right to lock without a limit (root or CAP_IPC_LOCK, or an unlimited
    RLIMIT_MEMLOCK): under a finite limit, MCL_FUTURE would make later allocations fail.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:
        return (f"mlockall not attempted: RLIMIT_MEMLOCK is {soft} bytes and the process is not root "
                "(raise it with `ulimit -l unlimited` or give CAP_IPC_LOCK); memory is not locked")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        return f"mlockall failed ({os.strerror(ctypes.get_errno())}); memory is not locked"
    return None


class TickTrigger:
    """Arrivals of a periodic input that a DeadlineLoop ticks on; `fire()` from the input's thread."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.last = -math.inf
        """time.monotonic() of the newest arrival."""

    def fire(self) -> None:
        """An arrival, now: wakes the loop waiting for it. Cheap and non-blocking."""
        now = time.monotonic()
        with self._condition:
            self.last = now
            self._condition.notify_all()

    def wait(self, since: float, until: float) -> bool:
        """Block until an arrival at or after `since` or until `until` (time.monotonic()); whether one came."""
        with self._condition:
            return self._condition.wait_for(lambda: self.last >= since, timeout=max(until - time.monotonic(), 0.0))

    def spin(self, since: float, until: float) -> bool:
        """`wait`, busy: the core stays with the caller (a sleeping core is given to other processes or
        idles, and either takes what the caller's caches held), the GIL given up on every turn so
        that the input's thread can fire."""
        while self.last < since:
            if time.monotonic() >= until:
                return False
            time.sleep(0)
        return True


class DeadlineLoop:
    """Absolute-deadline waits at `period` seconds with a final short spin, or at a `trigger`'s
    arrivals with the deadline `trigger_wait_s` after each as the fallback; counts overruns."""

    def __init__(self, period: float, *, spin_s: float = DEFAULT_SPIN_S, trigger: TickTrigger | None = None,
                 trigger_wait_s: float = 0.0, prepare: Callable[[], None] | None = None, prepare_s: float = 0.0,
                 window: int = 1 << 16) -> None:
        if not (math.isfinite(period) and period > 0):
            raise ValueError(f"DeadlineLoop period: expected seconds > 0, got {period!r}")
        if not (math.isfinite(spin_s) and 0 <= spin_s < period):
            raise ValueError(f"DeadlineLoop spin_s: expected 0 <= spin_s < period ({period}), got {spin_s!r}")
        if not (math.isfinite(trigger_wait_s) and 0 <= trigger_wait_s < period / 2):
            raise ValueError(f"DeadlineLoop trigger_wait_s: expected 0 <= trigger_wait_s < period / 2 "
                             f"({period / 2}), got {trigger_wait_s!r}")
        if not (math.isfinite(prepare_s) and 0 <= prepare_s < period / 2 - trigger_wait_s):
            raise ValueError(f"DeadlineLoop prepare_s: expected 0 <= prepare_s < period / 2 - trigger_wait_s "
                             f"({period / 2 - trigger_wait_s}), got {prepare_s!r}")
        self.period = period
        self.spin_s = spin_s
        self.prepare = prepare
        self.prepare_s = prepare_s
        self.prepared = 0
        """Waits in which `prepare` ran (the others' tick came first, or overran)."""
        self.prepare_estimate = 0.0
        """Seconds `prepare` takes, as the loop plans it: its longest recent run, decaying by PREPARE_DECAY
        of the difference per run toward shorter ones. `prepare` starts that much before `prepare_s`."""
        self.trigger = trigger
        self.trigger_wait_s = trigger_wait_s
        self.deadline: float | None = None
        """The next deadline, time.monotonic() seconds; None until the first wait."""
        self.ticks = 0
        self.overruns = 0
        """Ticks whose deadline had passed when they came to wait."""
        self.missed = 0
        """Deadlines skipped entirely because a tick ran past more than one period."""
        self.periods = SampleWindow(window)
        """Seconds between consecutive wake-ups."""
        self.triggered = 0
        """Ticks woken by the trigger (the others woke at their deadline)."""
        self.lateness = SampleWindow(window)
        """Seconds each wake-up came after what it woke for: the trigger's arrival, or the deadline."""
        self.phase_error = SampleWindow(window)
        """With a trigger: seconds the deadline was off its place, `trigger_wait_s` after the newest arrival."""
        self.first_wake: float | None = None
        self.last_wake: float | None = None
        self._unrecorded: tuple[float, float | None, float, float | None] | None = None
        """The newest wake-up, its predecessor, the deadline it served and the newest arrival then, until `_record`."""
        self.served: float | None = None
        """The deadline the newest wake-up served (before the phase correction moved the next one)."""
        self.last_triggered = False
        """Whether the newest wake-up was the trigger's (else its deadline's)."""

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Block until the next deadline, or the trigger's arrival before it; False once `stop` is set
        (at once while sleeping, within half a period while waiting for an arrival).

        With a trigger, the first wait lasts until the next arrival and ticks at it."""
        if self.deadline is None and not self._place_first_deadline(stop):
            return False
        self._record()
        now = time.monotonic()
        deadline = self.deadline
        triggered = False
        if now > deadline and self.ticks:
            self.overruns += 1
            missed = int((now - deadline) // self.period)
            self.missed += missed
            deadline += missed * self.period
        else:
            if self.trigger is not None:
                opens = deadline - self.period / 2
                if not _sleep(opens - now, stop):
                    return False
                due = max(deadline - self.trigger_wait_s - self.prepare_s - self.prepare_estimate, opens)
                if self.prepare is not None and time.monotonic() < due:
                    triggered = self.trigger.wait(since=opens, until=due)
                    if not triggered:
                        self._prepare()
                        triggered = self.trigger.spin(since=opens, until=deadline - self.spin_s)
                triggered = triggered or self.trigger.wait(since=opens, until=deadline - self.spin_s)
            elif self.prepare is not None and time.monotonic() < deadline - self.prepare_s - self.prepare_estimate:
                if not _sleep(deadline - self.prepare_s - self.prepare_estimate - time.monotonic(), stop):
                    return False
                self._prepare()
                while time.monotonic() < deadline - self.spin_s:   # then the final spin below
                    time.sleep(0)
            if not triggered:
                if not _sleep(deadline - self.spin_s - time.monotonic(), stop):
                    return False
                while time.monotonic() < deadline:
                    pass
        if stop is not None and stop.is_set():
            return False
        wake = time.monotonic()
        # Only what the next wait needs now; the figures and the phase correction wait for it (`_record`):
        # the tick this returns to runs first.
        self._unrecorded = (wake, self.last_wake, deadline, self.trigger.last if self.trigger is not None else None)
        if triggered:
            self.triggered += 1
        if self.last_wake is None:
            self.first_wake = wake
        self.last_wake = wake
        self.ticks += 1
        self.served, self.last_triggered = deadline, triggered
        self.deadline = deadline + self.period
        return True

    def _record(self) -> None:
        """The newest wake-up's lateness, period and phase correction (see `wait`)."""
        if self._unrecorded is None:
            return
        wake, previous, deadline, arrival = self._unrecorded
        self._unrecorded = None
        self.lateness.add(wake - (arrival if self.last_triggered else deadline))
        if previous is not None:
            self.periods.add(wake - previous)
        if arrival is not None:
            self._lock_phase(deadline, arrival)

    def _prepare(self) -> None:
        start = time.monotonic()
        self.prepare()
        took = time.monotonic() - start
        self.prepared += 1
        # Rises at once to a longer prepare, decays slowly after: the next one still ends in time.
        self.prepare_estimate = max(took, self.prepare_estimate + PREPARE_DECAY * (took - self.prepare_estimate))

    @property
    def late(self) -> int:
        """Ticks that woke at their deadline because the trigger's input had not arrived (0 without a trigger)."""
        return self.ticks - self.triggered if self.trigger is not None else 0

    def _place_first_deadline(self, stop: threading.Event | None) -> bool:
        """The first deadline: now, or with a trigger `trigger_wait_s` after its next arrival; False if stopped."""
        if self.trigger is not None:
            start = time.monotonic()
            while not self.trigger.wait(since=start, until=time.monotonic() + self.period):
                if stop is not None and stop.is_set():
                    return False
            self.deadline = self.trigger.last + self.trigger_wait_s
        else:
            self.deadline = time.monotonic()
        return True

    def _lock_phase(self, deadline: float, arrival: float) -> None:
        """Move the deadlines toward `trigger_wait_s` after the arrivals (all of the error over the first
        PHASE_ACQUIRE_TICKS ticks, then PHASE_GAIN of it per tick); `arrival`: the newest when `deadline` was served."""
        since = deadline - arrival
        if since < 1.5 * self.period:  # the input is flowing
            error = (since - self.trigger_wait_s + self.period / 2) % self.period - self.period / 2
            self.phase_error.add(error)
            if self.ticks <= PHASE_ACQUIRE_TICKS:
                self.deadline -= error
            else:
                self.deadline -= min(max(PHASE_GAIN * error, -PHASE_STEP_MAX_S), PHASE_STEP_MAX_S)

    def achieved_hz(self) -> float:
        """Ticks per second between the first and the last wake-up."""
        if self.ticks < 2:
            return math.nan
        return (self.ticks - 1) / (self.last_wake - self.first_wake)

    def period_stats(self, since: int = 0) -> dict[str, float]:
        """Period p50/p99/max and p99 |period error| in µs, over the periods after the first `since`."""
        periods = self.periods.since(since)
        stats = percentiles_us(periods, "period")
        stats["period_p99_error_us"] = (1e6 * float(np.percentile(np.abs(periods - self.period), 99))
                                        if len(periods) else math.nan)
        return stats


def _sleep(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep `seconds` (nothing if <= 0), woken early by `stop`; False if `stop` is set."""
    if seconds > 0:
        if stop is not None:
            return not stop.wait(seconds)
        time.sleep(seconds)
    return stop is None or not stop.is_set()
