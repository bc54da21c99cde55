"""Diffusion policies: config, model, processing, training, sampling, export and the numpy runtime.

`s2r.runtime.diffusion` imports numpy and onnxruntime only; the other modules use torch.
"""
