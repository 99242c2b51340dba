"""The GPU memory estimates in docs/real-models.md come from code, and that code counts right."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from cinetron.export.families.wan import build_tiny_checkpoint, read_configs  # noqa: E402
from cinetron.export.families.wan_memory import (  # noqa: E402
    WAN21_T2V_1_3B,
    estimate,
    parameter_counts,
    table,
    trtexec_lines,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "real-models.md"


def test_parameter_counts_from_configs_equal_the_instantiated_models(tmp_path: Path) -> None:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    folder = build_tiny_checkpoint(tmp_path / "wan")
    counts = parameter_counts(read_configs(folder))
    transformer = WanTransformer3DModel.from_pretrained(str(folder), subfolder="transformer")
    encoder = UMT5EncoderModel.from_pretrained(str(folder / "text_encoder"))
    vae = AutoencoderKLWan.from_pretrained(str(folder), subfolder="vae")
    decoder = sum(p.numel() for m in (vae.post_quant_conv, vae.decoder) for p in m.parameters())
    assert counts == {
        "denoiser": sum(p.numel() for p in transformer.parameters()),
        "text_encoder": sum(p.numel() for p in encoder.parameters()),
        "vae_decoder": decoder,
    }


def test_wan_1_3b_has_the_published_sizes() -> None:
    counts = parameter_counts(WAN21_T2V_1_3B)
    assert 1.3e9 < counts["denoiser"] < 1.5e9  # "1.3B"
    assert 5.5e9 < counts["text_encoder"] < 5.9e9  # UMT5-XXL encoder
    e = estimate(WAN21_T2V_1_3B, frames=81, height=480, width=832, counts=counts)
    assert e.tokens == 21 * 30 * 52  # 480P, 81 frames: 21 latent frames of 60x104, patch 2x2
    bigger = estimate(WAN21_T2V_1_3B, frames=81, height=720, width=1280, counts=counts)
    assert bigger.denoiser_activations > e.denoiser_activations
    assert bigger.unfused_attention_scores / e.unfused_attention_scores == pytest.approx(
        (bigger.tokens / e.tokens) ** 2
    )


def _block(text: str, marker: str) -> str:
    match = re.search(
        rf"<!-- {marker} -->\n(?:```\w*\n)?(.*?)(?:```\n)?<!-- /{marker} -->", text, re.S
    )
    assert match, f"docs/real-models.md lacks the generated block {marker}"
    return match.group(1)


def test_docs_memory_table_is_the_output_of_the_estimator() -> None:
    assert _block(DOCS.read_text(), "memory-table") == table()


def test_docs_tensorrt_commands_are_the_exporters_commands() -> None:
    assert _block(DOCS.read_text(), "trtexec-480p") == trtexec_lines()
