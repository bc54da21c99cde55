"""The one entry-point shape of every s2r node: init, build the node, spin, shut down cleanly.

    def main(args=None):
        return run_node(PolicyNode, args)

SIGINT and SIGTERM (and a KeyboardInterrupt, and a context shut down from elsewhere) all
end in the same place: the node's `close()`, which stops its threads and leaves the robot
safe, before the node is destroyed and rclpy shut down. rclpy's own signal handlers are
not installed: they shut the context down at once, before `close()` could still publish
or log; ours only set a flag that the spin loop checks every `POLL_S`.

A node whose construction raises `StartupError` (a contract that does not fit the robot, a
bad parameter) logs the reason and the process exits with status 2. A node whose control
thread dies sets its `failure` (after leaving the robot safe); the process then shuts down
and exits with status 1, so that whoever supervises it sees the fault. A lifecycle node's
transitions are wrapped in `reported`, so that an exception in one is logged and kept.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
import traceback
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.experimental import EventsExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

SWITCH_INTERVAL_S = 0.0002
"""How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
A control thread that wakes while the executor thread runs Python would otherwise wait up to
the default interval for the GIL; 200 µs bounds that delay for little extra switching."""
POLL_S = 0.1
"""Seconds the executor waits before checking the stop flag again."""
EXIT_FAILURE = 1
"""Exit status of a node whose control thread failed."""
EXIT_STARTUP_ERROR = 2
"""Exit status of a node that refused to start."""


class StartupError(RuntimeError):
    """A node cannot start: the message says which parameter or contract field is wrong."""


def reported(transition: Callable) -> Callable:
    """A lifecycle node's transition callback whose unexpected exception is logged and kept in the
    node's `startup_error` (rclpy would swallow it); the transition then ends in ERROR."""

    @functools.wraps(transition)
    def wrapper(node, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return transition(node, state)
        except Exception as error:
            node.startup_error = f"{transition.__name__}: {type(error).__name__}: {error}"
            node.get_logger().error(f"{node.startup_error}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR

    return wrapper


def run_node(build: Callable[[], Node], args: list[str] | None = None, *, name: str) -> int:
    """Run the node `build()` makes on a single-threaded executor until SIGINT/SIGTERM; exit status.

    The node must have `close()`: stop its threads, leave the robot safe; safe to call twice.
    It may have `failure`: None while it is healthy, what went wrong once its control thread died;
    and `finished`: True once it has done its work (an operator's quit), which ends it with status 0.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = None
    status = 0
    try:
        node = build()
        # One thread runs every subscription, service and timer callback: they are short,
        # and serializing them needs no locks between callbacks. Control loops run on
        # their own threads and share data with callbacks through locks. The EventsExecutor
        # dispatches in C++: a message reaches its callback ~0.2 ms sooner than through
        # SingleThreadedExecutor's Python wait-set loop (a ROS round trip between two
        # processes here: p50 0.80 ms against 1.18 ms), and it holds the GIL less, so a
        # control thread woken by a callback runs sooner.
        executor = EventsExecutor()
        executor.add_node(node)
        while (not stop.is_set() and rclpy.ok() and getattr(node, "failure", None) is None
               and not getattr(node, "finished", False)):
            executor.spin_once(timeout_sec=POLL_S)
        if getattr(node, "failure", None) is not None:
            print(f"{name}: control thread failed: {node.failure}", file=sys.stderr, flush=True)
            status = EXIT_FAILURE
    except StartupError as error:
        print(f"{name}: refusing to start: {error}", file=sys.stderr, flush=True)
        status = EXIT_STARTUP_ERROR
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return status
