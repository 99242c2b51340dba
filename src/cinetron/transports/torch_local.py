"""In-process torch transport: the reference implementation (needs ``cinetron[export]``).

Imports torch, so it is never imported by the rest of ``client/``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from cinetron.contract.manifest import ModelManifest
from cinetron.core.transport import (
    Frames,
    Latents,
    PromptEmbeddings,
    Transport,
    to_uint8_frames,
    to_unit_video,
)
from cinetron.models.loading import DEFAULT_WEIGHTS, load_dit, load_vae, shapes_manifest
from cinetron.models.text_encoder import TextEncoder, tokenizer_file
from cinetron.triton_backend.text import PromptTokenizer

DTYPES = ("fp32", "bf16")


class TorchNetworks(Transport):
    """The reference DiT and VAE behind ``denoise``/``decode_video`` on ``device`` (numpy
    in and out, like every transport), under bf16 autocast when ``dtype`` is ``bf16``.
    Subclasses say where prompt embeddings come from."""

    def __init__(
        self,
        weights: Path = DEFAULT_WEIGHTS,
        threads: int | None = None,
        device: str = "cpu",
        dtype: str = "fp32",
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        if threads is not None:
            torch.set_num_threads(threads)
        self.manifest: ModelManifest = shapes_manifest(weights)
        self.device, self.dtype = torch.device(device), dtype
        self.dit = load_dit(weights).to(self.device)
        self.vae = load_vae(weights).to(self.device)
        self.can_encode_video = True
        self.where = f"the torch weights at {weights}"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, torch.bfloat16)

    @torch.inference_mode()
    def denoise(
        self,
        latents: npt.NDArray[np.float32],
        timestep: npt.NDArray[np.float32],
        text_embeds: npt.NDArray[np.float32],
        text_mask: npt.NDArray[np.int64],
        request_id: str = "",
    ) -> npt.NDArray[np.float32]:
        arrays = (latents, timestep, text_embeds, text_mask)
        inputs = [torch.from_numpy(a).to(self.device) for a in arrays]
        with self.autocast():
            out = self.dit(*inputs)
        return out.float().cpu().numpy()

    @torch.inference_mode()
    def decode_video(
        self, latents: npt.NDArray[np.float32], request_id: str = ""
    ) -> npt.NDArray[np.uint8]:
        with self.autocast():
            video = self.vae.decode(torch.from_numpy(latents).to(self.device))
        return to_uint8_frames(video.float().cpu().numpy())

    @torch.inference_mode()
    def encode_video(self, frames: Frames, request_id: str = "") -> Latents:
        video = torch.from_numpy(to_unit_video(frames)).to(self.device)
        with self.autocast():
            latents = self.vae.encode(video)
        return latents.float().cpu().numpy().astype(np.float32)


class TorchTransport(TorchNetworks):
    """The reference networks with the real text encoder (MiniLM) for prompts."""

    def __init__(self, weights: Path = DEFAULT_WEIGHTS, threads: int | None = None) -> None:
        super().__init__(weights, threads)
        self.tokenizer = PromptTokenizer(tokenizer_file(), self.manifest.text_length)
        self.text_encoder = TextEncoder()

    @torch.inference_mode()
    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        t = self.tokenizer(prompts)
        ids, mask = torch.from_numpy(t.input_ids), torch.from_numpy(t.attention_mask)
        embeds = self.text_encoder(ids, mask).numpy().astype(np.float32)
        return PromptEmbeddings(embeds, t.attention_mask, t.token_counts)
