"""Reading s2r's YAML files (robot specs, SimRobot configs, randomization, calibrations) with errors that name the file and the field.

Every loader reads through `read_yaml` and checks its mappings with `check_fields`, so that a
user sees one line such as `robot.yaml: joints[1].kp: missing (expected float)` and never a
traceback. Loaders pass their own error class (a `ValueError` subclass) so callers can catch
the kind of file that failed.

    data = read_yaml(path, "robot spec", SpecError)                     # a mapping, or SpecError
    check_fields(data, path, SpecError, required=("name",), optional=("imu",), where="")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: str | Path, what: str, error: type[Exception], *, top: type = dict) -> Any:
    """The parsed YAML at `path` (`yaml.safe_load` only), checked to be a `top` (dict or list).

    An empty file reads as an empty `top`. Raises `error` naming the file: unreadable, not
    YAML, or the wrong kind of document.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as failure:
        raise error(f"{path}: cannot read {what} ({failure.strerror or failure})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as failure:
        raise error(f"{path}: not valid YAML: {' '.join(str(failure).split())}") from None
    if data is None:
        return top()
    if not isinstance(data, top):
        kind = "a mapping" if top is dict else "a list"
        raise error(f"{path}: expected {kind} at the top level, got {type(data).__name__}")
    return data


def check_fields(data: Any, path: str | Path, error: type[Exception], *,
                 required: Iterable[str] | Mapping[str, type] = (),
                 optional: Iterable[str] | Mapping[str, type] = (), where: str = "") -> None:
    """Refuse a `data` that is not a mapping, lacks a `required` key or has a key outside both.

    `required` and `optional` are field names, or mappings of field name to the type its value
    must have (`float` accepts ints; `int` and `float` refuse booleans). `where` is the field
    path so far, ending in a dot (`"joints[1]."`), or "" at the top level.
    """
    required = required if isinstance(required, Mapping) else dict.fromkeys(required)
    optional = optional if isinstance(optional, Mapping) else dict.fromkeys(optional)
    label = where.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise error(f"{path}: {label}: expected a mapping, got {type(data).__name__}")
    known = {**required, **optional}
    for key in data:
        if key not in known:
            raise error(f"{path}: {where}{key}: unknown field (known fields: {', '.join(sorted(known))})")
    for key, kind in required.items():
        if key not in data:
            raise error(f"{path}: {where}{key}: missing" + (f" (expected {kind.__name__})" if kind else ""))
    for key, kind in known.items():
        if kind is not None and key in data and not _is(data[key], kind):
            value = data[key]
            raise error(f"{path}: {where}{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}")


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
