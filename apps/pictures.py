"""The pictures a command wrote, named at its end (on stderr), so that a user knows where to look.

Train, eval, sysid, calibrate-camera and bench call `name_pictures` with what they know of
their outputs: a result (nested dicts and lists whose strings may be file paths), a path, or a
run directory (searched for pictures); files that exist with a picture's suffix are named.

    name_pictures("s2r train", Path("runs/cartpole"))   # s2r train: pictures: runs/cartpole/training_curve.png
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SUFFIXES = (".png", ".svg", ".gif", ".mp4", ".rrd")
"""What counts as a picture: figures, videos and rerun recordings."""


def pictures(*found: Any) -> list[Path]:
    """The existing picture files among `found` (paths, strings, directories searched, dicts and lists walked)."""
    paths: list[Path] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, (str, Path)) and value:
            path = Path(value)
            if path.is_dir():
                paths.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()))
            elif path.suffix.lower() in SUFFIXES and path.is_file():
                paths.append(path)

    for value in found:
        visit(value)
    return list(dict.fromkeys(paths))


def name_pictures(command: str, *found: Any) -> list[Path]:
    """Print "COMMAND: pictures: a.png, b.mp4" on stderr for the pictures among `found`; returns them."""
    named = pictures(*found)
    if named:
        print(f"{command}: pictures: {', '.join(str(p) for p in named)}", file=sys.stderr, flush=True)
    return named
