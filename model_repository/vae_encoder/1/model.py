"""Triton Python model `vae_encoder` (cpu flavour): runs `model.onnx` with onnxruntime.

Every request the dynamic batcher collected goes into one onnxruntime call; see
`cinetron.export.python_backend.OnnxRuntimeModel`. Inputs/outputs: `config.pbtxt`.
"""

from cinetron.export.python_backend import OnnxRuntimeModel


class TritonPythonModel(OnnxRuntimeModel):
    pass
