"""Decoder output → uint8 frames: the ``postprocess`` model, and the same arithmetic for
every transport that decodes in-process, so all of them produce identical frames from
identical latents."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .batching import io_dims, model_config, run_batched


def to_uint8_frames(video: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """``[B, 3, F, H, W]`` in [-1, 1] → ``[B, F, H, W, 3]`` uint8 RGB."""
    scaled = np.clip((video.astype(np.float32) + 1.0) * 127.5, 0.0, 255.0)
    return np.rint(scaled).astype(np.uint8).transpose(0, 2, 3, 4, 1)


def to_unit_video(frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The inverse: uint8 ``[B, F, H, W, 3]`` → float ``[B, 3, F, H, W]`` in [-1, 1] (what
    the VAE encoder reads)."""
    video = frames.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3))


class PostprocessModel:
    """Triton Python model ``postprocess``: its one input (the decoder's video) → its one
    output (uint8 frames); names from its config."""

    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.input_name = config["input"][0]["name"]
        self.output_dims = io_dims(config, "output")
        self.output_name = next(iter(self.output_dims))

    def _convert(self, feeds: dict[str, Any]) -> dict[str, Any]:
        return {self.output_name: to_uint8_frames(feeds[self.input_name])}

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, [self.input_name], self.output_dims, self._convert)
