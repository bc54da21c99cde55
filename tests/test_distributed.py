"""Data-parallel training: two CPU processes over gloo, launched the way users launch them."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from s2r.policies.distributed import Distributed, RanksDivergedError, launch
from s2r.policies.normalization import EmpiricalNormalization


def s2r(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2r.apps.cli", *args], capture_output=True, text=True, timeout=900)


def test_two_ranks_learn_pendulum_in_lockstep_and_rank_0_writes_the_run(tmp_path):
    # The runner compares the ranks' parameters after every update and stops on any difference,
    # so a run that finishes held identical parameters throughout.
    result = s2r("train", "pendulum", "--nproc", "2", "--num-envs", "128", "--iterations", "100",
                 "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["ranks"] == 2 and metrics["iterations"] == 100
    assert metrics["env_steps"] == 2 * 128 * 100 * 24
    assert metrics["success_rate"] >= 0.75
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["extra"]["contract"]["provenance"]["ranks"] == 2
    assert len(list((tmp_path / "run").glob("events.*"))) == 1  # one TensorBoard log: rank 0's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    distributed = Distributed.from_environment()
    torch.manual_seed(rank)
    model = torch.nn.Linear(3, 2)
    distributed.broadcast_parameters(model)
    distributed.check_in_sync(model, iteration=0)
    # Gradients of different data average to one update; the normalizers merge both batches.
    model(torch.full((4, 3), float(rank + 1))).sum().backward()
    distributed.average_gradients(list(model.parameters()))
    norm = EmpiricalNormalization(1)
    norm.update(torch.full((10, 1), float(rank)))
    results[rank] = (model.weight.grad.clone(), float(norm.mean), float(norm.var), int(norm.count))
    # One rank that steps apart is caught.
    with torch.no_grad():
        model.bias += rank
    try:
        distributed.check_in_sync(model, iteration=7)
        results[f"caught{rank}"] = ""
    except RanksDivergedError as error:
        results[f"caught{rank}"] = str(error)
    distributed.close()


def test_ranks_average_gradients_merge_normalizers_and_catch_a_rank_that_drifts():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(_free_port(), results), nprocs=2)
        results = dict(results)
    grad0, mean0, var0, count0 = results[0]
    grad1, mean1, var1, count1 = results[1]
    assert torch.equal(grad0, grad1) and torch.allclose(grad0, torch.full((2, 3), 6.0))  # mean of 4·1 and 4·2
    assert (mean0, var0, count0) == (mean1, var1, count1) == (0.5, 0.25, 20)
    assert results["caught0"] == results["caught1"] == "iteration 7: 1 rank(s) hold parameters that differ from rank 0's"
    assert not dist.is_initialized()


def test_more_ranks_than_the_machine_has_is_refused_before_starting():
    with pytest.raises(ValueError, match=r"--nproc 4096: this machine has \d+ (CPU cores|CUDA devices)"):
        launch(4096, ["train", "pendulum"])
    result = s2r("train", "pendulum", "--nproc", "4096")
    assert result.returncode != 0 and "s2r train: error: --nproc 4096: this machine has" in result.stderr
