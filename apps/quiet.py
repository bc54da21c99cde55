"""Third-party messages a user of s2r cannot act on, silenced where s2r triggers them.

Each filter is narrow (one logger, or one warning's module and message), so that a warning
about the user's own code or data still shows:

    with quiet_onnx_export():
        export_onnx(policy, contract, "policy.onnx")   # prints nothing but s2r's own line
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"
"""Logs "torchvision is not installed. Skipping torchvision::nms" and the like: s2r exports no vision ops."""
ONNX_EXPORT_WARNINGS = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),  # torch.export's pytree, inside torch
    (UserWarning, r"# The axis name: .* will not be used"),  # one batch axis named for several inputs (diffusion)
)
"""(category, message regex) of warnings torch's ONNX exporter raises about its own internals."""


@contextmanager
def quiet_onnx_export() -> Iterator[None]:
    """While inside: torch's ONNX exporter keeps its internal warnings and log lines to itself."""
    registration = logging.getLogger(ONNX_REGISTRATION_LOGGER)
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category, message in ONNX_EXPORT_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        registration.setLevel(level)
