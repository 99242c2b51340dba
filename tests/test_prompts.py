"""Prompt text → embeddings (``core/prompts.py``): the plainest caption of one object
encoded phrase by phrase and packed when the model says so, everything else whole — the
same packing in training (``models/train.py``) as in serving, on every transport."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from cinetron.contract.manifest import ModelManifest
from cinetron.core.pipeline import Pipeline
from cinetron.core.prompts import encode_prompts, encoder_texts, pack
from cinetron.core.request import GenerationRequest
from cinetron.core.scene import caption_phrases
from cinetron.core.transport import PromptEmbeddings, Transport
from cinetron.models import captions, train
from cinetron.models.loading import load_dit, shapes_manifest
from cinetron.tools.tritonserver import TritonServer
from cinetron.transports.triton_grpc import TritonGrpcTransport

PHRASED = captions.scene_grammar(captions.CAPTION_PHRASES)


def all_combinations() -> list[tuple[str, str, str, str]]:
    return captions.train_combinations() + captions.held_out_combinations()


def test_every_plainest_caption_splits_into_its_own_attribute_phrases() -> None:
    for a in all_combinations():
        background, color, shape, motion = a
        got = caption_phrases(captions.canonical_caption(a), PHRASED)
        assert got == [color, shape, captions.MOTION_ING[motion][0], f"{background} background"]


@pytest.mark.parametrize(
    "text",
    [
        "a red circle moving up",  # no background
        "the red circle moving up on a black background",  # another wording
        "a red circle moving up on a black background.",
        "a crimson circle moving up on a black background",  # a synonym, not the plain word
        "a red circle moving up on a black background and a blue square",
        "",
    ],
)
def test_any_other_text_is_encoded_whole(text: str) -> None:
    assert caption_phrases(text, PHRASED) is None


def test_a_grammar_without_phrases_encodes_every_caption_whole() -> None:
    caption = captions.canonical_caption(captions.train_combinations()[0])
    assert caption_phrases(caption, captions.scene_grammar()) is None


def rows(lengths: list[int], length: int = 8, dim: int = 3) -> PromptEmbeddings:
    rng = np.random.default_rng(len(lengths))
    embeds = rng.standard_normal((len(lengths), length, dim)).astype(np.float32)
    mask = np.zeros((len(lengths), length), np.int64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return PromptEmbeddings(embeds, mask, np.array(lengths, np.int64))


def test_packing_keeps_every_real_token_in_order_and_pads_with_zeros() -> None:
    parts = rows([3, 2, 4])
    packed = pack(parts, 16)
    want = np.concatenate([parts.embeds[0, :3], parts.embeds[1, :2], parts.embeds[2, :4]])
    assert packed.embeds.shape == (1, 16, 3)
    np.testing.assert_array_equal(packed.embeds[0, :9], want)
    assert not packed.embeds[0, 9:].any()
    assert packed.mask[0].tolist() == [1] * 9 + [0] * 7
    assert packed.token_counts.tolist() == [9]


def test_packing_past_the_length_truncates_and_counts_what_was_cut() -> None:
    packed = pack(rows([5, 5]), 8)
    assert packed.mask[0].tolist() == [1] * 8 and packed.token_counts.tolist() == [10]


class RecordingEncoder:
    """A transport's ``encode_prompt`` with embeddings made from each text's hash, which
    records every call (nothing else of a transport is used by ``encode_prompts``)."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest
        self.calls: list[list[str]] = []

    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        self.calls.append(list(prompts))
        return PromptEmbeddings.stack([self.one(p) for p in prompts])

    def one(self, text: str) -> PromptEmbeddings:
        length, dim = self.manifest.text_length, self.manifest.text_dim
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        n = 2 + len(text.split())  # [CLS] words [SEP]
        embeds = np.zeros((1, length, dim), np.float32)
        embeds[0, :n] = np.random.default_rng(seed).standard_normal((n, dim))
        mask = np.zeros((1, length), np.int64)
        mask[0, :n] = 1
        return PromptEmbeddings(embeds, mask, np.array([n], np.int64))


def test_a_plainest_caption_is_its_phrases_encoded_apart_and_packed_in_one_call() -> None:
    manifest = replace(shapes_manifest(), scene=PHRASED)
    encoder = RecordingEncoder(manifest)
    a = captions.held_out_combinations()[0]
    caption, other = captions.canonical_caption(a), "a red circle, please"
    got = encode_prompts(cast(Transport, encoder), [caption, other, ""])
    phrases = caption_phrases(caption, PHRASED)
    assert phrases is not None and encoder.calls == [[*phrases, other, ""]]
    want = pack(PromptEmbeddings.stack([encoder.one(p) for p in phrases]), manifest.text_length)
    for field in ("embeds", "mask", "token_counts"):
        np.testing.assert_array_equal(getattr(got[0], field), getattr(want, field))
        np.testing.assert_array_equal(getattr(got[1], field), getattr(encoder.one(other), field))
        np.testing.assert_array_equal(getattr(got[2], field), getattr(encoder.one(""), field))
    assert encoder_texts([caption, other], manifest.scene) == [phrases, [other]]


