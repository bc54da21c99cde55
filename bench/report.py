"""What every benchmark reports: the machine it ran on, a rich table, JSON on stdout and in bench/results."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).parent / "results"


def machine() -> str:
    """Platform and CPU count, e.g. 'Linux-6.1-x86_64-with-glibc2.36, 2 cpus'."""
    return f"{platform.platform()}, {os.cpu_count()} cpus"


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity: a figure that is undefined (no episode ended yet, a zero divisor) is null."""
    return value if math.isfinite(value) else None


def report(name: str, title: str, rows: list[tuple[str, str]], result: dict[str, Any]) -> Path:
    """Prints a two-column table, then `result` as JSON on the last stdout line; writes `bench/results/<name>.json`.

    A result holding NaN or infinity is refused (ValueError) after the table: JSON has neither; report
    an undefined figure as None (`finite_or_none`).
    """
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in rows:
        table.add_row(label, value)
    Console().print(table)
    try:
        text = json.dumps(result, allow_nan=False)
    except ValueError as error:
        raise ValueError(f"bench {name}: the result holds NaN or infinity, which JSON has not: {error}") from None
    print(text, flush=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return path
