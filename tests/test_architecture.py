"""The architecture of DESIGN.md, checked on what a user gets: the robot side and the installed namespace.

The layering itself (which layer may import which) is import-linter's job (`make lint`, run
before pytest by `make test`); these tests check what it cannot see:

- the robot side (the core, the runtimes, hardware and the ROS nodes) imports in a process
  where torch and MuJoCo are not installed, as on a robot's computer;
- `pip install` puts one top-level name into site-packages, `s2r`, with every package of
  the mapped folders in it and neither bench/ nor tests/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ROBOT_SIDE_PACKAGES = ("s2r", "s2r.runtime", "s2r.hardware", "s2r.ros")
"""Every module inside these packages (walked recursively) must import without WORKSTATION_ONLY."""

WORKSTATION_ONLY = ("torch", "mujoco", "mujoco_warp", "warp")
"""Top-level packages a robot's computer does not have."""

WORKSTATION_LAYERS = ("s2r.sim", "s2r.calibration", "s2r.policies", "s2r.apps")
"""Sub-packages of `s2r` that are not the robot side: skipped when walking the core."""

# Run in a fresh interpreter: a finder first on sys.meta_path refuses WORKSTATION_ONLY (and their
# submodules) as if they were not installed; then every module of ROBOT_SIDE_PACKAGES is imported,
# each failure recorded with its exception, and the result printed as JSON on the last line.
IMPORT_EVERYTHING = """
import importlib, importlib.abc, json, pkgutil, sys, traceback

BLOCKED, PACKAGES, SKIP = {blocked!r}, {packages!r}, {skip!r}

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed on a robot)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
imported, failed = [], {{}}

def record(name):
    failed[name] = traceback.format_exc(limit=-3).strip()

def walk(package):
    try:
        module = importlib.import_module(package)
    except Exception:
        record(package)
        return
    imported.append(package)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), package + ".", onerror=record):
        if any(info.name == skip or info.name.startswith(skip + ".") for skip in SKIP) or info.name in imported:
            continue
        try:
            importlib.import_module(info.name)
            imported.append(info.name)
        except Exception:
            record(info.name)

for package in PACKAGES:
    walk(package)
loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
print(json.dumps({{"imported": imported, "failed": failed, "loaded": loaded}}))
"""


def import_robot_side() -> dict:
    """Imports every robot-side module in a subprocess without torch and MuJoCo; what imported and what failed."""
    code = IMPORT_EVERYTHING.format(blocked=WORKSTATION_ONLY, packages=ROBOT_SIDE_PACKAGES, skip=WORKSTATION_LAYERS)
    # From "/", without PYTHONPATH: the repository's folders are not importable under their own names.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/", env=env,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_robot_side_imports_on_a_computer_without_torch_or_mujoco():
    outcome = import_robot_side()
    failures = "\n\n".join(f"{name}:\n{why}" for name, why in sorted(outcome["failed"].items()))
    assert not outcome["failed"], f"{len(outcome['failed'])} robot-side module(s) need torch or MuJoCo:\n\n{failures}"
    assert outcome["loaded"] == []
    # The walk reached every layer of the robot side, the ROS nodes included.
    for module in ("s2r.spec", "s2r.contract", "s2r.runtime.mlp", "s2r.hardware.safety", "s2r.ros.robot_node",
                   "s2r.ros.policy_node"):
        assert module in outcome["imported"], module


def install_as_a_user_would(stage: Path) -> Path:
    """`pip install` of the working tree's sources (tracked and new, not ignored) into stage/site; returns it."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    source = stage / "src"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    site = stage / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    return site


def test_the_installed_distribution_claims_only_the_s2r_name_and_holds_every_package(tmp_path):
    site = install_as_a_user_would(tmp_path)

    dist_info = [p.name for p in site.iterdir() if p.name.endswith(".dist-info")]
    assert len(dist_info) == 1 and dist_info[0].startswith("s2r-")
    assert sorted(p.name for p in site.iterdir() if p.name not in dist_info) == ["bin", "s2r"]
    assert (site / dist_info[0] / "top_level.txt").read_text().split() == ["s2r"]
    record = [line.split(",")[0] for line in (site / dist_info[0] / "RECORD").read_text().splitlines()]
    assert not [path for path in record if path.split("/")[0] in ("bench", "tests") or "/tests/" in path]
    assert not (site / "s2r" / "bench").exists() and not (site / "s2r" / "tests").exists()

    # Every package of the mapped folders is installed: the packages list in pyproject.toml is
    # explicit, so a new folder with an __init__.py that is not listed there is caught here.
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    expected = set()
    for package, folder in package_dir.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            expected.add(".".join((package, *parts)))
    missing = sorted(p for p in expected if not (site / p.replace(".", "/") / "__init__.py").is_file())
    assert not missing, f"packages not installed (add them to [tool.setuptools] packages in pyproject.toml): {missing}"

    # Every file of the mapped folders that is not Python (robot models, specs, configs) is installed:
    # a new robot folder is a data-only package that must be listed with its package data.
    tracked = subprocess.run(["git", "ls-files", *package_dir.values()], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    data = set()
    for path in tracked:
        if path.endswith(".py"):
            continue
        package, folder = max(((p, f) for p, f in package_dir.items() if path.startswith(f + "/")), key=lambda m: len(m[1]))
        data.add(package.replace(".", "/") + path[len(folder):])
    assert data, "no data files found in the mapped folders"
    missing = sorted(path for path in data if not (site / path).is_file())
    assert not missing, f"files not installed (list their folder in packages and package-data in pyproject.toml): {missing}"
