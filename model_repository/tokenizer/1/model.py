"""Triton Python model ``tokenizer``: prompts → token ids, padded to the text length.

``PROMPT`` ``[B, 1]`` UTF-8 bytes → ``input_ids``, ``attention_mask`` ``[B, L]`` int64
and ``token_count`` ``[B, 1]`` (tokens before truncation, so callers can warn).
Uses ``cinetron.triton_backend.text.PromptTokenizer`` on ``1/tokenizer/tokenizer.json``: the
same code the local transports and training use.
"""

from typing import Any

import numpy as np

from cinetron.triton_backend.text import PromptTokenizer
from cinetron.triton_backend.batching import (
    Array,
    RequestError,
    io_dims,
    model_config,
    run_batched,
    version_dir,
)


def _decode(arrays: dict[str, Array]) -> dict[str, Array]:
    texts = []
    for i, value in enumerate(arrays["PROMPT"].reshape(-1)):
        raw = value if isinstance(value, bytes) else str(value).encode()
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise RequestError(
                f"PROMPT[{i}] is not valid UTF-8 (byte {e.start}: {e.reason}); send UTF-8 text"
            ) from None
    return {"PROMPT": np.array(texts, dtype=object)}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.output_dims = io_dims(model_config(args), "output")
        length = self.output_dims["input_ids"][0]
        self.tokenizer = PromptTokenizer(version_dir(args) / "tokenizer" / "tokenizer.json", length)

    def _tokenize(self, feeds: dict[str, Array]) -> dict[str, Array]:
        t = self.tokenizer([str(p) for p in feeds["PROMPT"]])
        return {
            "input_ids": t.input_ids,
            "attention_mask": t.attention_mask,
            "token_count": t.token_counts,
        }

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, ["PROMPT"], self.output_dims, self._tokenize, prepare=_decode)
