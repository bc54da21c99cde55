"""What runs a policy on the robot, with numpy and onnxruntime only (no torch, no MuJoCo).

`load_runtime` picks the runtime for an exported file by its contract's kind; every runtime is a
`Runtime` (`protocol`): `PolicyRuntime` (`mlp`) and `ChunkedPolicy` (`chunking`) executing a
`DiffusionRuntime` (`diffusion`). `session` opens ONNX files and reads their contract;
`batching` turns one robot's state into a batch of one and builds the observations.

    from s2r.runtime import load_runtime
    runtime = load_runtime("policy.onnx", robot_spec("cartpole"))
    command = runtime.step(state)
"""

import os

# onnxruntime (1.32) starts a telemetry client at import that about 9 s later creates threads to upload
# events. In a process whose memory is locked (the robot loop's mlockall) every new thread's stack is
# faulted in at once, and the loop waited 5-8 ms for it, once a run. A robot sends no telemetry:
# off, unless the user has said otherwise in the environment.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from s2r.runtime.load import load_runtime  # noqa: E402 (after the environment onnxruntime reads)
from s2r.runtime.protocol import Runtime  # noqa: E402
from s2r.runtime.session import read_contract  # noqa: E402

__all__ = ["Runtime", "load_runtime", "read_contract"]
