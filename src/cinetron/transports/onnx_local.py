"""In-process ONNX Runtime over an exported model repository: no server, same ONNX files.

Runs exactly the graphs Triton serves (``<repo>/<model>/1/model.onnx``) with the
tokenizer file the Triton ``tokenizer`` model uses and the same session settings
(``cinetron.triton_backend.sessions``), so its frames are the reference that served
frames are compared against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from cinetron.contract.manifest import ModelManifest
from cinetron.contract.names import ONNX_MODELS, Models
from cinetron.contract.names import Tensors as T
from cinetron.core.errors import Unavailable
from cinetron.core.transport import (
    Frames,
    Latents,
    PromptEmbeddings,
    Transport,
    to_uint8_frames,
    to_unit_video,
)
from cinetron.triton_backend.sessions import cpu_session
from cinetron.triton_backend.text import PromptTokenizer

DEFAULT_REPOSITORY = Path("model_repository")


def repository_file(repo: Path, *parts: str) -> Path:
    path = repo.joinpath(*parts)
    if not path.exists():
        raise Unavailable(
            f"the model repository at {repo} is incomplete: {path} does not exist; "
            f"run `cinetron export --out {repo}` (or `make export`) first"
        )
    return path


class OnnxLocalTransport(Transport):
    """``threads``: onnxruntime intra-op threads per session (1 matches the Triton cpu
    flavour). ``spinning``: whether those threads busy-wait between parallel sections
    (onnxruntime's default; the served models' ``allow_spinning``). The repository's
    ``vae_encoder``, when it has one, encodes video."""

    def __init__(
        self, repo_dir: str | Path = DEFAULT_REPOSITORY, threads: int = 1, spinning: bool = True
    ) -> None:
        repo = Path(repo_dir)
        self.where = f"the model repository at {repo}"
        self.manifest: ModelManifest = ModelManifest.load(repository_file(repo, "cinetron.json"))
        self.tokenizer = PromptTokenizer(
            repository_file(repo, Models.TOKENIZER, "1", "tokenizer", "tokenizer.json"),
            self.manifest.text_length,
        )
        models = list(ONNX_MODELS)
        self.can_encode_video = (repo / Models.VAE_ENCODER / "1" / "model.onnx").exists()
        if self.can_encode_video:
            models.append(Models.VAE_ENCODER)
        self.sessions = {
            name: cpu_session(repository_file(repo, name, "1", "model.onnx"), threads, spinning)
            for name in models
        }

    def _run(self, model: str, output: str, **feeds: npt.NDArray[np.generic]) -> npt.NDArray:
        return np.asarray(self.sessions[model].run([output], feeds)[0])

    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        t = self.tokenizer(prompts)
        feeds = {T.INPUT_IDS: t.input_ids, T.ATTENTION_MASK: t.attention_mask}
        embeds = self._run(Models.TEXT_ENCODER, T.TEXT_EMBEDS, **feeds)
        return PromptEmbeddings(embeds.astype(np.float32), t.attention_mask, t.token_counts)

    def denoise(
        self,
        latents: Latents,
        timestep: npt.NDArray[np.float32],
        text_embeds: npt.NDArray[np.float32],
        text_mask: npt.NDArray[np.int64],
        request_id: str = "",
    ) -> Latents:
        feeds: dict[str, npt.NDArray[np.generic]] = {
            T.LATENTS: latents,
            T.TIMESTEP: timestep.reshape(-1),
            T.TEXT_EMBEDS: text_embeds,
            T.TEXT_MASK: text_mask,
        }
        return self._run(Models.DENOISER, T.VELOCITY, **feeds)

    def decode_video(self, latents: Latents, request_id: str = "") -> Frames:
        return to_uint8_frames(self._run(Models.VAE_DECODER, T.VIDEO, **{T.LATENTS: latents}))

    def encode_video(self, frames: Frames, request_id: str = "") -> Latents:
        if not self.can_encode_video:
            raise self.no_encoder()
        video = to_unit_video(frames)
        return self._run(Models.VAE_ENCODER, T.LATENTS, **{T.VIDEO: video}).astype(np.float32)
