"""Triton Python model ``tokenizer``: prompts → token ids, padded to the text length.

Its config's one input holds ``[B, 1]`` UTF-8 prompts; its three outputs, in config
order, are the token ids and the attention mask ``[B, L]`` int64 and the token count
``[B, 1]`` before truncation (so callers can warn). ``PromptTokenizer`` on
``1/tokenizer/tokenizer.json``: the same code the local transports and training use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .batching import Array, RequestError, io_dims, model_config, run_batched, version_dir
from .text import PromptTokenizer


def decode_prompts(values: Array) -> list[str]:
    """``[B, 1]`` BYTES → text; a prompt that is not UTF-8 is that request's error."""
    texts = []
    for i, value in enumerate(values.reshape(-1)):
        raw = value if isinstance(value, bytes) else str(value).encode()
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise RequestError(
                f"prompt {i} is not valid UTF-8 (byte {e.start}: {e.reason}); send UTF-8 text"
            ) from None
    return texts


class TokenizerModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.input_name = config["input"][0]["name"]
        self.output_dims = io_dims(config, "output")
        self.ids, self.mask, self.count = self.output_dims
        length = self.output_dims[self.ids][0]
        self.tokenizer = PromptTokenizer(version_dir(args) / "tokenizer" / "tokenizer.json", length)

    def _prepare(self, arrays: dict[str, Array]) -> dict[str, Array]:
        return {self.input_name: np.array(decode_prompts(arrays[self.input_name]), dtype=object)}

    def _tokenize(self, feeds: dict[str, Array]) -> dict[str, Array]:
        t = self.tokenizer([str(p) for p in feeds[self.input_name]])
        return {self.ids: t.input_ids, self.mask: t.attention_mask, self.count: t.token_counts}

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(
            requests, [self.input_name], self.output_dims, self._tokenize, prepare=self._prepare
        )
