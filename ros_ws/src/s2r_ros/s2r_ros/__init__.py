"""s2r_ros: the ROS 2 side of s2r, the nodes that run an exported policy on a robot.

- `robot_node` owns one `s2r.interface.RobotInterface`, publishes `joint_states`
  (and `imu` for floating-base robots), takes `joint_command` through the
  `SafetyFilter`, and serves `enable`, `disable`, `estop` and `reset_estop`.
- `policy_node` runs the runtime `s2r.runtime.load_runtime` picks for the policy's kind
  (mlp, or diffusion executed in chunks) on a deadline loop of its own thread.
- `recorder` writes every topic of interest to a chunked MCAP file.

Importing this package costs nothing (no rclpy): `environment()` is what
`s2r deploy`, the tests and the benchmarks use to keep DDS on loopback.

    env = {**os.environ, **environment()}      # for a child process
    subprocess.Popen([..., "s2r-robot-node", ...], env=env)
"""

from __future__ import annotations

import os
import random
from pathlib import Path

RMW_IMPLEMENTATION = "rmw_fastrtps_cpp"
"""The RMW the `ros-rmw-fastrtps-cpp` wheel provides."""
FASTDDS_PROFILE = Path(__file__).resolve().parent / "fastdds.xml"
"""Fast DDS participant defaults: faster discovery announcements (see the file)."""


DOMAIN_IDS = range(0, 102)
"""ROS_DOMAIN_ID values safe on every platform."""


def resolve_domain_id(domain_id: int | str | None) -> int:
    """The ROS domain a deploy joins: `domain_id` itself; "random": a random id in 1..100 (so that
    concurrent runs on one machine do not hear each other); None: the user's ROS_DOMAIN_ID if
    set, else 0 (ROS's default), so that the user's own tools see the deploy without being told.
    ValueError naming `--domain-id` (or ROS_DOMAIN_ID) for anything else."""
    if domain_id == "random":
        return random.SystemRandom().randint(1, 100)
    source, value = ("--domain-id", domain_id) if domain_id is not None else \
        ("ROS_DOMAIN_ID", os.environ.get("ROS_DOMAIN_ID", "0") or "0")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: expected an integer 0..101 or 'random', got {value!r}") from None
    if number not in DOMAIN_IDS:
        raise ValueError(f"{source}: expected 0..101 (the range safe on every platform), got {number}")
    return number


def environment(domain_id: int | None = None) -> dict[str, str]:
    """The ROS 2 variables that keep DDS discovery and traffic on this machine's loopback.

    `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` (Iron and later) and `ROS_LOCALHOST_ONLY=1`
    (older RMWs) keep participants on 127.0.0.1; `ROS_DOMAIN_ID` is `domain_id` or a
    random id in 1..100, so that concurrent deploys and tests on one machine do not hear
    each other; `FASTDDS_DEFAULT_PROFILES_FILE` is s2r's discovery profile unless one is
    set already. Merge it over `os.environ` for every process that joins the graph.
    """
    domain_id = resolve_domain_id("random" if domain_id is None else domain_id)
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOCALHOST_ONLY": "1",
        "RMW_IMPLEMENTATION": RMW_IMPLEMENTATION,
        "ROS_DOMAIN_ID": str(domain_id),
        "FASTDDS_DEFAULT_PROFILES_FILE": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE)),
    }
