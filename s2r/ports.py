"""TCP ports for the servers s2r starts (the web view, the Foxglove bridge): is one taken, which is free.

    if port_in_use("127.0.0.1", 8765):
        raise ValueError(port_taken_message("--foxglove", "127.0.0.1", 8765))   # "... try --foxglove 40213"
"""

from __future__ import annotations

import socket


def port_in_use(host: str, port: int) -> bool:
    """Whether `port` on `host` is taken (bound by another server)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on now (the system picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_taken_message(option: str, host: str, port: int) -> str:
    """The one line a user reads when a port is in use: which one, and a free one to use instead."""
    return f"{option} {port}: port {port} on {host} is already in use; try {option} {free_port(host)}"
