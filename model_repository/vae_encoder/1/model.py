"""Triton Python model `vae_encoder` (cpu flavour): runs `model.onnx` with onnxruntime.

Every request the dynamic batcher collected goes into one onnxruntime call; see
`cinetron.triton_backend.batching.OnnxRuntimeModel`. Inputs/outputs: `config.pbtxt`.
"""

from cinetron.triton_backend.batching import OnnxRuntimeModel


class TritonPythonModel(OnnxRuntimeModel):
    pass
