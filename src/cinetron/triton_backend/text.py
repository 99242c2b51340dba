"""Prompt tokenization shared by the Triton ``tokenizer`` model, local transports and training.

Uses the ``tokenizers`` library only (no torch, no transformers), so the thin client
and the Triton Python backend can load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer


@dataclass(frozen=True)
class TokenizedPrompts:
    input_ids: npt.NDArray[np.int64]  # [B, L]
    attention_mask: npt.NDArray[np.int64]  # [B, L]
    token_counts: npt.NDArray[np.int64]  # [B] tokens before truncation (incl. special tokens)


class PromptTokenizer:
    """Pads and truncates every prompt to ``max_length`` so denoiser batches share a shape."""

    def __init__(self, tokenizer_file: str | Path, max_length: int) -> None:
        self.max_length = max_length
        self._counting = Tokenizer.from_file(str(tokenizer_file))
        self._counting.no_padding()
        self._counting.no_truncation()
        self._fixed = Tokenizer.from_file(str(tokenizer_file))
        self._fixed.enable_truncation(max_length)
        self._fixed.enable_padding(length=max_length)

    def __call__(self, prompts: list[str]) -> TokenizedPrompts:
        fixed = self._fixed.encode_batch(prompts)
        counts = [len(e.ids) for e in self._counting.encode_batch(prompts)]
        return TokenizedPrompts(
            input_ids=np.array([e.ids for e in fixed], dtype=np.int64),
            attention_mask=np.array([e.attention_mask for e in fixed], dtype=np.int64),
            token_counts=np.array(counts, dtype=np.int64),
        )
