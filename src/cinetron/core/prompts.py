"""Prompt text → the embeddings the denoiser reads: the one place the text encoder is
called from (through ``Transport.encode_prompt``).

A prompt is encoded whole, except the grammar's plainest caption of one object when the
model declares ``SceneGrammar.phrases``: each phrase ("purple", "triangle", "standing
still", "gray background") is encoded on its own and their tokens are packed into one
sequence. The text encoder is contextual — in a whole sentence the tokens of "triangle"
carry its colour and motion too — so a colour, shape and motion never seen together
arrive at the denoiser as a sentence it never saw. Packed, they arrive as tokens it saw
in every clip of that shape, colour or motion (docs/model-v2.md). The serving contract
is unchanged: the same ``encode_prompt`` of the same text encoder, called per phrase.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cinetron.contract.manifest import SceneGrammar
from cinetron.core.scene import caption_phrases
from cinetron.core.transport import PromptEmbeddings, Transport


def pack(parts: PromptEmbeddings, length: int) -> PromptEmbeddings:
    """The real tokens of every row of ``parts``, in order, as one row of ``length``
    tokens (zero-padded; truncated past ``length``, which ``token_counts`` shows)."""
    tokens = np.concatenate([parts.embeds[i][parts.mask[i] > 0] for i in range(len(parts.mask))])
    kept = min(len(tokens), length)
    embeds = np.zeros((1, length, parts.embeds.shape[-1]), dtype=parts.embeds.dtype)
    embeds[0, :kept] = tokens[:kept]
    mask = np.zeros((1, length), dtype=parts.mask.dtype)
    mask[0, :kept] = 1
    counts = np.array([int(parts.token_counts.sum())], dtype=parts.token_counts.dtype)
    return PromptEmbeddings(embeds, mask, counts)


def encoder_texts(prompts: Sequence[str], grammar: SceneGrammar | None) -> list[list[str]]:
    """What the text encoder is given for each prompt: its phrases, or the prompt."""
    return [(caption_phrases(p, grammar) if grammar is not None else None) or [p] for p in prompts]


def join(
    prompts: Sequence[str], parts: Sequence[Sequence[str]], encoded: PromptEmbeddings, length: int
) -> list[PromptEmbeddings]:
    """One row per prompt from ``encoded``, the rows of all ``parts`` in order: a prompt
    encoded whole is its row, one given as phrases their tokens packed."""
    rows, start = [], 0
    for prompt, texts in zip(prompts, parts, strict=True):
        end = start + len(texts)
        if list(texts) == [prompt]:
            rows.append(encoded.row(start))
        else:
            mine = PromptEmbeddings(
                encoded.embeds[start:end], encoded.mask[start:end], encoded.token_counts[start:end]
            )
            rows.append(pack(mine, length))
        start = end
    return rows


def encode_prompts(
    transport: Transport, prompts: Sequence[str], request_id: str = ""
) -> list[PromptEmbeddings]:
    """One embedding row per prompt. The texts go to ``encode_prompt`` together, in calls
    of at most the manifest's batch size (every served model's ``max_batch_size``): a
    16-shot storyboard with its negative prompt is 17 texts, and 68 phrased."""
    manifest = transport.manifest
    parts = encoder_texts(prompts, manifest.scene)
    texts = [text for texts in parts for text in texts]
    size = max(1, manifest.max_denoiser_batch)
    encoded = PromptEmbeddings.stack(
        [
            transport.encode_prompt(texts[i : i + size], request_id)
            for i in range(0, len(texts), size)
        ]
    )
    return join(prompts, parts, encoded, manifest.text_length)
