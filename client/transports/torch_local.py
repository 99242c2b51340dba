"""In-process torch transport: the reference implementation (needs ``cinetron[export]``).

Imports torch, so it is never imported by the rest of ``client/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from cinetron.client.manifest import ModelManifest
from cinetron.client.text import PromptTokenizer
from cinetron.client.transports.base import PromptEmbeddings, Transport, to_uint8_frames
from cinetron.models.loading import DEFAULT_WEIGHTS, load_dit, load_vae, shapes_manifest
from cinetron.models.text_encoder import TextEncoder, tokenizer_file


class TorchTransport(Transport):
    def __init__(self, weights: Path = DEFAULT_WEIGHTS, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.manifest: ModelManifest = shapes_manifest(weights)
        self.tokenizer = PromptTokenizer(tokenizer_file(), self.manifest.text_length)
        self.text_encoder = TextEncoder()
        self.dit = load_dit(weights)
        self.vae = load_vae(weights)

    @torch.inference_mode()
    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        t = self.tokenizer(prompts)
        ids, mask = torch.from_numpy(t.input_ids), torch.from_numpy(t.attention_mask)
        embeds = self.text_encoder(ids, mask).numpy().astype(np.float32)
        return PromptEmbeddings(embeds, t.attention_mask, t.token_counts)

    @torch.inference_mode()
    def denoise(
        self,
        latents: npt.NDArray[np.float32],
        timestep: npt.NDArray[np.float32],
        text_embeds: npt.NDArray[np.float32],
        text_mask: npt.NDArray[np.int64],
        request_id: str = "",
    ) -> npt.NDArray[np.float32]:
        out = self.dit(
            torch.from_numpy(latents),
            torch.from_numpy(timestep),
            torch.from_numpy(text_embeds),
            torch.from_numpy(text_mask),
        )
        return out.numpy()

    @torch.inference_mode()
    def decode_video(
        self, latents: npt.NDArray[np.float32], request_id: str = ""
    ) -> npt.NDArray[np.uint8]:
        return to_uint8_frames(self.vae.decode(torch.from_numpy(latents)).numpy())
