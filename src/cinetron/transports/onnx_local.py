"""In-process ONNX Runtime over an exported model repository: no server, same ONNX files.

Runs exactly the graphs Triton serves (``<repo>/<model>/1/model.onnx``) with the
tokenizer file the Triton ``tokenizer`` model uses, so its frames are the reference
that served frames are compared against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from cinetron.contract.manifest import ModelManifest
from cinetron.core.errors import Unavailable
from cinetron.transports.base import PromptEmbeddings, Transport, to_uint8_frames
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


def cpu_session(path: Path, threads: int = 1, spinning: bool = True) -> ort.InferenceSession:
    """An onnxruntime CPU session: ``threads`` intra-op threads, one inter-op thread, and
    threads that busy-wait between parallel sections when ``spinning`` (its default)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxLocalTransport(Transport):
    """``threads``: onnxruntime intra-op threads per session (1 matches the Triton cpu
    flavour). ``spinning``: whether those threads busy-wait between parallel sections
    (onnxruntime's default; the served models' ``allow_spinning``)."""

    def __init__(
        self, repo_dir: str | Path = DEFAULT_REPOSITORY, threads: int = 1, spinning: bool = True
    ) -> None:
        repo = Path(repo_dir)
        self.manifest: ModelManifest = ModelManifest.load(repository_file(repo, "cinetron.json"))
        self.tokenizer = PromptTokenizer(
            repository_file(repo, "tokenizer", "1", "tokenizer", "tokenizer.json"),
            self.manifest.text_length,
        )
        self.sessions = {
            name: cpu_session(repository_file(repo, name, "1", "model.onnx"), threads, spinning)
            for name in ("text_encoder", "denoiser", "vae_decoder")
        }

    def _run(self, model: str, output: str, **feeds: npt.NDArray[np.generic]) -> npt.NDArray:
        return self.sessions[model].run([output], feeds)[0]

    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        t = self.tokenizer(prompts)
        embeds = self._run(
            "text_encoder", "text_embeds", input_ids=t.input_ids, attention_mask=t.attention_mask
        )
        return PromptEmbeddings(embeds.astype(np.float32), t.attention_mask, t.token_counts)

    def denoise(
        self,
        latents: npt.NDArray[np.float32],
        timestep: npt.NDArray[np.float32],
        text_embeds: npt.NDArray[np.float32],
        text_mask: npt.NDArray[np.int64],
        request_id: str = "",
    ) -> npt.NDArray[np.float32]:
        return self._run(
            "denoiser",
            "velocity",
            latents=latents,
            timestep=timestep.reshape(-1),
            text_embeds=text_embeds,
            text_mask=text_mask,
        )

    def decode_video(
        self, latents: npt.NDArray[np.float32], request_id: str = ""
    ) -> npt.NDArray[np.uint8]:
        return to_uint8_frames(self._run("vae_decoder", "video", latents=latents))
