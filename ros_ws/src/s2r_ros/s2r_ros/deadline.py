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

`shift(seconds)` moves every later deadline, for a loop that locks its phase to a sensor.
No rclpy: it runs on the robot computer.
"""

from __future__ import annotations

import math
import os
import threading
import time

import numpy as np

from s2r_ros.reports import SampleWindow, percentiles_us

DEFAULT_SPIN_S = 0.0003
"""Seconds spun before each deadline: above the p99 oversleep of a 2-core Linux box under
load (see docs/deploy.md), small enough to cost little CPU at 1 kHz."""


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


class DeadlineLoop:
    """Absolute-deadline waits at `period` seconds with a final short spin; counts overruns."""

    def __init__(self, period: float, *, spin_s: float = DEFAULT_SPIN_S, window: int = 1 << 16) -> None:
        if not (math.isfinite(period) and period > 0):
            raise ValueError(f"DeadlineLoop period: expected seconds > 0, got {period!r}")
        if not (math.isfinite(spin_s) and 0 <= spin_s < period):
            raise ValueError(f"DeadlineLoop spin_s: expected 0 <= spin_s < period ({period}), got {spin_s!r}")
        self.period = period
        self.spin_s = spin_s
        self.deadline: float | None = None
        """The next deadline, time.monotonic() seconds; None until the first wait."""
        self.ticks = 0
        self.overruns = 0
        """Ticks whose deadline had passed when they came to wait."""
        self.missed = 0
        """Deadlines skipped entirely because a tick ran past more than one period."""
        self.periods = SampleWindow(window)
        """Seconds between consecutive wake-ups."""
        self.lateness = SampleWindow(window)
        """Seconds each wake-up came after its deadline."""
        self.first_wake: float | None = None
        self.last_wake: float | None = None

    def start_at(self, deadline: float) -> None:
        """Make `deadline` (time.monotonic() seconds) the first one; default: the first wait's time."""
        self.deadline = deadline

    def shift(self, seconds: float) -> None:
        """Move the next deadline, and with it every later one, by `seconds`."""
        if self.deadline is not None:
            self.deadline += seconds

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Block until the next deadline; False (at once) when `stop` is set."""
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now
        deadline = self.deadline
        if now > deadline and self.ticks:
            self.overruns += 1
            missed = int((now - deadline) // self.period)
            self.missed += missed
            deadline += missed * self.period
        else:
            remaining = deadline - self.spin_s - now
            if remaining > 0:
                if stop is not None:
                    if stop.wait(remaining):
                        return False
                else:
                    time.sleep(remaining)
            while time.monotonic() < deadline:
                pass
        if stop is not None and stop.is_set():
            return False
        wake = time.monotonic()
        self.lateness.add(wake - deadline)
        if self.last_wake is not None:
            self.periods.add(wake - self.last_wake)
        else:
            self.first_wake = wake
        self.last_wake = wake
        self.ticks += 1
        self.deadline = deadline + self.period
        return True

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
