"""What runs a policy on the robot, with numpy and onnxruntime only (no torch, no MuJoCo).

`load_runtime` picks the runtime for an exported file by its contract's kind; every runtime is a
`Runtime` (`protocol`): `PolicyRuntime` (`mlp`) and `ChunkedPolicy` (`chunking`) executing a
`DiffusionRuntime` (`diffusion`). `session` opens ONNX files and reads their contract;
`batching` turns one robot's state into a batch of one and builds the observations.

    from s2r.runtime import load_runtime
    runtime = load_runtime("policy.onnx", robot_spec("cartpole"))
    command = runtime.step(state)
"""

from s2r.runtime.load import load_runtime
from s2r.runtime.protocol import Runtime
from s2r.runtime.session import read_contract

__all__ = ["Runtime", "load_runtime", "read_contract"]
