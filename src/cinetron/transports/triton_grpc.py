"""Triton over gRPC (tritonclient): the served models, one call each.

``encode_prompt`` and ``decode_video`` are Triton ensembles; ``denoiser`` is called
once per model evaluation with CFG's cond and uncond as one batch of 2; ``vae_encoder``
(when the repository has it) encodes video for image/video conditioning. The model
manifest (``cinetron.json``) comes from Triton itself — the ``cinetron_manifest``
parameter of the ``denoiser`` config — because a client cannot read the server's disk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cinetron.contract.manifest import MANIFEST_PARAMETER, ModelManifest
from cinetron.contract.names import MANIFEST_MODEL, PIPELINE_MODELS, Models
from cinetron.contract.names import Tensors as T
from cinetron.core.errors import ModelError, Unavailable
from cinetron.core.transport import Frames, Latents, PromptEmbeddings, Transport, to_unit_video

DEFAULT_URL = "127.0.0.1:8001"

# Status codes that mean "the server or the model is not there (yet)": retrying may work.
_UNAVAILABLE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND", "CANCELLED")
_NOT_READY_HINTS = ("not found", "unknown model", "not ready", "unavailable")


def _status(e: InferenceServerException) -> str:
    return str(e.status() or "").removeprefix("StatusCode.")


def translate_error(e: InferenceServerException, url: str, what: str) -> Exception:
    """A tritonclient error as ``Unavailable`` (retry may work) or ``ModelError``."""
    status, message = _status(e), str(e.message() or e).strip()
    if status in _UNAVAILABLE_CODES or any(h in message.lower() for h in _NOT_READY_HINTS):
        return Unavailable(
            f"Triton at {url} could not serve {what}: {message or status}; check that "
            "tritonserver is running (`make serve` or `cinetron serve-triton`) and that "
            "--url / CINETRON_TRITON_URL names its gRPC port"
        )
    return ModelError(f"Triton at {url} failed {what}: {message} (status {status or 'unknown'})")


def manifest_from_config(config: object, url: str = "") -> ModelManifest:
    """Read ``cinetron.json`` from a ``ModelConfig``'s ``cinetron_manifest`` parameter."""
    parameters = getattr(config, "parameters", {})
    if MANIFEST_PARAMETER not in parameters:
        raise ModelError(
            f"the {MANIFEST_MODEL!r} model on Triton at {url} has no {MANIFEST_PARAMETER!r} "
            "config parameter, so the client cannot learn the model's shapes; re-export the "
            "repository with `cinetron export` (which writes it)"
        )
    return ModelManifest.from_dict(json.loads(parameters[MANIFEST_PARAMETER].string_value))


