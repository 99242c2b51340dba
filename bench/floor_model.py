"""Triton Python model ``denoiser_floor`` (benchmarks only): the denoiser with no compute.

Same config as the served ``denoiser`` (inputs, outputs, dynamic batcher) and the same
request code (``run_batched``: gather, concatenate, split, respond), but the velocity is
the latents themselves. A call's round trip is therefore everything serving costs before
any compute: client, gRPC, Triton's queue and copies, the Python backend's IPC to its
stub. ``python -m bench latency`` adds it to a copy of the repository it serves.
"""

from __future__ import annotations

from typing import Any

from cinetron.triton_backend.batching import Array, io_dims, model_config, run_batched


def echo(feeds: dict[str, Array]) -> dict[str, Array]:
    return {"velocity": feeds["latents"]}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.input_names = [t["name"] for t in config["input"]]
        self.output_dims = io_dims(config, "output")

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.input_names, self.output_dims, echo)
