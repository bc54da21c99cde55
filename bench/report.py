"""What every benchmark reports: the machine it ran on, a rich table, JSON on stdout and in bench/results."""

from __future__ import annotations

import json
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


def report(name: str, title: str, rows: list[tuple[str, str]], result: dict[str, Any]) -> Path:
    """Prints a two-column table, then `result` as JSON on the last stdout line; writes `bench/results/<name>.json`."""
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in rows:
        table.add_row(label, value)
    Console().print(table)
    text = json.dumps(result)
    print(text, flush=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
