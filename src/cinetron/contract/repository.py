"""The model repository as data: seven models (and the optional encoder), their tensors
and how they connect.

Everything that writes or checks the repository reads this one table: the config
generator (both flavours), the TensorRT profile builder, the client's transports and the
tests. Dims are per sample; every model has ``max_batch_size > 0``, so clients send a
leading batch dim. Torch-free and numpy-free: imported by every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cinetron.contract.manifest import MANIFEST_PARAMETER, ModelManifest
from cinetron.contract.names import ONNX_MODELS, Models, Tensors

ModelKind = Literal["onnx", "python", "ensemble"]

# The class in the shipped backend package (``cinetron.triton_backend``, copied into the
# repository as ``cinetron_backend``) that each Python-backend model's ``model.py`` uses.
# ONNX models use ``ONNX_PYTHON_MODEL`` in the cpu flavour (onnxruntime inside the Python
# backend) and a native backend in the gpu flavour.
ONNX_PYTHON_MODEL = "onnx_model:OnnxRuntimeModel"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # a tritonclient model_config_pb2.DataType name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]  # per sample, without the batch dim
    # The per-sample shape the network itself takes, when it differs from ``dims``
    # (``timestep`` is [1] on the wire and a scalar per sample in the graph).
    reshape: tuple[int, ...] | None = None

    @property
    def graph_dims(self) -> tuple[int, ...]:
        return self.dims if self.reshape is None else self.reshape


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
    # Python models: ``module:Class`` in the backend package. The model reads its tensor
    # names from its config, in the order given here (inputs, then outputs).
    python_model: str = ""

    def input(self, name: str) -> Tensor:
        return next(t for t in self.inputs if t.name == name)


def repository_spec(manifest: ModelManifest) -> tuple[ModelSpec, ...]:
    """The seven models of the contract, sized from ``cinetron.json``."""
    T = Tensors
    L, D = manifest.text_length, manifest.text_dim
    latents = manifest.latent_shape
    video = (3, manifest.frames, manifest.height, manifest.width)
    frames = (manifest.frames, manifest.height, manifest.width, 3)
    mbs = manifest.max_denoiser_batch
    ids = Tensor(T.INPUT_IDS, "TYPE_INT64", (L,))
    mask = Tensor(T.ATTENTION_MASK, "TYPE_INT64", (L,))
    count = Tensor(T.TOKEN_COUNT, "TYPE_INT64", (1,))
    embeds = Tensor(T.TEXT_EMBEDS, "TYPE_FP32", (L, D))
    text_mask = Tensor(T.TEXT_MASK, "TYPE_INT64", (L,))
    prompt = Tensor(T.PROMPT, "TYPE_STRING", (1,))
    latent = Tensor(T.LATENTS, "TYPE_FP32", latents)
    decoded = Tensor(T.VIDEO, "TYPE_FP32", video)
    pixels = Tensor(T.FRAMES, "TYPE_UINT8", frames)
    return (
        ModelSpec(
            Models.TOKENIZER,
            "python",
            (prompt,),
            (ids, mask, count),
            mbs,
            python_model="tokenizer_model:TokenizerModel",
        ),
        ModelSpec(Models.TEXT_ENCODER, "onnx", (ids, mask), (embeds,), mbs),
        ModelSpec(
            Models.ENCODE_PROMPT,
            "ensemble",
            (prompt,),
            (embeds, text_mask, count),
            mbs,
            steps=(
                Step(
                    Models.TOKENIZER,
                    {T.PROMPT: T.PROMPT},
                    {
                        T.INPUT_IDS: "_ids",
                        T.ATTENTION_MASK: T.TEXT_MASK,
                        T.TOKEN_COUNT: T.TOKEN_COUNT,
                    },
                ),
                Step(
                    Models.TEXT_ENCODER,
                    {T.INPUT_IDS: "_ids", T.ATTENTION_MASK: T.TEXT_MASK},
                    {T.TEXT_EMBEDS: T.TEXT_EMBEDS},
                ),
            ),
        ),
        ModelSpec(
            Models.DENOISER,
            "onnx",
            (latent, Tensor(T.TIMESTEP, "TYPE_FP32", (1,), reshape=()), embeds, text_mask),
            (Tensor(T.VELOCITY, "TYPE_FP32", latents),),
            mbs,
            tuned_batching=True,
            parameters={MANIFEST_PARAMETER: manifest.to_json()},
        ),
        ModelSpec(Models.VAE_DECODER, "onnx", (latent,), (decoded,), mbs),
        ModelSpec(
            Models.POSTPROCESS,
            "python",
            (decoded,),
            (pixels,),
            mbs,
            python_model="postprocess:PostprocessModel",
        ),
        ModelSpec(
            Models.DECODE_VIDEO,
            "ensemble",
            (latent,),
            (pixels,),
            mbs,
            steps=(
                Step(Models.VAE_DECODER, {T.LATENTS: T.LATENTS}, {T.VIDEO: "_video"}),
                Step(Models.POSTPROCESS, {T.VIDEO: "_video"}, {T.FRAMES: T.FRAMES}),
            ),
        ),
    )


def model_names(manifest: ModelManifest) -> tuple[str, ...]:
    return tuple(m.name for m in repository_spec(manifest))


def encoder_spec(manifest: ModelManifest) -> ModelSpec:
    """``vae_encoder``, beyond the seven: video ``[3, F, H, W]`` in [-1, 1] → the
    normalised latents the DiT works in, ``[C, T, H, W]`` — the inverse of ``vae_decoder``.
    Image-to-video and video-to-video need it; exporters that can build it add it, and a
    transport declares whether it has one (``Transport.can_encode_video``)."""
    video = (3, manifest.frames, manifest.height, manifest.width)
    return ModelSpec(
        Models.VAE_ENCODER,
        "onnx",
        (Tensor(Tensors.VIDEO, "TYPE_FP32", video),),
        (Tensor(Tensors.LATENTS, "TYPE_FP32", manifest.latent_shape),),
        manifest.max_denoiser_batch,
    )


__all__ = [
    "ONNX_MODELS",
    "ONNX_PYTHON_MODEL",
    "ModelKind",
    "ModelSpec",
    "Step",
    "Tensor",
    "encoder_spec",
    "model_names",
    "repository_spec",
]
