"""Every served model name and tensor name, spelled once.

The client (transports), the exporter (ONNX graphs, ``config.pbtxt``) and the Triton
Python models all use these names: the client and the exporter import them from here;
the Triton models read them from the ``config.pbtxt`` the exporter wrote from this module
(they import nothing of the project, see ``cinetron.triton_backend``).
"""

from __future__ import annotations

from typing import Final


class Models:
    """Model names in the repository (``<repo>/<name>/config.pbtxt``)."""

    TOKENIZER: Final = "tokenizer"
    TEXT_ENCODER: Final = "text_encoder"
    ENCODE_PROMPT: Final = "encode_prompt"  # ensemble: tokenizer → text_encoder
    DENOISER: Final = "denoiser"
    VAE_DECODER: Final = "vae_decoder"
    POSTPROCESS: Final = "postprocess"
    DECODE_VIDEO: Final = "decode_video"  # ensemble: vae_decoder → postprocess
    VAE_ENCODER: Final = "vae_encoder"  # optional: image/video conditioning


class Tensors:
    """Tensor names on the wire and in the ONNX graphs."""

    PROMPT: Final = "PROMPT"  # [B, 1] UTF-8 bytes
    INPUT_IDS: Final = "input_ids"  # [B, L] int64
    ATTENTION_MASK: Final = "attention_mask"  # [B, L] int64, the tokenizer's mask
    TOKEN_COUNT: Final = "token_count"  # [B, 1] int64, tokens before truncation
    TEXT_EMBEDS: Final = "text_embeds"  # [B, L, D] float32
    TEXT_MASK: Final = "text_mask"  # [B, L] int64, the mask the denoiser reads
    LATENTS: Final = "latents"  # [B, C, T, H, W] float32
    TIMESTEP: Final = "timestep"  # [B, 1] float32 on the wire, [B] in the graph
    VELOCITY: Final = "velocity"  # [B, C, T, H, W] float32, noise − data
    VIDEO: Final = "video"  # [B, 3, F, H, W] float32 in [-1, 1]
    FRAMES: Final = "frames"  # [B, F, H, W, 3] uint8 RGB


# The three networks every family exports to ONNX (``<model>/1/model.onnx``).
ONNX_MODELS: Final = (Models.TEXT_ENCODER, Models.DENOISER, Models.VAE_DECODER)
# What one generation calls: the two ensembles and the denoiser.
PIPELINE_MODELS: Final = (Models.ENCODE_PROMPT, Models.DENOISER, Models.DECODE_VIDEO)
# Its config carries the manifest (``MANIFEST_PARAMETER``): a client can read a model's
# config over gRPC but not the server's disk.
MANIFEST_MODEL: Final = Models.DENOISER