def _input(name: str, array: npt.NDArray[np.generic], datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


class TritonGrpcTransport(Transport):
    """``url``: Triton's gRPC ``host:port``. ``manifest``: override the served manifest
    (for repositories exported before it was published through the config).
    ``timeout_s``: per call, so a hung server surfaces as ``Unavailable``.
    ``denoiser_model``: the served model each step calls (another name serves A/B
    variants of the denoiser, or the benchmark's no-work floor model)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        manifest: ModelManifest | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        denoiser_model: str = Models.DENOISER,
    ) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.where = f"the Triton server at {url}"
        self.denoiser_model = denoiser_model
        try:
            self.client = grpcclient.InferenceServerClient(url)
        except InferenceServerException as e:  # e.g. a malformed url
            raise Unavailable(f"cannot connect to Triton at {url!r}: {e.message()}") from None
        self._check_ready(connect_timeout_s)
        self.manifest = manifest if manifest is not None else self._served_manifest()
        # Decided once, at connect: a slow server later must not flip what we offer.
        self.can_encode_video = self._model_ready(Models.VAE_ENCODER, connect_timeout_s)

    def _model_ready(self, model: str, timeout_s: float) -> bool:
        try:
            return bool(self.client.is_model_ready(model, client_timeout=timeout_s))
        except InferenceServerException:
            return False

    def _check_ready(self, timeout_s: float) -> None:
        try:
            live = self.client.is_server_live(client_timeout=timeout_s)
        except InferenceServerException as e:
            raise Unavailable(
                f"Triton is unreachable at {self.url} ({_status(e) or e.message()}); start it "
                "with `make serve` or `cinetron serve-triton`, or pass --url / set "
                "CINETRON_TRITON_URL to its gRPC host:port"
            ) from None
        if not live:
            raise Unavailable(f"Triton at {self.url} is not live yet; retry in a few seconds")
        for model in dict.fromkeys((*PIPELINE_MODELS, self.denoiser_model)):
            try:
                ready = self.client.is_model_ready(model, client_timeout=timeout_s)
            except InferenceServerException as e:
                raise translate_error(e, self.url, f"a readiness check of {model!r}") from None
            if not ready:
                raise Unavailable(
                    f"model {model!r} is not ready on Triton at {self.url}; it may still be "
                    "loading (retry), or the repository lacks it (run `cinetron export`)"
                )

    def _served_manifest(self) -> ModelManifest:
        try:
            config = self.client.get_model_config(MANIFEST_MODEL, client_timeout=self.timeout_s)
        except InferenceServerException as e:
            raise translate_error(e, self.url, f"the {MANIFEST_MODEL!r} config") from None
        return manifest_from_config(config.config, self.url)

    def _infer(
        self,
        model: str,
        inputs: Sequence[grpcclient.InferInput],
        outputs: Sequence[grpcclient.InferRequestedOutput],
        request_id: str,
    ) -> grpcclient.InferResult:
        try:
            return self.client.infer(
                model,
                list(inputs),
                outputs=list(outputs),
                request_id=request_id,
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as e:
            raise translate_error(e, self.url, f"{model!r} (request {request_id!r})") from None

    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        text = np.array([[p.encode("utf-8")] for p in prompts], dtype=np.object_)  # [B, 1]
        names = (T.TEXT_EMBEDS, T.TEXT_MASK, T.TOKEN_COUNT)
        result = self._infer(
            Models.ENCODE_PROMPT,
            [_input(T.PROMPT, text, "BYTES")],
            [grpcclient.InferRequestedOutput(n) for n in names],
            request_id,
        )
        embeds, mask, count = (result.as_numpy(n) for n in names)
        return PromptEmbeddings(embeds, mask, count.reshape(-1))

    def denoise(
        self,
        latents: Latents,
        timestep: npt.NDArray[np.float32],
        text_embeds: npt.NDArray[np.float32],
        text_mask: npt.NDArray[np.int64],
        request_id: str = "",
    ) -> Latents:
        inputs = [
            _input(T.LATENTS, latents, "FP32"),
            _input(T.TIMESTEP, timestep.reshape(-1, 1), "FP32"),
            _input(T.TEXT_EMBEDS, text_embeds, "FP32"),
            _input(T.TEXT_MASK, text_mask, "INT64"),
        ]
        velocity = grpcclient.InferRequestedOutput(T.VELOCITY)
        result = self._infer(self.denoiser_model, inputs, [velocity], request_id)
        return np.asarray(result.as_numpy(T.VELOCITY))

    def decode_video(self, latents: Latents, request_id: str = "") -> Frames:
        result = self._infer(
            Models.DECODE_VIDEO,
            [_input(T.LATENTS, latents, "FP32")],
            [grpcclient.InferRequestedOutput(T.FRAMES)],
            request_id,
        )
        return np.asarray(result.as_numpy(T.FRAMES))

    def encode_video(self, frames: Frames, request_id: str = "") -> Latents:
        if not self.can_encode_video:
            raise self.no_encoder()
        video = to_unit_video(frames)
        result = self._infer(
            Models.VAE_ENCODER,
            [_input(T.VIDEO, video, "FP32")],
            [grpcclient.InferRequestedOutput(T.LATENTS)],
            request_id,
        )
        return np.asarray(result.as_numpy(T.LATENTS), dtype=np.float32)

    def close(self) -> None:
        self.client.close()