def test_more_texts_than_a_served_batch_go_in_calls_of_the_batch_size() -> None:
    """A 16-shot storyboard phrased is 64 captions' phrases and the negative prompt."""
    manifest = replace(shapes_manifest(), scene=PHRASED)
    encoder = RecordingEncoder(manifest)
    prompts = [captions.canonical_caption(a) for a in all_combinations()[:16]] + [""]
    got = encode_prompts(cast(Transport, encoder), prompts)
    sizes = [len(call) for call in encoder.calls]
    assert max(sizes) <= manifest.max_denoiser_batch and sum(sizes) == 16 * 4 + 1
    alone = [encode_prompts(cast(Transport, RecordingEncoder(manifest)), [p])[0] for p in prompts]
    for row, want in zip(got, alone, strict=True):
        np.testing.assert_array_equal(row.embeds, want.embeds)


@pytest.mark.triton
def test_phrased_prompts_through_triton_are_what_they_are_in_process(
    triton_server: TritonServer,
) -> None:
    """Over the served ``encode_prompt`` (batches of at most its max_batch_size): 17
    prompts, 65 texts, packed as the in-process encoder packs them."""
    from cinetron.transports.torch_local import TorchTransport

    prompts = [captions.canonical_caption(a) for a in all_combinations()[::7][:16]] + [""]
    with TritonGrpcTransport(triton_server.grpc_url) as transport:
        object.__setattr__(transport, "manifest", replace(transport.manifest, scene=PHRASED))
        served = encode_prompts(transport, prompts)
    with TorchTransport(threads=1) as local:
        object.__setattr__(local, "manifest", replace(local.manifest, scene=PHRASED))
        reference = encode_prompts(local, prompts)
    for row, want in zip(served, reference, strict=True):
        np.testing.assert_array_equal(row.mask, want.mask)
        np.testing.assert_allclose(row.embeds, want.embeds, atol=1e-4)


def test_a_model_trained_whole_gets_every_caption_whole() -> None:
    manifest = replace(shapes_manifest(), scene=captions.scene_grammar())
    encoder = RecordingEncoder(manifest)
    caption = captions.canonical_caption(captions.train_combinations()[0])
    encode_prompts(cast(Transport, encoder), [caption])
    assert encoder.calls == [[caption]]


def test_training_packs_a_caption_as_the_served_path_does() -> None:
    """``train.encode_phrased`` (float16, as the data set stores it) against
    ``encode_prompts`` over the real text encoder in-process."""
    from cinetron.transports.torch_local import TorchTransport

    texts = ["", *(captions.canonical_caption(a) for a in all_combinations()[::40])]
    embeds, masks = train.encode_phrased(texts)
    with TorchTransport(threads=1) as transport:
        object.__setattr__(transport, "manifest", replace(transport.manifest, scene=PHRASED))
        served = encode_prompts(transport, texts)
    for i, row in enumerate(served):
        np.testing.assert_array_equal(masks[i].numpy(), row.mask[0])
        np.testing.assert_allclose(embeds[i].float().numpy(), row.embeds[0], rtol=1e-3, atol=1e-3)
    assert int(masks[1].sum()) > int(served[0].mask.sum())  # phrased: several [CLS]/[SEP]


def test_a_phrased_fine_tune_says_so_in_model_json_and_is_served_phrased(tmp_path: Path) -> None:
    out = tmp_path / "weights"
    tiny = ["--out", str(out), "--threads", "1", "--dit-examples", "64", "--dit-steps", "2"]
    train.main([*tiny, "--vae-steps", "1", "--vae-batch", "2", "--dit-batch", "4"])
    assert "caption_phrases" not in json.loads((out / "model.json").read_text())
    assert shapes_manifest(out).scene is not None
    assert shapes_manifest(out).scene.phrases == ()  # type: ignore[union-attr]
    phrased = [*tiny, "--skip-vae", "--resume", "--plain-singles", "--caption-phrases", "0.5"]
    train.main([*phrased, "--dit-batch", "4"])
    meta = json.loads((out / "model.json").read_text())
    assert meta["caption_phrases"] == list(captions.CAPTION_PHRASES)
    assert shapes_manifest(out).scene == PHRASED
    load_dit(out)

    from cinetron.transports.torch_local import TorchTransport

    with TorchTransport(out, threads=1) as transport:
        asked: list[str] = []
        encode = transport.encode_prompt

        def recording(prompts: list[str], request_id: str = "") -> PromptEmbeddings:
            asked.extend(prompts)
            return encode(prompts, request_id)

        object.__setattr__(transport, "encode_prompt", recording)
        prompt = "on a gray canvas, a violet square stays still"
        request = GenerationRequest(prompt, steps=2, guidance=1.0)
        video = Pipeline(transport).generate(request)
    assert video.frames.shape == (16, 64, 64, 3)
    plainest = captions.canonical_caption(("gray", "purple", "square", "still"))
    assert asked == caption_phrases(plainest, PHRASED)


def test_phrases_need_plain_single_captions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        train.main(["--out", str(tmp_path), "--caption-phrases", "0.5"])
    assert exited.value.code == 2 and "--plain-singles" in capsys.readouterr().err
    assert not (tmp_path / "vae.safetensors").exists()
