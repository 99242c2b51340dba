"""Triton Python model ``postprocess``: decoder video → uint8 frames.

``video`` ``[B, 3, F, H, W]`` float in [-1, 1] → ``frames`` ``[B, F, H, W, 3]`` uint8,
with exactly the arithmetic of ``to_uint8_frames`` (imported, not copied), so every
transport produces identical frames from identical latents.
"""

from typing import Any

from cinetron.transports.base import to_uint8_frames
from cinetron.triton_backend.batching import io_dims, model_config, run_batched


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.output_dims = io_dims(model_config(args), "output")

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(
            requests,
            ["video"],
            self.output_dims,
            lambda feeds: {"frames": to_uint8_frames(feeds["video"])},
        )
