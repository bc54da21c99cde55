"""Node parameters declared in one place, with defaults, descriptions and checks.

    PARAMS = (Param("rate_hz", 50.0, "Loop rate.", positive),)
    values = declare(node, PARAMS)          # StartupError naming the parameter if a check fails

Parameters are read-only once declared: a node reads them at start, and a value that
changes under a running control loop is a bug, not a feature. Overrides come from
`--ros-args -p name:=value` or a YAML file (`--params-file`, launch files).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from s2r.hardware.drivers import DriverError, parse_driver

from .spin import StartupError

Check = Callable[[Any], str | None]
"""Returns what is wrong with a value, or None when it is fine."""


@dataclass(frozen=True)
class Param:
    """One parameter: its name, default (which fixes its type), what it means and how it is checked."""

    name: str
    default: Any
    description: str
    check: Check | None = None


def declare(node: Node, params: Sequence[Param]) -> dict[str, Any]:
    """Declare `params` on `node` (read-only), read them and check them; StartupError on the first bad one."""
    values = {}
    for param in params:
        descriptor = ParameterDescriptor(description=param.description, read_only=True)
        value = node.declare_parameter(param.name, param.default, descriptor).value
        problem = param.check(value) if param.check else None
        if problem:
            raise StartupError(f"parameter {param.name!r}: {problem} (got {value!r})")
        values[param.name] = value
    return values


def positive(value: float) -> str | None:
    return None if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else "expected a number > 0"


def non_negative(value: float) -> str | None:
    return None if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0 else "expected a number >= 0"


def non_empty(value: str) -> str | None:
    return None if value else "required"


def priority(value: int) -> str | None:
    return None if isinstance(value, int) and 0 <= value <= 99 else "expected a SCHED_FIFO priority 1..99, or 0"


def one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}"

    return check


def driver(value: str) -> str | None:
    """A driver of the registry, KIND[:WHERE] (s2r.hardware.drivers)."""
    try:
        parse_driver(value)
    except DriverError as error:
        return str(error).removeprefix("--driver: ")
    return None
