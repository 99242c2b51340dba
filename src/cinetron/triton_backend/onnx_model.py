"""The cpu flavour's ONNX models: onnxruntime inside the Python backend.

Triton's native onnxruntime backend is not in the tritonserver we can install here
(nvidia-pytriton ships the Python backend only), so on CPU each ONNX network is a Python
model that runs its ``model.onnx`` with onnxruntime; the gpu flavour uses native backends.
"""

from __future__ import annotations

import os
from typing import Any

from .batching import Array, input_names, io_dims, model_config, parameter, run_batched, version_dir
from .sessions import cpu_session


class OnnxRuntimeModel:
    """A Triton Python model that runs ``<version>/<onnx_file>`` with onnxruntime.

    Config parameters: ``onnx_file`` (default ``model.onnx``), ``intra_op_threads``
    (default 1) and ``allow_spinning`` (default 1: onnxruntime's own default, its
    threads busy-wait between parallel sections; 0 lets them sleep, which is what
    instances × threads > cores needs, and what the 2-thread latency setting wants).
    """

    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        path = version_dir(args) / parameter(config, "onnx_file", "model.onnx")
        threads = int(parameter(config, "intra_op_threads", "1"))
        spinning = parameter(config, "allow_spinning", "1") == "1"
        self.session = cpu_session(path, threads, spinning)
        self.input_names = input_names(config)
        self.output_dims = io_dims(config, "output")
        # The graph may want another per-sample shape than the wire (timestep: [1] → []).
        self.graph_dims = {
            i.name: tuple(int(d) for d in i.shape[1:]) for i in self.session.get_inputs()
        }
        print(
            f"event=onnx_model_loaded model={args['model_name']} file={path} "
            f"intra_op_threads={threads} allow_spinning={int(spinning)} "
            f"pid={os.getpid()}",
            flush=True,
        )

    def _run(self, feeds: dict[str, Array]) -> dict[str, Array]:
        shaped = {n: a.reshape(a.shape[0], *self.graph_dims[n]) for n, a in feeds.items()}
        names = list(self.output_dims)
        return dict(zip(names, self.session.run(names, shaped), strict=True))

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.input_names, self.output_dims, self._run)
