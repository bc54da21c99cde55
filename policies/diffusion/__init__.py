"""Diffusion policies: config, model, processing, training, sampling, export and the numpy runtime.

`policies.diffusion.runtime` imports numpy and onnxruntime only; the other modules use torch.
"""
