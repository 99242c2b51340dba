"""The Pipeline over a real in-process ONNX Runtime transport: CFG as ONE denoiser batch of
2 per model evaluation, the prompt cache, seeds, schedulers, cancellation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from cinetron.core.errors import Cancelled
from cinetron.core.pipeline import Pipeline
from cinetron.core.prompts import encoder_texts
from cinetron.core.request import GenerationRequest
from cinetron.core.schedulers import SCHEDULERS, make_scheduler
from cinetron.transports import PromptEmbeddings, Transport
from cinetron.transports.onnx_local import OnnxLocalTransport

PROMPT = "a green square shrinking on a gray background"


class Recording(Transport):
    """Delegates to a real transport and records what the pipeline asked of it."""

    def __init__(self, inner: Transport) -> None:
        self.inner, self.manifest = inner, inner.manifest
        self.encoded: list[list[str]] = []
        self.denoise_batches: list[int] = []
        self.timesteps: list[float] = []

    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        self.encoded.append(list(prompts))
        return self.inner.encode_prompt(prompts, request_id)

    def denoise(
        self,
        latents: npt.NDArray[np.float32],
        timestep: npt.NDArray[np.float32],
        text_embeds: npt.NDArray[np.float32],
        text_mask: npt.NDArray[np.int64],
        request_id: str = "",
    ) -> npt.NDArray[np.float32]:
        self.denoise_batches.append(len(latents))
        self.timesteps.append(float(timestep[0]))
        return self.inner.denoise(latents, timestep, text_embeds, text_mask, request_id)

    def decode_video(
        self, latents: npt.NDArray[np.float32], request_id: str = ""
    ) -> npt.NDArray[np.uint8]:
        return self.inner.decode_video(latents, request_id)


def texts_of(prompt: str, transport: Transport) -> list[str]:
    """What the text encoder is given for ``prompt``: its phrases when the model reads
    its plainest caption so (the committed weights do), else the prompt."""
    (texts,) = encoder_texts([prompt], transport.manifest.scene)
    return texts


@pytest.fixture(scope="module")
def onnx(model_repository: Path) -> Iterator[OnnxLocalTransport]:
    with OnnxLocalTransport(model_repository) as transport:
        yield transport


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_guidance_sends_cond_and_uncond_as_one_batch_of_two(
    onnx: OnnxLocalTransport, scheduler: str
) -> None:
    recording = Recording(onnx)
    Pipeline(recording).generate(
        GenerationRequest(PROMPT, steps=5, guidance=4.0, scheduler=scheduler)
    )
    assert recording.denoise_batches == [2] * make_scheduler(scheduler).evaluations(5)
    # the prompt (as its phrases: core/prompts.py) and the negative prompt in one call
    assert recording.encoded == [[*texts_of(PROMPT, onnx), ""]]


def test_guidance_one_skips_the_unconditional_half(onnx: OnnxLocalTransport) -> None:
    recording = Recording(onnx)
    Pipeline(recording).generate(GenerationRequest(PROMPT, steps=4, guidance=1.0))
    assert recording.denoise_batches == [1] * 4
    assert recording.encoded == [texts_of(PROMPT, onnx)]


def test_timestep_shift_reaches_the_denoiser(onnx: OnnxLocalTransport) -> None:
    plain, shifted = Recording(onnx), Recording(onnx)
    Pipeline(plain).generate(GenerationRequest(PROMPT, steps=4, shift=1.0))
    Pipeline(shifted).generate(GenerationRequest(PROMPT, steps=4, shift=3.0))
    assert plain.timesteps == [1000.0, 750.0, 500.0, 250.0]
    assert all(s > p for s, p in zip(shifted.timesteps[1:], plain.timesteps[1:], strict=True))


def test_prompt_cache_skips_the_encoder_for_repeated_prompts(onnx: OnnxLocalTransport) -> None:
    recording = Recording(onnx)
    pipeline = Pipeline(recording)
    first = pipeline.generate(GenerationRequest(PROMPT, seed=1, steps=3, negative_prompt="noise"))
    pipeline.generate(GenerationRequest(PROMPT, seed=2, steps=3, negative_prompt="noise"))
    pipeline.generate(GenerationRequest("a blue one", seed=3, steps=3, negative_prompt="noise"))
    assert recording.encoded == [[*texts_of(PROMPT, onnx), "noise"], ["a blue one"]]
    again = pipeline.generate(GenerationRequest(PROMPT, seed=1, steps=3, negative_prompt="noise"))
    assert np.array_equal(first.frames, again.frames)  # cached embeddings are the same bytes


def test_same_seed_is_bit_identical_and_another_seed_is_not(onnx: OnnxLocalTransport) -> None:
    def frames(seed: int) -> npt.NDArray[np.uint8]:
        return Pipeline(onnx).generate(GenerationRequest(PROMPT, seed=seed, steps=4)).frames

    a, b, c = frames(7), frames(7), frames(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stop_check_cancels_between_steps(onnx: OnnxLocalTransport) -> None:
    recording = Recording(onnx)
    calls = iter(range(100))
    with pytest.raises(Cancelled, match="before step 3 of 10"):
        Pipeline(recording).generate(
            GenerationRequest(PROMPT, steps=10), should_stop=lambda: next(calls) >= 2
        )
    assert len(recording.denoise_batches) == 2


def test_onnx_transport_names_the_missing_export(tmp_path: Path) -> None:
    from cinetron.core.errors import Unavailable

    with pytest.raises(Unavailable, match="cinetron export"):
        OnnxLocalTransport(tmp_path)
