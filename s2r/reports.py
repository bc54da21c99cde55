"""What nodes measure and report: sample windows, percentiles, diagnostics values, summary files."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np


class SampleWindow:
    """The last `capacity` float samples, in a preallocated ring; thread-safe."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._buffer = np.empty(capacity)
        self._count = 0
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._buffer[self._count % len(self._buffer)] = value
            self._count += 1

    @property
    def count(self) -> int:
        """Samples added since construction (not capped by the capacity)."""
        return self._count

    def since(self, count: int) -> np.ndarray:
        """A copy of the samples added after the first `count` (at most `capacity` of them), oldest first."""
        with self._lock:
            n = min(self._count - count, len(self._buffer))
            if n <= 0:
                return np.empty(0)
            end = self._count % len(self._buffer)
            return self._buffer[np.arange(end - n, end) % len(self._buffer)]

    def values(self) -> np.ndarray:
        """A copy of every kept sample, oldest first."""
        return self.since(0)


def percentiles_us(samples: np.ndarray, prefix: str) -> dict[str, float]:
    """{prefix_p50_us, prefix_p99_us, prefix_max_us} of `samples` in seconds; NaN without samples."""
    if len(samples) == 0:
        return {f"{prefix}_p50_us": math.nan, f"{prefix}_p99_us": math.nan, f"{prefix}_max_us": math.nan}
    p50, p99 = np.percentile(samples, [50, 99])
    return {f"{prefix}_p50_us": 1e6 * p50, f"{prefix}_p99_us": 1e6 * p99, f"{prefix}_max_us": 1e6 * samples.max()}


def diagnostic_text(value: Any) -> str:
    """A DiagnosticStatus value: floats to 0.1, everything else as str."""
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(path)
