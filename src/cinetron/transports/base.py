"""The transport interface: where the three networks run.

Implementations: Triton gRPC, Triton gRPC with system shared memory, in-process
ONNX Runtime, in-process torch. The ``Pipeline`` only talks to this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt

from cinetron.contract.manifest import ModelManifest


@dataclass(frozen=True)
class PromptEmbeddings:
    embeds: npt.NDArray[np.float32]  # [B, L, D]
    mask: npt.NDArray[np.int64]  # [B, L]
    token_counts: npt.NDArray[np.int64]  # [B], before truncation to L


class Transport(ABC):
    manifest: ModelManifest

    @abstractmethod
    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        """Tokenize and encode ``B`` prompts."""

    @abstractmethod
    def denoise(
        self,
        latents: npt.NDArray[np.float32],  # [B, C, T, H, W]
        timestep: npt.NDArray[np.float32],  # [B], per sample, in [0, 1000]
        text_embeds: npt.NDArray[np.float32],  # [B, L, D]
        text_mask: npt.NDArray[np.int64],  # [B, L]
        request_id: str = "",
    ) -> npt.NDArray[np.float32]:
        """Velocity ``[B, C, T, H, W]``."""

    @abstractmethod
    def decode_video(
        self, latents: npt.NDArray[np.float32], request_id: str = ""
    ) -> npt.NDArray[np.uint8]:
        """Latents ``[B, C, T, H, W]`` → frames ``[B, F, H, W, 3]`` uint8 RGB."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections, sessions and shared-memory regions."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def to_uint8_frames(video: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Decoder output ``[B, 3, F, H, W]`` in [-1, 1] → ``[B, F, H, W, 3]`` uint8.

    The same arithmetic as the Triton ``postprocess`` model, so every transport
    produces identical frames from identical latents.
    """
    scaled = np.clip((video.astype(np.float32) + 1.0) * 127.5, 0.0, 255.0)
    return np.rint(scaled).astype(np.uint8).transpose(0, 2, 3, 4, 1)
