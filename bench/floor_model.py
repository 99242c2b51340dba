"""Triton Python model ``denoiser_floor`` (benchmarks only): the denoiser with no compute.

Same config as the served ``denoiser`` (inputs, outputs, dynamic batcher) and the same
request code (``run_batched``: gather, concatenate, split, respond), but the velocity is
the latents themselves. A call's round trip is therefore everything serving costs before
any compute: client, gRPC, Triton's queue and copies, the Python backend's IPC to its
stub. ``python -m bench latency`` adds it to a copy of the repository it serves.
"""

from __future__ import annotations

from typing import Any

from cinetron_backend.batching import (  # the backend package copied beside this file
    Array,
    input_names,
    io_dims,
    model_config,
    run_batched,
)


def echo(feeds: dict[str, Array], latents: str, velocity: str) -> dict[str, Array]:
    return {velocity: feeds[latents]}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.input_names = input_names(config)
        self.output_dims = io_dims(config, "output")
        # The denoiser's first input is the latents and its one output the velocity.
        self.latents, self.velocity = self.input_names[0], next(iter(self.output_dims))

    def execute(self, requests: list[Any]) -> list[Any]:
        def run(feeds: dict[str, Array]) -> dict[str, Array]:
            return echo(feeds, self.latents, self.velocity)

        return run_batched(requests, self.input_names, self.output_dims, run)
