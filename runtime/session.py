"""The ONNX side of every runtime: an onnxruntime session for a policy file and the contract in its metadata.

A session runs on one intra-op and one inter-op thread, sequentially, on the CPU provider, and
none of its threads spins waiting for work: on the robot computer the control loop owns its
core, and a policy of this size gains nothing from more threads. A file that onnxruntime cannot load, or one without a readable contract, raises
ContractError naming the file.

    session = open_session("policy.onnx")
    contract = contract_of(session, "policy.onnx")   # PolicyContract
    contract = read_contract("policy.onnx")          # the same, when the session is not needed
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from s2r.contract import METADATA_KEY, ContractError, PolicyContract

OBS_INPUT = "obs"
"""The input every exported policy graph takes its stacked observations on."""


def open_session(path: str | Path) -> ort.InferenceSession:
    """An onnxruntime session on one thread for the ONNX file `path`; ContractError if it cannot be loaded."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for pool in ("intra_op", "inter_op"):   # no thread of the session spins between runs
        options.add_session_config_entry(f"session.{pool}.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable files
        raise ContractError(f"{path}: not a loadable ONNX model ({error})") from None


def contract_of(session: ort.InferenceSession, path: str | Path) -> PolicyContract:
    """The contract in the metadata of `session`, loaded from `path`; ContractError if absent or unreadable."""
    metadata = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in metadata:
        raise ContractError(f"{path}: no policy contract in the ONNX metadata (key {METADATA_KEY!r}); "
                            "export it with `s2r export`")
    try:
        return PolicyContract.from_json(metadata[METADATA_KEY])
    except ContractError as error:
        raise ContractError(f"{path}: {error}") from None


def read_contract(path: str | Path) -> PolicyContract:
    """The contract stored in an ONNX file's metadata; ContractError if absent or unreadable."""
    return contract_of(open_session(path), path)
