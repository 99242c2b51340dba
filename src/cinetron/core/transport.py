"""The transport interface: where the networks run.

Implementations: Triton gRPC, Triton gRPC with system shared memory, in-process ONNX
Runtime, in-process torch. The sampling loop only talks to this interface. Every
transport can encode prompts, denoise and decode; encoding video to latents (image- and
video-conditioned generation) is a declared capability, ``can_encode_video``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt

from cinetron.contract.manifest import ModelManifest
from cinetron.core.errors import InvalidArgument, missing_encoder
from cinetron.triton_backend.postprocess import to_uint8_frames, to_unit_video

Frames = npt.NDArray[np.uint8]  # [B, F, H, W, 3]
Latents = npt.NDArray[np.float32]  # [B, C, T, H, W]


@dataclass(frozen=True)
class PromptEmbeddings:
    embeds: npt.NDArray[np.float32]  # [B, L, D]
    mask: npt.NDArray[np.int64]  # [B, L]
    token_counts: npt.NDArray[np.int64]  # [B], before truncation to L

    def row(self, i: int) -> PromptEmbeddings:
        return PromptEmbeddings(
            self.embeds[i : i + 1], self.mask[i : i + 1], self.token_counts[i : i + 1]
        )

    @staticmethod
    def stack(rows: list[PromptEmbeddings]) -> PromptEmbeddings:
        return PromptEmbeddings(
            np.concatenate([r.embeds for r in rows]),
            np.concatenate([r.mask for r in rows]),
            np.concatenate([r.token_counts for r in rows]),
        )


class Transport(ABC):
    manifest: ModelManifest
    # Whether ``encode_video`` works here (a VAE encoder is served / exported / loaded).
    can_encode_video: bool = False
    # Where the networks run, for messages: "the Triton server at 127.0.0.1:8001", ...
    where: str = "this transport"

    @abstractmethod
    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        """Tokenize and encode ``B`` prompts."""

    @abstractmethod
    def denoise(
        self,
        latents: Latents,
        timestep: npt.NDArray[np.float32],  # [B], per sample, in [0, 1000]
        text_embeds: npt.NDArray[np.float32],  # [B, L, D]
        text_mask: npt.NDArray[np.int64],  # [B, L]
        request_id: str = "",
    ) -> Latents:
        """Velocity ``[B, C, T, H, W]``."""

    @abstractmethod
    def decode_video(self, latents: Latents, request_id: str = "") -> Frames:
        """Latents ``[B, C, T, H, W]`` → frames ``[B, F, H, W, 3]`` uint8 RGB."""

    def encode_video(self, frames: Frames, request_id: str = "") -> Latents:
        """Frames ``[B, F, H, W, 3]`` uint8 (one clip of the model's length each) → the
        latents the denoiser works in. Only where ``can_encode_video``."""
        raise self.no_encoder()

    def no_encoder(self) -> InvalidArgument:
        return missing_encoder("image", self.where)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections, sessions and shared-memory regions."""

    def __enter__(self) -> Self:  # `with TritonGrpcTransport(...) as t`: t keeps its class
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "Frames",
    "Latents",
    "PromptEmbeddings",
    "Transport",
    "to_uint8_frames",
    "to_unit_video",
]
