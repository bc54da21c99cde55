"""Control-loop timing: s2r's DeadlineLoop against an rclpy timer on a SingleThreadedExecutor.

Both tick at `rate` Hz doing the same fixed work (`work_us` of CPU, the size of a small
policy's inference), in one process, in alternating rounds so that the shared machine's noise
falls on both. s2r: `s2r.hardware.deadline.DeadlineLoop` on its own thread, as in policy_node,
while the main thread spins an idle node on the EventsExecutor, as the nodes do. Peer:
`node.create_timer(period)` spun by a SingleThreadedExecutor, the usual way an rclpy node
runs a loop. Measured: the
interval between consecutive wake-ups (the first line of the tick); its error is
|interval - period|. Result: p50 and p99 of each loop's period error in microseconds and the
ratio of the p99s (s2r / rclpy; below 1 is better).

    result = run(rate=500.0)
    result["s2r_period_p99_error_us"], result["rclpy_timer_period_p99_error_us"], result["ratio"]

The node joins a private ROS domain on loopback (`s2r.ros.environment()`).

    PYTHONPATH=. python -m bench.loop --rate 500
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

import numpy as np

from bench.report import machine, report
from s2r.hardware.deadline import DeadlineLoop, set_realtime_priority
from s2r.ros import environment
from s2r.ros.spin import SWITCH_INTERVAL_S


def busy(seconds: float) -> None:
    """Spin the CPU for `seconds`: the same work in both loops."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _s2r_round(executor, period: float, ticks: int, work_s: float) -> np.ndarray:
    """Wake-up times of `ticks` DeadlineLoop ticks on a thread, the executor spinning meanwhile."""
    wakes = np.empty(ticks)
    done = threading.Event()

    def control() -> None:
        loop = DeadlineLoop(period)
        for i in range(ticks):
            loop.wait()
            wakes[i] = time.monotonic()
            busy(work_s)
        done.set()

    thread = threading.Thread(target=control)
    thread.start()
    while not done.is_set():
        executor.spin_once(timeout_sec=0.1)
    thread.join()
    return wakes


def _rclpy_round(node, executor, period: float, ticks: int, work_s: float) -> np.ndarray:
    """Wake-up times of `ticks` callbacks of an rclpy timer spun by `executor`."""
    wakes = np.empty(ticks)
    count = 0

    def callback() -> None:
        nonlocal count
        if count < ticks:
            wakes[count] = time.monotonic()
            count += 1
            busy(work_s)

    timer = node.create_timer(period, callback)
    while count < ticks:
        executor.spin_once(timeout_sec=0.1)
    node.destroy_timer(timer)
    return wakes


def _errors_us(wakes: list[np.ndarray], period: float) -> np.ndarray:
    return 1e6 * np.abs(np.concatenate([np.diff(w) for w in wakes]) - period)


def run(rate: float = 500.0, *, seconds: float = 6.0, min_ticks: int = 1000, rounds: int = 5, work_us: float = 50.0,
        rt_priority: int = 50) -> dict[str, Any]:
    """Period error p50/p99 (µs) of both loops at `rate` Hz, in `rounds` alternations.

    Each loop ticks for `seconds`, or longer where that gives fewer than `min_ticks` (a p99 of
    fewer samples is one outlier). The process uses the nodes' GIL switch interval.

    `rt_priority` > 0 runs the whole process, both loops alike, under SCHED_FIFO where permitted
    (as `s2r deploy` runs its nodes), so that preemption by other processes, which no loop can
    prevent, does not hide the difference between the loops; the result says which applied.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.experimental import EventsExecutor

    if not rate > 0:
        raise ValueError(f"--rate: expected Hz > 0, got {rate}")
    period = 1.0 / rate
    ticks = max(int(seconds * rate), min_ticks) // rounds
    work_s = min(work_us * 1e-6, 0.5 * period)
    if set_realtime_priority(rt_priority):
        rt_priority = 0
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    settings = environment()
    os.environ.update(settings)
    context = Context()
    rclpy.init(context=context, domain_id=int(settings["ROS_DOMAIN_ID"]))
    try:
        idle = rclpy.create_node("bench_loop_idle", context=context)
        events = EventsExecutor(context=context)
        events.add_node(idle)
        node = rclpy.create_node("bench_loop", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        s2r_wakes, rclpy_wakes = [], []
        for _ in range(rounds):
            s2r_wakes.append(_s2r_round(events, period, ticks, work_s))
            rclpy_wakes.append(_rclpy_round(node, executor, period, ticks, work_s))
        node.destroy_node()
        idle.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    s2r_errors, rclpy_errors = _errors_us(s2r_wakes, period), _errors_us(rclpy_wakes, period)
    s2r_p50, s2r_p99 = np.percentile(s2r_errors, [50, 99])
    rclpy_p50, rclpy_p99 = np.percentile(rclpy_errors, [50, 99])
    return {
        "rate_hz": rate,
        "ticks_each": ticks * rounds,
        "work_us": work_s * 1e6,
        "rt_priority": rt_priority,
        "s2r_period_p50_error_us": float(s2r_p50),
        "s2r_period_p99_error_us": float(s2r_p99),
        "s2r_period_max_error_us": float(s2r_errors.max()),
        "rclpy_timer_period_p50_error_us": float(rclpy_p50),
        "rclpy_timer_period_p99_error_us": float(rclpy_p99),
        "rclpy_timer_period_max_error_us": float(rclpy_errors.max()),
        "ratio": float(s2r_p99 / rclpy_p99) if rclpy_p99 > 0 else None,  # JSON has no NaN
        "machine": machine(),
    }


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, nargs="+", default=[50.0, 200.0, 500.0, 1000.0], help="loop rates, Hz")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of ticks per loop and rate")
    parser.add_argument("--rt-priority", type=int, default=50,
                        help="SCHED_FIFO priority of the process where permitted; 0: normal scheduling")
    opts = parser.parse_args(args)
    results = [run(rate, seconds=opts.seconds, rt_priority=opts.rt_priority) for rate in opts.rate]
    rows = []
    for r in results:
        rows += [(f"{r['rate_hz']:g} Hz: s2r DeadlineLoop p50 / p99 error",
                  f"{r['s2r_period_p50_error_us']:.1f} / {r['s2r_period_p99_error_us']:.1f} µs"),
                 (f"{r['rate_hz']:g} Hz: rclpy timer p50 / p99 error",
                  f"{r['rclpy_timer_period_p50_error_us']:.1f} / {r['rclpy_timer_period_p99_error_us']:.1f} µs"),
                 (f"{r['rate_hz']:g} Hz: ratio of p99s (s2r / rclpy)",
                  "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}")]
    suffix = "" if results[0]["rt_priority"] else "_normal_scheduling"
    report(f"loop{suffix}", "control loop period error: s2r DeadlineLoop vs rclpy timer", rows,
           {"rates": results, "machine": machine()})


if __name__ == "__main__":
    main()
