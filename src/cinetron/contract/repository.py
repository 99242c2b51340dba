"""The model repository as data: seven models, their tensors and how they connect.

Everything that writes or checks the repository reads this one table: the config
generator (both flavours), the TensorRT profile builder and the tests. Dims are per
sample; every model has ``max_batch_size > 0``, so clients send a leading batch dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cinetron.contract.manifest import MANIFEST_PARAMETER, ModelManifest

ModelKind = Literal["onnx", "python", "ensemble"]

# The three networks exported to ONNX; their files live at <model>/1/model.onnx.
ONNX_MODELS = ("text_encoder", "denoiser", "vae_decoder")

# Optional, beyond the seven: the VAE encoder (video → latents) that image-to-video and
# video-to-video need. Exporters that can build it add it; clients treat it as optional
# and say "re-export" when it is missing (client/conditioning.py).
ENCODER_MODEL = "vae_encoder"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # a tritonclient model_config_pb2.DataType name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]  # per sample, without the batch dim
    # The per-sample shape the network itself takes, when it differs from ``dims``
    # (``timestep`` is [1] on the wire and a scalar per sample in the graph).
    reshape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Step:
    """One ensemble step: ``inputs``/``outputs`` map the model's tensor → ensemble tensor."""

    model: str
    inputs: dict[str, str]
    outputs: dict[str, str]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: ModelKind
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    max_batch_size: int
    steps: tuple[Step, ...] = ()
    # Only the denoiser gets preferred sizes and a queue delay (see RepositoryOptions):
    # it is the model concurrent generations call 20× per video.
    tuned_batching: bool = False
    parameters: dict[str, str] = field(default_factory=dict)


def repository_spec(manifest: ModelManifest) -> tuple[ModelSpec, ...]:
    """The seven models of the contract, sized from ``cinetron.json``."""
    L, D = manifest.text_length, manifest.text_dim
    latents = manifest.latent_shape
    video = (3, manifest.frames, manifest.height, manifest.width)
    frames = (manifest.frames, manifest.height, manifest.width, 3)
    mbs = manifest.max_denoiser_batch
    ids = Tensor("input_ids", "TYPE_INT64", (L,))
    mask = Tensor("attention_mask", "TYPE_INT64", (L,))
    count = Tensor("token_count", "TYPE_INT64", (1,))
    embeds = Tensor("text_embeds", "TYPE_FP32", (L, D))
    text_mask = Tensor("text_mask", "TYPE_INT64", (L,))
    prompt = Tensor("PROMPT", "TYPE_STRING", (1,))
    return (
        ModelSpec("tokenizer", "python", (prompt,), (ids, mask, count), mbs),
        ModelSpec("text_encoder", "onnx", (ids, mask), (embeds,), mbs),
        ModelSpec(
            "encode_prompt",
            "ensemble",
            (prompt,),
            (embeds, text_mask, count),
            mbs,
            steps=(
                Step(
                    "tokenizer",
                    {"PROMPT": "PROMPT"},
                    {
                        "input_ids": "_ids",
                        "attention_mask": "text_mask",
                        "token_count": "token_count",
                    },
                ),
                Step(
                    "text_encoder",
                    {"input_ids": "_ids", "attention_mask": "text_mask"},
                    {"text_embeds": "text_embeds"},
                ),
            ),
        ),
        ModelSpec(
            "denoiser",
            "onnx",
            (
                Tensor("latents", "TYPE_FP32", latents),
                Tensor("timestep", "TYPE_FP32", (1,), reshape=()),
                embeds,
                text_mask,
            ),
            (Tensor("velocity", "TYPE_FP32", latents),),
            mbs,
            tuned_batching=True,
            parameters={MANIFEST_PARAMETER: manifest.to_json()},
        ),
        ModelSpec(
            "vae_decoder",
            "onnx",
            (Tensor("latents", "TYPE_FP32", latents),),
            (Tensor("video", "TYPE_FP32", video),),
            mbs,
        ),
        ModelSpec(
            "postprocess",
            "python",
            (Tensor("video", "TYPE_FP32", video),),
            (Tensor("frames", "TYPE_UINT8", frames),),
            mbs,
        ),
        ModelSpec(
            "decode_video",
            "ensemble",
            (Tensor("latents", "TYPE_FP32", latents),),
            (Tensor("frames", "TYPE_UINT8", frames),),
            mbs,
            steps=(
                Step("vae_decoder", {"latents": "latents"}, {"video": "_video"}),
                Step("postprocess", {"video": "_video"}, {"frames": "frames"}),
            ),
        ),
    )


def model_names(manifest: ModelManifest) -> tuple[str, ...]:
    return tuple(m.name for m in repository_spec(manifest))


def encoder_spec(manifest: ModelManifest) -> ModelSpec:
    """``vae_encoder``: video ``[3, F, H, W]`` in [-1, 1] → the normalised latents the DiT
    works in, ``[C, T, H, W]`` — the inverse of ``vae_decoder``."""
    video = (3, manifest.frames, manifest.height, manifest.width)
    return ModelSpec(
        ENCODER_MODEL,
        "onnx",
        (Tensor("video", "TYPE_FP32", video),),
        (Tensor("latents", "TYPE_FP32", manifest.latent_shape),),
        manifest.max_denoiser_batch,
    )
