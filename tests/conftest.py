import hashlib
import os
from pathlib import Path

import pytest

# Tests time nothing; keep torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# MuJoCo picks its GL backend at first import: off-screen software EGL, no display needed.
os.environ.setdefault("MUJOCO_GL", "egl")

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "tests" / ".cache"


def _source_hash() -> str:
    """Hash of everything a trained policy depends on: contracts, robots, tasks, env, PPO, export."""
    digest = hashlib.sha256()
    for folder in ("s2r", "sim", "policies"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".xml", ".yaml"):
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def cartpole_onnx() -> Path:
    """A cartpole swing-up policy trained with the task defaults and exported, cached by source hash.

    Training takes about two minutes on two cores; the cache under tests/.cache (git-ignored)
    keeps it for later runs until any source it depends on changes.
    """
    from s2r.policies.export import export_onnx
    from s2r.policies.train import default_config, load_policy, train

    run = CACHE / f"cartpole-{_source_hash()}"
    onnx_path = run / "cartpole.onnx"
    if not onnx_path.is_file():
        train(default_config("cartpole"), run, progress=False)
        policy, contract, _ = load_policy(run)
        export_onnx(policy, contract, onnx_path)
    return onnx_path
